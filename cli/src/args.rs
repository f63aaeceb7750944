//! Command-line parsing. clap types stay here: [`Cli::into_command`] turns what was typed
//! into the plain configuration of [`crate::config`], filling in defaults, so that the
//! engine never sees a clap type and "the user typed it" stays distinguishable from "the
//! default" until that point (a config file will slot in between).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use crate::completion;
use ipnet::IpNet;

use crate::config::{
    self, ConnectConfig, DirectTarget, DnsPreference, KubeTarget, SessionSettings, Target,
};
use crate::output::OutputFormat;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Put this machine inside a Kubernetes cluster: cluster IPs and DNS names work here."
)]
pub struct Cli {
    /// Output format for results: text for people, JSON lines or YAML documents for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// Where tether keeps its daemon's socket and log and records what it changed on this
    /// machine, so that it can be undone even after a crash [default: /run/tether as root,
    /// else $XDG_RUNTIME_DIR/tether].
    #[arg(long, global = true, env = "TETHER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
    Yaml,
}

impl From<OutputArg> for OutputFormat {
    fn from(arg: OutputArg) -> Self {
        match arg {
            OutputArg::Text => OutputFormat::Text,
            OutputArg::Json => OutputFormat::Json,
            OutputArg::Yaml => OutputFormat::Yaml,
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Connect this machine to the cluster: install or upgrade the traffic manager if needed,
    /// open a tunnel to it through the API server and route cluster addresses and DNS through
    /// it. Returns once traffic flows; the daemon keeps the session up (and reconnects on its
    /// own) until `tether quit`.
    Connect(ConnectArgs),
    /// Show what the daemon is connected to and what it routes.
    Status,
    /// Stop the daemon and undo everything it changed, or undo what a crashed one left.
    Quit,
    /// Send a workload's Service traffic to a process on this machine. Adds the tether-agent
    /// sidecar to the Deployment the first time (one rolling update); returns once every
    /// Ready pod sends new connections here.
    Intercept(InterceptArgs),
    /// End an intercept: the pods serve their Service again (the sidecar stays, dormant).
    Leave {
        /// The intercept's name (the workload's, unless --name chose another).
        #[arg(add = ArgValueCompleter::new(completion::intercepts))]
        name: String,
    },
    /// Workloads of a namespace, their Services and ports, their agents and intercepts.
    List(ListArgs),
    /// Print the shell script that makes Tab complete tether's commands, flags, and values
    /// from the cluster (namespaces, workloads, ports, intercepts). Bash:
    /// `source <(tether completion bash)` in ~/.bashrc.
    Completion {
        #[arg(value_parser = ["bash", "zsh", "fish", "powershell", "elvish"])]
        shell: String,
    },
    /// Run CMD connected to the cluster (connecting first if needed), optionally with an
    /// intercept and the workload's environment; exit with CMD's exit code. What `run`
    /// started is undone when CMD ends, also if `run` itself is killed.
    Run(Box<RunArgs>),
    /// Remove the traffic manager and everything else tether installed in the cluster
    /// (disconnecting first if connected), or with --agent/--all-agents only sidecars.
    Uninstall(UninstallArgs),
    /// The daemon itself, started by `tether connect`.
    #[command(hide = true)]
    Daemon(DaemonArgs),
    /// Runs a credential plugin as the user who started tether (used by the daemon).
    #[command(hide = true)]
    ExecAs(ExecAsArgs),
}

/// Which cluster, as kubectl would pick it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context].
    #[arg(long, add = ArgValueCompleter::new(completion::contexts))]
    pub context: Option<String>,
    /// The namespace short names resolve in (`web` for `web.NAMESPACE`) [default: the
    /// context's namespace, else `default`].
    #[arg(long, short = 'n', add = ArgValueCompleter::new(completion::namespaces))]
    pub namespace: Option<String>,
    /// The namespace of the traffic manager [default: tether].
    #[arg(long, value_name = "NAMESPACE", add = ArgValueCompleter::new(completion::namespaces))]
    pub manager_namespace: Option<String>,
}

#[derive(clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The traffic manager's image [default: ghcr.io/tether-dev/tether-agent:<this version>].
    #[arg(long, value_name = "IMAGE")]
    pub manager_image: Option<String>,
    /// Reach a manager at this address instead of through the Kubernetes API (direct mode,
    /// for managers outside a cluster and for tests).
    #[arg(long, value_name = "HOST:PORT", requires = "token_file", conflicts_with_all = ["kubeconfig", "context", "manager_image"])]
    pub manager_address: Option<String>,
    /// File holding the manager's session token (direct mode).
    #[arg(long, value_name = "FILE", requires = "manager_address")]
    pub token_file: Option<PathBuf>,
    /// Also route this subnet to the cluster (repeatable).
    #[arg(long = "also-proxy", value_name = "CIDR")]
    pub also_proxy: Vec<IpNet>,
    /// Never route this subnet to the cluster, even when the cluster reports it (repeatable).
    #[arg(long = "never-proxy", value_name = "CIDR")]
    pub never_proxy: Vec<IpNet>,
    /// Name of the TUN device to create [default: tether0].
    #[arg(long, value_name = "NAME")]
    pub tun_name: Option<String>,
    /// Small subnet for the TUN device itself: its first address is the device's, its second
    /// the DNS server's. Pick one that this machine does not use [default: 198.18.0.0/30].
    #[arg(long, value_name = "CIDR")]
    pub tun_subnet: Option<ipnet::Ipv4Net>,
    /// The resolver configuration to point at tether's DNS server while connected (when
    /// systemd-resolved is not used) [default: /etc/resolv.conf].
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// How cluster names reach tether's DNS server: per-link DNS through systemd-resolved,
    /// a rewrite of the resolver file, or whichever this machine uses [default: auto].
    #[arg(long, value_enum)]
    pub dns_mode: Option<DnsModeArg>,
}

