//! A `tether-sandbox up --demo` cluster and its workstation, the stand-in for a laptop whose
//! only way into the cluster is the API server.
//!
//! Everything the laptop side runs (tether, curl, dig) goes through `tether-sandbox shell`,
//! which enters the workstation's network namespace with a private /etc/resolv.conf bind:
//! the host's own network and resolver are never touched. tether is pointed at that
//! resolver file by its path in the state directory, so even a `tether quit` run elsewhere
//! could only ever restore the workstation's file.
//!
//! The sandbox, and whatever tether daemon the test started, are stopped on drop, also when
//! the test failed; the sandbox's start first stops sandboxes (and their tether daemons) of
//! earlier runs whose test process is gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::{Sandbox, TETHER_STATE};
use crate::{COMMAND_DEADLINE, Proc, bin, check, run, run_within, wait_for};

pub struct SandboxCluster {
    // Fields drop in order: the workstation's own DNS server ends before the sandbox.
    /// The workstation's own DNS server (for names outside the cluster).
    _outside_dns: Proc,
    pub sandbox: Sandbox,
    pub kubeconfig: PathBuf,
    /// What the names of the sandbox's network namespaces start with.
    pub netns_prefix: String,
    /// The workstation's network namespace.
    pub workstation: String,
    /// The resolver file the workstation sees as /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// tether's state directory (socket, log, session record).
    pub tether_state: PathBuf,
    /// Daemons the test's `tether connect` runs started, killed on drop if still alive.
    daemons: Mutex<Vec<u32>>,
}

/// The workstation's resolver before tether: a DNS server on its loopback that knows only
/// this name, standing in for the laptop's usual resolver.
pub const OUTSIDE_NAME: &str = "outside.example.test";
pub const OUTSIDE_IP: &str = "192.0.2.7";
const OUTSIDE_DNS: &str = "127.0.0.153";

impl SandboxCluster {
    /// Starts a sandbox with the demo namespace (its pods are Ready when this returns).
    pub fn start() -> SandboxCluster {
        SandboxCluster::start_with(&[])
    }

    /// [`SandboxCluster::start`] with more `up` arguments, e.g. `["--control-plane",
    /// "upstream"]` for a scenario only the real control plane can judge.
    pub fn start_with(up_args: &[&str]) -> SandboxCluster {
        let mut args = vec!["--demo"];
        args.extend_from_slice(up_args);
        let sandbox = Sandbox::start_with(&args);
        let netns_prefix = sandbox.netns_prefix();
        let workstation = format!("{netns_prefix}-ws");
        // `ip netns exec` execs the server itself, so the child is the server.
        let mut dns = Proc::start(
            "the workstation's DNS server",
            Command::new("ip")
                .args(["netns", "exec", &workstation])
                .arg(bin("tether-testkit"))
                .args(["dns", "--listen", &format!("{OUTSIDE_DNS}:53"), "--record"])
                .arg(format!("{OUTSIDE_NAME}={OUTSIDE_IP}")),
        );
        dns.wait_line(Duration::from_secs(10), |l| l == "ready");
        let cluster = SandboxCluster {
            kubeconfig: sandbox.kubeconfig.clone(),
            resolv_conf: sandbox.dir().join("workstation/resolv.conf"),
            tether_state: sandbox.dir().join(TETHER_STATE),
            _outside_dns: dns,
            sandbox,
            netns_prefix,
            workstation,
            daemons: Mutex::new(Vec::new()),
        };
        // The first shell creates the workstation's resolver file; then it gets its own.
        check(&mut cluster.shell("true"));
        std::fs::write(
            &cluster.resolv_conf,
            format!("nameserver {OUTSIDE_DNS}\noptions timeout:2 attempts:1\n"),
        )
        .expect("write the workstation's resolv.conf");
        assert_eq!(cluster.dig(&[OUTSIDE_NAME]), [OUTSIDE_IP]);
        cluster
    }

    /// The sandbox's state directory.
    pub fn dir(&self) -> &Path {
        self.sandbox.dir()
    }

    /// A command run in the workstation (with KUBECONFIG set to the sandbox's).
    pub fn shell(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(bin("tether-sandbox"));
        cmd.args(["shell", "--state-dir"])
            .arg(self.dir())
            .arg("--")
            .arg(program);
        cmd
    }

    /// `tether` in the workstation, with the test's state directory.
    pub fn tether(&self) -> Command {
        let mut cmd = self.shell(bin("tether"));
        cmd.arg("--state-dir").arg(&self.tether_state);
        cmd
    }

