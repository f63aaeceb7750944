//! tether-demo: the main job, shown on a throw-away topology. A "cluster" namespace runs the
//! manager, a web server, a UDP echo and a DNS server; a "laptop" namespace reaches it only
//! through tether. Nothing in the host's own network namespace changes.

use std::process::Command;
use std::time::Duration;

use tether_tests::direct::{DirectCluster, ECHO_IP, MANAGER, SERVICE_CIDR};
use tether_tests::{bin, have_root, run};

fn main() {
    if !have_root() {
        eprintln!("tether-demo needs root: it creates network namespaces and a TUN device");
        std::process::exit(2);
    }
    let dc = DirectCluster::start();
    let before = dc.laptop.snapshot();
    println!(
        "A cluster (namespace {}) and a laptop (namespace {}) are up.",
        dc.cluster.name, dc.laptop.name
    );
    println!(
        "\nlaptop$ tether connect --manager-address {MANAGER} --token-file ... --also-proxy {SERVICE_CIDR}"
    );
    let tether = dc.connect(&[]);
    println!("(connected; running in the background of this demo)");

    let mut ok = true;
    ok &= show(&dc, &["curl", "-sS", "--max-time", "5", "http://web.shop/"]);
    ok &= show(
        &dc,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://web.shop.svc.cluster.local/",
        ],
    );
    ok &= show(&dc, &["dig", "+short", "web.shop.svc.cluster.local"]);
    let kit = bin("tether-testkit");
    let kit = kit.to_str().expect("UTF-8 path");
    ok &= show(
        &dc,
        &[
            kit,
            "udp-ping",
            "--to",
            &format!("{ECHO_IP}:7"),
            "--message",
            "hello over UDP",
        ],
    );

    println!("\nlaptop$ tether quit");
    let out = run(dc.tether().arg("quit"));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    tether.wait(Duration::from_secs(10));
    let restored = dc.laptop.snapshot() == before;
    println!(
        "\nlaptop's links, routes and resolv.conf after quit: {}",
        if restored {
            "exactly as before"
        } else {
            "CHANGED"
        }
    );
    if !(ok && restored && out.status.success()) {
        eprintln!("the demo did not go as expected");
        std::process::exit(1);
    }
}

fn show(dc: &DirectCluster, argv: &[&str]) -> bool {
    println!(
        "\nlaptop$ {}",
        argv.join(" ")
            .replace(&*bin("tether-testkit").to_string_lossy(), "tether-testkit")
    );
    let out = run(&mut {
        let mut cmd: Command = dc.laptop.cmd(argv[0]);
        cmd.args(&argv[1..]);
        cmd
    });
    print!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}