#[derive(clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Only take the sidecar out of this Deployment (in --namespace), restoring it and its
    /// Service exactly.
    #[arg(long, value_name = "WORKLOAD", conflicts_with = "all_agents", add = ArgValueCompleter::new(completion::workloads))]
    pub agent: Option<String>,
    /// Only take every sidecar out of the Deployments of --namespace.
    #[arg(long)]
    pub all_agents: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(clap::Args)]
pub struct InterceptArgs {
    /// The Deployment: NAME or deploy/NAME.
    #[arg(add = ArgValueCompleter::new(completion::workloads))]
    pub workload: String,
    /// LOCAL[:SERVICE_PORT]: the local port, and the Service port by name or number (needed
    /// when the Service has several).
    #[arg(long, value_name = "LOCAL[:SVCPORT]", add = ArgValueCompleter::new(completion::ports))]
    pub port: String,
    /// The workload's namespace [default: the connection's].
    #[arg(long, short = 'n', add = ArgValueCompleter::new(completion::namespaces))]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub options: InterceptOptions,
}

/// The flags `intercept` and `run --intercept` share.
#[derive(clap::Args, Clone)]
pub struct InterceptOptions {
    /// The Service to intercept, when several select the workload.
    #[arg(long)]
    pub service: Option<String>,
    /// The container whose port the Service targets, when that is ambiguous.
    #[arg(long)]
    pub container: Option<String>,
    /// Where intercepted connections go on this machine.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// The intercept's name [default: the workload's].
    #[arg(long)]
    pub name: Option<String>,
    /// Write the intercepted container's environment to this file.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The syntax of --env-file.
    #[arg(long, value_enum, default_value = "docker", requires = "env_file")]
    pub env_syntax: crate::cluster::env::EnvSyntax,
    /// Write the environment as one JSON object to this file.
    #[arg(long, value_name = "FILE")]
    pub env_json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Also intercept this Deployment (NAME or deploy/NAME) while CMD runs; CMD gets its
    /// environment.
    #[arg(long, value_name = "WORKLOAD", requires = "port", add = ArgValueCompleter::new(completion::workloads))]
    pub intercept: Option<String>,
    /// With --intercept: LOCAL[:SERVICE_PORT], as for `tether intercept`.
    #[arg(long, value_name = "LOCAL[:SVCPORT]", requires = "intercept", add = ArgValueCompleter::new(completion::ports))]
    pub port: Option<String>,
    #[command(flatten)]
    pub options: InterceptOptions,
    /// Print nothing but errors: CMD's output is all there is.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum DnsModeArg {
    Auto,
    Resolved,
    ResolvConf,
}

impl From<DnsModeArg> for DnsPreference {
    fn from(arg: DnsModeArg) -> Self {
        match arg {
            DnsModeArg::Auto => DnsPreference::Auto,
            DnsModeArg::Resolved => DnsPreference::Resolved,
            DnsModeArg::ResolvConf => DnsPreference::ResolvConf,
        }
    }
}

