//! tether-bench: the data-plane benchmark in the direct-mode topology.
//!
//! In one run it measures, from the laptop namespace to a server in the cluster namespace,
//! bulk TCP throughput (one stream) and small-request latency, first over the direct veth
//! path (a host route to the server for that measurement only), then through tether, and
//! prints one table with the ratios and the resident memory of both tether processes.
//! Build with `cargo build --release --workspace` and run `target/release/tether-bench`
//! as root.

use std::time::Duration;

use tether_tests::direct::{DirectCluster, WEB_IP};
use tether_tests::{bin, check, have_root};

const SECONDS: &str = "5";
const REQUESTS: &str = "20000";

fn main() {
    if !have_root() {
        eprintln!("tether-bench needs root (network namespaces, TUN)");
        std::process::exit(2);
    }
    let dc = DirectCluster::start();
    let target = format!("{WEB_IP}:9000");

    let route = [WEB_IP, "via", "172.30.0.1", "dev", "veth0"];
    dc.laptop.ip(&[&["route", "add"][..], &route].concat());
    let direct = measure(&dc, &target);
    dc.laptop.ip(&[&["route", "del"][..], &route].concat());

    let tether = dc.connect(&[]);
    let tunnel = measure(&dc, &target);
    let tether_rss = rss_kib(tether.pid());
    let manager_rss = rss_kib(dc.manager_pid());
    tether.signal("TERM");
    tether.wait(Duration::from_secs(10));

    println!("| metric | direct veth | through tether | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| TCP throughput, 1 stream (Gbit/s) | {:.2} | {:.2} | {:.2} |",
        direct.gbps,
        tunnel.gbps,
        tunnel.gbps / direct.gbps
    );
    for (name, d, t) in [
        ("p50", direct.p50, tunnel.p50),
        ("p90", direct.p90, tunnel.p90),
        ("p99", direct.p99, tunnel.p99),
    ] {
        println!(
            "| request latency {name} (µs) | {d} | {t} | {:.2} (+{} µs) |",
            t as f64 / d.max(1) as f64,
            t.saturating_sub(d)
        );
    }
    println!(
        "| tether daemon RSS after the run (MiB) | | {:.1} | |",
        tether_rss as f64 / 1024.0
    );
    println!(
        "| tether-agent manager RSS after the run (MiB) | | {:.1} | |",
        manager_rss as f64 / 1024.0
    );
}

struct Figures {
    gbps: f64,
    p50: u64,
    p90: u64,
    p99: u64,
}

fn measure(dc: &DirectCluster, target: &str) -> Figures {
    let kit = bin("tether-testkit");
    let gbps = check(dc.laptop.cmd(&kit).args([
        "probe",
        "--to",
        target,
        "--mode",
        "throughput",
        "--amount",
        SECONDS,
    ]))
    .trim()
    .parse()
    .expect("probe prints Gbit/s");
    let latency = check(dc.laptop.cmd(&kit).args([
        "probe", "--to", target, "--mode", "latency", "--amount", REQUESTS,
    ]));
    let mut it = latency
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("probe prints µs"));
    let (Some(p50), Some(p90), Some(p99)) = (it.next(), it.next(), it.next()) else {
        panic!("unexpected latency output: {latency}");
    };
    Figures {
        gbps,
        p50,
        p90,
        p99,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
