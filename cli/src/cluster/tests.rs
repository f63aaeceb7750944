//! The cluster module against a real `tether-sandbox` (and the real kubectl to check what it
//! did). Each test starts its own sandbox through the workspace's shared harness
//! (`tether_tests::sandbox`), which stops it and removes its state directory on drop. The
//! sandbox's controllers and kubelet run the manager: its image maps to the `tether-agent`
//! built next to the test binaries. The sandbox needs root: without it those tests are
//! reported as ignored, with the reason.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use tether_tests::sandbox::Sandbox;

use super::Cluster;
use super::client::{ClusterError, KubeOptions, connect};
use super::exec_as::{ExecAs, Invoker};
use super::install::{InstallError, InstallOptions, ensure_manager, uninstall};
use super::manifests::{self, NAME, VERSION};
use super::progress::Progress;
use super::rollout::RolloutError;
use super::transport::{self, TransportError};

const NS: &str = "tether";

/// What these tests need of the shared sandbox beyond kubectl: this module's own client.
trait SandboxExt {
    fn options(&self) -> KubeOptions;
    async fn cluster(&self) -> Cluster;
    fn versions(&self) -> Vec<String>;
}

impl SandboxExt for Sandbox {
    fn options(&self) -> KubeOptions {
        KubeOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            ..Default::default()
        }
    }

    async fn cluster(&self) -> Cluster {
        connect(&self.options()).await.expect("connect")
    }

    /// The resourceVersion of every object the install writes; the Deployment's generation
    /// (its controller keeps writing its status).
    fn versions(&self) -> Vec<String> {
        INSTALLED
            .iter()
            .map(|o| {
                let mut args = o.to_vec();
                let field = if o.contains(&"deployment") {
                    "jsonpath={.metadata.generation}"
                } else {
                    "jsonpath={.metadata.resourceVersion}"
                };
                args.extend(["-o", field]);
                self.ok(&args)
            })
            .collect()
    }
}

