//! Load-balancer addresses for Services, as MetalLB or kind's cloud-provider give them: a
//! Service of type LoadBalancer gets an address from [`POOL`], written to
//! `status.loadBalancer.ingress` through the status subresource, and kube-proxy forwards it.
//! The pool lies in the range the workstation reaches over the node's load-balancer link
//! ([`crate::node::lb_link`]), so the address answers there without tether.
//!
//! The allocator is an ordinary API client (kube-rs), so the same code serves both control
//! planes: a watcher keeps a reflector of every Service, and each change runs a plan over
//! all of them ([`pool`]) whose writes are made here: status patches, and an Event on the
//! Service for each address given and each reason a Service stays pending (also logged).
//! A failed write is tried again after [`RETRY`], since the next plan only comes with the
//! next change.

pub mod pool;

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use pool::{Action, Allocator, Key, Pool};

/// The addresses handed out: 32 in the upper half of [`crate::node::lb_link::REACHABLE`],
/// leaving the lower half for externalIPs and the link itself.
pub const POOL: Pool = Pool {
    first: Ipv4Addr::new(198, 51, 100, 128),
    last: Ipv4Addr::new(198, 51, 100, 159),
};
/// Who the Events say they come from.
const COMPONENT: &str = "tether-sandbox-lb";
/// How long after a failed write the plan runs again.
const RETRY: Duration = Duration::from_secs(1);

/// Runs the allocator with `client`'s identity until the task is aborted.
pub async fn run(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let watch = watcher(services, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let mut watch = std::pin::pin!(watch);
    let mut allocator = Allocator::new(POOL);
    let mut synced = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    tracing::info!("load-balancer addresses from {POOL}");
    loop {
        let retry = async move {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = watch.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => synced = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("load-balancer allocator's watch: {e}");
                    continue;
                }
                None => return,
            },
            () = retry => retry_at = None,
        }
        // Until the first list is complete, a plan would hand out addresses that Services
        // not yet seen already show.
        if !synced {
            continue;
        }
        if !apply(&client, &reader, &mut allocator).await {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }
}

/// Plans over what the reflector holds and makes the writes; whether all of them succeeded.
async fn apply(client: &kube::Client, reader: &Store<Service>, allocator: &mut Allocator) -> bool {
    let services: Vec<Service> = reader.state().iter().map(|s| (**s).clone()).collect();
    let mut ok = true;
    for action in allocator.plan(&services) {
        let written = match &action {
            Action::Assign(key, ip) => {
                let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
                let patched = patch_status(client, key, status).await;
                if patched.is_ok() {
                    tracing::info!("{key}: load-balancer address {ip}");
                    event(
                        client,
                        key,
                        "Normal",
                        "IPAllocated",
                        &format!("Assigned IP [\"{ip}\"]"),
                    )
                    .await;
                }
                patched
            }
            Action::Clear(key) => {
                let patched = patch_status(
                    client,
                    key,
                    json!({"status": {"loadBalancer": {"ingress": null}}}),
                )
                .await;
                if patched.is_ok() {
                    tracing::info!("{key}: load-balancer address freed");
                }
                patched
            }
            Action::Pending(key, why) => {
                tracing::warn!("{key}: no load-balancer address: {why}");
                let message = format!("Failed to allocate IP for \"{key}\": {why}");
                event(client, key, "Warning", "AllocationFailed", &message).await;
                Ok(())
            }
        };
        match written {
            Ok(()) => {}
            // Deleted meanwhile: the watch will say so, and the plan forget it.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => {
                tracing::warn!("load-balancer allocator could not write {action:?}: {e}");
                if let Action::Assign(key, _) = &action {
                    allocator.not_written(&key.uid);
                }
                ok = false;
            }
        }
    }
    ok
}

async fn patch_status(
    client: &kube::Client,
    key: &Key,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

/// Records an Event on the Service, as `kubectl describe svc` shows them; a failure is only
/// logged, since the Event is a report, not the state.
async fn event(client: &kube::Client, key: &Key, type_: &str, reason: &str, message: &str) {
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{}", key.name, uuid::Uuid::new_v4().simple())),
            namespace: Some(key.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: Some(key.uid.clone()),
            ..ObjectReference::default()
        },
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(COMPONENT.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &key.namespace);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!("{key}: cannot record the event {reason}: {e}");
    }
}
