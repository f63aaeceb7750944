//! The README's front door: `tether-demo` (what `./install.sh` runs) against its own sandbox
//! cluster, as a newcomer would see it.

use std::process::Command;

use tether_tests::{bin, run};

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn the_install_demo_connects_reaches_the_cluster_and_restores_the_workstation() {
    let out = run(&mut Command::new(bin("tether-demo")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tether-demo failed:\n{stdout}\n{stderr}"
    );
    let manager_ready = format!("traffic manager {} ready", env!("CARGO_PKG_VERSION"));
    for expected in [
        manager_ready.as_str(),
        "hostname: web-",
        "hostname: api-",
        "legacy.example.com.",
        "hello over UDP",
        "Connected (kubernetes)",
        "this machine is as it was",
        "after quit: exactly as before",
    ] {
        assert!(
            stdout.contains(expected),
            "the demo's output lacks {expected:?}:\n{stdout}\n{stderr}"
        );
    }
}
