//! Command-line parsing. clap types stay here: [`Cli::into_command`] turns what was typed
//! into the plain configuration of [`crate::config`], filling in defaults, so that the
//! engine never sees a clap type and "the user typed it" stays distinguishable from "the
//! default" until that point (a config file will slot in between).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use crate::completion;
use crate::config::file::{DnsModeKey, FileConfig, FileError, IngressHostsKey, layer};
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
    /// This build's version; with a session, also the daemon's and the manager's.
    Version,
    /// The configuration file: `tether config view` shows every setting in effect and where
    /// it came from (flag, TETHER_* environment variable, file, default).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
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
    /// Why a Service does not answer: walks its selector, the pods' readiness, the
    /// EndpointSlices, the target ports, the pods and the Service's addresses from inside the
    /// cluster, and (when connected) from here; stops at the first step that fails and says
    /// what to do. Changes nothing. Exit code 0 when no step fails, 1 when one does.
    Doctor(DoctorArgs),
    /// Print the RBAC a developer needs to use tether in one namespace (a Role there, and
    /// read access to the manager an admin installed), with bindings for --user, --group or
    /// --service-account: `tether rbac -n dev --user alice | kubectl apply -f -`.
    Rbac(RbacArgs),
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
    /// The first process of a rootless run's namespace (started by `tether run`).
    #[command(hide = true)]
    NamespaceHelper(crate::namespace::helper::HelperArgs),
}

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Every setting in effect, and where it came from.
    View,
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
    /// Seconds to wait for a Ready traffic manager before giving up and saying why
    /// [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
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
    /// The hosts named in the cluster's Ingress rules resolve here to the ingress
    /// controller, through the tunnel: unless public DNS resolves them (auto), or always
    /// (override) [default: auto].
    #[arg(
        long,
        value_enum,
        value_name = "auto|override",
        conflicts_with = "no_ingress_hosts"
    )]
    pub ingress_hosts: Option<IngressHostsArg>,
    /// Leave the hosts of Ingress rules to public DNS (`--ingress-hosts=off`).
    #[arg(long)]
    pub no_ingress_hosts: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum IngressHostsArg {
    Auto,
    Override,
    Off,
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
#[command(group = clap::ArgGroup::new("subject").multiple(false))]
pub struct RbacArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Bind the Roles to this user (as the API server authenticates them).
    #[arg(long, group = "subject")]
    pub user: Option<String>,
    /// Bind the Roles to this group.
    #[arg(long, group = "subject")]
    pub group: Option<String>,
    /// Bind the Roles to this ServiceAccount.
    #[arg(long, value_name = "NAMESPACE:NAME", group = "subject")]
    pub service_account: Option<String>,
}

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// svc/NAME, or deploy/NAME for every Service that selects that Deployment.
    #[arg(value_name = "svc/NAME|deploy/NAME", add = ArgValueCompleter::new(completion::doctor_targets))]
    pub target: String,
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
    /// Where intercepted connections go on this machine [default: 127.0.0.1].
    #[arg(long)]
    pub address: Option<std::net::IpAddr>,
    /// The intercept's name [default: the workload's].
    #[arg(long)]
    pub name: Option<String>,
    /// Write the intercepted container's environment to this file.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The syntax of --env-file [default: docker].
    #[arg(long, value_enum)]
    pub env_syntax: Option<crate::cluster::env::EnvSyntax>,
    /// Write the environment as one JSON object to this file.
    #[arg(long, value_name = "FILE")]
    pub env_json: Option<PathBuf>,
    #[command(flatten)]
    pub route: RouteArgs,
}

/// Which of the port's traffic an intercept takes: all of it, unless a filter is given.
#[derive(clap::Args, Clone, Default, Debug)]
pub struct RouteArgs {
    /// Take only HTTP requests with this header (repeatable; all must match). `auto` makes
    /// up a header unique to this intercept, printed and in the environment as
    /// TETHER_INTERCEPT_HEADER.
    #[arg(long, value_name = "NAME=VALUE|auto")]
    pub http_header: Vec<String>,
    /// Take only HTTP requests whose header's whole value matches this regex (repeatable).
    #[arg(long, value_name = "NAME=REGEX")]
    pub http_header_regex: Vec<String>,
    /// Take only HTTP requests whose path starts with this.
    #[arg(long, value_name = "PATH", group = "http_path")]
    pub http_path_prefix: Option<String>,
    /// Take only HTTP requests whose path is exactly this.
    #[arg(long, value_name = "PATH", group = "http_path")]
    pub http_path_equal: Option<String>,
    /// Take only HTTP requests whose whole path matches this regex.
    #[arg(long, value_name = "REGEX", group = "http_path")]
    pub http_path_regex: Option<String>,
    /// Leave the app answering everything; send a copy of each request (of each
    /// connection's bytes, when it is not HTTP) here, and drop the answers.
    #[arg(long, conflicts_with = "replace")]
    pub mirror: bool,
    /// Stop the app container while the intercept is active: all of its ports come here,
    /// its probes are taken out, and `leave` puts it back (one rollout each way).
    #[arg(long, conflicts_with_all = ["http_header", "http_header_regex", "http_path"])]
    pub replace: bool,
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
    /// Run CMD in a user and network namespace of its own, with no root and no sudo
    /// [default when not root and the kernel allows unprivileged user namespaces].
    #[arg(long, conflicts_with = "no_rootless")]
    pub rootless: bool,
    /// Never run rootless: connect the whole machine, as root (through sudo if needed).
    #[arg(long)]
    pub no_rootless: bool,
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
    Version,
    ConfigView,
    Quit,
    Intercept(InterceptArgs),
    Completion(String),
    Run(Box<RunConfig>),
    Leave(String),
    List(KubeTarget),
    Doctor(String, KubeTarget),
    Rbac(KubeTarget, Option<crate::cluster::roles::Who>),
    Uninstall(KubeTarget, AgentsToRemove),
    /// What was typed cannot be run; the message says why.
    BadUsage(String),
    Daemon(PathBuf),
    ExecAs(ExecAsArgs),
    NamespaceHelper(crate::namespace::helper::HelperArgs),
}

