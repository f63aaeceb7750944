//! Rootless `tether run`, as a user with no root, no capabilities and no sudo: uid 65534 in
//! the sandbox's workstation. CMD reaches the cluster by name and address, the
//! workstation's own network and names, and the workstation's loopback at `$TETHER_HOST`;
//! its exit code comes back; an intercept reaches a server CMD runs; a `/dev/net/tun` the
//! user may not open is one clear error. The workstation's links, addresses, routes and
//! resolver file are compared during and after each run.
//!
//! The test runs as root and drops to uid 65534 for tether. The device node that user may
//! open is a 0666 node bind-mounted over /dev/net/tun in a private mount namespace of the
//! test's own (`tether-sandbox shell` makes one per command); the host's node is never
//! changed. Needs root (network namespaces, TUN) and the workspace built.

use std::process::Command;
use std::time::Duration;

use tether_tests::rootless::{Home, USER};
use tether_tests::sandbox::{OUTSIDE_IP, OUTSIDE_NAME, SandboxCluster, alive};
use tether_tests::{Proc, bin, check, run, text, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);
/// A server of the workstation's own, outside the cluster: on OUTSIDE_IP and on loopback.
const OUTSIDE_PORT: u16 = 8081;

/// `tether ARGS` as the unprivileged user, with a `/dev/net/tun` of `mode`.
fn tether_as_user(c: &SandboxCluster, home: &Home, mode: &str, args: &[&str]) -> Command {
    let mut cmd = home.command(c, mode, bin("tether"));
    cmd.args(args);
    cmd
}

/// `tether run -n demo ARGS -- CMD` as the unprivileged user with a usable device.
fn rootless_run(c: &SandboxCluster, home: &Home, args: &[&str], cmd: &[&str]) -> Command {
    let mut all = vec!["run", "-n", "demo"];
    all.extend_from_slice(args);
    all.push("--");
    all.extend_from_slice(cmd);
    tether_as_user(c, home, "0666", &all)
}

fn curl_from_node(c: &SandboxCluster, url: &str) -> Option<String> {
    let node = format!("{}-node", c.netns_prefix);
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        &node,
        "curl",
        "-sS",
        "--max-time",
        "3",
        url,
    ]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// No tether daemon of the user's state directory runs any more.