    /// `tether connect` for the demo namespace, with DNS through the workstation's
    /// resolver file.
    pub fn connect_command(&self) -> Command {
        let mut cmd = self.tether();
        cmd.args(["connect", "-n", "demo", "--dns-mode", "resolv-conf"])
            .arg("--resolv-conf")
            .arg(&self.resolv_conf);
        cmd
    }

    /// Runs `tether connect --output json`, which must succeed; returns its JSON result
    /// and its stderr (the progress lines).
    pub fn connect(&self) -> (serde_json::Value, String) {
        self.connect_with(&[])
    }

    /// [`SandboxCluster::connect`] with more arguments, e.g. `["--kubeconfig", PATH]` to
    /// connect as another user.
    pub fn connect_with(&self, args: &[&str]) -> (serde_json::Value, String) {
        let out = run(self.connect_command().args(args).args(["--output", "json"]));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "tether connect failed ({}):\n{stdout}{stderr}\n{}",
            out.status,
            self.daemon_log()
        );
        let json: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("connect printed no JSON ({e}): {stdout}"));
        crate::events::assert_documented(&json);
        if let Some(pid) = json["pid"].as_u64() {
            self.daemons
                .lock()
                .expect("no test thread panicked holding it")
                .push(pid as u32);
        }
        (json, stderr)
    }

    /// `tether status --output json`.
    pub fn status(&self) -> serde_json::Value {
        let out = check(self.tether().args(["status", "--output", "json"]));
        let status =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("status JSON ({e}): {out}"));
        crate::events::assert_documented(&status);
        status
    }

    /// `kubectl` with the sandbox's kubeconfig, arguments to follow.
    pub fn kubectl(&self) -> Command {
        self.sandbox.kubectl_cmd(&[])
    }

    /// A JSONPath of objects, e.g. `("demo", ["svc", "api"], "{.spec.clusterIP}")`; an
    /// empty namespace for cluster-scoped ones.
    pub fn jsonpath(&self, namespace: &str, object: &[&str], path: &str) -> String {
        self.sandbox.jsonpath(namespace, object, path)
    }

    /// `curl -s URL` in the workstation: its body, or None when it failed.
    pub fn curl(&self, url: &str) -> Option<String> {
        let out = run(self.shell("curl").args(["-sS", "--max-time", "5", url]));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `dig +short ARGS` in the workstation, answers sorted.
    pub fn dig(&self, args: &[&str]) -> Vec<String> {
        let out = check(
            self.shell("dig")
                .args(["+short", "+time=3", "+tries=1"])
                .args(args),
        );
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    /// The workstation's links, addresses, routes and resolver file, to compare before and
    /// after a session.
    pub fn snapshot(&self) -> String {
        let ip = |args: &[&str]| {
            check(
                Command::new("ip")
                    .arg("-n")
                    .arg(&self.workstation)
                    .args(args),
            )
        };
        let resolv = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
        format!(
            "# links\n{}# addresses\n{}# routes\n{}# resolv.conf\n{resolv}",
            ip(&["-o", "link", "show"]),
            ip(&["-o", "addr", "show"]),
            ip(&["route", "show", "table", "all"]),
        )
    }

    /// The last lines of the tether daemon's log, for failure messages.
    pub fn daemon_log(&self) -> String {
        crate::log_tail(&self.tether_state.join("daemon.log"), 30)
    }

    /// Waits until the daemon `pid` (one this test started) has exited.
    pub fn wait_daemon_gone(&self, pid: u32, deadline: Duration) {
        wait_for(&format!("tether daemon {pid} to exit"), deadline, || {
            (!alive(pid)).then_some(())
        });
    }
}

/// Whether `pid` runs (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for SandboxCluster {
    fn drop(&mut self) {
        // run_within, not run: a panic here while a failed test unwinds would abort.
        let _ = run_within(self.tether().arg("quit"), COMMAND_DEADLINE);
        for pid in self.daemons.lock().map(|d| d.clone()).unwrap_or_default() {
            if alive(pid) {
                let mut kill = Command::new("kill");
                kill.args(["-KILL", &pid.to_string()]);
                let _ = run_within(&mut kill, COMMAND_DEADLINE);
            }
        }
        let _ = run_within(self.tether().arg("quit"), COMMAND_DEADLINE);
        if std::thread::panicking() {
            eprintln!("{}", self.daemon_log());
        }
        // The sandbox stops when its field drops.
    }
}
