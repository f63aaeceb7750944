//! kube-proxy: keeps the nftables table [`rules::TABLE`] in the node namespace in step with the
//! Services and EndpointSlices in the store.
//!
//! Every sync renders the whole table from a snapshot of the store ([`rules`]) and loads it
//! with one `nft -f` transaction that deletes and re-creates the table, so packets see either
//! the old rules or the new ones, never a mix, and nothing depends on having seen every event.
//! Changes come in bursts (a rollout touches pods, slices and Services within milliseconds), so
//! syncs are debounced: a sync starts once events have been quiet for [`QUIET`], or [`MAX_DELAY`]
//! after the first unsynced change, whichever is first; only one runs at a time, and events
//! that arrive meanwhile make the next one. A failed sync is retried, less often
//! after each failure in a row.

pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::netns::{Netns, NetnsError};
use crate::resources::{self, Shape};
use crate::store::{Event, Store, Stored};

/// How long events must be quiet before a sync.
const QUIET: Duration = Duration::from_millis(20);
/// The longest a change waits for a sync while events keep coming.
const MAX_DELAY: Duration = Duration::from_millis(200);
/// How long after a failed sync the next one is tried; doubled after each failure in a row.
const RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where the rules apply in the sandbox's node.
pub fn env() -> rules::Env {
    rules::Env {
        node_ip: super::NODE_IP,
        bridge: super::network::BRIDGE.to_string(),
        pod_cidr: crate::bootstrap::POD_CIDR.to_string(),
    }
}

fn typed<T: DeserializeOwned>(objects: Vec<Arc<Stored>>) -> Vec<T> {
    objects
        .iter()
        .filter_map(|o| match serde_json::from_value(o.value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!("kube-proxy skips {}/{}: {e}", o.namespace(), o.name());
                None
            }
        })
        .collect()
}

/// The nftables script for what the store holds now.
pub fn ruleset(store: &Store) -> String {
    let (services, slices) = store.read(|s| {
        let all = |shape| {
            s.list(resources::by_shape(shape), None, None)
                .cloned()
                .collect::<Vec<_>>()
        };
        (all(Shape::Service), all(Shape::EndpointSlice))
    });
    let services: Vec<Service> = typed(services);
    let slices: Vec<EndpointSlice> = typed(slices);
    rules::render(&rules::plan(&services, &slices), &env())
}

/// Renders the rules for what the store holds and loads them into `node` (blocking).
#[cfg(test)]
pub fn sync(store: &Store, node: &Netns) -> Result<(), NetnsError> {
    node.nft(&ruleset(store))
}

fn relevant(event: &Event) -> bool {
    matches!(event.resource.shape, Shape::Service | Shape::EndpointSlice)
}

/// Keeps the rules in `node_netns` in sync with the store until the store's broadcast closes.
pub async fn run(store: Arc<Store>, node_netns: Netns) {
    // The store sends every event; kube-proxy only looks at Services and EndpointSlices.
    let mut events_rx = store.events();
    let mut applied: Option<String> = None;
    // A pending sync: when the first unsynced change came and when the last one did. The
    // first sync (start) is pending from the beginning.
    let now = Instant::now();
    let mut pending: Option<(Instant, Instant)> = Some((now, now));
    let mut not_before = now;
    let mut retry = RETRY;
    loop {
        let Some((first, last)) = pending else {
            match events_rx.recv().await {
                Ok(event) if !relevant(&event) => {}
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    let now = Instant::now();
                    pending = Some((now, now));
                }
                Err(RecvError::Closed) => return,
            }
            continue;
        };
        let due = (last + QUIET).min(first + MAX_DELAY).max(not_before);
        tokio::select! {
            received = events_rx.recv() => match received {
                Ok(event) if !relevant(&event) => {}
                Ok(_) | Err(RecvError::Lagged(_)) => pending = Some((first, Instant::now())),
                Err(RecvError::Closed) => return,
            },
            () = tokio::time::sleep_until(due) => {
                pending = None;
                let script = ruleset(&store);
                if applied.as_ref() == Some(&script) {
                    continue;
                }
                let ns = node_netns.clone();
                let text = script.clone();
                let loaded = tokio::task::spawn_blocking(move || ns.nft(&text))
                    .await
                    .unwrap_or_else(|e| Err(NetnsError::Command {
                        action: "nft -f".into(),
                        detail: e.to_string(),
                    }));
                match loaded {
                    Ok(()) => {
                        tracing::debug!("kube-proxy rules loaded into {}", node_netns.name());
                        applied = Some(script);
                        retry = RETRY;
                    }
                    Err(e) => {
                        tracing::warn!("kube-proxy could not load its rules (retrying): {e}");
                        let now = Instant::now();
                        pending = Some((now, now));
                        not_before = now + retry;
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
            }
        }
    }
}
