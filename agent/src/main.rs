//! tether-agent's command line: parses the arguments into a role's config and runs that
//! role on a single-threaded runtime. The library (`lib.rs`) explains the parts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use tether_agent::{manager, sidecar};

#[derive(Parser)]
#[command(name = "tether-agent", version, about = "tether's in-cluster agent")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Accept tunnel sessions from tether clients and carry their traffic into the cluster.
    Manager {
        /// Address to accept tunnel connections on. Keep it on loopback in a pod: the
        /// Kubernetes port-forward reaches it there, nothing else can.
        #[arg(long, default_value = "127.0.0.1:8022")]
        listen: SocketAddr,
        /// File holding the session token.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The session token itself (prefer the environment variable to the flag).
        #[arg(long, env = "TETHER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A subnet clients should route to the cluster (repeatable).
        #[arg(long = "subnet")]
        subnets: Vec<IpNet>,
        /// The resolver configuration whose nameservers answer DNS and whose search path
        /// defines the cluster domain.
        #[arg(long, default_value = "/etc/resolv.conf")]
        resolv_conf: PathBuf,
        /// Find the Service and pod CIDRs through the Kubernetes API (in-cluster config, else
        /// the kubeconfig) and keep clients' routes current as they change. `--subnet`
        /// values are routed too.
        #[arg(long)]
        discover: bool,
        /// Serve `GET /readyz` and `GET /livez` on this address, for the kubelet's probes.
        #[arg(long)]
        health_listen: Option<SocketAddr>,
    },
    /// Own the ports a Service targets in a workload's pod, and forward each connection to
    /// the app container or to the laptop that intercepts it. Injected by `tether intercept`.
    Sidecar {
        /// Address laptops reach through the port-forward. Keep it on the pod's loopback.
        #[arg(long, default_value = "127.0.0.1:47099")]
        control: SocketAddr,
        /// LISTEN=APP: take connections on LISTEN (all addresses) and forward them to the app
        /// on 127.0.0.1:APP (repeatable).
        #[arg(long = "forward", required = true)]
        forwards: Vec<sidecar::Forward>,
        /// The app container does not run (`tether intercept --replace`): connections that
        /// no claim takes are reset instead of forwarded.
        #[arg(long)]
        replace: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.role {
        Role::Manager {
            listen,
            token_file,
            token,
            subnets,
            resolv_conf,
            discover,
            health_listen,
        } => {
            let Some(token) = read_token(token_file, token) else {
                return ExitCode::from(2);
            };
            let config = manager::Config {
                listen,
                token,
                subnets,
                resolv_conf,
                discover,
                health_listen,
            };
            // One thread: a session's flows hand work to the yamux driver constantly, and
            // cross-thread wakeups cost more than more cores gain (6.5 vs 5.5 Gbit/s
            // measured with tether-bench). The manager's pod is sized for one core anyway.
            block_on(manager::run(config))
        }
        // One thread as well: it shares the pod with the app and mostly copies bytes.
        Role::Sidecar {
            control,
            forwards,
            replace,
        } => block_on(sidecar::run(sidecar::Config {
            control,
            forwards,
            replace,
        })),
    }
}

/// The manager's token from its file or its variable; `None` after saying what is wrong.
fn read_token(token_file: Option<PathBuf>, token: Option<String>) -> Option<String> {
    let token = match (token_file, token) {
        (Some(path), _) => match std::fs::read_to_string(&path) {
            Ok(t) => t.trim().to_owned(),
            Err(e) => {
                eprintln!(
                    "tether-agent: cannot read the token file {}: {e}",
                    path.display()
                );
                return None;
            }
        },
        (None, Some(t)) => t,
        (None, None) => {
            eprintln!("tether-agent: no token: pass --token-file FILE or set TETHER_TOKEN");
            return None;
        }
    };
    if token.is_empty() {
        eprintln!("tether-agent: the token is empty; sessions could not be authenticated");
        return None;
    }
    Some(token)
}

fn block_on<E: std::fmt::Display>(role: impl Future<Output = Result<(), E>>) -> ExitCode {
    tether_tunnel::heap::tune_for_streaming();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
