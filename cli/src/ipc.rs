//! The daemon's Unix socket: one JSON object per line in each direction.
//!
//! A client sends one [`Request`] and reads [`Reply`] lines: `status` gets one `status`
//! reply; `quit` gets `disconnected` once everything is undone; `watch` gets every progress
//! event of the daemon's start, from the first, ending with `connected` or `failed`. New
//! requests (intercepts) are new variants of [`Request`]; a daemon that does not know one
//! closes the connection, which the client reports as an old daemon.
//! The socket is mode 0600 and owned by the user who ran `tether connect`, so only that
//! user (and root) can stop or inspect the session.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use tether_tunnel::wire::route::Route;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use crate::system::leftovers::Cleanup;
use crate::system::state::DnsMode;

/// A client's one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Quit,
    Watch,
    Intercept(Box<InterceptSpec>),
    Leave { name: String },
}

/// What `tether intercept` asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptSpec {
    /// The intercept's name; the workload's when not given.
    pub name: Option<String>,
    pub namespace: String,
    /// The Deployment's name.
    pub workload: String,
    pub service: Option<String>,
    /// A Service port's name or number.
    pub port: Option<String>,
    pub container: Option<String>,
    pub address: IpAddr,
    pub local_port: u16,
    /// The intercept ends when this process does (`tether run`).
    #[serde(default)]
    pub owner: Option<u32>,
    /// Which of the port's traffic it takes.
    #[serde(default)]
    pub route: Route,
    /// The app container stops while the intercept is active.
    #[serde(default)]
    pub replace: bool,
}

/// One active intercept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptInfo {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub service: String,
    pub service_port: u16,
    pub service_port_name: Option<String>,
    pub container: String,
    /// The app container's port that the Service targeted.
    pub app_port: u16,
    /// The sidecar's port that now takes the Service's traffic.
    pub sidecar_port: u16,
    /// Where intercepted connections go, `address:port`.
    pub local: String,
    /// The pods whose sidecar sends traffic here now.
    pub pods: Vec<String>,
    /// Which of the port's traffic it takes.
    #[serde(default)]
    pub route: Route,
    /// `--replace`: the app container does not run meanwhile.
    #[serde(default)]
    pub replace: bool,
    /// The header `--http-header auto` made up, `name: value`, to tag one's own requests.
    #[serde(default)]
    pub header: Option<String>,
}

/// One line from the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Reply {
    /// A step of the start, for the user to follow.
    Progress {
        message: String,
    },
    /// Leftovers of a crashed session were undone before this one started.
    CleanedUp(Cleanup),
    Connected {
        status: Box<Status>,
    },
    /// The start failed; `error` is the message for the user, `exit_code` tether's.
    Failed {
        error: String,
        exit_code: u8,
    },
    Status {
        status: Box<Status>,
    },
    Disconnected {
        manager: String,
        pid: u32,
    },
    /// An intercept is active on every Ready pod. `env` is the intercepted container's
    /// environment (for the env files); `warnings` what the user should know.
    Intercepted {
        intercept: Box<InterceptInfo>,
        env: BTreeMap<String, String>,
        warnings: Vec<String>,
    },
    Left {
        intercept: Box<InterceptInfo>,
    },
}

/// How the manager is reached.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A manager at a known address.
    Direct,
    /// The manager in a Kubernetes cluster, through the API server's port-forward.
    Kubernetes,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    Connecting,
    Connected,
    Reconnecting,
}

/// Everything `tether status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The daemon's pid.
    pub pid: u32,
    /// The daemon's tether version (empty from daemons built before it was reported).
    #[serde(default)]
    pub daemon_version: String,
    pub mode: Mode,
    /// Names of the kubeconfig context, cluster and namespace, as the daemon was given them.
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub state: SessionState,
    pub manager: ManagerStatus,
    pub device: String,
    /// The device's own address, with the TUN subnet's prefix length.
    pub device_address: Ipv4Net,
    pub routes: Vec<IpNet>,
    pub dns: DnsStatus,
    /// When the current tunnel came up; none while (re)connecting.
    pub connected_since: Option<jiff::Timestamp>,
    /// How often the tunnel was re-established after it dropped.
    pub reconnects: u64,
    /// TCP connections from this machine into routed subnets.
    pub open_flows: u64,
    /// The daemon's log file.
    pub log: PathBuf,
    /// Active intercepts (none from daemons built before intercepts).
    #[serde(default)]
    pub intercepts: Vec<InterceptInfo>,
    /// A rootless run's session: the device is in its namespace, not on this machine.
    #[serde(default)]
    pub rootless: Option<RootlessStatus>,
    /// The hosts of Ingress rules this machine resolves, and to what.
    #[serde(default)]
    pub ingress_hosts: Vec<IngressHost>,
}