#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The daemon's configuration, written by `tether connect`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ExecAsArgs {
    #[arg(long)]
    pub uid: u32,
    #[arg(long)]
    pub gid: u32,
    /// The plugin and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// What to run, as plain configuration.
pub enum Invocation {
    Connect(ConnectConfig),
    Status,
    Quit,
    Intercept(InterceptArgs),
    Completion(String),
    Run(Box<RunConfig>),
    Leave(String),
    List(KubeTarget),
    Uninstall(KubeTarget, AgentsToRemove),
    Daemon(PathBuf),
    ExecAs(ExecAsArgs),
}

/// `tether run`, with the connection's defaults filled in.
pub struct RunConfig {
    pub connect: ConnectConfig,
    pub intercept: Option<InterceptArgs>,
    pub quiet: bool,
    pub command: Vec<std::ffi::OsString>,
}

/// What `tether uninstall` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentsToRemove {
    /// The sidecar of one Deployment.
    One(String),
    /// Every sidecar in the namespace.
    All,
    /// Every sidecar in every namespace, and the manager.
    Everything,
}

impl Cli {
    /// The command with every default filled in, and the state directory.
    pub fn into_command(self) -> (Invocation, PathBuf) {
        let state_dir = absolute(self.state_dir.unwrap_or_else(config::default_state_dir));
        let invocation = match self.command {
            Command::Connect(a) => Invocation::Connect(a.into_config(state_dir.clone())),
            Command::Status => Invocation::Status,
            Command::Quit => Invocation::Quit,
            Command::Intercept(a) => Invocation::Intercept(a),
            Command::Completion { shell } => Invocation::Completion(shell),
            Command::Run(a) => {
                let a = *a;
                let intercept = match (a.intercept, a.port) {
                    (Some(workload), Some(port)) => Some(InterceptArgs {
                        workload,
                        port,
                        namespace: a.connect.kube.namespace.clone(),
                        options: a.options,
                    }),
                    _ => None,
                };
                Invocation::Run(Box::new(RunConfig {
                    connect: a.connect.into_config(state_dir.clone()),
                    intercept,
                    quiet: a.quiet,
                    command: a.command,
                }))
            }
            Command::Leave { name } => Invocation::Leave(name),
            Command::List(a) => Invocation::List(a.kube.into_target(None)),
            Command::Uninstall(a) => {
                let agents = match (a.agent, a.all_agents) {
                    (Some(w), _) => AgentsToRemove::One(w),
                    (None, true) => AgentsToRemove::All,
                    (None, false) => AgentsToRemove::Everything,
                };
                Invocation::Uninstall(a.kube.into_target(None), agents)
            }
            Command::Daemon(a) => Invocation::Daemon(a.config),
            Command::ExecAs(a) => Invocation::ExecAs(a),
        };
        (invocation, state_dir)
    }
}

impl KubeArgs {
    fn into_target(self, manager_image: Option<String>) -> KubeTarget {
        KubeTarget {
            kubeconfig: self.kubeconfig.map(absolute),
            context: self.context,
            namespace: self.namespace,
            manager_namespace: self
                .manager_namespace
                .unwrap_or_else(|| config::DEFAULT_MANAGER_NAMESPACE.to_owned()),
            manager_image,
        }
    }
}

impl ConnectArgs {
    fn into_config(self, state_dir: PathBuf) -> ConnectConfig {
        let target = match (self.manager_address, self.token_file) {
            (Some(manager), Some(token_file)) => Target::Direct(DirectTarget {
                manager,
                token_file: absolute(token_file),
            }),
            // clap makes the two flags come together.
            _ => Target::Kubernetes(self.kube.into_target(self.manager_image)),
        };
        let defaults = SessionSettings::default();
        ConnectConfig {
            target,
            settings: SessionSettings {
                also_proxy: self.also_proxy,
                never_proxy: self.never_proxy,
                tun_name: self.tun_name.unwrap_or(defaults.tun_name),
                tun_subnet: self.tun_subnet.unwrap_or(defaults.tun_subnet),
                resolv_conf: self.resolv_conf.map_or(defaults.resolv_conf, absolute),
                dns: self.dns_mode.map_or(defaults.dns, DnsPreference::from),
            },
            state_dir,
            owner: None,
        }
    }
}

/// Paths handed to the daemon must not depend on its working directory.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