fn no_session_left(home: &Home) {
    let record = home.state().join("session.json");
    wait_for("the rootless daemon to end", DEADLINE, || {
        let socket = home.state().join("daemon.sock");
        (!socket.exists() && !record.exists()).then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(home.state())
        .expect("the state directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "daemon.log" && name != "daemon.json")
        .collect();
    assert!(left.is_empty(), "left in the state directory: {left:?}");
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn rootless_run_reaches_the_cluster_and_the_users_network_and_changes_nothing() {
    let c = SandboxCluster::start();
    // The workstation's own server outside the cluster, at the address its resolver gives
    // for OUTSIDE_NAME and on its loopback.
    check(Command::new("ip").arg("-n").arg(&c.workstation).args([
        "addr",
        "add",
        &format!("{OUTSIDE_IP}/32"),
        "dev",
        "lo",
    ]));
    let mut outside = Proc::start(
        "the workstation's own server",
        Command::new("ip")
            .args(["netns", "exec", &c.workstation, "env", "POD_NAME=outside"])
            .arg(bin("tether-sandbox"))
            .args(["workload", "http-echo", "--port", &OUTSIDE_PORT.to_string()]),
    );
    outside.wait_line(Duration::from_secs(10), |l| l.contains("listening"));
    let home = Home::new(&c);
    let before = c.snapshot();
    let api_ip = c.jsonpath("demo", &["svc", "api"], "{.spec.clusterIP}");

    // Every kind of destination, from one script: its own checks fail it with their line.
    let gate = home.path().join("gate");
    check(Command::new("mkfifo").arg(&gate));
    check(
        Command::new("chown")
            .arg(format!("{USER}:{USER}"))
            .arg(&gate),
    );
    let script = format!(
        r#"set -e
get() {{ curl -sS --max-time 5 "$1"; }}
id -u
get http://web.demo/ | grep -q 'hostname: web-' || {{ echo 'FAIL web.demo'; exit 1; }}
get http://web/ | grep -q 'hostname: web-' || {{ echo 'FAIL web'; exit 1; }}
get http://{api_ip}:8080/ | grep -q 'hostname: api-' || {{ echo 'FAIL api ClusterIP'; exit 1; }}
get http://{OUTSIDE_NAME}:{OUTSIDE_PORT}/ | grep -q 'hostname: outside' || {{ echo 'FAIL outside name'; exit 1; }}
get http://{OUTSIDE_IP}:{OUTSIDE_PORT}/ | grep -q 'hostname: outside' || {{ echo 'FAIL outside address'; exit 1; }}
get "http://$TETHER_HOST:{OUTSIDE_PORT}/" | grep -q 'hostname: outside' || {{ echo 'FAIL host loopback'; exit 1; }}
if curl -s --max-time 2 http://127.0.0.1:{OUTSIDE_PORT}/ >/dev/null; then echo 'FAIL own loopback'; exit 1; fi
busybox wget -q -O - http://web.demo/ | grep -q 'hostname: web-' || {{ echo 'FAIL static wget'; exit 1; }}
grep -q '^search demo.svc.cluster.local' /etc/resolv.conf || {{ echo 'FAIL resolv.conf'; exit 1; }}
echo 'checks passed'
read go < {gate}
exit 7
"#,
        gate = gate.display()
    );
    let mut job = Proc::start(
        "rootless tether run",
        &mut rootless_run(&c, &home, &[], &["sh", "-c", &script]),
    );
    let line = job.wait_line(DEADLINE, |l| l.starts_with("FAIL") || l == "checks passed");
    assert_eq!(line, "checks passed", "{}", log_of(&home));
    assert_eq!(
        c.snapshot(),
        before,
        "the workstation is unchanged during the run"
    );
    std::fs::write(&gate, "go\n").expect("open the gate");
    let status = job.wait(DEADLINE);
    assert_eq!(status.code(), Some(7), "CMD's exit code; {}", log_of(&home));
    assert_eq!(
        c.snapshot(),
        before,
        "the workstation is unchanged after the run"
    );
    no_session_left(&home);

    let out = run(&mut rootless_run(&c, &home, &[], &["no-such-command-here"]));
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    no_session_left(&home);
    assert_eq!(c.snapshot(), before);

    a_device_the_user_may_not_open_is_one_clear_error(&c, &home);
    assert_eq!(c.snapshot(), before);
    an_intercept_reaches_a_server_inside_the_namespace(&c, &home);
    assert_eq!(c.snapshot(), before);
    a_killed_run_leaves_nothing(&c, &home);
    assert_eq!(c.snapshot(), before);
}

/// With a 0600 `/dev/net/tun`: `--rootless`, and the automatic choice, each end with one
/// error that names the device and both fixes, before anything was started.
fn a_device_the_user_may_not_open_is_one_clear_error(c: &SandboxCluster, home: &Home) {
    for args in [
        &["run", "--rootless", "--", "true"][..],
        &["run", "--", "true"],
    ] {
        let out = run(&mut tether_as_user(c, home, "0600", args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", text(&out));
        for needed in [
            "/dev/net/tun",
            "mode 0600",
            "--no-rootless",
            "sudo chmod 0666 /dev/net/tun",
        ] {
            assert!(
                stderr.contains(needed),
                "{args:?} names {needed:?}: {stderr}"
            );
        }
        assert_eq!(
            stderr.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "one error: {stderr}"
        );
        no_session_left(home);
    }
}

/// `--intercept web --port 8090` with a server CMD runs on the namespace's own loopback:
/// web's traffic reaches it; SIGTERM to run ends CMD and the intercept.
fn an_intercept_reaches_a_server_inside_the_namespace(c: &SandboxCluster, home: &Home) {
    let mut dev = Proc::start(
        "rootless tether run --intercept",
        &mut rootless_run(
            c,
            home,
            &["--intercept", "web", "--port", "8090"],
            &[
                "python3",
                "-m",
                "http.server",
                "8090",
                "--bind",
                "127.0.0.1",
            ],
        ),
    );
    let web_ip = c.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    wait_for(
        "web answered by the server inside the namespace",
        DEADLINE,
        || {
            curl_from_node(c, &format!("http://{web_ip}/"))
                .filter(|b| b.contains("Directory listing"))
                .map(|_| ())
        },
    );
    let tether = tether_pid(&dev);
    check(Command::new("kill").args(["-TERM", &tether.to_string()]));
    let status = dev.wait(DEADLINE);
    assert_eq!(status.code(), Some(128 + 15), "CMD was ended by SIGTERM");
    wait_for("web answered by its pods", DEADLINE, || {
        curl_from_node(c, &format!("http://{web_ip}/"))
            .filter(|b| b.contains("hostname: web-"))
            .map(|_| ())
    });
    no_session_left(home);
}

/// SIGKILL of run: its daemon ends by itself, and CMD with its namespace.
fn a_killed_run_leaves_nothing(c: &SandboxCluster, home: &Home) {
    let mut job = Proc::start(
        "rootless tether run -- sleep",
        &mut rootless_run(c, home, &[], &["sh", "-c", "echo started; exec sleep 600"]),
    );
    job.wait_line(DEADLINE, |l| l == "started");
    let tether = tether_pid(&job);
    let helper = children_of(tether)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("namespace-helper"))
        })
        .expect("the namespace helper");
    let cmd = children_of(helper);
    check(Command::new("kill").args(["-KILL", &tether.to_string()]));
    let _ = job.wait(DEADLINE);
    wait_for("CMD and its namespace to end with run", DEADLINE, || {
        (!alive(helper) && cmd.iter().all(|p| !alive(*p))).then_some(())
    });
    no_session_left(home);
}

/// The tether process under `tether-sandbox shell` (which execs sh, which execs env, which
/// execs setpriv, which execs tether: one process all along).
fn tether_pid(job: &Proc) -> u32 {
    *job.children().first().expect("the shell's command runs")
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn log_of(home: &Home) -> String {
    tether_tests::log_tail(&home.state().join("daemon.log"), 30)
}
