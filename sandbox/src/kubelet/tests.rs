//! The kubelet against real processes and namespaces (needs root; skipped otherwise). Each test
//! has its own state directory, hence its own namespace names, and a guard that removes its
//! namespaces (and whatever still runs in them) even when it fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::admission;
use crate::auth::Tokens;
use crate::node::netns;

struct TestNet {
    layout: Arc<Layout>,
    next: AtomicU8,
}

impl PodNetwork for TestNet {
    fn add_pod(&self, uid: &str) -> Result<(Netns, Ipv4Addr), String> {
        let ns = Netns::create(self.layout.names.pod(uid)).map_err(|e| e.to_string())?;
        let ip = Ipv4Addr::new(10, 244, 0, self.next.fetch_add(1, Ordering::Relaxed));
        // The pod's address on loopback: enough to dial it from inside (no dummy module here).
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .map_err(|e| e.to_string())?;
        Ok((ns, ip))
    }

    fn remove_pod(&self, uid: &str) {
        let _ = Netns::named(self.layout.names.pod(uid)).delete();
    }
}

struct Sandbox {
    store: Arc<Store>,
    layout: Arc<Layout>,
    tokens: Arc<Tokens>,
    _dir: tempfile::TempDir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for ns in netns::list_with_prefix(self.layout.names.prefix()) {
            let _ = ns.delete();
        }
    }
}

fn start() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let layout = Arc::new(Layout::new(dir.path()));
    let store = Arc::new(Store::new(0));
    crate::bootstrap::run(&store).unwrap();
    // The kubelet runs on the store directly here (no API server, so no mirror): the node
    // is there and the scheduler binds to it, as the builtin control plane does.
    let nodes = resources::by_shape(Shape::Node);
    store
        .write(|s| {
            s.put(nodes, json!({"metadata": {"name": NODE_NAME}}));
            Ok::<_, ()>(())
        })
        .unwrap();
    tokio::spawn(controllers::run(
        store.clone(),
        controllers::scheduler::Scheduler,
    ));
    let tokens = Arc::new(Tokens::default());
    let net = Arc::new(TestNet {
        layout: layout.clone(),
        next: AtomicU8::new(2),
    });
    tokio::spawn(run(
        store.clone(),
        net,
        layout.clone(),
        tokens.clone(),
        "CA PEM".into(),
        Arc::new(exec::ExecTargets::default()),
    ));
    Sandbox {
        store,
        layout,
        tokens,
        _dir: dir,
    }
}

fn pods() -> &'static resources::ResourceType {
    resources::by_shape(Shape::Pod)
}

impl Sandbox {
    fn create(&self, name: &str, spec: Value) -> String {
        let uid = uuid::Uuid::new_v4().to_string();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid, "creationTimestamp": admission::now()},
            "spec": spec});
        self.store
            .write(|s| Ok::<_, ()>(s.put(pods(), pod)))
            .unwrap();
        uid
    }

    fn get(&self, name: &str) -> Option<Value> {
        self.store
            .read(|s| s.get(pods(), "default", name).map(|p| p.value.clone()))
    }

    /// Deletes as the API server does for a pod on a node: sets the deletion timestamp.
    fn delete(&self, name: &str, grace: u64) {
        self.store
            .write(|s| {
                let mut v = s.get(pods(), "default", name).unwrap().value.clone();
                v["metadata"]["deletionTimestamp"] = json!(admission::now());
                v["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Ok::<_, ()>(s.put(pods(), v))
            })
            .unwrap();
    }

    /// Waits until the pod (None: gone) satisfies `f`, on store events, within `timeout`.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events_rx = self.store.events();
        loop {
            let pod = self.get(name);
            if f(pod.as_ref()) {
                return pod;
            }
            match tokio::time::timeout_at(deadline, events_rx.recv()).await {
                Ok(_) => {}
                Err(_) => panic!(
                    "pod {name}: timed out waiting for {what}; it is {:#}",
                    pod.unwrap_or_default()
                ),
            }
        }
    }

    fn log(&self, name: &str, uid: &str, container: &str) -> PathBuf {
        self.layout
            .pod_dir("default", name, uid)
            .join(format!("{container}.log"))
    }
}