/// `tether run`, with the connection's defaults filled in.
pub struct RunConfig {
    pub connect: ConnectConfig,
    pub intercept: Option<InterceptArgs>,
    pub quiet: bool,
    /// `--rootless` (Some(true)) or `--no-rootless` (Some(false)); None chooses.
    pub rootless: Option<bool>,
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
            Command::Version => Invocation::Version,
            Command::Config {
                action: ConfigAction::View,
            } => Invocation::ConfigView,
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
                    rootless: match (a.rootless, a.no_rootless) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    },
                    command: a.command,
                }))
            }
            Command::Leave { name } => Invocation::Leave(name),
            Command::List(a) => Invocation::List(a.kube.into_target(None)),
            Command::Doctor(a) => Invocation::Doctor(a.target, a.kube.into_target(None)),
            Command::Rbac(a) => {
                use crate::cluster::roles::Who;
                let who = match (a.user, a.group, a.service_account) {
                    (Some(u), _, _) => Some(Ok(Who::User(u))),
                    (_, Some(g), _) => Some(Ok(Who::Group(g))),
                    (_, _, Some(sa)) => Some(Who::service_account(&sa).ok_or(sa)),
                    _ => None,
                };
                match who.transpose() {
                    Ok(who) => Invocation::Rbac(a.kube.into_target(None), who),
                    Err(bad) => Invocation::BadUsage(format!(
                        "--service-account {bad:?} is not NAMESPACE:NAME"
                    )),
                }
            }
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
            Command::NamespaceHelper(a) => Invocation::NamespaceHelper(a),
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
            timeout: config::DEFAULT_CONNECT_TIMEOUT,
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
            _ => {
                let timeout = self.timeout.map_or(
                    config::DEFAULT_CONNECT_TIMEOUT,
                    std::time::Duration::from_secs,
                );
                Target::Kubernetes(KubeTarget {
                    timeout,
                    ..self.kube.into_target(self.manager_image)
                })
            }
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
                ingress_hosts: match (self.no_ingress_hosts, self.ingress_hosts) {
                    (true, _) | (false, Some(IngressHostsArg::Off)) => config::IngressHosts::Off,
                    (false, Some(IngressHostsArg::Override)) => config::IngressHosts::Override,
                    (false, Some(IngressHostsArg::Auto) | None) => config::IngressHosts::Auto,
                },
            },
            state_dir,
            owner: None,
            namespace: None,
        }
    }
}

impl Cli {
    /// Whether this command reads the config file (the daemon and the helpers do not).
    pub fn uses_config(&self) -> bool {
        !matches!(
            self.command,
            Command::Daemon(_)
                | Command::ExecAs(_)
                | Command::NamespaceHelper(_)
                | Command::Completion { .. }
        )
    }

    /// Fills what was not typed from `TETHER_*` variables and the config file, and says
    /// where the log level comes from.
    pub fn layer(&mut self, file: &FileConfig) -> Result<Option<String>, FileError> {
        match &mut self.command {
            Command::Connect(a) => a.layer(file)?,
            Command::Run(a) => {
                a.connect.layer(file)?;
                a.options.layer(file)?;
                let (quiet, _) = layer("quiet", a.quiet.then_some(true), file.quiet)?;
                a.quiet = quiet.unwrap_or(false);
            }
            Command::Intercept(a) => {
                a.options.layer(file)?;
                // The connection's namespace applies unless -n or a TETHER_NAMESPACE says
                // otherwise; the file's is for connecting.
                a.namespace = layer("namespace", a.namespace.take(), None)?.0;
            }
            Command::List(a) => a.kube.layer(file)?,
            Command::Doctor(a) => a.kube.layer(file)?,
            Command::Rbac(a) => a.kube.layer(file)?,
            Command::Uninstall(a) => a.kube.layer(file)?,
            _ => {}
        }
        Ok(layer("log-level", None, file.log_level.clone())?.0)
    }
}

