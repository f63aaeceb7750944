//! In-process controllers. Each one subscribes to the store's event broadcast, reacts to each
//! event with a short write, and rescans everything when it starts or falls behind, so it never
//! depends on having seen every event. Part 2 adds the workload controllers and the kubelet
//! the same way.
//!
//! - [`gc`]: the garbage collector (ownerReferences, `orphan` and `foregroundDeletion`).
//! - [`namespaces`]: default ServiceAccount and `kube-root-ca.crt` per namespace, and namespace
//!   deletion (contents first, then the namespace).

pub mod gc;
pub mod namespaces;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::{Event, Store};

/// A controller: a full pass and a reaction to one event.
pub trait Controller: Send + 'static {
    fn resync(&mut self, store: &Store);
    fn on_event(&mut self, store: &Store, event: &Event);
}

/// Runs a controller until the store's broadcast closes.
pub async fn run(store: Arc<Store>, mut controller: impl Controller) {
    let mut events_rx = store.events();
    controller.resync(&store);
    loop {
        match events_rx.recv().await {
            Ok(event) => controller.on_event(&store, &event),
            Err(broadcast::error::RecvError::Lagged(_)) => controller.resync(&store),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Starts the part 1 controllers.
pub fn spawn(store: &Arc<Store>, ca_pem: &str) {
    tokio::spawn(run(store.clone(), gc::GarbageCollector));
    tokio::spawn(run(
        store.clone(),
        namespaces::Namespaces {
            ca_pem: ca_pem.to_string(),
        },
    ));
}
