//! `up`, `status` and `down`, state that survives a restart, and a corrupt state file.

use tether_tests::sandbox::Sandbox;

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn up_status_down_and_state_survives() {
    let sb = Sandbox::start();
    let kubeconfig = std::fs::read_to_string(&sb.kubeconfig).unwrap();
    assert!(
        kubeconfig.contains(&format!("https://127.0.0.1:{}", sb.port())),
        "{kubeconfig}"
    );
    assert!(
        kubeconfig.contains("certificate-authority-data"),
        "{kubeconfig}"
    );
    let again = sb.up();
    assert!(
        again.contains("is running at"),
        "a second up reports the running server: {again}"
    );
    let status = sb.run(&["status"]);
    assert!(status.status.success());

    sb.ok(&["create", "configmap", "kept", "--from-literal=a=b"]);
    sb.ok(&["create", "namespace", "stays"]);
    sb.down();
    let status = sb.run(&["status"]);
    assert_eq!(status.status.code(), Some(3), "status after down");
    sb.up();
    assert_eq!(
        sb.ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    sb.ok(&["get", "namespace", "stays"]);
    // Addresses stay allocated across restarts: the kube-dns address is still refused.
    let err = sb.fails_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: clash}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 53}]}\n",
    );
    assert!(err.contains("provided IP is already allocated"), "{err}");
}

#[test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
fn a_corrupt_state_file_is_reported() {
    let sb = Sandbox::start();
    sb.down();
    std::fs::write(
        sb.dir().join("state.json"),
        "{\"version\": 1, \"objects\": [",
    )
    .unwrap();
    let out = sb.run(&["up"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("state.json is corrupt"), "{stderr}");
}
