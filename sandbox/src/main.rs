//! tether-sandbox: a single-node, Kubernetes-API-compatible cluster for tether's tests and for
//! trying tether without a cluster: an HTTPS API server that the real `kubectl` and kube-rs
//! accept, the controllers a Deployment needs, and a node whose pods are host processes in
//! network namespaces, with kube-proxy and cluster DNS.
//!
//! How the modules fit, from the socket inwards:
//!
//! - [`args`] parses the command line; [`daemon`] runs `serve` in the foreground and manages a
//!   detached one for `up`/`down`/`status` (pid file, readiness probe); [`pki`] keeps the CA,
//!   serving certificate and admin token; [`kubeconfig`] writes the kubeconfig.
//! - [`server`] terminates TLS (on 127.0.0.1, in the node and in the workstation),
//!   authenticates bearer tokens and collects bodies; [`api`] routes Kubernetes REST paths to
//!   discovery, object handlers, watches, tables and the pod subresources (logs, port-forward,
//!   exec) and TokenRequest.
//! - [`resources`] is the table of served types; [`admission`] turns request bodies into stored
//!   objects (typed decoding through k8s-openapi, defaults, validation, Service allocation from
//!   [`alloc`]); [`patch`] applies merge, JSON and strategic merge patches; [`lifecycle`]
//!   deletes (finalizers, propagation).
//! - [`store`] holds every object as JSON under one lock with a global resourceVersion, a
//!   bounded event history and a broadcast that watches and [`controllers`] (garbage
//!   collection, namespaces, Deployments, ReplicaSets, Endpoints/EndpointSlices, the
//!   scheduler) subscribe to;
//!   [`persist`] snapshots it to disk; [`bootstrap`] creates the objects every cluster starts
//!   with.
//! - [`dns`] is cluster DNS (the `cluster.local` zone from Services and EndpointSlices, other
//!   names forwarded to the host's resolver); [`workload`] holds the demo servers pods run
//!   (`tether-sandbox workload http-echo|tcp-echo|udp-echo`) and the ingress controller
//!   (`ingress-nginx`: an API client in a pod that configures and runs nginx).
//! - [`node`] is the node's network: namespaces for the node, the workstation and each pod on
//!   a bridge, with kube-proxy's Service rules in nftables, and the link that lets the
//!   workstation reach load-balancer addresses; [`loadbalancer`] hands those addresses to
//!   Services of type LoadBalancer, as an API client of either control plane; [`kubelet`] is
//!   the node's agent,
//!   an API client ([`client`]) of whichever control plane serves the API: it registers the
//!   Node (with a Lease), keeps a local copy of its pods and what their environment names,
//!   runs their containers as processes in the pods' network namespaces (images map to host
//!   executables), with probes, restarts, status and graceful deletion reported back through
//!   the API, gets their service-account tokens from TokenRequest, and runs `kubectl exec`
//!   commands in running containers; [`auth`] holds the tokens the builtin API server
//!   accepts. [`daemon`] wires them together in `serve`; [`demo`] is the `--demo`
//!   namespace; [`shell`] enters the workstation.
//!
//! Two control planes serve the API (`--control-plane`, env `TETHER_SANDBOX_CONTROL_PLANE`):
//! `builtin` (the default) is the API server, store and controllers above, in this process
//! (its [`controllers::scheduler`] binds every pod to the node); `upstream` ([`upstream`])
//! runs the real kube-apiserver, kube-controller-manager, kube-scheduler, etcd and
//! kube-proxy (nftables mode, in the node's namespace) built by scripts/build-upstream.sh, and
//! CoreDNS as a Deployment. The node is the same for both: one [`kubelet::join`], over the
//! API, with its own credentials (a token of the builtin API server; upstream the client
//! certificate of `system:node:sandbox`). With `upstream`, the API (RBAC, admission,
//! defaults, patches, TokenRequest, SelfSubjectAccessReview, server-side apply, OpenAPI), the
//! controllers, the scheduler, Service routing and cluster DNS are Kubernetes' own, and the
//! API server reaches the node's kubelet API for logs, exec and port-forward; what follows
//! about the API server, the store, the controllers, kube-proxy and DNS describes `builtin`
//! only, and what it says about the node holds for both.
//!
//! What still differs from a real cluster:
//!
//! - Parts that are ours with either control plane: the node (one node; containers are host
//!   processes: no images, no filesystem or PID isolation, no resource limits or security
//!   contexts; no init containers, startup probes, lifecycle hooks, or volumes besides the
//!   service-account token, so CoreDNS upstream reads its Corefile from a file the sandbox
//!   writes from the `coredns` ConfigMap; IPv4 only; no NetworkPolicy; no pods/attach), its
//!   network (bridge, namespaces, the load-balancer link), the load-balancer allocator (one
//!   fixed pool, no per-Service pools or BGP), the ingress controller (HTTP only: no TLS
//!   section, no annotations, no `resource` backends; a headless or ExternalName backend
//!   answers 503), and the DNS server the node's resolver is. The kubelet API lets in only the API server's client certificate
//!   (and then asks with a SubjectAccessReview, as a kubelet does). `pods/exec` commands
//!   join the container's network, UTS and mount namespaces but not a PID namespace.
//!   Upstream, control-plane processes that exit after the start are not restarted.
//! - Builtin only: no scheduler beyond binding every pod to the node (node selectors,
//!   affinity and taints are not looked at). No StatefulSet, DaemonSet or Job controllers, no
//!   Deployment progress deadline or proportional scaling of a Deployment resized
//!   mid-rollout. The API server answers pods/log, exec and port-forward itself, from the
//!   node's files and processes in this process, rather than through the kubelet API; the
//!   base64 WebSocket protocols are not served.
//! - Builtin only: an admin token, the node's token and TokenRequest's service-account
//!   tokens; no RBAC enforcement (RBAC objects are stored only; SelfSubjectAccessReview is
//!   not served, so `auth can-i` and tether's permission checks find nothing to ask), no
//!   anonymous access except /healthz, /livez and /readyz.
//! - Builtin only: no server-side apply (415). Responses are JSON only; request bodies are
//!   JSON, YAML, or protobuf for the kinds kubectl's typed clients create (Service,
//!   Namespace, ConfigMap, Secret, ServiceAccount, Deployment, Ingress; other kinds and
//!   unknown fields get 415). No OpenAPI v2 (404); the OpenAPI v3 documents carry paths and
//!   PATCH parameters but no schemas, so `kubectl explain` does not work. Aggregated
//!   discovery is answered with the legacy documents (clients fall back). No
//!   `/api/v1/watch/...` paths.
//! - Builtin only: lists are not snapshots: `continue` pages show objects as they are when
//!   the page is read. A watch older than the last 50,000 events, or from before a restart,
//!   gets 410 Expired.
//! - Builtin only: strategic merge patch knows the merge keys of the served built-in types
//!   only; `generation` is kept for every type and bumps on any change outside metadata and
//!   status; graceful deletion applies to pods on the node only (other objects go at once
//!   unless finalizers hold them); validation covers names, labels and the fields tether
//!   relies on (pods, workloads, Services, Ingresses), not everything kube-apiserver
//!   checks.