impl KubeArgs {
    fn layer(&mut self, f: &FileConfig) -> Result<(), FileError> {
        self.kubeconfig = layer("kubeconfig", self.kubeconfig.take(), f.kubeconfig.clone())?.0;
        self.context = layer("context", self.context.take(), f.context.clone())?.0;
        self.namespace = layer("namespace", self.namespace.take(), f.namespace.clone())?.0;
        self.manager_namespace = layer(
            "manager-namespace",
            self.manager_namespace.take(),
            f.manager_namespace.clone(),
        )?
        .0;
        Ok(())
    }
}

impl ConnectArgs {
    fn layer(&mut self, f: &FileConfig) -> Result<(), FileError> {
        self.kube.layer(f)?;
        self.manager_image = layer(
            "manager-image",
            self.manager_image.take(),
            f.manager_image.clone(),
        )?
        .0;
        self.manager_address = layer(
            "manager-address",
            self.manager_address.take(),
            f.manager_address.clone(),
        )?
        .0;
        self.token_file = layer("token-file", self.token_file.take(), f.token_file.clone())?.0;
        self.also_proxy = layer_list(
            "also-proxy",
            std::mem::take(&mut self.also_proxy),
            f.also_proxy.clone(),
        )?;
        self.never_proxy = layer_list(
            "never-proxy",
            std::mem::take(&mut self.never_proxy),
            f.never_proxy.clone(),
        )?;
        self.timeout = layer("timeout", self.timeout.take(), f.timeout)?.0;
        self.tun_name = layer("tun-name", self.tun_name.take(), f.tun_name.clone())?.0;
        self.tun_subnet = layer("tun-subnet", self.tun_subnet.take(), f.tun_subnet)?.0;
        self.resolv_conf = layer(
            "resolv-conf",
            self.resolv_conf.take(),
            f.resolv_conf.clone(),
        )?
        .0;
        let file_dns = f.dns_mode.map(|m| match m {
            DnsModeKey::Auto => DnsModeArg::Auto,
            DnsModeKey::Resolved => DnsModeArg::Resolved,
            DnsModeKey::ResolvConf => DnsModeArg::ResolvConf,
        });
        self.dns_mode = layer_enum("dns-mode", self.dns_mode.take(), file_dns)?;
        if self.no_ingress_hosts {
            self.ingress_hosts = Some(IngressHostsArg::Off);
        }
        let file_ingress = f.ingress_hosts.map(|m| match m {
            IngressHostsKey::Auto => IngressHostsArg::Auto,
            IngressHostsKey::Override => IngressHostsArg::Override,
            IngressHostsKey::Off => IngressHostsArg::Off,
        });
        self.ingress_hosts = layer_enum("ingress-hosts", self.ingress_hosts.take(), file_ingress)?;
        Ok(())
    }
}

impl InterceptOptions {
    fn layer(&mut self, f: &FileConfig) -> Result<(), FileError> {
        self.address = layer("address", self.address.take(), f.address)?.0;
        self.env_syntax = layer_enum("env-syntax", self.env_syntax.take(), f.env_syntax)?;
        Ok(())
    }
}

/// [`layer`] for a list: the flag's values if any were typed, else the variable's
/// (comma-separated), else the file's.
fn layer_list<T: std::str::FromStr>(
    key: &'static str,
    typed: Vec<T>,
    file: Option<Vec<T>>,
) -> Result<Vec<T>, FileError>
where
    T::Err: std::fmt::Display,
{
    if !typed.is_empty() {
        return Ok(typed);
    }
    let var = crate::config::file::env_var(key);
    if let Some(value) = std::env::var_os(&var).filter(|v| !v.is_empty()) {
        let value = value.to_string_lossy().into_owned();
        return value
            .split(',')
            .map(|v| v.trim().parse::<T>())
            .collect::<Result<_, _>>()
            .map_err(|e| FileError::Env {
                var,
                key,
                value: value.clone(),
                reason: e.to_string(),
            });
    }
    Ok(file.unwrap_or_default())
}

/// [`layer`] for a clap value enum (spelled as on the command line).
fn layer_enum<T: ValueEnum + Clone>(
    key: &'static str,
    typed: Option<T>,
    file: Option<T>,
) -> Result<Option<T>, FileError> {
    struct Parsed<T>(T);
    impl<T: ValueEnum + Clone> std::str::FromStr for Parsed<T> {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            T::from_str(s, false).map(Parsed)
        }
    }
    let (v, _) = layer(key, typed.map(Parsed), file.map(Parsed))?;
    Ok(v.map(|p| p.0))
}

/// Paths handed to the daemon must not depend on its working directory.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
