//! `tether run` as a CI job and a developer use it, against the sandbox's demo: a script's
//! exit code comes back and the workstation is left as it was; a session made beforehand
//! survives; `--intercept` gives CMD web's traffic and environment and is undone when CMD
//! ends; a `run` killed with SIGKILL leaves nothing behind.
//!
//! One sandbox serves the whole session. Needs root (network namespaces, TUN) and the
//! workspace built (`cargo build --workspace`).

use std::process::Command;
use std::time::Duration;

use tether_tests::sandbox::{SandboxCluster, alive};
use tether_tests::{Proc, check, run, text, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

/// `tether run -n demo [ARGS] -- CMD...` in the workstation.
fn tether_run(c: &SandboxCluster, args: &[&str], cmd: &[&str]) -> Command {
    let mut run = c.tether();
    run.args(["run", "-n", "demo", "--dns-mode", "resolv-conf"])
        .arg("--resolv-conf")
        .arg(&c.resolv_conf)
        .args(args)
        .arg("--")
        .args(cmd);
    run
}

fn curl_from_node(c: &SandboxCluster, url: &str) -> Option<String> {
    let node = format!("{}-node", c.netns_prefix);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node,
            "curl",
            "-sS",
            "--max-time",
            "3",
            url,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn run_connects_for_one_command_and_leaves_nothing_behind() {
    let c = SandboxCluster::start();
    let before = c.snapshot();
    let script = c.dir().join("tests.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -e\ncurl -sf --max-time 5 http://web/ | grep -q hostname\necho tests passed\nexit \"${EXIT_WITH:-0}\"\n",
    )
    .expect("write the script");
    check(Command::new("chmod").arg("+x").arg(&script));
    let script = script.to_string_lossy().into_owned();

    // The script's exit code, its stdout alone on stdout, and nothing left afterwards.
    let out = run(&mut tether_run(&c, &[], &[&script]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tests passed\n");
    assert_eq!(c.snapshot(), before, "run leaves the workstation as it was");
    let out = run(tether_run(&c, &["--quiet"], &[&script]).env("EXIT_WITH", "3"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "--quiet prints nothing"
    );
    assert_eq!(c.snapshot(), before);
    let out = run(&mut tether_run(&c, &[], &["no-such-command-here"]));
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert_eq!(c.snapshot(), before);

    // A session made beforehand is used and survives.
    let (connected, _) = c.connect();
    let pid = connected["pid"].as_u64().expect("pid");
    let out = run(&mut tether_run(&c, &[], &[&script]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        c.status()["pid"].as_u64(),
        Some(pid),
        "the session survives"
    );
    check(c.tether().arg("quit"));
    c.wait_daemon_gone(pid as u32, DEADLINE);

    // --intercept: CMD serves web's traffic with web's environment; SIGTERM to run reaches
    // CMD, and everything run started is undone.
    let env_out = c.dir().join("cmd.env");
    let serve = format!(
        "env > {}; exec python3 -m http.server 8080 --bind 127.0.0.1",
        env_out.display()
    );
    let mut dev = Proc::start(
        "tether run --intercept",
        &mut tether_run(
            &c,
            &["--intercept", "web", "--port", "8080"],
            &["sh", "-c", &serve],
        ),
    );
    let web_ip = c.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    wait_for("web answered by the local http.server", DEADLINE, || {
        curl_from_node(&c, &format!("http://{web_ip}/"))
            .filter(|b| b.contains("Directory listing"))
            .map(|_| ())
    });
    let env = std::fs::read_to_string(&env_out).expect("CMD's environment");
    assert!(
        env.lines().any(|l| l.starts_with("WEB_SERVICE_HOST=")),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|l| l.starts_with("API_PORT_8080_TCP_PORT=")),
        "{env}"
    );
    // The shell waits for tether; the signal is for run.
    for child in dev.children() {
        check(Command::new("kill").args(["-TERM", &child.to_string()]));
    }
    let status = dev.wait(DEADLINE);
    assert_eq!(status.code(), Some(128 + 15), "CMD was ended by SIGTERM");
    wait_for("web answered by its pods", DEADLINE, || {
        curl_from_node(&c, &format!("http://{web_ip}/"))
            .filter(|b| b.contains("hostname: web-"))
            .map(|_| ())
    });
    assert_eq!(c.status()["event"], "not-connected");
    assert_eq!(c.snapshot(), before);

    // A personal intercept for CMD: it gets the made-up header to tag its own requests.
    let header_out = c.dir().join("cmd.header");
    let print = format!(
        "echo \"$TETHER_INTERCEPT_HEADER\" > {}",
        header_out.display()
    );
    let out = run(&mut tether_run(
        &c,
        &[
            "--intercept",
            "web",
            "--port",
            "8080",
            "--http-header",
            "auto",
        ],
        &["sh", "-c", &print],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let header = std::fs::read_to_string(&header_out).expect("CMD's header");
    assert!(header.starts_with("x-tether-intercept: web-"), "{header:?}");
    assert_eq!(c.snapshot(), before);

    // SIGKILL of run: the daemon it started ends by itself, and so does CMD.
    let mut killed = Proc::start(
        "tether run -- sleep",
        &mut tether_run(&c, &[], &["sleep", "600"]),
    );
    let daemon = wait_for("the session to be up", DEADLINE, || {
        let status = c.status();
        (status["event"] == "status" && status["state"] == "connected")
            .then(|| status["pid"].as_u64())?
    });
    let run_pid = killed.children()[0];
    check(Command::new("kill").args(["-KILL", &run_pid.to_string()]));
    let _ = killed.wait(DEADLINE);
    c.wait_daemon_gone(daemon as u32, DEADLINE);
    wait_for("CMD to end with run", DEADLINE, || {
        // pgrep exits 1 when nothing matches.
        let sleeping = run(Command::new("pgrep").args(["-x", "-f", "sleep 600"]));
        sleeping.stdout.is_empty().then_some(())
    });
    assert!(!alive(run_pid));
    assert_eq!(c.snapshot(), before, "a killed run leaves nothing behind");

    config_file_and_version(&c);
    assert_eq!(c.snapshot(), before);
    a_manager_that_never_gets_ready_is_explained(&c);
    assert_eq!(c.snapshot(), before);
}

/// A manager pod that runs but never passes its readiness probe: connect gives up at its
/// `--timeout` with exit 4 and says why (the container's state, its restarts, its last log
/// lines), instead of waiting on "0 of 1 new replicas available".
fn a_manager_that_never_gets_ready_is_explained(c: &SandboxCluster) {
    std::fs::write(
        c.dir().join("images.json"),
        r#"{"example.com/never-ready": ["/bin/sh", "-c", "echo manager starting on a port nobody probes; exec sleep 100000", "sh"]}"#,
    )
    .expect("write the image map");
    let started = std::time::Instant::now();
    let out = run(c.connect_command().args([
        "--manager-namespace",
        "broken",
        "--manager-image",
        "example.com/never-ready",
        "--timeout",
        "8",
    ]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    for part in [
        "not Ready",
        "restarts",
        "manager starting on a port nobody probes",
    ] {
        assert!(
            text(&out).contains(part),
            "the error says {part:?}: {}",
            text(&out)
        );
    }
    check(
        c.tether()
            .args(["uninstall", "--manager-namespace", "broken"]),
    );
}

/// `namespace: demo` in the config file makes short names resolve in demo, `-n` overrides it,
/// a typo is exit 2 naming the line; `tether version` names the daemon's and manager's.
fn config_file_and_version(c: &SandboxCluster) {
    let config = c.dir().join("config.yaml");
    std::fs::write(&config, "namespace: demo\ndns-mode: resolv-conf\n").expect("write the config");
    let connect = |extra: &[&str]| {
        let mut cmd = c.tether();
        cmd.env("TETHER_CONFIG", &config)
            .args(["connect", "--resolv-conf"])
            .arg(&c.resolv_conf)
            .args(extra)
            .args(["--output", "json"]);
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", text(&out));
        let event: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("JSON");
        event
    };
    let connected = connect(&[]);
    assert_eq!(connected["namespace"], "demo", "{connected}");
    let body = c.curl("http://web/").expect("web by its short name");
    assert!(body.contains("hostname: web-"), "{body}");

    let out = check(c.tether().args(["version", "--output", "json"]));
    let version: serde_json::Value = serde_json::from_str(out.trim()).expect("version JSON");
    tether_tests::events::assert_documented(&version);
    assert_eq!(version["client"], version["daemon"], "{version}");
    assert_eq!(version["manager"], version["client"], "{version}");
    assert_eq!(version["problems"], serde_json::json!([]), "{version}");
    let view = check(
        c.tether()
            .env("TETHER_CONFIG", &config)
            .args(["config", "view", "--output", "json"]),
    );
    let view: serde_json::Value = serde_json::from_str(view.trim()).expect("config JSON");
    tether_tests::events::assert_documented(&view);
    let ns = view["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["key"] == "namespace")
        .cloned();
    assert_eq!(
        ns,
        Some(serde_json::json!({"key": "namespace", "value": "demo", "source": "file"}))
    );
    check(c.tether().arg("quit"));

    let connected = connect(&["-n", "default"]);
    assert_eq!(
        connected["namespace"], "default",
        "-n wins over the file: {connected}"
    );
    check(c.tether().arg("quit"));

    std::fs::write(&config, "namespace: demo\nnamspace: typo\n").expect("write the config");
    let out = run(c.tether().env("TETHER_CONFIG", &config).arg("status"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("config.yaml:2:"), "{}", text(&out));
    assert!(text(&out).contains("namspace"), "{}", text(&out));
}

/// Types in a real bash on a pty, in the workstation: each line is sent as typed (with its
/// Tabs), and what bash shows after it is returned.
fn bash_shows(c: &SandboxCluster, typed: &[&str]) -> Vec<String> {
    const DRIVER: &str = r#"
import os, pty, select, sys, time
tether, state = sys.argv[1], sys.argv[2]
lines = sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.environ["PS1"] = "$ "
    os.environ["TETHER_STATE_DIR"] = state
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
def drain(seconds):
    out, end = b"", time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out.decode(errors="replace")
os.write(fd, ("source <(%s completion bash)\n" % tether).encode())
drain(2)
for line in lines:
    os.write(fd, line.encode())
    print("\x1e" + drain(3))
    os.write(fd, b"\x15")
    drain(0.3)
os.write(fd, b"exit\n")
"#;
    let out = check(
        c.shell("python3")
            .args(["-c", DRIVER])
            .arg(tether_tests::bin("tether"))
            .arg(&c.tether_state)
            .args(typed),
    );
    out.split('\x1e').skip(1).map(str::to_owned).collect()
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn tab_completes_commands_workloads_and_namespaces_in_a_real_bash() {
    let c = SandboxCluster::start();
    let (connected, _) = c.connect();
    assert_eq!(connected["event"], "connected");
    let shown = bash_shows(
        &c,
        &[
            "tether inter\t",
            "tether intercept \t\t",
            "tether intercept -n \t\t",
            "tether leave \t\t",
        ],
    );
    assert!(shown[0].contains("intercept"), "{:?}", shown[0]);
    for w in ["web", "api", "flaky"] {
        assert!(
            shown[1].contains(w),
            "workloads of the connection's namespace: {:?}",
            shown[1]
        );
    }
    for ns in ["demo", "kube-system", "tether"] {
        assert!(shown[2].contains(ns), "namespaces: {:?}", shown[2]);
    }
    assert!(
        !shown[3].contains("error"),
        "no error on the command line: {:?}",
        shown[3]
    );

    // The other shells load their scripts without complaint.
    let tether = tether_tests::bin("tether").to_string_lossy().into_owned();
    for (shell, load) in [
        (
            "zsh",
            format!("autoload -U compinit && compinit -u && source <({tether} completion zsh)"),
        ),
        ("fish", format!("{tether} completion fish | source")),
    ] {
        let out = run(Command::new(shell).args(["-c", &load]));
        assert!(out.status.success(), "{shell}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "{shell} loads it quietly"
        );
    }
}
