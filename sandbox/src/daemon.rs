//! Running the sandbox: `serve` in the foreground, and `up`/`down`/`status`, which manage a
//! detached `serve` through files in the state directory:
//!
//! - `tether-sandbox.pid`, `port` and `control-plane`: written by `serve` once it listens (the
//!   pid file is removed on exit);
//! - `tether-sandbox.log`: the detached server's output;
//! - `lock`: held (flock) by the serving process, so one state directory has one server;
//! - `state.json` and the credentials (see [`crate::persist`] and [`crate::pki`]).

mod probe;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::api::Api;
use crate::auth::Tokens;
use crate::kubeconfig::{self, KubeconfigError};
use crate::node::netns::NetnsError;
use crate::node::network::{Node, NodeError};
use crate::node::{self, API_PORT, Layout, NODE_IP, proxy};
use crate::persist::{self, PersistError};
use crate::pki::{Pki, PkiError};
use crate::server::{self, Server};
use crate::store::Store;
use crate::{api, bootstrap, client, controllers, demo, dns, kubelet, loadbalancer};

/// Where `up` records the kubeconfig it wrote (for `shell`).
pub fn kubeconfig_record(state_dir: &Path) -> PathBuf {
    state_dir.join("kubeconfig-path")
}

/// How long `serve --demo` waits for the demo's pods to be ready.
const DEMO_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the node may take to register after the start.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `up` waits for the server to answer /readyz (with `--demo`, its pods included).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `down` waits for the server to exit after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Preflight(#[from] crate::preflight::PreflightError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another tether-sandbox is serving {0}")]
    Locked(PathBuf),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(
        "cannot set up the node's network namespaces: {0}. The sandbox runs its pods in network namespaces: run it as root, with `ip` and `nft` installed (scripts/install-deps.sh)"
    )]
    Node(NodeError),
    #[error("the demo workloads did not become ready: {0}")]
    Demo(String),
    #[error("cannot create the bootstrap objects: {0}")]
    Bootstrap(crate::error::ApiError),
    #[error("the server exited ({status}) before it was ready; its log ({log}) ends with:\n{tail}")]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("the server did not answer /readyz within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("process {0} did not exit after SIGTERM and SIGKILL")]
    WontStop(i32),
    #[error(
        "the sandbox in {dir} runs the {serving} control plane, not {wanted}: stop it first (tether-sandbox down)"
    )]
    OtherControlPlane {
        dir: PathBuf,
        serving: String,
        wanted: &'static str,
    },
    #[error("the node's API client: {0}")]
    NodeClient(crate::client::ClientError),
    #[error("the load-balancer allocator's API client: {0}")]
    LoadBalancerClient(crate::client::ClientError),
    #[error("the node did not register within {0:?}; see the server's log")]
    NodeNotRegistered(Duration),
    #[error("upstream control plane: {0}")]
    Upstream(Box<crate::upstream::UpstreamError>),
}

/// Where things are, as the command line chose.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// 0: the previous port if free, else any free port.
    pub port: u16,
    /// Deploy the demo namespace and wait for it before reporting ready.
    pub demo: bool,
    pub control_plane: ControlPlane,
}

/// Who serves the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlane {
    /// The sandbox's own API server and controllers, in this process.
    Builtin,
    /// kube-apiserver, kube-controller-manager, kube-scheduler and etcd (see [`crate::upstream`]).
    Upstream,
}

impl ControlPlane {
    pub fn arg(self) -> &'static str {
        match self {
            ControlPlane::Builtin => "builtin",
            ControlPlane::Upstream => "upstream",
        }
    }
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("tether-sandbox.pid")
}

/// Which control plane the running server serves (`builtin` or `upstream`).
fn control_plane_file(dir: &Path) -> PathBuf {
    dir.join("control-plane")
}

fn port_file(dir: &Path) -> PathBuf {
    dir.join("port")
}

pub fn log_file(dir: &Path) -> PathBuf {
    dir.join("tether-sandbox.log")
}

fn read_number<T: std::str::FromStr>(path: &Path) -> Option<T> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn ensure_dir(dir: &Path) -> Result<(), DaemonError> {
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("cannot restrict", dir))
}

