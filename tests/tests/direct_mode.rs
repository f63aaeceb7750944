//! Direct mode end to end: `tether connect` to a manager over a veth link, then what a user
//! would try from the laptop, then the laptop must be exactly as it was.

use std::time::{Duration, Instant};

use tether_tests::direct::*;
use tether_tests::{check, run};

fn curl(dc: &DirectCluster, url: &str) -> String {
    check(dc.laptop.cmd("curl").args(["-sS", "--max-time", "5", url]))
}

fn dig(dc: &DirectCluster, args: &[&str]) -> String {
    check(
        dc.laptop
            .cmd("dig")
            .args(["+time=3", "+tries=1"])
            .args(args),
    )
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn connect_carries_tcp_udp_and_dns_then_restores_the_laptop() {
    let dc = DirectCluster::start();
    let before = dc.laptop.snapshot();
    // Before tether, the cluster's addresses are unreachable from the laptop.
    let out =
        run(dc
            .laptop
            .cmd("curl")
            .args(["-sS", "--max-time", "2", &format!("http://{WEB_IP}/")]));
    assert!(
        !out.status.success(),
        "the laptop must not reach the cluster without tether"
    );

    let tether = dc.connect(&[]);
    assert_eq!(
        tether.connected["state"], "connected",
        "{}",
        tether.connected
    );

    // TCP by full name, by the search path's short form, and by IP.
    for url in [
        "http://web.shop.svc.cluster.local/".to_owned(),
        "http://web.shop/".to_owned(),
        "http://web/".to_owned(),
        format!("http://{WEB_IP}/"),
    ] {
        assert_eq!(curl(&dc, &url).trim(), WEB_BODY, "GET {url}");
    }

    // UDP round trip, by IP and by name.
    let kit = tether_tests::bin("tether-testkit");
    let reply = check(dc.laptop.cmd(&kit).args([
        "udp-ping",
        "--to",
        &format!("{ECHO_IP}:7"),
        "--message",
        "ping over udp",
    ]));
    assert_eq!(reply.trim(), "ping over udp");

    // Bulk transfer with half-close: the probe sends for a second, shuts down its write
    // side, and the server answers with the byte count it received (checked by the probe).
    check(dc.laptop.cmd(&kit).args([
        "probe",
        "--to",
        &format!("{WEB_IP}:9000"),
        "--mode",
        "throughput",
        "--amount",
        "1",
    ]));

    // Many connections at once.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            dc.laptop
                .cmd("curl")
                .args(["-sS", "--max-time", "10", "http://web.shop/"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start curl")
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().expect("curl runs");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), WEB_BODY);
    }

    // A closed port is refused at once, like on a real network.
    let start = Instant::now();
    let out =
        run(dc
            .laptop
            .cmd("curl")
            .args(["-v", "--max-time", "5", &format!("http://{WEB_IP}:81/")]));
    let elapsed = start.elapsed();
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl must fail to connect: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(elapsed < Duration::from_secs(1), "refusal took {elapsed:?}");

    // An address nothing in the cluster answers for fails at once too, instead of hanging.
    let start = Instant::now();
    let out = run(dc
        .laptop
        .cmd("curl")
        .args(["-v", "--max-time", "5", "http://10.96.9.9/"]));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No route to host"),
        "an unreachable address is reported as one: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );

    // DNS: cluster names through the tunnel, NXDOMAIN for unknown cluster names, and
    // non-cluster names still answered by the laptop's own resolver.
    assert_eq!(
        dig(&dc, &["+short", "web.shop.svc.cluster.local"]).trim(),
        WEB_IP
    );
    assert_eq!(dig(&dc, &["+short", "echo.shop"]).trim(), ECHO_IP);
    assert!(dig(&dc, &["nothing-here.shop.svc.cluster.local"]).contains("status: NXDOMAIN"));
    assert_eq!(dig(&dc, &["+short", OUTSIDE_NAME]).trim(), OUTSIDE_IP);
    assert!(dig(&dc, &["unknown.example.org"]).contains("status: NXDOMAIN"));
    // An answer too large for UDP: truncated over UDP, then complete over TCP, both by dig
    // and by the system resolver.
    let udp = dig(&dc, &["+noedns", "+ignore", MANY_NAME]);
    assert!(
        udp.contains(" tc"),
        "a 512-byte UDP answer must be truncated: {udp}"
    );
    for args in [
        &["+short", "+noedns", MANY_NAME][..],
        &["+short", "+tcp", MANY_NAME][..],
    ] {
        let full = dig(&dc, args);
        assert_eq!(full.lines().count(), MANY_COUNT, "{args:?}: {full}");
    }
    let all = check(dc.laptop.cmd("getent").args(["ahostsv4", MANY_NAME]));
    assert!(all.contains("10.96.2.60"), "{all}");

    // getent goes through the system resolver, as every program on the laptop does.
    let hosts = check(dc.laptop.cmd("getent").args(["hosts", "web.shop"]));
    assert!(hosts.starts_with(WEB_IP), "{hosts}");

    // `tether status`, for people and for scripts.
    let text = check(dc.tether().arg("status"));
    for part in [
        "Connected (direct)",
        MANAGER,
        SERVICE_CIDR,
        "resolv-conf",
        "reconnects 0",
    ] {
        assert!(text.contains(part), "status lacks {part:?}:\n{text}");
    }
    let status = dc.status();
    assert_eq!(status["state"], "connected", "{status}");
    assert_eq!(status["mode"], "direct", "{status}");
    assert_eq!(status["pid"], tether.pid, "{status}");
    assert_eq!(status["manager"]["address"], MANAGER, "{status}");
    assert_eq!(
        status["routes"],
        serde_json::json!([SERVICE_CIDR]),
        "{status}"
    );
    assert_eq!(status["dns"]["mode"], "resolv-conf", "{status}");
    assert_eq!(status["dns"]["domain"], "cluster.local", "{status}");
    assert_eq!(status["reconnects"], 0, "{status}");
    assert!(status["connected_since"].is_string(), "{status}");
    assert!(status["open_flows"].is_u64(), "{status}");

    // `tether quit`: everything is undone and tether says so.
    let out = check(dc.tether().args(["quit", "--output", "json"]));
    assert!(out.contains("\"disconnected\""), "{out}");
    tether_tests::events::parse_all(&out);
    tether.wait(Duration::from_secs(10));
    assert_eq!(
        dc.laptop.snapshot(),
        before,
        "the laptop must be exactly as before"
    );
    assert!(check(dc.tether().arg("status")).contains("Not connected"));
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn sigterm_and_sigkill_leave_nothing_behind() {
    let dc = DirectCluster::start();
    let before = dc.laptop.snapshot();

    let tether = dc.connect(&[]);
    assert_ne!(
        dc.laptop.snapshot(),
        before,
        "connect must change routes and DNS"
    );
    tether.signal("TERM");
    tether.wait(Duration::from_secs(10));
    assert_eq!(dc.laptop.snapshot(), before, "after SIGTERM");

    // SIGKILL: the kernel removes the TUN device and its routes; the resolver file stays
    // rewritten until the next tether command restores it.
    let tether = dc.connect(&[]);
    tether.signal("KILL");
    tether.wait(Duration::from_secs(10));
    let resolv = std::fs::read_to_string(dc.laptop.resolv_conf_path()).unwrap();
    assert!(resolv.contains("Written by tether"), "{resolv}");
    let out = check(dc.tether().args(["quit"]));
    assert!(out.contains("Cleaned up"), "{out}");
    assert_eq!(
        dc.laptop.snapshot(),
        before,
        "after SIGKILL and tether quit"
    );

    // A crash followed directly by a new connect is cleaned up by that connect.
    let tether = dc.connect(&[]);
    tether.signal("KILL");
    tether.wait(Duration::from_secs(10));
    let tether = dc.connect(&[]);
    assert_eq!(curl(&dc, "http://web.shop/").trim(), WEB_BODY);
    // `tether quit` stops a running session.
    let out = check(dc.tether().args(["quit", "--output", "json"]));
    assert!(out.contains("\"disconnected\""), "{out}");
    tether_tests::events::parse_all(&out);
    tether.wait(Duration::from_secs(10));
    assert_eq!(dc.laptop.snapshot(), before, "after quit");
}

/// A `tether connect` that is expected to fail: its exit code and what it printed on stderr.
fn refused_connect(
    dc: &DirectCluster,
    manager: &str,
    token: &str,
    extra: &[&str],
) -> (Option<i32>, String) {
    let out = run(dc
        .tether()
        .args([
            "connect",
            "--manager-address",
            manager,
            "--token-file",
            token,
        ])
        .args(extra));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn bad_input_is_refused_without_changing_the_laptop() {
    let dc = DirectCluster::start();
    let before = dc.laptop.snapshot();
    let token = dc.token_file.to_str().unwrap();

    // Wrong token: the manager refuses, tether says so and exits 4.
    let wrong = dc.state_dir.with_file_name("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let (code, stderr) = refused_connect(&dc, MANAGER, wrong.to_str().unwrap(), &[]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("invalid token"), "{stderr}");

    // Nothing listening: a clear error naming the address, in every output format.
    let (code, stderr) = refused_connect(&dc, "172.30.0.1:1", token, &[]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("cannot reach the manager at 172.30.0.1:1"),
        "{stderr}"
    );
    let (code, stderr) = refused_connect(&dc, "172.30.0.1:1", token, &["--output", "json"]);
    assert_eq!(code, Some(4), "{stderr}");
    let error: serde_json::Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .next_back()
        .unwrap_or_else(|| panic!("no JSON error on stderr: {stderr}"));
    tether_tests::events::assert_documented(&error);
    assert_eq!(error["exit_code"], 4, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot reach the manager"),
        "{error}"
    );

    // A subnet that would route the tunnel into itself.
    let (code, stderr) = refused_connect(&dc, MANAGER, token, &["--also-proxy", "172.30.0.0/24"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("routed into itself"), "{stderr}");

    // No room for the device and DNS addresses.
    let (code, stderr) = refused_connect(&dc, MANAGER, token, &["--tun-subnet", "198.18.0.1/32"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("too small"), "{stderr}");

    // Not a CIDR: clap names the flag.
    let (code, stderr) = refused_connect(&dc, MANAGER, token, &["--also-proxy", "10.96.0.0/99"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--also-proxy"), "{stderr}");

    // A second connect while one runs is refused and leaves the first alone.
    let tether = dc.connect(&[]);
    let (code, stderr) = refused_connect(&dc, MANAGER, token, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("tether quit"), "{stderr}");
    assert_eq!(curl(&dc, "http://web.shop/").trim(), WEB_BODY);
    tether.signal("TERM");
    tether.wait(Duration::from_secs(10));
    assert_eq!(
        dc.laptop.snapshot(),
        before,
        "after all the refused attempts"
    );
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn the_session_survives_a_manager_restart() {
    let mut dc = DirectCluster::start();
    let before = dc.laptop.snapshot();
    let tether = dc.connect(&[]);
    assert_eq!(curl(&dc, "http://web.shop/").trim(), WEB_BODY);
    let connected = dc.laptop.snapshot();

    dc.stop_manager();
    tether_tests::wait_for(
        "the daemon to notice the lost tunnel",
        Duration::from_secs(20),
        || (dc.status()["state"] == "reconnecting").then_some(()),
    );
    // While the tunnel is down, new connections fail at once instead of hanging, and the
    // device, routes and DNS settings stay as they were.
    let start = Instant::now();
    let out =
        run(dc
            .laptop
            .cmd("curl")
            .args(["-v", "--max-time", "5", &format!("http://{WEB_IP}/")]));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No route to host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(dc.laptop.snapshot(), connected, "kept while reconnecting");

    dc.start_manager();
    let status = tether_tests::wait_for("the daemon to reconnect", Duration::from_secs(20), || {
        let status = dc.status();
        (status["state"] == "connected").then_some(status)
    });
    assert_eq!(status["reconnects"], 1, "{status}");
    assert_eq!(status["pid"], tether.pid, "the same daemon: {status}");
    assert_eq!(curl(&dc, "http://web.shop/").trim(), WEB_BODY);
    assert!(check(dc.tether().arg("status")).contains("reconnects 1"));

    check(dc.tether().arg("quit"));
    tether.wait(Duration::from_secs(10));
    assert_eq!(dc.laptop.snapshot(), before, "after quit");
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn a_subnet_the_laptop_already_routes_is_refused_until_never_proxied() {
    let dc = DirectCluster::start();
    // The laptop already reaches part of the service range through its own link.
    dc.laptop
        .ip(&["route", "add", "10.96.0.0/24", "dev", "veth0"]);
    let before = dc.laptop.snapshot();
    let token = dc.token_file.to_str().unwrap();

    let (code, stderr) = refused_connect(&dc, MANAGER, token, &["--also-proxy", SERVICE_CIDR]);
    assert_eq!(code, Some(1), "{stderr}");
    for part in [SERVICE_CIDR, "10.96.0.0/24", "veth0", "--never-proxy"] {
        assert!(
            stderr.contains(part),
            "the refusal names {part:?}: {stderr}"
        );
    }
    assert_eq!(dc.laptop.snapshot(), before, "after the refusal");

    // --never-proxy keeps the laptop's own subnet out; the rest of the range is routed.
    let tether = dc.connect(&["--never-proxy", "10.96.0.0/24"]);
    let routes = dc.status()["routes"].clone();
    assert!(
        !routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == SERVICE_CIDR || r == "10.96.0.0/24"),
        "{routes}"
    );
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "10.96.1.0/24"),
        "{routes}"
    );
    assert_eq!(curl(&dc, &format!("http://{WEB_IP}/")).trim(), WEB_BODY);
    check(dc.tether().arg("quit"));
    tether.wait(Duration::from_secs(10));
    assert_eq!(dc.laptop.snapshot(), before, "after quit");
}
