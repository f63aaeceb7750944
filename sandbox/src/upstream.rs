//! `--control-plane upstream`: the real Kubernetes control plane, with the sandbox's node
//! joining it as an ordinary node.
//!
//! scripts/build-upstream.sh builds `tether-upstream` (kube-apiserver, kube-controller-manager,
//! kube-scheduler and kube-proxy from `k8s.io/kubernetes`'s `cmd/*/app` packages, and an
//! embedded etcd)
//! and CoreDNS from their Go modules. `serve` then:
//!
//! - issues the components' credentials from the sandbox's CA ([`certs`]) and starts them in
//!   the node's network namespace ([`processes`]), the API server at the node address
//!   `10.244.0.1:6443` (the `kubernetes` Service's endpoint, which kube-apiserver itself
//!   keeps), relayed to the host's and the workstation's 127.0.0.1 ([`relay`]);
//! - joins the node ([`kubelet::join`], as with the builtin control plane): a Node object
//!   with a Lease heartbeat, registered with the node's own client certificate
//!   (`system:node:sandbox`, so the Node authorizer and NodeRestriction apply); its pods are
//!   the ones the real scheduler binds to it, run on a local copy of what the node may see;
//!   pod status and the final removal of stopped pods go back to the API server, and
//!   service-account tokens come from TokenRequest;
//! - serves the kubelet API (logs, exec, port-forward) to the API server, with client
//!   certificate authentication and a SubjectAccessReview per request ([`kubelet_api`]);
//! - runs the real kube-proxy in nftables mode in the node namespace (instead of the
//!   sandbox's own), with masquerading for all Service traffic since the node does not rely
//!   on `br_netfilter` (see [`crate::node::network`]);
//! - deploys CoreDNS in kube-system behind `kube-dns` at 10.96.0.10 ([`coredns`]);
//! - runs the sandbox's load-balancer allocator ([`crate::loadbalancer`]) with the admin's
//!   client; the real kube-proxy forwards the addresses it writes.

pub mod binaries;
pub mod certs;
mod coredns;
mod kubelet_api;
mod processes;
mod relay;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::watcher;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::Api as SandboxApi;
use crate::auth::Tokens;
use crate::bootstrap::NODE_NAME;
use crate::daemon::{self, Config, DaemonError};
use crate::kubelet::{self, mirror, registration, tokens};
use crate::node::network::Node;
use crate::node::{API_PORT, Layout, NODE_IP};
use crate::pki::{Pki, PkiError};
use crate::resources::Shape;
use crate::server::Server;
use crate::{client, demo, dns, kubeconfig};

use certs::Certs;
use processes::Component;

/// How long the API server may take to answer /readyz after its start.
const APISERVER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long kube-proxy may take to load its rules after its start.
const KUBE_PROXY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long CoreDNS may take to be Ready after its Deployment is applied.
const COREDNS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `--demo` waits for the demo's workloads.
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    NotBuilt(#[from] binaries::NotBuilt),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Process(#[from] processes::ProcessError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("{name} exited ({status}) while the control plane started; {log} ends with:\n{tail}")]
    Exited {
        name: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("kube-apiserver did not answer /readyz within {timeout:?}; see {log}")]
    NotReady { timeout: Duration, log: PathBuf },
    #[error("kube-proxy did not report healthy within {0:?}; see upstream/logs/kube-proxy.log")]
    KubeProxy(Duration),
    #[error(
        "CoreDNS was not Ready within {0:?}; see `kubectl -n kube-system describe pods -l k8s-app=kube-dns`"
    )]
    CoreDnsNotReady(Duration),
    #[error("cannot create {what}: {detail}")]
    Apply { what: String, detail: String },
    #[error("TLS configuration of the kubelet API: {0}")]
    Tls(#[from] rustls::Error),
}

