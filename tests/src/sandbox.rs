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
//! the test failed; [`SandboxCluster::start`] first stops sandboxes of earlier runs whose
//! test process is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use crate::{bin, check, run, wait_for};

/// Prefix of the state directories in the temp dir; `-<pid>-<n>` follows.
const DIR_PREFIX: &str = "tether-e2e-sandbox";

pub struct SandboxCluster {
    pub dir: PathBuf,
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
    /// The workstation's own DNS server (for names outside the cluster).
    _outside_dns: Background,
}

/// The workstation's resolver before tether: a DNS server on its loopback that knows only
/// this name, standing in for the laptop's usual resolver.
pub const OUTSIDE_NAME: &str = "outside.example.test";
pub const OUTSIDE_IP: &str = "192.0.2.7";
const OUTSIDE_DNS: &str = "127.0.0.153";

/// A process started in the workstation; killed and reaped on drop.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl SandboxCluster {
    /// Starts a sandbox with the demo namespace (its pods are Ready when this returns).
    pub fn start() -> SandboxCluster {
        remove_leftovers();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sandbox state directory");
        check(
            Command::new(bin("tether-sandbox"))
                .args(["up", "--demo", "--state-dir"])
                .arg(&dir),
        );
        let netns_prefix = std::fs::read_to_string(dir.join("netns-prefix"))
            .expect("the sandbox names its network namespaces' prefix")
            .trim()
            .to_owned();
        let workstation = format!("{netns_prefix}-ws");
        // `ip netns exec` execs the server itself, so the child is the server.
        let mut dns = Command::new("ip")
            .args(["netns", "exec", &workstation])
            .arg(bin("tether-testkit"))
            .args(["dns", "--listen", &format!("{OUTSIDE_DNS}:53"), "--record"])
            .arg(format!("{OUTSIDE_NAME}={OUTSIDE_IP}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the workstation's DNS server");
        let mut ready = String::new();
        let stdout = dns.stdout.take().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready)
            .expect("the DNS server starts");
        assert_eq!(ready.trim(), "ready", "the workstation's DNS server");
        let cluster = SandboxCluster {
            kubeconfig: dir.join("kubeconfig"),
            _outside_dns: Background(dns),
            netns_prefix,
            workstation,
            resolv_conf: dir.join("workstation/resolv.conf"),
            tether_state: dir.join("tether"),
            dir,
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

    /// A command run in the workstation (with KUBECONFIG set to the sandbox's).
    pub fn shell(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(bin("tether-sandbox"));
        cmd.args(["shell", "--state-dir"])
            .arg(&self.dir)
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
        let out = run(self.connect_command().args(["--output", "json"]));
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
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("status JSON ({e}): {out}"))
    }

    /// `kubectl` with the sandbox's kubeconfig (its API server also listens on the host's
    /// loopback; this reads and deletes objects, it changes no network).
    /// `TETHER_KUBECTL` names another kubectl, as for the sandbox's own tests.
    pub fn kubectl(&self) -> Command {
        let kubectl = std::env::var("TETHER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// A JSONPath of objects, e.g. `("demo", ["svc", "api"], "{.spec.clusterIP}")`; an
    /// empty namespace for cluster-scoped ones.
    pub fn jsonpath(&self, namespace: &str, object: &[&str], path: &str) -> String {
        let mut cmd = self.kubectl();
        if !namespace.is_empty() {
            cmd.args(["-n", namespace]);
        }
        check(
            cmd.arg("get")
                .args(object)
                .arg(format!("-o=jsonpath={path}")),
        )
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

    pub fn daemon_log(&self) -> String {
        let log = self.tether_state.join("daemon.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {}:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
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
        let _ = run(self.tether().arg("quit"));
        for pid in self.daemons.lock().map(|d| d.clone()).unwrap_or_default() {
            if alive(pid) {
                let _ = run(Command::new("kill").args(["-KILL", &pid.to_string()]));
            }
        }
        let _ = run(self.tether().arg("quit"));
        stop(&self.dir);
        if std::thread::panicking() {
            eprintln!("sandbox and tether logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn stop(dir: &Path) {
    // A daemon of a killed run is asked to quit through its socket; it undoes its changes
    // inside the workstation. (The resolver file it may restore is the workstation's.)
    let _ = run(Command::new(bin("tether"))
        .arg("--state-dir")
        .arg(dir.join("tether"))
        .arg("quit"));
    let _ = run(Command::new(bin("tether-sandbox"))
        .args(["down", "--state-dir"])
        .arg(dir));
}

/// Stops the sandboxes of earlier runs whose test process is gone (a killed CI job).
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{DIR_PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            stop(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Output as text, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
