//! The object store: every object of every resource type, as JSON, under one lock, with one
//! global resourceVersion counter (as etcd's revision is for a real API server).
//!
//! Writes go through [`Store::write`], which hands a closure the locked [`State`]; each `put` or
//! `remove` bumps the resourceVersion, keeps a bounded history of events for watches that resume
//! from a resourceVersion, and broadcasts the event to live watchers while the lock is held, so
//! watchers see events in resourceVersion order. Controllers (garbage collection, namespaces,
//! and in part 2 the kubelet) subscribe to the same broadcast.

pub mod selector;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};

use crate::alloc::Allocations;
use crate::resources::{self, ResourceType, Shape};

/// How many past events a watch can resume from.
const HISTORY: usize = 50_000;
/// How many events a live watcher may fall behind before its watch is ended.
const BROADCAST_CAPACITY: usize = 16_384;

/// (resource id, namespace or "", name).
pub type Key = (usize, String, String);

/// A stored object: its JSON value and its serialized bytes (so lists and watches do not
/// serialize it again).
#[derive(Debug)]
pub struct Stored {
    pub value: Value,
    pub json: Bytes,
    pub rv: u64,
}

impl Stored {
    fn new(value: Value, rv: u64) -> Self {
        // Serializing a serde_json::Value cannot fail (its map keys are strings).
        let json = Bytes::from(serde_json::to_vec(&value).expect("Value serializes"));
        Stored { value, json, rv }
    }

    pub fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    pub fn uid(&self) -> &str {
        self.value["metadata"]["uid"].as_str().unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change. `object.rv` is the event's resourceVersion.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub resource: &'static ResourceType,
    pub object: Arc<Stored>,
    /// The object before a MODIFIED event (watches with selectors need both sides).
    pub previous: Option<Arc<Stored>>,
}

fn key_of(rt: &ResourceType, value: &Value) -> Key {
    let meta = |field: &str| value["metadata"][field].as_str().unwrap_or("").to_string();
    (rt.id, meta("namespace"), meta("name"))
}

/// The locked contents of the store.
#[derive(Debug)]
pub struct State {
    objects: BTreeMap<Key, Arc<Stored>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Events at or below this resourceVersion may be missing from `history`.
    compacted_rv: u64,
    /// ClusterIPs and NodePorts held by stored Services.
    pub alloc: Allocations,
    /// Live watchers and controllers: the store sends every event, they receive.
    events_tx: broadcast::Sender<Arc<Event>>,
}

/// Why a watch cannot start from the resourceVersion it asked for.
#[derive(Debug, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

/// What a new watch starts with: past events to replay, then the live receiver.
pub struct Subscription {
    pub replay: Vec<Arc<Event>>,
    pub events_rx: broadcast::Receiver<Arc<Event>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

impl State {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<&Arc<Stored>> {
        self.objects
            .get(&(rt.id, namespace.to_string(), name.to_string()))
    }

