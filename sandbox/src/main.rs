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
//!   exec).
//! - [`resources`] is the table of served types; [`admission`] turns request bodies into stored
//!   objects (typed decoding through k8s-openapi, defaults, validation, Service allocation from
//!   [`alloc`]); [`patch`] applies merge, JSON and strategic merge patches; [`lifecycle`]
//!   deletes (finalizers, propagation).
//! - [`store`] holds every object as JSON under one lock with a global resourceVersion, a
//!   bounded event history and a broadcast that watches and [`controllers`] (garbage
//!   collection, namespaces, Deployments, ReplicaSets, Endpoints/EndpointSlices) subscribe to;
//!   [`persist`] snapshots it to disk; [`bootstrap`] creates the objects every cluster starts
//!   with.
//! - [`dns`] is cluster DNS (the `cluster.local` zone from Services and EndpointSlices, other
//!   names forwarded to the host's resolver); [`workload`] holds the demo servers pods run
//!   (`tether-sandbox workload http-echo|tcp-echo|udp-echo`).
//! - [`node`] is the node's network: namespaces for the node, the workstation and each pod on
//!   a bridge, with kube-proxy's Service rules in nftables; [`kubelet`] binds pods to the node
//!   and runs their containers as processes in the pods' network namespaces (images map to
//!   host executables), with probes, restarts, status and graceful deletion, and runs
//!   `kubectl exec` commands in running containers; [`auth`] holds
//!   the pods' service-account tokens. [`daemon`] wires them together in `serve`; [`demo`]
//!   is the `--demo` namespace; [`shell`] enters the workstation.
//!
//! Two control planes serve the API (`--control-plane`, env `TETHER_SANDBOX_CONTROL_PLANE`):
//! `builtin` (the default) is everything above, in this process; `upstream` ([`upstream`])
//! runs the real kube-apiserver, kube-controller-manager, kube-scheduler, etcd and
//! kube-proxy (nftables mode, in the node's namespace) built by scripts/build-upstream.sh, and
//! CoreDNS as a Deployment; this process is then only their node: the kubelet (on a local copy
//! of what the node may see, and serving the kubelet API to the API server) and the network
//! are the sandbox's own. With `upstream`, the API (RBAC, admission, defaults, patches,
//! TokenRequest, SelfSubjectAccessReview, server-side apply, OpenAPI), the controllers, the
//! scheduler, Service routing and cluster DNS are Kubernetes' own; what follows about the API
//! server, the store, the controllers, kube-proxy and DNS describes `builtin` only, and what
//! it says about the node (containers as host processes, no volumes besides the
//! service-account token, IPv4) holds for both. The upstream node also does not refresh
//! tokens (they are asked for with the kubelet's 3607 s, which kube-apiserver extends to a
//! year), mounts no ConfigMap or Secret volumes (CoreDNS reads its Corefile from a file the
//! sandbox writes from the `coredns` ConfigMap), and does not restart a control-plane process
//! that exits after the start.
//!
//! What still differs from a real cluster:
//!
//! - One node, and no scheduler: every pod is bound to it (node selectors, affinity and taints
//!   are not looked at). Containers are host processes: no images, no filesystem or PID
//!   isolation, no resource limits or security contexts; no init containers, startup probes,
//!   lifecycle hooks, or volumes besides the service-account token. IPv4 only; no
//!   NetworkPolicy, no LoadBalancer addresses. No StatefulSet, DaemonSet or Job controllers, no
//!   Deployment progress deadline or proportional scaling of a Deployment resized mid-rollout.
//!   No pods/attach. `pods/exec` commands join the container's network, UTS and mount
//!   namespaces but not a PID namespace; the base64 WebSocket protocols are not served.
//! - An admin token and the pods' service-account tokens; no RBAC enforcement (RBAC objects
//!   are stored only), no anonymous access except /healthz, /livez and /readyz.
//! - No server-side apply (415). Responses are JSON only; request bodies are JSON, YAML, or
//!   protobuf for the kinds kubectl's typed clients create (Service, Namespace, ConfigMap,
//!   Secret, ServiceAccount, Deployment; other kinds and unknown fields get 415). No OpenAPI v2 (404);
//!   the OpenAPI v3 documents carry paths and PATCH parameters but no schemas, so
//!   `kubectl explain` does not work. Aggregated discovery is answered with the legacy
//!   documents (clients fall back). No `/api/v1/watch/...` paths.
//! - Lists are not snapshots: `continue` pages show objects as they are when the page is read.
//!   A watch older than the last 50,000 events, or from before a restart, gets 410 Expired.
//! - Strategic merge patch knows the merge keys of the served built-in types only.
//! - `generation` is kept for every type and bumps on any change outside metadata and status.
//! - Graceful deletion applies to pods on the node only (other objects go at once unless
//!   finalizers hold them).
//! - Validation covers names, labels and the fields tether relies on (pods, workloads,
//!   Services), not everything kube-apiserver checks.

mod admission;
mod alloc;
mod api;
mod args;
mod auth;
mod bootstrap;
mod controllers;
mod daemon;
mod demo;
mod dns;
mod error;
mod kubeconfig;
mod kubelet;
mod lifecycle;
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
    if let Command::Serve(_) = command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("TETHER_SANDBOX_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
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
