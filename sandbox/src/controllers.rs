//! In-process controllers. Each one subscribes to the store's event broadcast, reacts to each
//! event with a short write, and rescans everything when it starts or falls behind, so it never
//! depends on having seen every event. Controllers whose state also changes with time (pods
//! becoming available after `minReadySeconds`) rescan periodically too.
//!
//! - [`gc`]: the garbage collector (ownerReferences, `orphan` and `foregroundDeletion`).
//! - [`namespaces`]: default ServiceAccount and `kube-root-ca.crt` per namespace, and namespace
//!   deletion (contents first, then the namespace).
//! - [`deployments`] and [`replicasets`]: Deployments roll out ReplicaSets, ReplicaSets keep
//!   their pods; [`endpoints`]: Endpoints and EndpointSlices of Services with selectors.
//!   [`objects`] holds what they share (admitted writes, owner references, pod readiness).
//! - [`scheduler`]: binds pods to the node once it has registered.

pub mod deployments;
pub mod endpoints;
pub mod gc;
pub mod namespaces;
pub mod objects;
pub mod replicasets;
pub mod scheduler;

#[cfg(test)]
mod workload_tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::store::{Event, Store};

/// A controller: a full pass and a reaction to one event.
pub trait Controller: Send + 'static {
    fn resync(&mut self, store: &Store);
    fn on_event(&mut self, store: &Store, event: &Event);
    /// How often to rescan regardless of events (None: only when falling behind).
    fn period(&self) -> Option<Duration> {
        None
    }
}

/// Runs a controller until the store's broadcast closes.
pub async fn run(store: Arc<Store>, mut controller: impl Controller) {
    let mut events_rx = store.events();
    controller.resync(&store);
    // A day stands in for "never": the branch below is then effectively idle.
    let period = controller
        .period()
        .unwrap_or(Duration::from_secs(24 * 3600));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = events_rx.recv() => match received {
                Ok(event) => controller.on_event(&store, &event),
                Err(broadcast::error::RecvError::Lagged(_)) => controller.resync(&store),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick() => controller.resync(&store),
        }
    }
}

/// Starts the controllers.
pub fn spawn(store: &Arc<Store>, ca_pem: &str) {
    tokio::spawn(run(store.clone(), gc::GarbageCollector));
    tokio::spawn(run(store.clone(), deployments::Deployments));
    tokio::spawn(run(store.clone(), replicasets::ReplicaSets));
    tokio::spawn(run(store.clone(), endpoints::Endpoints));
    tokio::spawn(run(store.clone(), scheduler::Scheduler));
    tokio::spawn(run(
        store.clone(),
        namespaces::Namespaces {
            ca_pem: ca_pem.to_string(),
        },
    ));
}