/// Whether `pid` is a live (not zombie) `tether-sandbox serve` process.
fn is_server(pid: i32) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.first().is_some_and(|a| a.ends_with(b"tether-sandbox"))
        && args.iter().any(|a| *a == b"serve");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    ours && !zombie
}

/// The running server of a state directory: (pid, port).
pub fn running(dir: &Path) -> Option<(i32, u16)> {
    let pid: i32 = read_number(&pid_file(dir))?;
    let port: u16 = read_number(&port_file(dir))?;
    is_server(pid).then_some((pid, port))
}

fn print_usage(port: u16, pid: i32, cfg: &Config) {
    let kubeconfig = cfg.kubeconfig.display();
    println!("tether-sandbox is running at https://127.0.0.1:{port} (pid {pid})");
    println!("kubeconfig: {kubeconfig}");
    println!(
        "network namespaces: {}-*",
        Layout::new(&cfg.state_dir).names.prefix()
    );
    println!();
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get pods -A -o wide");
    println!(
        "  tether-sandbox shell --state-dir {} --kubeconfig {kubeconfig}   # the workstation",
        cfg.state_dir.display()
    );
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
        let _ = f.read_to_string(&mut text);
    }
    text.trim_end().to_string()
}

/// The credentials; the upstream control plane also needs the CA's key.
fn load_pki(cfg: &Config) -> Result<Pki, PkiError> {
    match cfg.control_plane {
        ControlPlane::Builtin => Pki::load_or_create(&cfg.state_dir),
        ControlPlane::Upstream => Pki::load_or_create_with_ca_key(&cfg.state_dir),
    }
}

/// Whether the API server behind `port` answers /readyz.
pub(crate) fn probe_ready(pki: &Pki, port: u16) -> bool {
    probe::ready(pki, port)
}

