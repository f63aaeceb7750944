//! Services of type LoadBalancer in the sandbox, as a developer meets them on a cloud or a
//! MetalLB cluster: `kubectl expose --type=LoadBalancer` gets an address from the pool that
//! answers from the workstation without tether, as a cloud load balancer answers from
//! outside; externalIPs answer there too; addresses are never handed out twice, a full pool
//! leaves the next Service pending with an Event saying why, and deleting a Service frees
//! its address. The workstation still has no way to pods or ClusterIPs but the API server.
//!
//! Runs on either control plane (`TETHER_SANDBOX_CONTROL_PLANE=upstream`: the real API
//! server and kube-proxy judge the same steps). Needs root (network namespaces) and the
//! workspace built (`cargo build --workspace`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use tether_tests::sandbox::SandboxCluster;
use tether_tests::{run, wait_for};

/// The sandbox's pool (tether-sandbox's `loadbalancer::POOL`): 198.51.100.128 to .159.
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 128);
const POOL_SIZE: usize = 32;
/// An externalIP in the range the workstation reaches, outside the pool.
const EXTERNAL_IP: &str = "198.51.100.64";
/// How long an address may take to be written, and a written one to answer.
const SETTLE: Duration = Duration::from_secs(30);

fn in_pool(ip: &str) -> bool {
    let first = u32::from(POOL_FIRST);
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| (first..first + POOL_SIZE as u32).contains(&u32::from(ip)))
}

/// The Service's load-balancer address once it has one.
fn address(c: &SandboxCluster, name: &str) -> String {
    wait_for(&format!("{name} to get an address"), SETTLE, || {
        let ip = c.jsonpath(
            "demo",
            &["svc", name],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (!ip.trim().is_empty()).then(|| ip.trim().to_owned())
    })
}

/// A LoadBalancer Service for web's pods, without NodePorts (many of them are made).
fn lb_service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  selector: {{app: web, track: stable}}\n  ports:\n  - {{port: 80, targetPort: http}}\n"
    )
}

