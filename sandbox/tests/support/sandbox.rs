//! A sandbox per test: `tether-sandbox up` in a fresh temporary state directory on a free
//! port, `down` when dropped (also when the test fails), and helpers to run the real kubectl
//! against it and to wait on conditions with deadlines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tether-sandbox");

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

/// Runs `tether-sandbox <args>` with a state directory.
pub fn sandbox_cmd(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .output()
        .expect("run tether-sandbox")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Sandbox {
    pub fn start() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let sandbox = Sandbox {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
        };
        sandbox.up();
        sandbox
    }

    pub fn up(&self) -> String {
        let out = sandbox_cmd(self.dir.path(), &["up"]);
        assert!(
            out.status.success(),
            "up failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn down(&self) {
        let out = sandbox_cmd(self.dir.path(), &["down"]);
        assert!(out.status.success(), "down failed: {}", text(&out.stderr));
    }

    pub fn port(&self) -> u16 {
        std::fs::read_to_string(self.dir.path().join("port"))
            .expect("port file")
            .trim()
            .parse()
            .expect("port")
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let kubectl = std::env::var("TETHER_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut cmd = Command::new(kubectl);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl and returns stdout; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.kubectl(args))
    }

    /// Runs kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl with stdin and returns stdout; panics when it fails.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, self.kubectl_stdin(args, stdin))
    }

    /// Runs kubectl with stdin expecting failure; returns stderr.
    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        failed(args, self.kubectl_stdin(args, stdin))
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        failed(args, self.kubectl(args))
    }

    pub fn apply(&self, manifest: &str) -> String {
        self.ok_stdin(&["apply", "-f", "-"], manifest)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = sandbox_cmd(self.dir.path(), &["down"]);
        if !out.status.success() {
            // Last resort: the pid the server wrote, which is ours.
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("tether-sandbox.pid")) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
        }
    }
}

/// Polls `check` until it returns Some, or panics after `timeout` naming what it waited for.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stdout of a kubectl run that must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The stderr of a kubectl run that must have failed.
fn failed(args: &[&str], out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}
