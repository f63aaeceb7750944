//! What `up` checks before it starts anything, and `shell` finding the kubeconfig `up`
//! wrote.

use std::process::Command;

use tether_tests::sandbox::Sandbox;
use tether_tests::{bin, check, run, text};

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn up_without_nft_refuses_naming_the_package_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let before = check(Command::new("ip").args(["netns", "list"]));
    let out = run(Command::new(bin("tether-sandbox"))
        .args(["up", "--state-dir"])
        .arg(dir.path())
        .env("PATH", empty_path.path()));
    assert!(!out.status.success(), "{}", text(&out));
    for part in ["nftables", "iproute2", "scripts/install-deps.sh"] {
        assert!(text(&out).contains(part), "names {part:?}: {}", text(&out));
    }
    assert_eq!(
        check(Command::new("ip").args(["netns", "list"])),
        before,
        "nothing started"
    );
    assert!(!dir.path().join("tether-sandbox.pid").exists());
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn shell_uses_the_kubeconfig_up_wrote() {
    let elsewhere = tempfile::tempdir().unwrap();
    let kubeconfig = elsewhere.path().join("my-kubeconfig");
    let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
    let sb = Sandbox::start_with(&["--kubeconfig", &kubeconfig_arg]);
    assert!(
        kubeconfig.exists(),
        "up wrote the kubeconfig where it was told"
    );
    let shown = check(
        Command::new(bin("tether-sandbox"))
            .args(["shell", "--state-dir"])
            .arg(sb.dir())
            .args(["--", "sh", "-c", "printf %s \"$KUBECONFIG\""]),
    );
    assert_eq!(shown, kubeconfig_arg);
}