/// The arguments of each component. `dir` is `<state-dir>/upstream`.
fn component_args(
    certs: &Certs,
    dir: &Path,
    kubeconfigs: &Kubeconfigs,
) -> Vec<(&'static str, Vec<String>)> {
    let p = |p: &Path| p.display().to_string();
    let state = dir.parent().unwrap_or(dir);
    let etcd = vec![
        format!("--data-dir={}", p(&dir.join("etcd"))),
        "--listen-client-url=http://127.0.0.1:2379".into(),
        "--listen-peer-url=http://127.0.0.1:2380".into(),
    ];
    let apiserver = vec![
        "--etcd-servers=http://127.0.0.1:2379".into(),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={API_PORT}"),
        format!("--advertise-address={NODE_IP}"),
        format!("--tls-cert-file={}", p(&state.join("apiserver.crt"))),
        format!("--tls-private-key-file={}", p(&state.join("apiserver.key"))),
        format!("--client-ca-file={}", p(&certs.ca)),
        format!("--token-auth-file={}", p(&certs.tokens)),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(&certs.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&certs.sa_key)),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        format!(
            "--kubelet-client-certificate={}",
            p(&certs.apiserver_kubelet.cert)
        ),
        format!("--kubelet-client-key={}", p(&certs.apiserver_kubelet.key)),
        format!("--kubelet-certificate-authority={}", p(&certs.ca)),
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ];
    let common = |kc: &Path, port: u16| {
        vec![
            format!("--kubeconfig={}", p(kc)),
            format!("--authentication-kubeconfig={}", p(kc)),
            format!("--authorization-kubeconfig={}", p(kc)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            // One instance: no leader election, so a restart does not wait out the old lease.
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ]
    };
    let mut controller_manager = common(&kubeconfigs.controller_manager, 10257);
    controller_manager.extend([
        format!("--service-account-private-key-file={}", p(&certs.sa_key)),
        format!("--root-ca-file={}", p(&certs.ca)),
        "--use-service-account-credentials=true".into(),
        "--cluster-name=tether-sandbox".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
    ]);
    let scheduler = common(&kubeconfigs.scheduler, 10259);
    let kube_proxy = vec![
        format!("--kubeconfig={}", p(&kubeconfigs.kube_proxy)),
        "--proxy-mode=nftables".into(),
        format!("--hostname-override={NODE_NAME}"),
        format!("--cluster-cidr={}", crate::bootstrap::POD_CIDR),
        // Pods share one bridge and the node does not rely on br_netfilter, so a pod reaching
        // a Service that lands on a pod of the same bridge (itself included) needs its source
        // rewritten to the node, or the reply bypasses the node's conntrack.
        "--masquerade-all=true".into(),
        format!("--nodeport-addresses={NODE_IP}/32"),
        // The conntrack table is the host's; a namespace may not resize it.
        "--conntrack-max-per-core=0".into(),
        "--metrics-bind-address=127.0.0.1:10249".into(),
        "--healthz-bind-address=127.0.0.1:10256".into(),
    ];
    vec![
        ("etcd", etcd),
        ("kube-apiserver", apiserver),
        ("kube-controller-manager", controller_manager),
        ("kube-scheduler", scheduler),
        ("kube-proxy", kube_proxy),
    ]
}

struct Kubeconfigs {
    controller_manager: PathBuf,
    scheduler: PathBuf,
    node: PathBuf,
    /// kube-proxy's, in the node namespace.
    kube_proxy: PathBuf,
    admin: PathBuf,
}

fn kubeconfigs(certs: &Certs, pki: &Pki, host_port: u16) -> Result<Kubeconfigs, PkiError> {
    // The components in the node namespace reach the API server there; the node's clients
    // live in the sandbox process, on the host, and go through the relay.
    let inside = format!("https://127.0.0.1:{API_PORT}");
    let outside = format!("https://127.0.0.1:{host_port}");
    let admin = certs.dir.join("admin.kubeconfig");
    crate::pki::write_private(
        &admin,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {outside}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: admin\n  context:\n    cluster: sandbox\n    user: admin\ncurrent-context: admin\n",
            ca = certs.ca.display(),
            token = pki.admin_token
        ),
    )?;
    Ok(Kubeconfigs {
        controller_manager: certs.kubeconfig(
            "controller-manager",
            &inside,
            &certs.controller_manager,
        )?,
        scheduler: certs.kubeconfig("scheduler", &inside, &certs.scheduler)?,
        node: certs.kubeconfig("node", &outside, &certs.node)?,
        kube_proxy: certs.kubeconfig("kube-proxy", &inside, &certs.proxy)?,
        admin,
    })
}

