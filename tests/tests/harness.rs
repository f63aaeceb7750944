//! The harness itself: a test that fails leaves nothing behind, neither its sandbox (server,
//! network namespaces, state directory) nor its network namespace and log directory.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use tether_tests::sandbox::{Sandbox, alive};
use tether_tests::{Netns, check, unique, wait_for};

fn netns_list() -> String {
    check(Command::new("ip").args(["netns", "list"]))
}

/// Runs `test` on its own thread, where it must panic, and returns what it sent before.
fn failing<T: Send + 'static>(test: impl FnOnce(mpsc::Sender<T>) + Send + 'static) -> T {
    let (seen_tx, seen_rx) = mpsc::channel();
    let outcome = std::thread::spawn(move || test(seen_tx)).join();
    assert!(outcome.is_err(), "the test was meant to fail");
    seen_rx.recv().expect("the test sent what it had made")
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn a_failing_test_stops_its_sandbox_and_removes_its_state() {
    let (dir, pid, prefix) = failing(|seen_tx| {
        let sb = Sandbox::start();
        seen_tx
            .send((sb.dir().to_path_buf(), sb.pid(), sb.netns_prefix()))
            .expect("the receiver waits");
        panic!("a test fails while its sandbox runs");
    });
    wait_for(
        "the failed test's sandbox to exit",
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    );
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let list = netns_list();
    assert!(!list.contains(&prefix), "namespaces left: {list}");
}

#[test]
#[ignore = "needs root (network namespaces, TUN); as root: cargo test -- --include-ignored"]
fn a_failing_test_removes_its_namespace_and_logs() {
    let (name, logs) = failing(|seen_tx| {
        let ns = Netns::new(unique("h"));
        let mut proc = ns.spawn(
            "echo",
            "sh",
            &["-c", "echo ready; echo oops >&2; exec sleep 60"],
        );
        proc.wait_line(Duration::from_secs(10), |l| l == "ready");
        seen_tx
            .send((ns.name.clone(), ns.log_dir()))
            .expect("the receiver waits");
        panic!("a test fails while its namespace has a process");
    });
    assert!(!logs.exists(), "{} is left behind", logs.display());
    let list = netns_list();
    assert!(!list.contains(&name), "namespace left: {list}");
}