    /// Objects of one type, in one namespace or all, in key order, starting after `after`
    /// (a `namespace/name` continue position) when given.
    pub fn list<'a>(
        &'a self,
        rt: &ResourceType,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = &'a Arc<Stored>> + 'a {
        let start = match after {
            Some((ns, name)) => (rt.id, ns.to_string(), format!("{name}\0")),
            None => (rt.id, namespace.unwrap_or("").to_string(), String::new()),
        };
        let id = rt.id;
        let ns = namespace.map(str::to_string);
        self.objects
            .range(start..)
            .take_while(move |((r, n, _), _)| *r == id && ns.as_ref().is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// Stores an object (created or replaced), assigning it the next resourceVersion.
    ///
    /// Replacing an object with an equal one (its resourceVersion aside) changes nothing and
    /// returns the stored object, as kube-apiserver does for a no-op update: a new version and
    /// event would wake every watcher, and writers that react to their own writes would spin.
    pub fn put(&mut self, rt: &'static ResourceType, mut value: Value) -> Arc<Stored> {
        let key = key_of(rt, &value);
        if let Some(cur) = self.objects.get(&key) {
            value["metadata"]["resourceVersion"] = cur.value["metadata"]["resourceVersion"].clone();
            if cur.value == value {
                return cur.clone();
            }
        }
        self.rv += 1;
        value["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let stored = Arc::new(Stored::new(value, self.rv));
        let old = self.objects.insert(key, stored.clone());
        if rt.shape == Shape::Service {
            let holder = (stored.namespace().to_string(), stored.name().to_string());
            if let Some(old) = &old {
                self.alloc.release(&holder, &old.value);
            }
            self.alloc.hold(&holder, &stored.value);
        }
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            kind,
            resource: rt,
            object: stored.clone(),
            previous: old,
        });
        stored
    }

    /// Removes an object; the DELETED event carries it with a new resourceVersion.
    pub fn remove(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Stored>> {
        let old = self
            .objects
            .remove(&(rt.id, namespace.to_string(), name.to_string()))?;
        if rt.shape == Shape::Service {
            self.alloc
                .release(&(namespace.to_string(), name.to_string()), &old.value);
        }
        self.rv += 1;
        let mut value = old.value.clone();
        value["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let gone = Arc::new(Stored::new(value, self.rv));
        self.record(Event {
            kind: EventType::Deleted,
            resource: rt,
            object: gone.clone(),
            previous: None,
        });
        Some(gone)
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.history.len() == HISTORY
            && let Some(dropped) = self.history.pop_front()
        {
            self.compacted_rv = dropped.object.rv;
        }
        self.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events_tx.send(event);
    }

    /// Every stored object with its type (for snapshots and controllers' full scans).
    pub fn all(&self) -> impl Iterator<Item = (&'static ResourceType, &Arc<Stored>)> {
        self.objects
            .iter()
            .map(|((id, _, _), v)| (&resources::RESOURCES[*id], v))
    }

    /// Starts a watch: events after `from` (None: no replay) and a live receiver, atomically.
    pub fn subscribe(&self, from: Option<u64>) -> Result<Subscription, TooOld> {
        let replay = match from {
            None => Vec::new(),
            Some(rv) if rv < self.compacted_rv => {
                return Err(TooOld {
                    requested: rv,
                    oldest: self.compacted_rv + 1,
                });
            }
            Some(rv) => {
                let start = self.history.partition_point(|e| e.object.rv <= rv);
                self.history.range(start..).cloned().collect()
            }
        };
        Ok(Subscription {
            replay,
            events_rx: self.events_tx.subscribe(),
            rv: self.rv,
        })
    }
}

/// The shared store.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    /// Woken after every write that changed something (the snapshot writer waits on it).
    changed: Notify,
}

impl Store {
    /// An empty store whose counter starts at `rv` (the resourceVersion of a loaded snapshot).
    pub fn new(rv: u64) -> Self {
        let (events_tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Store {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                rv,
                history: VecDeque::new(),
                compacted_rv: rv,
                alloc: Allocations::default(),
                events_tx,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that every write keeps consistent
        // (writes check before they change anything), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads under the lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock())
    }

    /// Writes under the lock. The closure must check everything before its first `put` or
    /// `remove`, so an error leaves the store unchanged.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut State) -> Result<T, E>) -> Result<T, E> {
        let mut state = self.lock();
        let before = state.rv;
        let result = f(&mut state);
        let changed = state.rv != before;
        drop(state);
        if changed {
            self.changed.notify_one();
        }
        result
    }

    /// Loads objects from a snapshot without recording events.
    pub fn load(&self, objects: Vec<(&'static ResourceType, Value)>) {
        let mut state = self.lock();
        for (rt, value) in objects {
            let rv = value["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let key = key_of(rt, &value);
            let stored = Arc::new(Stored::new(value, rv));
            if rt.shape == Shape::Service {
                let holder = (key.1.clone(), key.2.clone());
                state.alloc.hold(&holder, &stored.value);
            }
            state.objects.insert(key, stored);
        }
    }

    /// Waits until a write changes something.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Subscribes to every future event (for controllers).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.lock().events_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn puts_bump_the_resource_version_and_replay_from_history() {
        let store = Store::new(0);
        let rt = resources::by_shape(Shape::ConfigMap);
        store.write(|s| Ok::<_, ()>(s.put(rt, cm("a")))).unwrap();
        let sub = store.read(|s| s.subscribe(Some(1))).unwrap();
        assert!(sub.replay.is_empty());
        store.write(|s| Ok::<_, ()>(s.put(rt, cm("b")))).unwrap();
        store
            .write(|s| Ok::<_, ()>(s.remove(rt, "default", "a")))
            .unwrap();
        let sub = store.read(|s| s.subscribe(Some(1))).unwrap();
        let kinds: Vec<_> = sub.replay.iter().map(|e| (e.kind, e.object.rv)).collect();
        assert_eq!(kinds, vec![(EventType::Added, 2), (EventType::Deleted, 3)]);
        let names: Vec<_> = store.read(|s| {
            s.list(rt, Some("default"), None)
                .map(|o| o.name().to_string())
                .collect()
        });
        assert_eq!(names, vec!["b"]);
        assert_eq!(
            store.read(|s| s.get(rt, "default", "b").map(|o| o.rv)),
            Some(2)
        );
    }

    #[test]
    fn an_unchanged_put_keeps_the_version_and_sends_no_event() {
        let store = Store::new(0);
        let rt = resources::by_shape(Shape::ConfigMap);
        let mut events = store.events();
        let first = store.write(|s| Ok::<_, ()>(s.put(rt, cm("a")))).unwrap();
        // A writer that echoes the object back, old resourceVersion and all.
        let again = store
            .write(|s| Ok::<_, ()>(s.put(rt, first.value.clone())))
            .unwrap();
        assert_eq!((first.rv, again.rv), (1, 1));
        assert_eq!(again.value["metadata"]["resourceVersion"], "1");
        let mut changed = cm("a");
        changed["data"] = json!({"k": "v"});
        let third = store.write(|s| Ok::<_, ()>(s.put(rt, changed))).unwrap();
        assert_eq!(third.rv, 2);
        let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| (e.kind, e.object.rv))
            .collect();
        assert_eq!(seen, vec![(EventType::Added, 1), (EventType::Modified, 2)]);
    }

    #[test]
    fn a_restarted_store_refuses_old_resource_versions() {
        let store = Store::new(10);
        assert!(store.read(|s| s.subscribe(Some(9))).is_err());
        assert!(store.read(|s| s.subscribe(Some(10))).is_ok());
    }

    #[test]
    fn lists_continue_after_a_key() {
        let store = Store::new(0);
        let rt = resources::by_shape(Shape::ConfigMap);
        for n in ["a", "b", "c"] {
            store.write(|s| Ok::<_, ()>(s.put(rt, cm(n)))).unwrap();
        }
        let rest: Vec<_> = store.read(|s| {
            s.list(rt, None, Some(("default", "a")))
                .map(|o| o.name().to_string())
                .collect()
        });
        assert_eq!(rest, vec!["b", "c"]);
    }
}
