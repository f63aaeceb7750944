//! tether-demo: the main job, shown against a throw-away cluster. `tether-sandbox up --demo`
//! runs a one-node Kubernetes cluster whose "workstation" network namespace stands in for a
//! laptop: its only way into the cluster is the API server. From there, `tether connect`
//! installs the manager and makes Services, pod IPs and cluster names reachable; `tether
//! quit` leaves the workstation as it was. Nothing in the host's own network changes.

use std::process::Command;

use tether_tests::sandbox::SandboxCluster;
use tether_tests::{bin, have_root, run};

fn main() {
    if !have_root() {
        eprintln!(
            "tether-demo needs root: the sandbox cluster runs pods in network namespaces and tether creates a TUN device"
        );
        std::process::exit(2);
    }
    println!("Starting a sandbox cluster with the demo namespace (tether-sandbox up --demo)...");
    let cluster = SandboxCluster::start();
    println!(
        "The cluster is up; the workstation (network namespace {}) reaches it only through the API server.",
        cluster.workstation
    );
    let mut ok = show(
        "kubectl get pods -n demo -o wide",
        cluster
            .shell("kubectl")
            .args(["get", "pods", "-n", "demo", "-o", "wide"]),
    );

    println!("\nworkstation$ tether connect -n demo");
    let before = cluster.snapshot();
    let (connected, progress) = cluster.connect();
    print!("{progress}");
    println!(
        "connected (daemon pid {}); routes {}",
        connected["pid"], connected["routes"]
    );

    for (line, argv) in [
        (
            "curl http://web/",
            vec!["curl", "-sS", "--max-time", "5", "http://web/"],
        ),
        (
            "curl http://api.demo.svc.cluster.local:8080/",
            vec![
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://api.demo.svc.cluster.local:8080/",
            ],
        ),
        (
            "dig +short db.demo.svc.cluster.local   # headless: the pods",
            vec!["dig", "+short", "db.demo.svc.cluster.local"],
        ),
        (
            "dig +short legacy.demo.svc.cluster.local   # ExternalName",
            vec!["dig", "+short", "legacy.demo.svc.cluster.local"],
        ),
    ] {
        let mut cmd = cluster.shell(argv[0]);
        cmd.args(&argv[1..]);
        ok &= show(line, &mut cmd);
    }
    let udp = cluster.jsonpath("demo", &["svc", "udp"], "{.spec.clusterIP}");
    let mut ping = cluster.shell(bin("tether-testkit"));
    ping.args([
        "udp-ping",
        "--to",
        &format!("{udp}:9001"),
        "--message",
        "hello over UDP",
    ]);
    ok &= show(
        &format!("tether-testkit udp-ping --to {udp}:9001   # the udp Service"),
        &mut ping,
    );
    ok &= show("tether status", cluster.tether().arg("status"));
    ok &= show("tether quit", cluster.tether().arg("quit"));

    let restored = cluster.snapshot() == before;
    println!(
        "\nworkstation's links, routes and resolv.conf after quit: {}",
        if restored {
            "exactly as before"
        } else {
            "CHANGED"
        }
    );
    println!("Stopping the sandbox cluster.");
    drop(cluster);
    if !(ok && restored) {
        eprintln!("the demo did not go as expected");
        std::process::exit(1);
    }
}

fn show(line: &str, cmd: &mut Command) -> bool {
    println!("\nworkstation$ {line}");
    let out = run(cmd);
    print!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}