fn condition(pod: Option<&Value>, kind: &str) -> Option<String> {
    pod?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// Waits for a file (written by a process, not the store) to contain `needle`.
async fn file_with(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {needle:?}; it has:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sh(script: &str) -> Value {
    json!({"name": "main", "image": "tether-sandbox/host", "command": ["sh", "-c", script]})
}

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
async fn a_host_pod_sees_its_environment_files_and_token() {
    let sb = start();
    let mut c = sh(
        "echo ENV=$GREETING:$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT:$HOSTNAME; echo HOST=$(hostname); \
         cat /etc/resolv.conf /etc/hosts; ls /var/run/secrets/kubernetes.io/serviceaccount; \
         echo NS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); \
         echo TOKEN=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); echo DONE; exec sleep 60",
    );
    c["env"] = json!([
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "value": "hi-$(POD)"},
    ]);
    let uid = sb.create(
        "web",
        json!({"containers": [c], "hostname": "web-0", "subdomain": "web"}),
    );
    let pod = sb
        .wait("web", "Ready", T, |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await
        .unwrap();
    assert_eq!(pod["spec"]["nodeName"], "sandbox");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["hostIP"], "10.244.0.1");
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(pod["status"]["podIPs"][0]["ip"], ip.as_str());
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(
        (cs["ready"].clone(), cs["started"].clone()),
        (json!(true), json!(true))
    );
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert_eq!(
        condition(Some(&pod), "PodScheduled").as_deref(),
        Some("True")
    );

    let log = file_with(&sb.log("web", &uid, "main"), "DONE", T).await;
    assert!(log.contains("ENV=hi-web:10.96.0.1:443:web-0"), "{log}");
    assert!(log.contains("HOST=web-0"), "{log}");
    assert!(log.contains("nameserver 10.96.0.10"), "{log}");
    assert!(log.contains("search default.svc.cluster.local svc.cluster.local cluster.local"));
    assert!(log.contains("options ndots:5"));
    assert!(
        log.contains(&format!("{ip}\tweb-0.web.default.svc.cluster.local\tweb-0")),
        "{log}"
    );
    assert!(log.contains("ca.crt\nnamespace\ntoken\n"), "{log}");
    assert!(log.contains("NS=default"));
    let token = log.split("TOKEN=").nth(1).unwrap().lines().next().unwrap();
    assert_eq!(
        sb.tokens.check(token, |_, _, _| true).map(|a| a.name),
        Some("default".into())
    );
    // The host's own files are untouched.
    assert!(
        !std::fs::read_to_string("/etc/resolv.conf")
            .unwrap()
            .contains("10.96.0.10")
    );

    let netns = Netns::named(sb.layout.names.pod(&uid));
    assert!(netns.exists());
    let started = Instant::now();
    sb.delete("web", 30);
    sb.wait("web", "removal", T, |p| p.is_none()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sleep dies on SIGTERM"
    );
    assert!(!netns.exists());
    assert!(sb.tokens.check(token, |_, _, _| true).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
async fn readiness_probes_drive_the_ready_condition() {
    let sb = start();
    let mut flag = sh("sleep 0.5; touch /run/ready; sleep 2; rm /run/ready; exec sleep 60");
    flag["name"] = json!("flag");
    flag["readinessProbe"] = json!({"exec": {"command": ["cat", "/run/ready"]}, "periodSeconds": 1, "failureThreshold": 1});
    let mut tcp = json!({"name": "tcp", "image": "tether-sandbox/host",
        "command": ["perl", "-MIO::Socket::INET", "-e",
            "sleep 1; my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die; while (my $c = $s->accept) { close $c }"],
        "ports": [{"name": "svc", "containerPort": 8080}]});
    tcp["readinessProbe"] = json!({"tcpSocket": {"port": "svc"}, "periodSeconds": 1});
    sb.create("probed", json!({"containers": [flag, tcp]}));
    let ready = |p: Option<&Value>, i: usize| {
        p.is_some_and(|p| p["status"]["containerStatuses"][i]["ready"] == true)
    };
    let pod = sb
        .wait("probed", "Ready", T, |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    assert!(ready(pod.as_ref(), 0) && ready(pod.as_ref(), 1));
    assert_eq!(
        condition(pod.as_ref(), "ContainersReady").as_deref(),
        Some("True")
    );
    let pod = sb
        .wait("probed", "not Ready", T, |p| {
            condition(p, "Ready").as_deref() == Some("False")
        })
        .await;
    assert!(
        !ready(pod.as_ref(), 0) && ready(pod.as_ref(), 1),
        "{pod:#?}"
    );
    sb.delete("probed", 0);
    sb.wait("probed", "removal", T, |p| p.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
async fn restarts_back_off_and_phases_follow_the_policy() {
    let sb = start();
    let uid = sb.create("crash", json!({"containers": [sh("echo run $$; exit 3")]}));
    sb.create(
        "fails",
        json!({"restartPolicy": "Never", "containers": [sh("exit 3")]}),
    );
    sb.create(
        "done",
        json!({"restartPolicy": "OnFailure", "containers": [sh("exit 0")]}),
    );
    sb.create(
        "nope",
        json!({"containers": [{"name": "main", "image": "example.com/nope:1"}]}),
    );
    let pod = sb
        .wait("crash", "CrashLoopBackOff", T, |p| {
            p.is_some_and(|p| {
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    == "CrashLoopBackOff"
            })
        })
        .await
        .unwrap();
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 1);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(condition(Some(&pod), "Ready").as_deref(), Some("False"));
    let dir = sb.layout.pod_dir("default", "crash", &uid);
    assert!(
        std::fs::read_to_string(dir.join("main.previous.log"))
            .unwrap()
            .contains("run ")
    );
    assert!(
        std::fs::read_to_string(dir.join("main.log"))
            .unwrap()
            .contains("run ")
    );

    let phase = |want: &'static str| {
        move |p: Option<&Value>| p.is_some_and(|p| p["status"]["phase"] == want)
    };
    let pod = sb
        .wait("fails", "Failed", T, phase("Failed"))
        .await
        .unwrap();
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    let pod = sb
        .wait("done", "Succeeded", T, phase("Succeeded"))
        .await
        .unwrap();
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);

    let pod = sb
        .wait("nope", "ErrImagePull", T, |p| {
            p.is_some_and(|p| {
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
            })
        })
        .await
        .unwrap();
    let msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains("example.com/nope:1") && msg.contains("images.json"),
        "{msg}"
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    for name in ["crash", "fails", "done", "nope"] {
        sb.delete(name, 0);
    }
    for name in ["crash", "fails", "done", "nope"] {
        sb.wait(name, "removal", T, |p| p.is_none()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
async fn graceful_deletion_honours_traps_and_the_grace_period() {
    let sb = start();
    let polite = sb.create(
        "polite",
        json!({"containers": [sh("trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done")]}),
    );
    let stubborn = sb.create(
        "stubborn",
        json!({"containers": [sh("trap '' TERM; echo up; while true; do sleep 0.1; done")]}),
    );
    for name in ["polite", "stubborn"] {
        sb.wait(name, "Ready", T, |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    }
    // Both traps are set once "up" is written (Ready only says the process started).
    file_with(&sb.log("polite", &polite, "main"), "up", T).await;
    file_with(&sb.log("stubborn", &stubborn, "main"), "up", T).await;
    let started = Instant::now();
    sb.delete("polite", 10);
    sb.delete("stubborn", 2);
    sb.wait("polite", "removal", T, |p| p.is_none()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the trap exits at once"
    );
    let log = std::fs::read_to_string(sb.log("polite", &polite, "main")).unwrap();
    assert!(log.contains("got TERM"), "{log}");
    sb.wait("stubborn", "removal", T, |p| p.is_none()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
async fn a_failing_liveness_probe_restarts_the_container() {
    let sb = start();
    // The first run never becomes alive; the second (the pod's /run survives restarts) does.
    let mut c =
        sh("if [ -e /run/once ]; then touch /run/alive; else touch /run/once; fi; exec sleep 60");
    c["livenessProbe"] = json!({"exec": {"command": ["cat", "/run/alive"]}, "periodSeconds": 1, "failureThreshold": 1});
    sb.create(
        "live",
        json!({"containers": [c], "terminationGracePeriodSeconds": 1}),
    );
    let pod = sb
        .wait("live", "a restart", T, |p| {
            p.is_some_and(|p| {
                let cs = &p["status"]["containerStatuses"][0];
                cs["restartCount"] == 1 && cs["state"]["running"].is_object()
            })
        })
        .await
        .unwrap();
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 128 + 15, "{last}");
    assert_eq!(last["signal"], 15);
    sb.delete("live", 0);
    sb.wait("live", "removal", T, |p| p.is_none()).await;
}
