//! The direct-mode topology: a "cluster" namespace running the manager and a few servers, a
//! "laptop" namespace with its own resolver, and one veth link between them that carries
//! only the tunnel (the cluster's service addresses are not routed to the laptop).

use std::path::PathBuf;
use std::time::Duration;

use crate::{Netns, Proc, bin, unique};

pub const MANAGER: &str = "172.30.0.1:8022";
pub const WEB_IP: &str = "10.96.1.10";
pub const ECHO_IP: &str = "10.96.1.20";
pub const CLUSTER_DNS_IP: &str = "10.96.0.53";
pub const UPSTREAM_DNS_IP: &str = "10.53.0.53";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const WEB_BODY: &str = "hello from web";
/// A non-cluster name that only the laptop's own upstream resolver knows.
pub const OUTSIDE_NAME: &str = "intranet.example";
pub const OUTSIDE_IP: &str = "203.0.113.7";
/// A name with more A records than fit in a 512-byte UDP answer (a headless Service with
/// many pods looks like this): answering it needs DNS over TCP.
pub const MANY_NAME: &str = "many.shop.svc.cluster.local";
pub const MANY_COUNT: usize = 60;

pub const LAPTOP_RESOLV_CONF: &str = "nameserver 10.53.0.53\noptions timeout:2\n";

pub struct DirectCluster {
    // Fields drop in order: processes end before their namespaces are deleted.
    _servers: Vec<Proc>,
    pub cluster: Netns,
    pub laptop: Netns,
    pub token_file: PathBuf,
    pub state_dir: PathBuf,
}

impl DirectCluster {
    pub fn start() -> DirectCluster {
        crate::remove_leftovers();
        let cluster = Netns::new(unique("c"));
        let laptop = Netns::new(unique("l"));
        laptop.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &cluster.name,
        ]);
        cluster.ip(&["addr", "add", "172.30.0.1/30", "dev", "veth1"]);
        cluster.ip(&["link", "set", "veth1", "up"]);
        laptop.ip(&["addr", "add", "172.30.0.2/30", "dev", "veth0"]);
        laptop.ip(&["link", "set", "veth0", "up"]);
        crate::wait_for("the veth link to come up", Duration::from_secs(10), || {
            laptop
                .ip(&["-o", "link", "show", "veth0"])
                .contains("state UP")
                .then_some(())
        });
        for ip in [WEB_IP, ECHO_IP, CLUSTER_DNS_IP] {
            cluster.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        laptop.ip(&["addr", "add", &format!("{UPSTREAM_DNS_IP}/32"), "dev", "lo"]);
        cluster.set_resolv_conf(&format!(
            "nameserver {CLUSTER_DNS_IP}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        ));
        laptop.set_resolv_conf(LAPTOP_RESOLV_CONF);

        let scratch = std::env::temp_dir().join(&laptop.name);
        std::fs::create_dir_all(&scratch).expect("create the test's scratch directory");
        let token_file = scratch.join("token");
        std::fs::write(&token_file, format!("token-{}\n", laptop.name)).expect("write the token");
        let state_dir = scratch.join("state");

        let kit = bin("tether-testkit");
        let mut cluster_dns_args: Vec<String> =
            ["dns", "--listen", &format!("{CLUSTER_DNS_IP}:53")]
                .into_iter()
                .map(str::to_owned)
                .collect();
        let records = [
            format!("web.shop.svc.cluster.local={WEB_IP}"),
            format!("echo.shop.svc.cluster.local={ECHO_IP}"),
        ];
        let many = (1..=MANY_COUNT).map(|i| format!("{MANY_NAME}=10.96.2.{i}"));
        for record in records.into_iter().chain(many) {
            cluster_dns_args.extend(["--record".to_owned(), record]);
        }
        let mut servers = vec![
            cluster.spawn(
                "web",
                &kit,
                &[
                    "http",
                    "--listen",
                    &format!("{WEB_IP}:80"),
                    "--body",
                    WEB_BODY,
                ],
            ),
            cluster.spawn(
                "probe",
                &kit,
                &["probe-server", "--listen", &format!("{WEB_IP}:9000")],
            ),
            cluster.spawn(
                "echo",
                &kit,
                &["udp-echo", "--listen", &format!("{ECHO_IP}:7")],
            ),
            cluster.spawn(
                "cluster-dns",
                &kit,
                &cluster_dns_args
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
            laptop.spawn(
                "upstream-dns",
                &kit,
                &[
                    "dns",
                    "--listen",
                    &format!("{UPSTREAM_DNS_IP}:53"),
                    "--record",
                    &format!("{OUTSIDE_NAME}={OUTSIDE_IP}"),
                ],
            ),
        ];
        for server in &mut servers {
            server.wait_line(Duration::from_secs(10), |l| l == "ready");
        }
        let token = token_file.to_str().expect("temp paths are UTF-8");
        let manager = cluster.spawn(
            "manager",
            bin("tether-agent"),
            &["manager", "--listen", MANAGER, "--token-file", token],
        );
        let cluster_ns = cluster.name.clone();
        crate::wait_for("the manager to listen", Duration::from_secs(10), || {
            let out = crate::run(std::process::Command::new("ip").args([
                "netns",
                "exec",
                &cluster_ns,
                "ss",
                "-Htln",
            ]));
            String::from_utf8_lossy(&out.stdout)
                .contains(MANAGER)
                .then_some(())
        });
        servers.push(manager);
        DirectCluster {
            cluster,
            laptop,
            token_file,
            state_dir,
            _servers: servers,
        }
    }

    /// `tether` run inside the laptop namespace with this topology's state directory.
    pub fn tether(&self) -> std::process::Command {
        let mut cmd = self.laptop.cmd(bin("tether"));
        cmd.env("TETHER_STATE_DIR", &self.state_dir);
        cmd
    }

    /// Starts `tether connect` in the laptop and waits until it reports that it is connected.
    pub fn connect(&self, extra: &[&str]) -> Proc {
        let token = self.token_file.to_str().expect("temp paths are UTF-8");
        let mut args = vec![
            "--output",
            "json",
            "--state-dir",
            self.state_dir.to_str().expect("UTF-8"),
            "connect",
            "--manager-address",
            MANAGER,
            "--token-file",
            token,
            "--also-proxy",
            SERVICE_CIDR,
        ];
        args.extend_from_slice(extra);
        let mut tether = self.laptop.spawn("tether-connect", bin("tether"), &args);
        // Earlier events (e.g. the clean-up after a crashed session) come first.
        tether.wait_line(Duration::from_secs(20), |line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|event| event["event"] == "connected")
        });
        tether
    }
}

impl DirectCluster {
    /// The manager's pid (it is the last process started).
    pub fn manager_pid(&self) -> u32 {
        self._servers
            .last()
            .expect("the manager is started last")
            .pid()
    }
}

impl Drop for DirectCluster {
    fn drop(&mut self) {
        if let Some(scratch) = self.token_file.parent() {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}