/// A host named in an Ingress rule, as this machine resolves it while connected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressHost {
    pub host: String,
    /// Where it resolves: the ingress controller's ClusterIP (through the tunnel), else its
    /// load-balancer address.
    pub address: Ipv4Addr,
    /// The Ingress that names it, `namespace/name`.
    pub ingress: String,
    /// `auto` (public DNS first) or `override`.
    pub precedence: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootlessStatus {
    /// The namespace's first process (it runs CMD).
    pub helper_pid: u32,
    /// The address that stands for this machine's loopback inside the namespace.
    pub host_address: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct ManagerStatus {
    pub address: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsStatus {
    pub mode: DnsMode,
    pub server: Ipv4Addr,
    pub domain: String,
    pub search: Vec<String>,
}

/// An open request: the daemon's reply lines.
pub struct Replies {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    // Kept so the daemon does not see the client go away while it still answers.
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Replies {
    /// Closes this end for writing: the daemon sees the client go, and cancels what it was
    /// asked to do (it still answers).
    pub async fn hang_up(&mut self) {
        let _ = self._write.shutdown().await;
    }

    /// The next reply; `Ok(None)` when the daemon closed the connection.
    pub async fn next(&mut self) -> std::io::Result<Option<Reply>> {
        match self.lines.next_line().await? {
            None => Ok(None),
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Sends `request` to the daemon listening on `socket`.
pub async fn send(socket: &Path, request: Request) -> std::io::Result<Replies> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(encode(&request).as_bytes()).await?;
    Ok(Replies {
        lines: BufReader::new(read).lines(),
        _write: write,
    })
}

/// Encodes one message as a line.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Requests and replies are plain data: strings, numbers, addresses and paths.
    let mut line = serde_json::to_string(message).expect("socket messages serialize");
    line.push('\n');
    line
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(encode(&Request::Status), "{\"cmd\":\"status\"}\n");
        let reply = Reply::Failed {
            error: "no".into(),
            exit_code: 4,
        };
        let line = encode(&reply);
        assert_eq!(
            line,
            "{\"event\":\"failed\",\"error\":\"no\",\"exit_code\":4}\n"
        );
        assert!(matches!(
            serde_json::from_str::<Reply>(line.trim()).unwrap(),
            Reply::Failed { exit_code: 4, .. }
        ));
    }

    /// A status as a connected Kubernetes-mode daemon reports it, for tests.
    pub fn example() -> Status {
        Status {
            pid: 4242,
            daemon_version: "0.1.0".into(),
            mode: Mode::Kubernetes,
            context: Some("tether-sandbox".into()),
            cluster: Some("https://127.0.0.1:6443".into()),
            namespace: Some("demo".into()),
            state: SessionState::Connected,
            manager: ManagerStatus {
                address: "tether/tether-manager-6d9f-x2k4p".into(),
                version: "0.1.0".into(),
            },
            device: "tether0".into(),
            device_address: "198.18.0.1/30".parse().unwrap(),
            routes: vec!["10.96.0.0/16".parse().unwrap()],
            dns: DnsStatus {
                mode: DnsMode::ResolvConf,
                server: Ipv4Addr::new(198, 18, 0, 2),
                domain: "cluster.local".into(),
                search: vec!["demo.svc.cluster.local".into()],
            },
            connected_since: Some("2026-12-01T10:00:00Z".parse().unwrap()),
            reconnects: 0,
            open_flows: 1,
            log: "/run/tether/daemon.log".into(),
            intercepts: vec![intercept_example()],
            rootless: None,
            ingress_hosts: vec![IngressHost {
                host: "shop.example.test".into(),
                address: Ipv4Addr::new(10, 96, 0, 40),
                ingress: "demo/shop".into(),
                precedence: "auto".into(),
            }],
        }
    }

    /// An intercept of the demo's `web`, for tests.
    pub fn intercept_example() -> InterceptInfo {
        InterceptInfo {
            name: "web".into(),
            namespace: "demo".into(),
            workload: "web".into(),
            service: "web".into(),
            service_port: 80,
            service_port_name: Some("http".into()),
            container: "http-echo".into(),
            app_port: 8080,
            sidecar_port: 47100,
            local: "127.0.0.1:8080".into(),
            pods: vec!["web-5d8c7b9f4-abcde".into(), "web-5d8c7b9f4-fghij".into()],
            route: Route::default(),
            replace: false,
            header: None,
        }
    }

    #[test]
    fn status_fields_are_typed_and_read_as_before() {
        let status = Status {
            state: SessionState::Reconnecting,
            ..example()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["mode"], "kubernetes");
        assert_eq!(json["state"], "reconnecting");
        assert_eq!(json["manager"]["version"], "0.1.0");
        assert_eq!(json["device_address"], "198.18.0.1/30");
        assert_eq!(json["routes"][0], "10.96.0.0/16");
        assert_eq!(json["dns"]["mode"], "resolv-conf");
        assert_eq!(json["dns"]["server"], "198.18.0.2");
        assert_eq!(json["connected_since"], "2026-12-01T10:00:00Z");
        assert_eq!(serde_json::from_value::<Status>(json).unwrap(), status);
    }
}
