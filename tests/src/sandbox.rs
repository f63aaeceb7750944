//! A `tether-sandbox` cluster per test: `up` in a fresh temporary state directory, `down`
//! when dropped (also when the test fails), and the ways a test talks to it: the kubeconfig,
//! a kube client, and the real kubectl.
//!
//! This is the one harness every crate's sandbox tests share (cli, agent, sandbox and the
//! end-to-end scenarios); [`workstation`] adds the laptop stand-in that tether runs in.
//!
//! The state directory comes from `tempfile` and is removed on drop, even on panic; a
//! failing test prints the tail of the server's log instead, and `TETHER_KEEP_TEST_DIRS=1`
//! keeps the directory for a closer look. Its name carries the test process's pid, so a
//! later start stops the sandboxes of runs that were killed before they could clean up.

pub mod workstation;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{COMMAND_DEADLINE, KEEP_ENV, bin, bin_path, run_within, text};

pub use workstation::{OUTSIDE_IP, OUTSIDE_NAME, SandboxCluster, alive};

/// What the state directories' names start with; `<pid>-` and a random suffix follow.
const DIR_PREFIX: &str = "tether-sandbox-test-";

/// Where tests that run tether keep its state, inside the sandbox's state directory, so
/// that the sweep of a killed run can ask that run's daemon to quit.
pub(crate) const TETHER_STATE: &str = "tether";

pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    pub kubeconfig: PathBuf,
}

impl Sandbox {
    /// `tether-sandbox up`: an empty cluster (the bootstrap objects only).
    pub fn start() -> Sandbox {
        Sandbox::start_with(&[])
    }

    /// `tether-sandbox up ARGS`, e.g. `["--demo"]`, which returns once the demo is Ready.
    pub fn start_with(up_args: &[&str]) -> Sandbox {
        remove_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("create the sandbox's state directory");
        let sandbox = Sandbox {
            kubeconfig: dir.path().join("kubeconfig"),
            dir: Some(dir),
        };
        let mut args = vec!["up"];
        args.extend_from_slice(up_args);
        sandbox.up_with(&args);
        sandbox
    }

    /// The state directory: kubeconfig, credentials, `state.json`, the server's log.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory is only taken on drop")
            .path()
    }

    /// `tether-sandbox ARGS --state-dir DIR`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("tether-sandbox"));
        cmd.args(args).arg("--state-dir").arg(self.dir());
        cmd
    }

    /// Runs `tether-sandbox ARGS` against this state directory, whatever its outcome.
    pub fn run(&self, args: &[&str]) -> Output {
        crate::run(&mut self.command(args))
    }

    /// `up` (again), which must succeed; returns what it printed.
    pub fn up(&self) -> String {
        self.up_with(&["up"])
    }

    fn up_with(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tether-sandbox {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            text(&out),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `down`, which must succeed.
    pub fn down(&self) {
        let out = self.run(&["down"]);
        assert!(out.status.success(), "down failed: {}", text(&out));
    }

    /// The API server's port on the host's loopback.
    pub fn port(&self) -> u16 {
        let port = std::fs::read_to_string(self.dir().join("port")).expect("the port file");
        port.trim().parse().expect("the port file holds a port")
    }

    /// The running server's pid.
    pub fn pid(&self) -> u32 {
        read_pid(self.dir()).expect("the server writes its pid once it listens")
    }

    /// What the names of the sandbox's network namespaces start with (`<prefix>-node`, ...).
    pub fn netns_prefix(&self) -> String {
        std::fs::read_to_string(self.dir().join("netns-prefix"))
            .expect("the sandbox writes its network namespaces' prefix")
            .trim()
            .to_owned()
    }

    /// A kube client from the sandbox's kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("a client configuration from the kubeconfig");
        kube::Client::try_from(config).expect("a client")
    }

    /// `kubectl ARGS` against the sandbox (its API server listens on the host's loopback;
    /// kubectl changes no network). `TETHER_KUBECTL` names another kubectl. Its discovery
    /// cache lives in the state directory, so runs do not share a stale one.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let kubectl = std::env::var("TETHER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut cmd = Command::new(kubectl);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir().join("kube-cache"))
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    /// Runs kubectl, whatever its outcome.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        crate::run(&mut self.kubectl_cmd(args))
    }

    /// Runs kubectl with `stdin` as its input, whatever its outcome.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .expect("write kubectl's stdin");
        crate::finish(child, &format!("kubectl {args:?}"), crate::COMMAND_DEADLINE)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs kubectl and returns stdout; panics with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.kubectl(args))
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        failed(args, self.kubectl(args))
    }

    /// Runs kubectl with stdin and returns stdout; panics when it fails.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, self.kubectl_stdin(args, stdin))
    }

    /// Runs kubectl with stdin expecting failure; returns stderr.
    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        failed(args, self.kubectl_stdin(args, stdin))
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, manifest: &str) -> String {
        self.ok_stdin(&["apply", "-f", "-"], manifest)
    }

    /// A JSONPath of objects, e.g. `("demo", ["svc", "api"], "{.spec.clusterIP}")`; an
    /// empty namespace for cluster-scoped ones.
    pub fn jsonpath(&self, namespace: &str, object: &[&str], path: &str) -> String {
        let mut args = Vec::new();
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        args.push("get");
        args.extend_from_slice(object);
        let expr = format!("-o=jsonpath={path}");
        args.push(&expr);
        self.ok(&args)
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.dir().join("tether-sandbox.log"), 30)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "{}",
                crate::log_tail(&dir.path().join("tether-sandbox.log"), 30)
            );
        }
        if !stop(dir.path()) {
            // Last resort: the pid the server wrote, which is this test's.
            if let Some(pid) = read_pid(dir.path()) {
                // SAFETY: kill has no memory-safety preconditions; the pid is our server's.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("sandbox state kept in {}", dir.keep().display());
        }
    }
}

/// The pid a sandbox server wrote into its state directory.
fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("tether-sandbox.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stops the sandbox of `dir`, and first the tether daemon whose state lives there: it
/// undoes its changes, which are all inside the sandbox's workstation. Whether `down`
/// succeeded.
fn stop(dir: &Path) -> bool {
    let tether = bin_path("tether");
    let tether_state = dir.join(TETHER_STATE);
    if tether_state.exists() && tether.exists() {
        let _ = run_within(
            Command::new(tether)
                .arg("--state-dir")
                .arg(tether_state)
                .arg("quit"),
            COMMAND_DEADLINE,
        );
    }
    // Not `bin`, which asserts: this runs in `Drop`, also while a failed test unwinds.
    run_within(
        Command::new(bin_path("tether-sandbox"))
            .args(["down", "--state-dir"])
            .arg(dir),
        COMMAND_DEADLINE,
    )
    .is_ok_and(|out| out.status.success())
}

/// Stops the sandboxes of earlier runs whose test process is gone (a killed CI job) and
/// removes their state directories.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // No kill by pid here: a dead run's pid file may name a reused pid.
            stop(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The stdout of a kubectl run that must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of a kubectl run that must have failed.
fn failed(args: &[&str], out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