/// `tether-sandbox up`: starts a detached server unless one runs, and waits until it is ready.
pub fn up(cfg: &Config) -> Result<(), DaemonError> {
    crate::preflight::check(cfg.demo)?;
    ensure_dir(&cfg.state_dir)?;
    if cfg.control_plane == ControlPlane::Upstream {
        // Said before anything starts: the one thing a machine without Go lacks.
        crate::upstream::binaries::find(&[
            crate::upstream::binaries::CONTROL_PLANE,
            crate::upstream::binaries::COREDNS,
        ])
        .map_err(|e| DaemonError::Upstream(Box::new(e.into())))?;
    }
    if let Some((pid, port)) = running(&cfg.state_dir) {
        // A server of the other control plane is not what was asked for.
        let serving = fs::read_to_string(control_plane_file(&cfg.state_dir)).unwrap_or_default();
        let serving = if serving.trim().is_empty() {
            "builtin"
        } else {
            serving.trim()
        };
        if serving != cfg.control_plane.arg() {
            return Err(DaemonError::OtherControlPlane {
                dir: cfg.state_dir.clone(),
                serving: serving.to_string(),
                wanted: cfg.control_plane.arg(),
            });
        }
        print_usage(port, pid, cfg);
        return Ok(());
    }
    // `shell` sets KUBECONFIG to the file the server writes, wherever `--kubeconfig` put it.
    let recorded = kubeconfig_record(&cfg.state_dir);
    fs::write(&recorded, cfg.kubeconfig.as_os_str().as_encoded_bytes())
        .map_err(io("cannot write", &recorded))?;
    let _ = fs::remove_file(pid_file(&cfg.state_dir));
    // Created here, before the server starts, so the two processes never both create them.
    let pki = load_pki(cfg)?;
    let log_path = log_file(&cfg.state_dir);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("cannot open", &log_path))?;
    let stderr = log.try_clone().map_err(io("cannot open", &log_path))?;
    let exe = std::env::current_exe().map_err(io("cannot find", Path::new("/proc/self/exe")))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--state-dir")
        .arg(&cfg.state_dir)
        .arg("--kubeconfig")
        .arg(&cfg.kubeconfig)
        .arg("--port")
        .arg(cfg.port.to_string())
        .args(cfg.demo.then_some("--demo"))
        .arg("--control-plane")
        .arg(cfg.control_plane.arg())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a Ctrl-C in the shell that ran `up` does not reach it.
        .process_group(0)
        .spawn()
        .map_err(io("cannot start", Path::new("tether-sandbox serve")))?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DaemonError::Exited {
                status,
                tail: log_tail(&log_path),
                log: log_path,
            });
        }
        let listening = read_number::<i32>(&pid_file(&cfg.state_dir)) == Some(pid);
        if let (true, Some(port)) = (listening, read_number::<u16>(&port_file(&cfg.state_dir)))
            && probe::ready(&pki, port)
        {
            print_usage(port, pid, cfg);
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DaemonError::NotReady(START_TIMEOUT, log_path));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i32) -> bool {
    Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
        && is_server(pid)
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// `tether-sandbox down`: stops the server of a state directory (SIGTERM, then SIGKILL), then
/// removes whatever a crashed server left (its network namespaces and their processes).
pub fn down(dir: &Path) -> Result<(), DaemonError> {
    match running(dir) {
        Some((pid, _)) => stop(dir, pid)?,
        None => println!(
            "tether-sandbox is not running (state directory {})",
            dir.display()
        ),
    }
    remove_leftovers(dir);
    Ok(())
}

fn stop(dir: &Path, pid: i32) -> Result<(), DaemonError> {
    // `running` only returns positive pids read from our pid file.
    let target = Pid::from_raw(pid).expect("positive pid");
    let _ = rustix::process::kill_process(target, Signal::TERM);
    if !wait_gone(pid, STOP_TIMEOUT) {
        let _ = rustix::process::kill_process(target, Signal::KILL);
        if !wait_gone(pid, Duration::from_secs(5)) {
            return Err(DaemonError::WontStop(pid));
        }
        let _ = fs::remove_file(pid_file(dir));
        let _ = fs::remove_file(port_file(dir));
    }
    println!("tether-sandbox stopped (pid {pid})");
    Ok(())
}

/// How long a server that was killed may take to let go of the state directory's lock.
const DYING_SERVER: Duration = Duration::from_secs(5);

/// Takes the state directory's lock (`lock` is its open file). When it is held although no
/// live server is recorded, the holder is a server that was just killed: its threads are
/// still exiting, or one of its children is between fork and exec, and they let go of the
/// lock within moments. flock offers nothing to wait on with a deadline, so that case is
/// retried for up to [`DYING_SERVER`].
fn lock_state_dir(lock: &fs::File, dir: &Path) -> bool {
    let try_lock =
        || rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
    if try_lock() {
        return true;
    }
    let deadline = Instant::now() + DYING_SERVER;
    while Instant::now() < deadline {
        if read_number::<i32>(&pid_file(dir)).is_some_and(is_server) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
        if try_lock() {
            return true;
        }
    }
    false
}

/// Deletes the namespaces of a server that died without cleaning up. Only while nobody holds
/// the state directory's lock: a server that is still starting owns them.
fn remove_leftovers(dir: &Path) {
    let Ok(lock) = fs::OpenOptions::new().write(true).open(dir.join("lock")) else {
        return;
    };
    if !lock_state_dir(&lock, dir) {
        println!(
            "a tether-sandbox server is starting in {}; left it alone",
            dir.display()
        );
        return;
    }
    let removed = node::cleanup(&Layout::new(dir));
    if removed > 0 {
        println!("removed {removed} network namespaces left by a crashed server");
    }
}

/// `tether-sandbox status`: whether a server runs for the state directory.
pub fn status(cfg: &Config) -> bool {
    match running(&cfg.state_dir) {
        Some((pid, port)) => {
            print_usage(port, pid, cfg);
            true
        }
        None => {
            println!(
                "tether-sandbox is not running (state directory {})",
                cfg.state_dir.display()
            );
            false
        }
    }
}

/// `tether-sandbox serve`: runs the server in the foreground until SIGTERM or SIGINT.
pub fn serve(cfg: &Config) -> Result<(), DaemonError> {
    ensure_dir(&cfg.state_dir)?;
    let lock_path = cfg.state_dir.join("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("cannot open", &lock_path))?;
    if !lock_state_dir(&lock, &cfg.state_dir) {
        return Err(DaemonError::Locked(cfg.state_dir.clone()));
    }
    let pki = load_pki(cfg)?;
    if cfg.control_plane == ControlPlane::Upstream {
        return crate::upstream::serve(cfg, pki);
    }
    let tls = pki.server_config(&cfg.state_dir)?;
    let store = Arc::new(persist::load(&cfg.state_dir)?);
    bootstrap::run(&store).map_err(DaemonError::Bootstrap)?;

    let layout = Arc::new(Layout::new(&cfg.state_dir));
    write_netns_prefix(cfg, &layout)?;
    // Dropped last on every way out of here, so the namespaces (and the pods' processes in
    // them) never outlive the server.
    let node = NodeGuard(Arc::new(Node::start(&layout).map_err(DaemonError::Node)?));

    let runtime = runtime(cfg)?;
    runtime.block_on(async {
        let listener = bind_host_listener(cfg).await?;
        let port = listener
            .local_addr()
            .map_err(io("cannot listen for", &cfg.state_dir))?
            .port();
        let address = format!("127.0.0.1:{port}");
        kubeconfig::write(
            &cfg.kubeconfig,
            &format!("https://{address}"),
            &pki.ca_pem,
            &pki.admin_token,
        )?;

        let tokens = Arc::new(Tokens::default());
        let exec_targets = Arc::new(kubelet::exec::ExecTargets::default());
        // The node's credentials, for this run only (nothing but the node ever has them).
        let node_token = format!("{}", uuid::Uuid::new_v4().simple());
        let server = Arc::new(Server {
            api: Api {
                store: store.clone(),
                address,
                layout: layout.clone(),
                exec_targets: exec_targets.clone(),
                tokens: tokens.clone(),
            },
            admin_token: pki.admin_token.clone(),
            node_token: Some(node_token.clone()),
            tokens,
        });
        // Inside the cluster: the node address that the `kubernetes` Service's endpoint
        // names. In the workstation: the same address as on the host, so one kubeconfig
        // serves both.
        let node_ns = node.0.netns();
        let in_node = SocketAddr::from((NODE_IP, API_PORT));
        let in_workstation = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listeners = [
            listener,
            tokio_listener(node_ns.bind_tcp(in_node))?,
            tokio_listener(node.0.workstation().bind_tcp(in_workstation))?,
        ];
        let mut tasks: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(server::serve(l, tls.clone(), server.clone())))
            .collect();

        let dns_addr = SocketAddr::from((NODE_IP, 53));
        let (udp, tcp) = (node_ns.bind_udp(dns_addr), node_ns.bind_tcp(dns_addr));
        let (udp, tcp) = (udp.map_err(node_error)?, tcp.map_err(node_error)?);
        tasks.push(tokio::spawn(dns::serve(store.clone(), udp, tcp)));
        tasks.push(tokio::spawn(proxy::run(store.clone(), node_ns.clone())));
        controllers::spawn(&store, &pki.ca_pem);
        // The node joins as an API client, exactly as it joins the upstream control plane:
        // through the host's listener, with its own token and TokenRequest for its pods'.
        let node_client = client::with_token(
            &format!("https://127.0.0.1:{port}"),
            &pki.ca_pem,
            &node_token,
        )
        .await
        .map_err(DaemonError::NodeClient)?;
        let (_, node_tasks) = kubelet::join(kubelet::Join {
            client: node_client.clone(),
            version: api::discovery::version()["gitVersion"]
                .as_str()
                .unwrap_or("v0.0.0")
                .to_string(),
            net: node.0.clone(),
            layout: layout.clone(),
            tokens: Arc::new(kubelet::tokens::TokenRequests {
                client: node_client,
                runtime: tokio::runtime::Handle::current(),
            }),
            ca_pem: pki.ca_pem.clone(),
            exec_targets,
        });
        tasks.extend(node_tasks);
        // An API client like any other controller outside the API server, as upstream.
        let lb_client = client::with_token(
            &format!("https://127.0.0.1:{port}"),
            &pki.ca_pem,
            &pki.admin_token,
        )
        .await
        .map_err(DaemonError::LoadBalancerClient)?;
        tasks.push(tokio::spawn(loadbalancer::run(lb_client)));
        tokio::select! {
            registered = wait_node(&store, NODE_TIMEOUT) => registered?,
            () = wait_for_signal() => return Ok(()),
        }
        tasks.push(tokio::spawn(persist::run(
            store.clone(),
            cfg.state_dir.clone(),
        )));

        if cfg.demo {
            demo::apply(&store).map_err(DaemonError::Bootstrap)?;
            tracing::info!("demo applied; waiting for its pods");
            let waited = tokio::select! {
                waited = demo::wait_ready(&store, DEMO_TIMEOUT) => waited,
                () = wait_for_signal() => Err("stopped while waiting".to_string()),
            };
            waited.map_err(DaemonError::Demo)?;
        }
        write_ready_files(cfg, port)?;
        tracing::info!(
            "serving https://127.0.0.1:{port} (in the cluster https://{in_node}), state in {}",
            cfg.state_dir.display()
        );

        wait_for_signal().await;
        tracing::info!("stopping");
        for task in tasks {
            task.abort();
        }
        remove_pid_file(cfg);
        Ok::<_, DaemonError>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    persist::save(&store, &cfg.state_dir)?;
    Ok(())
}

/// Waits until the node has registered its Node object, so `up` never reports a cluster
/// without its node.
async fn wait_node(store: &Store, timeout: Duration) -> Result<(), DaemonError> {
    let deadline = Instant::now() + timeout;
    let rt = crate::resources::by_shape(crate::resources::Shape::Node);
    let mut events_rx = store.events();
    loop {
        if store.read(|s| s.get(rt, "", bootstrap::NODE_NAME).is_some()) {
            return Ok(());
        }
        // Any event (or a lag) is a reason to look again.
        match tokio::time::timeout_at(deadline.into(), events_rx.recv()).await {
            Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err(DaemonError::NodeNotRegistered(timeout));
            }
            Ok(_) => {}
        }
    }
}

/// Records the namespace prefix, so `down` finds a crashed server's namespaces.
pub(crate) fn write_netns_prefix(cfg: &Config, layout: &Layout) -> Result<(), DaemonError> {
    let prefix_path = cfg.state_dir.join("netns-prefix");
    fs::write(&prefix_path, layout.names.prefix()).map_err(io("cannot write", &prefix_path))
}

/// The server's runtime (two workers: the machines it runs on are small).
pub(crate) fn runtime(cfg: &Config) -> Result<tokio::runtime::Runtime, DaemonError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("cannot start the runtime for", &cfg.state_dir))
}