#[test]
#[ignore = "needs root (network namespaces); as root: cargo test -- --include-ignored"]
fn load_balancer_addresses_answer_from_the_workstation_and_come_from_a_pool() {
    let c = SandboxCluster::start();
    let kubectl = |args: &[&str]| c.sandbox.ok(args);

    // `kubectl expose` as the issue's user types it: an address from the pool, shown by
    // `kubectl get svc`, answered by web from the workstation with no tether running.
    kubectl(&[
        "-n",
        "demo",
        "expose",
        "deploy/web",
        "--type=LoadBalancer",
        "--name",
        "web-lb",
    ]);
    let web_ip = address(&c, "web-lb");
    assert!(in_pool(&web_ip), "{web_ip}");
    let row = kubectl(&["-n", "demo", "get", "svc", "web-lb", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().nth(3),
        Some(web_ip.as_str()),
        "EXTERNAL-IP: {row}"
    );
    let web_url = format!("http://{web_ip}:8080/");
    let body = wait_for("web-lb's address to answer", SETTLE, || c.curl(&web_url));
    assert!(body.contains("web-"), "answered by a web pod: {body}");

    // externalIPs in the same range answer too.
    c.sandbox.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-ext\n  namespace: demo\nspec:\n  selector: {{app: web, track: stable}}\n  externalIPs: [{EXTERNAL_IP}]\n  ports:\n  - {{port: 8081, targetPort: http}}\n"
    ));
    let ext_url = format!("http://{EXTERNAL_IP}:8081/");
    let body = wait_for("the externalIP to answer", SETTLE, || c.curl(&ext_url));
    assert!(body.contains("web-"), "{body}");
    let row = kubectl(&["-n", "demo", "get", "svc", "web-ext", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(3), Some(EXTERNAL_IP), "{row}");

    // The link carries the load-balancer range only: even with a route the workstation
    // adds itself, a ClusterIP (which kube-proxy would DNAT) and the node's own sockets
    // stay out of reach.
    let cluster_ip = c.jsonpath("demo", &["svc", "web"], "{.spec.clusterIP}");
    let ip = |args: &[&str]| {
        let out = run(std::process::Command::new("ip")
            .arg("-n")
            .arg(&c.workstation)
            .args(args));
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            tether_tests::text(&out)
        );
    };
    ip(&["route", "add", "10.96.0.0/16", "via", "198.51.100.1"]);
    ip(&["route", "add", "10.244.0.1/32", "via", "198.51.100.1"]);
    let refused = [
        format!("http://{cluster_ip}:80/"),
        "https://10.244.0.1:6443/".to_owned(),
    ];
    for url in &refused {
        let out = run(c.shell("curl").args(["-sk", "--max-time", "5", url]));
        assert!(!out.status.success(), "{url} reached from the workstation");
    }
    ip(&["route", "del", "10.96.0.0/16", "via", "198.51.100.1"]);
    ip(&["route", "del", "10.244.0.1/32", "via", "198.51.100.1"]);

    // Filling the pool: every address once, none twice. The demo's ingress controller
    // already holds one.
    let controller_ip = wait_for("the ingress controller's address", SETTLE, || {
        let ip = c.jsonpath(
            "ingress-nginx",
            &["svc", "ingress-nginx-controller"],
            "{.status.loadBalancer.ingress[*].ip}",
        );
        (!ip.trim().is_empty()).then(|| ip.trim().to_owned())
    });
    assert!(in_pool(&controller_ip), "{controller_ip}");
    let fill: Vec<String> = (1..POOL_SIZE - 1).map(|i| format!("fill-{i}")).collect();
    let manifests: Vec<String> = fill.iter().map(|n| lb_service(n)).collect();
    c.sandbox.apply(&manifests.join("---\n"));
    let mut addresses = BTreeSet::from([web_ip.clone(), controller_ip]);
    for name in &fill {
        let ip = address(&c, name);
        assert!(in_pool(&ip), "{name}: {ip}");
        assert!(addresses.insert(ip.clone()), "{ip} handed out twice");
    }
    assert_eq!(addresses.len(), POOL_SIZE);

    // One more stays pending, and an Event on it says why.
    c.sandbox.apply(&lb_service("one-too-many"));
    let reason = wait_for("an Event on one-too-many", SETTLE, || {
        let events = kubectl(&[
            "-n",
            "demo",
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=one-too-many,reason=AllocationFailed",
            "-o=jsonpath={.items[*].message}",
        ]);
        (!events.trim().is_empty()).then_some(events)
    });
    assert!(reason.contains("no available IPs"), "{reason}");
    let pending = c.jsonpath(
        "demo",
        &["svc", "one-too-many"],
        "{.status.loadBalancer.ingress}",
    );
    assert_eq!(pending.trim(), "", "a pending Service shows no address");
    let row = kubectl(&["-n", "demo", "get", "svc", "one-too-many", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(3), Some("<pending>"), "{row}");

    // Deleting a Service frees its address, which the pending one then gets.
    let freed = address(&c, "fill-7");
    kubectl(&["-n", "demo", "delete", "svc", "fill-7"]);
    assert_eq!(address(&c, "one-too-many"), freed);

    // A Service that stops being a LoadBalancer gives its address back too.
    let given_back = address(&c, "fill-3");
    kubectl(&[
        "-n",
        "demo",
        "patch",
        "svc",
        "fill-3",
        "--type=merge",
        "-p",
        r#"{"spec": {"type": "ClusterIP", "allocateLoadBalancerNodePorts": null}}"#,
    ]);
    wait_for("fill-3 to lose its address", SETTLE, || {
        let ip = c.jsonpath("demo", &["svc", "fill-3"], "{.status.loadBalancer.ingress}");
        ip.trim().is_empty().then_some(())
    });
    c.sandbox.apply(&lb_service("after-fill-3"));
    assert_eq!(address(&c, "after-fill-3"), given_back);

    // A deleted Service's address stops answering; the others still do.
    kubectl(&["-n", "demo", "delete", "svc", "web-lb"]);
    wait_for("web-lb's address to stop answering", SETTLE, || {
        c.curl(&web_url).is_none().then_some(())
    });
    let body = c.curl(&ext_url);
    assert!(body.is_some_and(|b| b.contains("web-")));
}