mod admission;
mod alloc;
mod api;
mod args;
mod auth;
mod bootstrap;
mod client;
mod controllers;
mod daemon;
mod demo;
mod dns;
mod error;
mod kubeconfig;
mod kubelet;
mod lifecycle;
mod loadbalancer;
mod node;
mod patch;
mod persist;
mod pki;
mod preflight;
mod resources;
mod server;
mod shell;
mod store;
mod upstream;
mod workload;

use std::process::ExitCode;

use args::Command;

fn main() -> ExitCode {
    let command = args::parse();
    // The server logs, and so does the ingress controller (to its container's stderr, as
    // plain text for `kubectl logs`); the other workloads print their own lines.
    let logs = match &command {
        Command::Serve(_) => Some(true),
        Command::Workload(w) if w.kind == workload::Kind::IngressNginx => Some(false),
        _ => None,
    };
    if let Some(ansi) = logs {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("TETHER_SANDBOX_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .init();
    }
    let result = match &command {
        Command::Up(cfg) => daemon::up(cfg),
        Command::Down(cfg) => daemon::down(&cfg.state_dir),
        Command::Serve(cfg) => daemon::serve(cfg),
        Command::Shell(cfg, command) => return shell::run(cfg, command),
        Command::Workload(cfg) => {
            return match workload::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tether-sandbox workload: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status(cfg) => {
            return if daemon::status(cfg) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}
