//! The command line, parsed into plain values the rest of the crate uses.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::daemon::{Config, ControlPlane};
use crate::workload;

#[derive(Debug, Parser)]
#[command(
    name = "tether-sandbox",
    version,
    about = "A single-node, Kubernetes-API-compatible cluster for tether's tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the sandbox in the background and write its kubeconfig.
    Up(ServeArgs),
    /// Stop the sandbox (its state stays in the state directory).
    Down(DirArgs),
    /// Tell whether the sandbox runs (exit code 3 when it does not).
    Status(StatusArgs),
    /// Run the API server in the foreground (what `up` starts).
    Serve(ServeArgs),
    /// Open a shell in the sandbox's workstation: a network namespace whose only way into the
    /// cluster is the API server (as for a laptop outside a real cluster), with KUBECONFIG set.
    Shell(ShellArgs),
    /// Run a demo workload in the foreground (what the sandbox's pods run).
    Workload(WorkloadArgs),
}

#[derive(Debug, Args)]
struct ShellArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The kubeconfig to set as KUBECONFIG (default: <state-dir>/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Run this command instead of an interactive shell (e.g. `-- kubectl get pods -A`).
    #[arg(last = true)]
    command: Vec<String>,
}

// The names are the subcommand's words (`http-echo`...).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, ValueEnum)]
enum WorkloadKind {
    /// HTTP/1.1: identity text, /healthz, /bytes?n=N, POST /echo (default port 8080).
    HttpEcho,
    /// TCP echo (default port 9000).
    TcpEcho,
    /// UDP echo (default port 9001).
    UdpEcho,
    /// An ingress controller: serves the cluster's Ingresses with nginx (default port 80).
    IngressNginx,
}

#[derive(Debug, Args)]
struct WorkloadArgs {
    kind: WorkloadKind,
    /// The port to listen on at 0.0.0.0 (default: 8080, 9000 or 9001 by kind).
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    /// Answer /healthz with 503, to make a pod that fails readiness (http-echo).
    #[arg(long, env = "UNREADY", value_parser = clap::builder::BoolishValueParser::new())]
    unready: bool,
    /// ingress-nginx: the IngressClass whose Ingresses it serves (and those naming none).
    #[arg(long, env = "INGRESS_CLASS", default_value = "nginx")]
    ingress_class: String,
    /// ingress-nginx: NAMESPACE/NAME of its own Service, whose load-balancer address the
    /// Ingresses get (default: ingress-nginx-controller in $POD_NAMESPACE).
    #[arg(long, env = "PUBLISH_SERVICE")]
    publish_service: Option<String>,
    /// ingress-nginx: nginx's private directory (configuration, pid, temporary files).
    #[arg(long, env = "NGINX_DIR", default_value = "/run/ingress-nginx")]
    nginx_dir: PathBuf,
    /// ingress-nginx: the nginx executable.
    #[arg(long, env = "NGINX_BIN", default_value = "nginx")]
    nginx: String,
}

#[derive(Debug, Args)]
struct DirArgs {
    /// Where the sandbox keeps its state, credentials and log.
    #[arg(long, env = "TETHER_SANDBOX_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The kubeconfig path to mention (default: <state-dir>/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Where to write the kubeconfig (default: <state-dir>/kubeconfig); an existing file keeps
    /// its other contexts.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The port to listen on at 127.0.0.1 (default: the previous one if free, else any).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also deploy the `demo` namespace (web, api, db, legacy, flaky, udp) and wait until its
    /// workloads are ready.
    #[arg(long)]
    demo: bool,
    /// Which control plane serves the API: the sandbox's own (`builtin`), or the real
    /// kube-apiserver, controller-manager, scheduler and etcd built by
    /// scripts/build-upstream.sh (`upstream`), which the sandbox's node joins.
    #[arg(long, value_enum, env = "TETHER_SANDBOX_CONTROL_PLANE", default_value_t = ControlPlaneArg::Builtin)]
    control_plane: ControlPlaneArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ControlPlaneArg {
    Builtin,
    Upstream,
}

/// What to do.
#[derive(Debug)]
pub enum Command {
    Up(Config),
    Down(Config),
    Status(Config),
    Serve(Config),
    Shell(Config, Vec<String>),
    Workload(workload::Config),
}

/// `/var/lib/tether-sandbox` for root, else `$XDG_STATE_HOME/tether-sandbox`
/// (`~/.local/state/tether-sandbox`).
fn default_state_dir() -> PathBuf {
    if rustix::process::getuid().is_root() {
        return PathBuf::from("/var/lib/tether-sandbox");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tether-sandbox")
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn config(dir: DirArgs, kubeconfig: Option<PathBuf>, port: u16) -> Config {
    let state_dir = absolute(dir.state_dir.unwrap_or_else(default_state_dir));
    let kubeconfig = absolute(kubeconfig.unwrap_or_else(|| state_dir.join("kubeconfig")));
    Config {
        state_dir,
        kubeconfig,
        port,
        demo: false,
        control_plane: ControlPlane::Builtin,
    }
}

fn serve_config(a: ServeArgs) -> Config {
    Config {
        demo: a.demo,
        control_plane: match a.control_plane {
            ControlPlaneArg::Builtin => ControlPlane::Builtin,
            ControlPlaneArg::Upstream => ControlPlane::Upstream,
        },
        ..config(a.dir, a.kubeconfig, a.port)
    }
}

/// Parses the process arguments (exits with usage on error, as clap does).
pub fn parse() -> Command {
    match Cli::parse().command {
        Cmd::Up(a) => Command::Up(serve_config(a)),
        Cmd::Serve(a) => Command::Serve(serve_config(a)),
        Cmd::Shell(a) => Command::Shell(config(a.dir, a.kubeconfig, 0), a.command),
        Cmd::Down(d) => Command::Down(config(d, None, 0)),
        Cmd::Status(s) => Command::Status(config(s.dir, s.kubeconfig, 0)),
        Cmd::Workload(w) => Command::Workload(workload::Config {
            kind: match w.kind {
                WorkloadKind::HttpEcho => workload::Kind::HttpEcho,
                WorkloadKind::TcpEcho => workload::Kind::TcpEcho,
                WorkloadKind::UdpEcho => workload::Kind::UdpEcho,
                WorkloadKind::IngressNginx => workload::Kind::IngressNginx,
            },
            port: w.port,
            unready: w.unready,
            ingress: workload::ingress::Config {
                class: w.ingress_class,
                publish_service: w.publish_service,
                dir: absolute(w.nginx_dir),
                nginx: w.nginx,
                port: 0,
            },
        }),
    }
}