/// The API's listener on the host's 127.0.0.1: the port asked for, else the previous one
/// if it is free, else any.
pub(crate) async fn bind_host_listener(
    cfg: &Config,
) -> Result<tokio::net::TcpListener, DaemonError> {
    let previous: Option<u16> = read_number(&port_file(&cfg.state_dir));
    match (cfg.port, previous) {
        (0, Some(p)) => match tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
            Ok(l) => Ok(l),
            Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await,
        },
        (port, _) => tokio::net::TcpListener::bind(("127.0.0.1", port)).await,
    }
    .map_err(io("cannot listen for", &cfg.state_dir))
}

/// Tells `up` the server is ready: the port, then the pid it waits for.
pub(crate) fn write_ready_files(cfg: &Config, port: u16) -> Result<(), DaemonError> {
    let which = control_plane_file(&cfg.state_dir);
    fs::write(&which, cfg.control_plane.arg()).map_err(io("cannot write", &which))?;
    fs::write(port_file(&cfg.state_dir), port.to_string())
        .map_err(io("cannot write", &port_file(&cfg.state_dir)))?;
    fs::write(pid_file(&cfg.state_dir), std::process::id().to_string())
        .map_err(io("cannot write", &pid_file(&cfg.state_dir)))
}

pub(crate) fn remove_pid_file(cfg: &Config) {
    let _ = fs::remove_file(pid_file(&cfg.state_dir));
}

/// Removes the node's namespaces (and so the pods' processes) when `serve` ends, however.
pub(crate) struct NodeGuard(pub(crate) Arc<Node>);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

pub(crate) fn node_error(e: NetnsError) -> DaemonError {
    DaemonError::Node(NodeError::from(e))
}

pub(crate) fn tokio_listener(
    bound: Result<std::net::TcpListener, NetnsError>,
) -> Result<tokio::net::TcpListener, DaemonError> {
    let listener = bound.map_err(node_error)?;
    tokio::net::TcpListener::from_std(listener)
        .map_err(io("cannot register a listener of", Path::new("the node")))
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers, Ctrl-C and SIGTERM end the process by default.
        _ => std::future::pending().await,
    }
}
