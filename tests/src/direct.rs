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
    manager: Option<Proc>,
    _servers: Vec<Proc>,
    pub cluster: Netns,
    pub laptop: Netns,
    pub token_file: PathBuf,
    pub state_dir: PathBuf,
    /// Holds the token file and the state directory; removed on drop.
    _scratch: tempfile::TempDir,
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

        let scratch = tempfile::Builder::new()
            .prefix(&format!("{}-", laptop.name))
            .tempdir()
            .expect("create the test's scratch directory");
        let token_file = scratch.path().join("token");
        std::fs::write(&token_file, format!("token-{}\n", laptop.name)).expect("write the token");
        let state_dir = scratch.path().join("state");

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
        let mut dc = DirectCluster {
            manager: None,
            cluster,
            laptop,
            token_file,
            state_dir,
            _servers: servers,
            _scratch: scratch,
        };
        dc.start_manager();
        dc
    }

    /// `tether` run inside the laptop namespace with this topology's state directory.
    pub fn tether(&self) -> std::process::Command {
        let mut cmd = self.laptop.cmd(bin("tether"));
        cmd.env("TETHER_STATE_DIR", &self.state_dir);
        cmd
    }

    /// The arguments of `tether connect` to this topology's manager, then `extra`.
    pub fn connect_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--output",
            "json",
            "--state-dir",
            self.state_dir.to_str().expect("UTF-8"),
            "connect",
            "--manager-address",
            MANAGER,
            "--token-file",
            self.token_file.to_str().expect("temp paths are UTF-8"),
            "--also-proxy",
            SERVICE_CIDR,
        ];
        args.extend_from_slice(extra);
        args
    }

    /// Runs `tether connect` in the laptop; it returns once the daemon reports that traffic
    /// flows. The daemon is killed when the handle is dropped, should the test fail first.
    pub fn connect(&self, extra: &[&str]) -> Daemon {
        let out = crate::run(
            self.laptop
                .cmd(bin("tether"))
                .args(self.connect_args(extra)),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "tether connect failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Earlier events (e.g. the clean-up after a crashed session) come first.
        let connected = crate::events::parse_all(&stdout)
            .into_iter()
            .find(|event| event["event"] == "connected")
            .unwrap_or_else(|| panic!("tether connect did not report connected: {stdout}"));
        let pid = connected["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .expect("the connected event names the daemon's pid");
        Daemon { pid, connected }
    }

    /// `tether status --output json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = crate::check(self.tether().args(["status", "--output", "json"]));
        let status = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("status is JSON ({e}): {out}"));
        crate::events::assert_documented(&status);
        status
    }

    /// Kills the manager (as a crash or a restart would) without starting it again.
    pub fn stop_manager(&mut self) {
        if let Some(manager) = self.manager.take() {
            drop(manager);
        }
    }

    /// Starts the manager (again) and waits until it listens.
    pub fn start_manager(&mut self) {
        self.stop_manager();
        let token = self.token_file.to_str().expect("temp paths are UTF-8");
        let manager = self.cluster.spawn(
            "manager",
            bin("tether-agent"),
            &["manager", "--listen", MANAGER, "--token-file", token],
        );
        let cluster_ns = self.cluster.name.clone();
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
        self.manager = Some(manager);
    }

    /// The manager's pid.
    pub fn manager_pid(&self) -> u32 {
        self.manager.as_ref().expect("the manager runs").pid()
    }
}

/// A tether daemon started by `tether connect`. It is not this test's child, so it is
/// watched through /proc; dropping the handle kills it if it still runs.
pub struct Daemon {
    pub pid: u32,
    /// The `connected` event connect printed.
    pub connected: serde_json::Value,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True while the pid runs a tether binary (not a zombie, not a reused pid).
    pub fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some((head, tail)) = stat.rsplit_once(')') else {
            return false;
        };
        let state = tail.split_whitespace().next().unwrap_or("");
        head.ends_with("(tether") && state != "Z" && state != "X"
    }

    pub fn signal(&self, signal: &str) {
        crate::check(
            std::process::Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(self.pid.to_string()),
        );
    }

    /// Waits until the daemon is gone; panics after `deadline`.
    pub fn wait(&self, deadline: Duration) {
        crate::wait_for(
            &format!("the tether daemon (pid {}) to exit", self.pid),
            deadline,
            || (!self.alive()).then_some(()),
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: kill has no memory-safety preconditions; the pid was checked above to
            // be the tether daemon this test started.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}