/// The objects of the install contract, as kubectl arguments.
const INSTALLED: &[&[&str]] = &[
    &["get", "namespace", NS],
    &["-n", NS, "get", "serviceaccount", NAME],
    &["get", "clusterrole", NAME],
    &["get", "clusterrolebinding", NAME],
    &["-n", NS, "get", "secret", manifests::TOKEN_SECRET],
    &["-n", NS, "get", "deployment", NAME],
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn options() -> InstallOptions {
    InstallOptions {
        namespace: NS.into(),
        image: None,
        timeout: Duration::from_secs(20),
    }
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn connect_names_the_context_and_checks_the_credentials() {
    let sb = Sandbox::start();
    let cluster = sb.cluster().await;
    assert_eq!(cluster.context, "tether-sandbox");
    assert!(
        cluster.server.starts_with("https://127.0.0.1:"),
        "{}",
        cluster.server
    );
    assert_eq!(cluster.namespace, "default");

    // The same kubeconfig with a token the server does not know.
    let config = std::fs::read_to_string(&sb.kubeconfig).unwrap();
    let bad: String = config
        .lines()
        .map(|l| match l.split_once("token:") {
            Some((indent, _)) => format!("{indent}token: not-the-token\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let path = sb.dir().join("bad-kubeconfig");
    std::fs::write(&path, bad).unwrap();
    let err = connect(&KubeOptions {
        kubeconfig: Some(path),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClusterError::Unauthorized { code: 401, context, .. } if context == "tether-sandbox"),
        "{err}"
    );
}

/// A credential plugin that only works as the user `nobody` with that user's environment,
/// as a plugin needing the user's own cloud credentials would.
#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn credential_plugins_run_as_the_user_who_connected() {
    let sb = Sandbox::start();
    let config = std::fs::read_to_string(&sb.kubeconfig).unwrap();
    let token = config
        .lines()
        .find_map(|l| l.split_once("token:"))
        .map(|(_, t)| t.trim().trim_matches('"').to_owned())
        .expect("the sandbox's kubeconfig has a token");
    // Readable and runnable by `nobody`.
    let dir = tempfile::tempdir().unwrap();
    let perms = |mode| std::os::unix::fs::PermissionsExt::from_mode(mode);
    std::fs::set_permissions(dir.path(), perms(0o755)).unwrap();
    let plugin = dir.path().join("plugin.sh");
    // Each run of the plugin adds a line (writable by `nobody`).
    let runs = dir.path().join("runs");
    std::fs::write(&runs, "").unwrap();
    std::fs::set_permissions(&runs, perms(0o666)).unwrap();
    std::fs::write(
        &plugin,
        "#!/bin/sh\n\
         [ \"$(id -u)\" = 65534 ] || { echo \"running as uid $(id -u)\" >&2; exit 1; }\n\
         [ \"$USERS_OWN\" = yes ] || { echo 'not the user environment' >&2; exit 1; }\n\
         echo run >> \"$RUNS\"\n\
         printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\"}}' \"$TOKEN\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, perms(0o755)).unwrap();
    let with_plugin: String = config
        .lines()
        .map(|l| match l.split_once("token:") {
            Some((indent, _)) => format!(
                "{indent}exec:\n{indent}  apiVersion: client.authentication.k8s.io/v1\n{indent}  command: {}\n{indent}  interactiveMode: Never\n{indent}  env:\n{indent}  - {{name: TOKEN, value: {token}}}\n{indent}  - {{name: RUNS, value: {}}}\n",
                plugin.display(),
                runs.display()
            ),
            None => format!("{l}\n"),
        })
        .collect();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, with_plugin).unwrap();

    // As root, the plugin refuses.
    let options = KubeOptions {
        kubeconfig: Some(kubeconfig),
        ..Default::default()
    };
    let err = connect(&options).await.unwrap_err();
    assert!(matches!(err, ClusterError::Credentials { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("running as uid 0"), "{message}");
    assert!(message.contains("plugin.sh"), "{message}");
    assert!(!message.contains(&token), "the token stays out: {message}");

    // Through `tether exec-as`, as nobody with the user's environment, it works.
    let exec_as = ExecAs {
        invoker: Invoker {
            uid: 65534,
            gid: 65534,
            env: std::collections::BTreeMap::from([
                ("USERS_OWN".into(), "yes".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ]),
        },
        helper: tether_tests::bin("tether"),
    };
    let cluster = connect(&KubeOptions {
        exec_as: Some(exec_as),
        ..options
    })
    .await
    .expect("the plugin's token is accepted");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    namespaces
        .get("default")
        .await
        .expect("requests carry the plugin's token");
    // One client: kube-rs asks the plugin once for a TLS client certificate and once for the
    // token; a second client (or kube-rs's default builder) would run a slow cloud CLI more.
    let plugin_runs = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!((1..=2).contains(&plugin_runs), "{plugin_runs} runs");
}

#[tokio::test]
async fn an_unreachable_server_fails_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\ncontexts:\n- name: gone\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let started = Instant::now();
    let err = connect(&KubeOptions {
        kubeconfig: Some(path),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    match &err {
        ClusterError::Unreachable {
            context, server, ..
        } => {
            assert_eq!(
                (context.as_str(), server.as_str()),
                ("gone", "https://127.0.0.1:1")
            )
        }
        other => panic!("expected unreachable, got {other}"),
    }
    assert!(err.to_string().contains("https://127.0.0.1:1"), "{err}");
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn install_is_complete_idempotent_upgrades_and_uninstalls() {
    let sb = Sandbox::start();
    let cluster = sb.cluster().await;

    let mut events = Vec::new();
    let manager = ensure_manager(&cluster, &options(), &mut |p| events.push(p))
        .await
        .expect("install");
    assert_eq!(
        (manager.namespace.as_str(), manager.version.as_str()),
        (NS, VERSION)
    );
    assert_eq!(manager.token.len(), 64);
    assert!(manager.pod.starts_with(NAME), "{}", manager.pod);
    for kind in [
        "namespace",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "secret",
        "deployment",
    ] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Progress::Created { kind: k, .. } if *k == kind)),
            "no {kind} created: {events:?}"
        );
    }
    // Every object exists, as kubectl sees it, with the contract's details.
    let before = sb.versions();
    let labels = sb.ok(&[
        "-n",
        NS,
        "get",
        "deployment",
        NAME,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains(&format!("\"app.kubernetes.io/version\":\"{VERSION}\"")),
        "{labels}"
    );
    let args = sb.ok(&[
        "-n",
        NS,
        "get",
        "deployment",
        NAME,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    assert!(args.contains("--discover"), "{args}");
    let token = sb.ok(&[
        "-n",
        NS,
        "get",
        "secret",
        manifests::TOKEN_SECRET,
        "-o",
        "jsonpath={.data.token}",
    ]);
    assert!(!token.is_empty());
    let subjects = sb.ok(&[
        "get",
        "clusterrolebinding",
        NAME,
        "-o",
        "jsonpath={.subjects[0].namespace}",
    ]);
    assert_eq!(subjects, NS);

    // A second run writes nothing and reuses the token.
    let mut again = Vec::new();
    let second = ensure_manager(&cluster, &options(), &mut |p| again.push(p))
        .await
        .expect("second install");
    assert_eq!(second.token, manager.token);
    assert_eq!(
        sb.versions(),
        before,
        "the second install changed something: {again:?}"
    );
    assert!(
        again
            .iter()
            .any(|e| matches!(e, Progress::UsingInstalled { .. })),
        "{again:?}"
    );

    // An older manager is upgraded.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NS);
    let mut old = manifests::deployment(NS, "ghcr.io/tether-dev/tether-agent:0.0.1", "0.0.1");
    old.metadata.resource_version = deployments
        .get(NAME)
        .await
        .unwrap()
        .metadata
        .resource_version;
    deployments
        .replace(NAME, &PostParams::default(), &old)
        .await
        .unwrap();
    let mut upgrade = Vec::new();
    let upgraded = ensure_manager(&cluster, &options(), &mut |p| upgrade.push(p))
        .await
        .expect("upgrade");
    assert!(
        upgrade.contains(&Progress::Upgrading {
            from: "0.0.1".into(),
            to: VERSION.into()
        }),
        "{upgrade:?}"
    );
    assert_eq!(upgraded.version, VERSION);
    let image = sb.ok(&[
        "-n",
        NS,
        "get",
        "deployment",
        NAME,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, manifests::default_image());

    // The transport finds the Ready manager pod.
    let pod = transport::wait_for_ready_pod(&cluster, NS, None, Duration::from_secs(10))
        .await
        .expect("a Ready pod");
    assert_eq!(pod.name, upgraded.pod);

    // Uninstall removes everything, and a second one finds nothing to remove.
    let removed = uninstall(&cluster, NS).await.expect("uninstall");
    assert!(
        removed.objects.contains(&format!("namespace/{NS}")),
        "{removed:?}"
    );
    assert!(
        removed.objects.contains(&format!("clusterrole/{NAME}")),
        "{removed:?}"
    );
    for object in INSTALLED {
        let out = sb.kubectl(object);
        assert!(!out.status.success(), "{object:?} still exists");
        assert!(
            text(&out.stderr).contains("NotFound"),
            "{}",
            text(&out.stderr)
        );
    }
    let again = uninstall(&cluster, NS).await.expect("second uninstall");
    assert!(again.objects.is_empty(), "{again:?}");
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn an_image_that_cannot_be_pulled_fails_the_install_with_the_kubelets_message() {
    let sb = Sandbox::start();
    let cluster = sb.cluster().await;
    let started = Instant::now();
    let missing = InstallOptions {
        image: Some("ghcr.io/tether-dev/no-such-image:1".into()),
        ..options()
    };
    let err = ensure_manager(&cluster, &missing, &mut |_| {})
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    match &err {
        InstallError::Rollout {
            source: RolloutError::PodFailed { problem, .. },
            ..
        } => {
            assert!(problem.contains("ErrImagePull"), "{problem}");
            assert!(problem.contains("no-such-image"), "{problem}");
        }
        other => panic!("expected a pod failure, got {other}"),
    }
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn a_newer_incompatible_manager_is_an_error_that_says_what_to_do() {
    let sb = Sandbox::start();
    let cluster = sb.cluster().await;
    let v = semver::Version::parse(VERSION).unwrap();
    let newer = format!("{}.{}.0", v.major + 1, v.minor);
    sb.ok(&["create", "namespace", NS]);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NS);
    deployments
        .create(
            &PostParams::default(),
            &manifests::deployment(NS, "img:new", &newer),
        )
        .await
        .unwrap();
    let err = ensure_manager(&cluster, &options(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, InstallError::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("tether uninstall"), "{err}");
    // The namespace was the user's: uninstall keeps it.
    let removed = uninstall(&cluster, NS).await.unwrap();
    assert!(
        !removed.objects.iter().any(|o| o.starts_with("namespace/")),
        "{removed:?}"
    );
    sb.ok(&["get", "namespace", NS]);
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn the_transport_needs_a_ready_manager_and_forwards_to_it() {
    let sb = Sandbox::start();
    let cluster = sb.cluster().await;
    match transport::open(&cluster, NS).await {
        Err(TransportError::NoReadyManager { namespace, .. }) => assert_eq!(namespace, NS),
        Err(other) => panic!("expected no manager, got {other}"),
        Ok(_) => panic!("expected no manager, got a stream"),
    }
    let manager = ensure_manager(&cluster, &options(), &mut |_| {})
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), transport::open(&cluster, NS))
        .await
        .expect("open did not hang");
    let (mut stream, pod) = match result {
        Ok(opened) => opened,
        Err(other) => panic!("the port-forward to the ready manager failed: {other}"),
    };
    assert_eq!(pod.name, manager.pod);
    // Bytes flow both ways: the manager accepts its session token's handshake.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NS);
    let secret = secrets.get(manifests::TOKEN_SECRET).await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()[manifests::TOKEN_KEY].0.clone()).unwrap();
    let accepted = tokio::time::timeout(
        Duration::from_secs(10),
        tether_tunnel::wire::handshake::client_handshake(&mut stream, token.trim()),
    )
    .await
    .expect("the handshake did not hang")
    .expect("the manager accepts the token");
    assert_eq!(accepted.peer.software, VERSION);

    // A port nothing listens on: the server's message on the error channel is a read error.
    let mut dead = transport::forward_port(&cluster, &pod, 1)
        .await
        .expect("the port-forward itself is accepted");
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut dead, &mut buf),
    )
    .await
    .expect("the read did not hang")
    .expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("port 1"), "{err}");
}
