//! Discovery against the sandbox cluster: the ServiceCIDR objects and the node's podCIDRs
//! are found, a change to either reaches the watchers, and without ServiceCIDR objects the
//! dry-run probe reads the range from the API server's refusal.

use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use tether_agent::discovery::{Discovered, Discovery, PodCidrSource, ServiceCidrSource};
use tether_tests::sandbox::Sandbox;
use tether_tests::within;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// Waits until the published answer satisfies `check`.
async fn wait_until(
    found_rx: &mut watch::Receiver<Option<Discovered>>,
    what: &str,
    check: impl Fn(&Discovered) -> bool,
) -> Discovered {
    let found = within(
        what,
        WAIT,
        found_rx.wait_for(|f| f.as_ref().is_some_and(&check)),
    )
    .await;
    found
        .expect("discovery is running")
        .clone()
        .expect("checked above")
}

#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn discovers_and_follows_the_sandbox() {
    let sb = Sandbox::start();
    let client = sb.client().await;
    let discovery = Discovery::new(client.clone(), "default");

    let found = discovery.probe().await.expect("discovery");
    assert_eq!(
        found,
        Discovered {
            service_cidrs: nets(&["10.96.0.0/16"]),
            service_source: ServiceCidrSource::ServiceCidrObjects,
            pod_cidrs: nets(&["10.244.0.0/24"]),
            pod_source: PodCidrSource::NodeSpecs,
        }
    );

    let (found_tx, mut found_rx) = watch::channel(None);
    let task = tokio::spawn(discovery.clone().run(found_tx));
    wait_until(&mut found_rx, "the first answer", |f| *f == found).await;

    // A second Service range, as `kubectl apply` of a ServiceCIDR adds one on 1.33+.
    let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
    let extra: ServiceCIDR = serde_json::from_value(
        json!({"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.97.0.0/16"]}}),
    )
    .unwrap();
    cidrs
        .create(&PostParams::default(), &extra)
        .await
        .expect("create a ServiceCIDR");
    let now = wait_until(&mut found_rx, "the new ServiceCIDR", |f| {
        f.service_cidrs.len() == 2
    })
    .await;
    assert_eq!(now.service_cidrs, nets(&["10.96.0.0/16", "10.97.0.0/16"]));

    // A second node with its own pod range, as when a cluster scales up.
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "second"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
    }))
    .unwrap();
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create a node");
    let now = wait_until(&mut found_rx, "the second node's podCIDR", |f| {
        f.pod_cidrs.len() == 2
    })
    .await;
    assert_eq!(now.pod_cidrs, nets(&["10.244.0.0/24", "10.244.1.0/24"]));
    assert_eq!(
        now.subnets(),
        nets(&[
            "10.96.0.0/16",
            "10.97.0.0/16",
            "10.244.0.0/24",
            "10.244.1.0/24"
        ])
    );

    // Removals are followed too.
    cidrs
        .delete("extra", &DeleteParams::default())
        .await
        .expect("delete the ServiceCIDR");
    nodes
        .delete("second", &DeleteParams::default())
        .await
        .expect("delete the node");
    wait_until(&mut found_rx, "the removals", |f| *f == found).await;

    drop(found_rx);
    within("discovery to stop without receivers", WAIT, task)
        .await
        .expect("the discovery task ended cleanly");
}

/// Without ServiceCIDR objects (as on clusters before 1.33), the range comes from the
/// refusal of a dry-run Service at 1.1.1.1, and nothing is created.
#[tokio::test]
#[ignore = "needs root (the sandbox's network namespaces); as root: cargo test -- --include-ignored"]
async fn without_service_cidr_objects_the_dry_run_names_the_range() {
    let sb = Sandbox::start();
    let client = sb.client().await;
    let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
    let uid = cidrs
        .get("kubernetes")
        .await
        .expect("the default ServiceCIDR")
        .metadata
        .uid
        .expect("a stored object has a uid");
    cidrs
        .delete("kubernetes", &DeleteParams::default())
        .await
        .expect("delete the default ServiceCIDR");
    within(
        "the ServiceCIDR to be gone",
        WAIT,
        await_condition(cidrs.clone(), "kubernetes", conditions::is_deleted(&uid)),
    )
    .await
    .expect("watch the ServiceCIDR");
    let found = Discovery::new(client.clone(), "default")
        .probe()
        .await
        .expect("discovery");
    assert_eq!(found.service_source, ServiceCidrSource::OutOfRangeError);
    assert_eq!(found.service_cidrs, nets(&["10.96.0.0/16"]));
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, "default");
    assert!(
        services
            .get_opt(tether_agent::discovery::PROBE_SERVICE)
            .await
            .unwrap()
            .is_none(),
        "the dry-run stored nothing"
    );
}
