//! What the intercept scenarios share: objects as `kubectl get -o json` shows them without
//! what every write changes, requests from a client pod in the cluster, tether's JSON
//! events, and servers on the workstation.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::SandboxCluster;
use crate::{Proc, bin, check, run, text, wait_for};

/// How long traffic may take to reach where it should after a change.
pub const RECOVERY: Duration = Duration::from_secs(15);

pub fn objects_of(c: &SandboxCluster, which: &[&str]) -> Value {
    let out = check(
        c.kubectl()
            .args(["-n", "demo", "get"])
            .args(which)
            .args(["-o", "json"]),
    );
    let mut list: Value = serde_json::from_str(&out).expect("kubectl JSON");
    for item in list["items"].as_array_mut().expect("items") {
        let item = item.as_object_mut().expect("an object");
        item.remove("status");
        let meta = item["metadata"].as_object_mut().expect("metadata");
        for field in ["resourceVersion", "generation", "managedFields"] {
            meta.remove(field);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("deployment.kubernetes.io/revision");
        }
    }
    list
}

/// `kubectl exec` in the client pod: curl's body, or None.
pub fn curl_from_pod(c: &SandboxCluster, url: &str) -> Option<String> {
    in_client(c, &["curl", "-sS", "--max-time", "5", url])
}

/// `kubectl exec` of `command` in the demo's client pod.
fn exec_in_client(c: &SandboxCluster, command: &[&str]) -> std::process::Output {
    run(c
        .kubectl()
        .args(["-n", "demo", "exec", "deploy/client", "--"])
        .args(command))
}

/// `kubectl exec` of `command` in the demo's client pod: its stdout, or None.
pub fn in_client(c: &SandboxCluster, command: &[&str]) -> Option<String> {
    let out = exec_in_client(c, command);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn hostname(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("hostname: "))
        .unwrap_or("")
}

/// Waits until `url`, asked from the client pod, is answered by `who` (a prefix).
pub fn wait_answered_by(c: &SandboxCluster, url: &str, who: &str) {
    wait_for(&format!("{url} answered by {who}"), RECOVERY, || {
        curl_from_pod(c, url)
            .filter(|b| hostname(b).starts_with(who))
            .map(|_| ())
    });
}

/// Once `url`, asked from the client pod, is answered by `who`, every one of `n` further
/// requests is too. The first answer is waited for because kube-proxy follows the
/// EndpointSlices `tether intercept` waited on only at its next sync (on the real one, up to
/// its `minSyncPeriod` later): until then a connection may still go to a pod the rollout
/// replaced, which may be gone already.
pub fn all_answered_by(c: &SandboxCluster, url: &str, who: &str, n: usize) {
    wait_answered_by(c, url, who);
    for i in 0..n {
        let out = exec_in_client(c, &["curl", "-sS", "--max-time", "5", url]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "request {i} of {n} to {url} failed after it was answered by {who}: {}",
            text(&out)
        );
        assert_eq!(hostname(&body), who, "{url}: {body}");
    }
}

pub fn tether_json(c: &SandboxCluster, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = run(c.tether().args(args).args(["--output", "json"]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let events = crate::events::parse_all(&stdout);
    for e in &events {
        crate::events::assert_documented(e);
    }
    (out.status.code(), events, text(&out))
}

/// A local server in the workstation answering as `name`.
pub fn local_server(c: &SandboxCluster, name: &str, port: u16) -> Proc {
    let mut p = Proc::start(
        name,
        Command::new("ip")
            .args(["netns", "exec", &c.workstation, "env"])
            .arg(format!("POD_NAME={name}"))
            .arg(bin("tether-sandbox"))
            .args(["workload", "http-echo", "--port", &port.to_string()]),
    );
    p.wait_line(Duration::from_secs(10), |l| l.contains("listening"));
    p
}
