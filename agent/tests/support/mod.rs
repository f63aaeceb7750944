//! A sandbox cluster per test (`tether-sandbox up` in a fresh temporary state directory,
//! `down` on drop, also when the test fails), a kube client for it, and waits with deadlines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kube::{Client, Config};

/// The sandbox binary, next to this test's `deps` directory (`cargo build -p tether-sandbox`).
pub fn sandbox_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join("tether-sandbox");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p tether-sandbox)",
        path.display()
    );
    path
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

fn sandbox_cmd(dir: &Path, args: &[&str]) -> Output {
    Command::new(sandbox_bin())
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .output()
        .expect("run tether-sandbox")
}

impl Sandbox {
    pub fn start() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = sandbox_cmd(dir.path(), &["up"]);
        assert!(
            out.status.success(),
            "tether-sandbox up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Sandbox {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
        }
    }

    pub async fn client(&self) -> Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read the kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a config from the kubeconfig");
        Client::try_from(config).expect("a client")
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

/// Awaits `fut`, or panics after `timeout` naming what it waited for.
pub async fn within<T>(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}