/// The kubelet API's TLS: its serving certificate, and client certificates from the CA.
fn kubelet_tls(certs: &Certs, pki: &Pki) -> Result<Arc<rustls::ServerConfig>, UpstreamError> {
    let pem = |detail: String| PkiError::Pem {
        path: certs.kubelet_serving.cert.clone(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certs.kubelet_serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(certs.kubelet_serving.key_pem.as_bytes())
        .map_err(|e| pem(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| pem(e.to_string()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| pem(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Polls /readyz through the host's relay until it answers, a component exits, or the
/// deadline passes.
async fn wait_apiserver(
    pki: &Pki,
    port: u16,
    components: &mut [Component],
) -> Result<(), UpstreamError> {
    let deadline = Instant::now() + APISERVER_TIMEOUT;
    loop {
        for c in components.iter_mut() {
            if let Some(status) = c.exited() {
                return Err(UpstreamError::Exited {
                    name: c.name,
                    status,
                    tail: processes::log_tail(&c.log, 15),
                    log: c.log.clone(),
                });
            }
        }
        let pki2 = pki.clone();
        let ready = tokio::task::spawn_blocking(move || daemon::probe_ready(&pki2, port))
            .await
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = components
                .iter()
                .find(|c| c.name == "kube-apiserver")
                .map(|c| c.log.clone())
                .unwrap_or_default();
            return Err(UpstreamError::NotReady {
                timeout: APISERVER_TIMEOUT,
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until kube-proxy's health check answers 200, which it does once its rules are
/// loaded: only then do ClusterIPs work, and `up` promises a cluster that does.
async fn wait_kube_proxy(node_ns: &crate::node::netns::Netns) -> Result<(), UpstreamError> {
    let deadline = Instant::now() + KUBE_PROXY_TIMEOUT;
    let healthz = SocketAddr::from((Ipv4Addr::LOCALHOST, 10256));
    loop {
        let ns = node_ns.clone();
        let healthy = tokio::task::spawn_blocking(move || {
            let Ok(mut s) = ns.connect_tcp(healthz, Duration::from_secs(1)) else {
                return false;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
                return false;
            }
            let mut head = [0u8; 12];
            s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
        })
        .await
        .unwrap_or(false);
        if healthy {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UpstreamError::KubeProxy(KUBE_PROXY_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `serve --control-plane upstream`, from after the state directory is locked.
pub fn serve(cfg: &Config, pki: Pki) -> Result<(), DaemonError> {
    let upstream = |e: UpstreamError| DaemonError::Upstream(Box::new(e));
    let bin = binaries::find(&[binaries::CONTROL_PLANE, binaries::COREDNS])
        .map_err(|e| upstream(e.into()))?;
    let exe = bin.join(binaries::CONTROL_PLANE);
    let dir = cfg.state_dir.join("upstream");
    let certs = Certs::issue(&pki, &cfg.state_dir).map_err(|e| upstream(e.into()))?;

    let layout = Arc::new(Layout::new(&cfg.state_dir));
    daemon::write_netns_prefix(cfg, &layout)?;
    let node = daemon::NodeGuard(Arc::new(Node::start(&layout).map_err(DaemonError::Node)?));
    let runtime = daemon::runtime(cfg)?;
    let mut components: Vec<Component> = Vec::new();
    let result = runtime.block_on(run(
        cfg,
        &pki,
        &certs,
        &exe,
        &dir,
        &layout,
        &node.0,
        &mut components,
    ));
    tracing::info!("stopping the control plane");
    // The reverse of the start order: the API server goes before etcd.
    components.reverse();
    processes::stop(&mut components);
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(node);
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    cfg: &Config,
    pki: &Pki,
    certs: &Certs,
    exe: &Path,
    dir: &Path,
    layout: &Arc<Layout>,
    node: &Arc<Node>,
    components: &mut Vec<Component>,
) -> Result<(), DaemonError> {
    let upstream = |e: UpstreamError| DaemonError::Upstream(Box::new(e));
    // The release the binary was built from, which the node reports as its own (kubelet and
    // API server of one release are within any skew policy).
    let version = std::process::Command::new(exe)
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| v.starts_with('v'))
        .unwrap_or_else(|| "v0.0.0".into());
    let listener = daemon::bind_host_listener(cfg).await?;
    let port = listener
        .local_addr()
        .map_err(daemon::io("cannot listen for", &cfg.state_dir))?
        .port();
    kubeconfig::write(
        &cfg.kubeconfig,
        &format!("https://127.0.0.1:{port}"),
        &pki.ca_pem,
        &pki.admin_token,
    )?;
    let kubeconfigs = kubeconfigs(certs, pki, port).map_err(|e| upstream(e.into()))?;
    let node_ns = node.netns().clone();
    let log_dir = dir.join("logs");
    let mut args = component_args(certs, dir, &kubeconfigs).into_iter();
    // etcd and the API server first: the controller-manager and the scheduler read RBAC-guarded
    // objects at their start, and exit if the API server has not made its bootstrap roles yet.
    for (name, args) in args.by_ref().take(2) {
        components.push(
            processes::start(exe, name, &args, &node_ns, &log_dir)
                .map_err(|e| upstream(e.into()))?,
        );
    }

    let api_in_node = SocketAddr::from((NODE_IP, API_PORT));
    let in_workstation = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let workstation = daemon::tokio_listener(node.workstation().bind_tcp(in_workstation))?;
    let mut tasks = vec![
        tokio::spawn(relay::run(listener, node_ns.clone(), api_in_node)),
        tokio::spawn(relay::run(workstation, node_ns.clone(), api_in_node)),
    ];
    let started = Instant::now();
    wait_apiserver(pki, port, components)
        .await
        .map_err(upstream)?;
    tracing::info!("kube-apiserver ready after {:?}", started.elapsed());
    for (name, args) in args {
        components.push(
            processes::start(exe, name, &args, &node_ns, &log_dir)
                .map_err(|e| upstream(e.into()))?,
        );
    }

    let admin = client::from_kubeconfig(&kubeconfigs.admin)
        .await
        .map_err(|e| upstream(e.into()))?;
    let node_client = client::from_kubeconfig(&kubeconfigs.node)
        .await
        .map_err(|e| upstream(e.into()))?;

    let exec_targets = Arc::new(kubelet::exec::ExecTargets::default());
    let token_requests = Arc::new(tokens::TokenRequests {
        client: node_client.clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    let authorizer = Arc::new(kubelet_api::Authorizer::new(
        node_client.clone(),
        kubelet_api::Caller {
            user: certs::APISERVER_KUBELET_CLIENT.into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        },
    ));
    let (mirror, node_tasks) = kubelet::join(kubelet::Join {
        client: node_client,
        version: version.clone(),
        net: node.clone(),
        layout: layout.clone(),
        tokens: token_requests,
        ca_pem: pki.ca_pem.clone(),
        exec_targets: exec_targets.clone(),
    });
    tasks.extend(node_tasks);
    // Only for `--demo`'s wait, which covers the demo and the ingress controller (the node
    // itself never reads Deployments).
    tasks.push(tokio::spawn(mirror::reflect(
        mirror.clone(),
        Api::<Deployment>::all(admin.clone()),
        watcher::Config::default(),
        Shape::Deployment,
    )));
    // The node's own resolver at its address, which CoreDNS forwards names outside the
    // cluster to (as a real node's pods with `dnsPolicy: Default` use the node's): the
    // sandbox's DNS server, which hands them to the host's resolver from the host's network.
    let dns_addr = SocketAddr::from((NODE_IP, 53));
    let (udp, tcp) = (node_ns.bind_udp(dns_addr), node_ns.bind_tcp(dns_addr));
    let (udp, tcp) = (
        udp.map_err(daemon::node_error)?,
        tcp.map_err(daemon::node_error)?,
    );
    tasks.push(tokio::spawn(dns::serve(mirror.store.clone(), udp, tcp)));

    let kubelet_api = Arc::new(Server {
        api: SandboxApi {
            store: mirror.store.clone(),
            address: api_in_node.to_string(),
            layout: layout.clone(),
            exec_targets,
            // TokenRequest is kube-apiserver's; the kubelet API does not serve it.
            tokens: Arc::new(Tokens::default()),
        },
        // Never leaves this process: the kubelet API's requests are authenticated by their
        // client certificate and then carry this token to the shared handlers.
        admin_token: format!("{}", uuid::Uuid::new_v4().simple()),
        node_token: None,
        tokens: Arc::new(Tokens::default()),
    });
    let kubelet_listener = daemon::tokio_listener(
        node_ns.bind_tcp(SocketAddr::from((NODE_IP, registration::KUBELET_PORT))),
    )?;
    tasks.push(tokio::spawn(kubelet_api::serve(
        kubelet_listener,
        kubelet_tls(certs, pki).map_err(upstream)?,
        certs.apiserver_kubelet.cert_pem.clone(),
        kubelet_api,
        authorizer,
    )));

    // No cloud provider runs: the sandbox's allocator gives LoadBalancer Services their
    // addresses, as MetalLB would on a bare-metal cluster.
    tasks.push(tokio::spawn(crate::loadbalancer::run(admin.clone())));
    wait_kube_proxy(&node_ns).await.map_err(upstream)?;
    coredns::apply(&admin, dir).await.map_err(upstream)?;
    if cfg.demo {
        coredns::apply_demo(&admin).await.map_err(upstream)?;
    }
    let dns_ready = tokio::select! {
        ready = coredns::wait_ready(&mirror.store, COREDNS_TIMEOUT) => ready,
        () = daemon::wait_for_signal() => return Ok(()),
    };
    dns_ready.map_err(upstream)?;
    if cfg.demo {
        tracing::info!("demo applied; waiting for its pods");
        let waited = tokio::select! {
            waited = demo::wait_ready(&mirror.store, DEMO_TIMEOUT) => waited,
            () = daemon::wait_for_signal() => Err("stopped while waiting".to_string()),
        };
        waited.map_err(DaemonError::Demo)?;
    }
    daemon::write_ready_files(cfg, port)?;
    tracing::info!(
        "serving https://127.0.0.1:{port} (kube-apiserver {version} at https://{api_in_node} in the node), state in {}",
        cfg.state_dir.display()
    );
    daemon::wait_for_signal().await;
    tracing::info!("stopping");
    for task in tasks {
        task.abort();
    }
    daemon::remove_pid_file(cfg);
    Ok(())
}
