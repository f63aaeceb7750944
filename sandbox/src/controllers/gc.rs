//! The garbage collector: an object whose owners (by `ownerReferences` uid) are all gone is
//! deleted; references to gone owners are dropped when other owners remain. An owner deleted
//! with `propagationPolicy=Orphan` keeps its dependents (their references to it are removed)
//! and one deleted with `Foreground` waits until its dependents are gone.

use serde_json::{Value, json};

use super::Controller;
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions, FOREGROUND, ORPHAN, finalizers};
use crate::resources::{self, ResourceType};
use crate::store::{Event, EventType, State, Store};

pub struct GarbageCollector;

type ObjRef = (&'static ResourceType, String, String);

fn owner_refs(v: &Value) -> Vec<Value> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether the owner a reference names exists with that uid. Owners of kinds the sandbox does
/// not serve count as present: nothing can be known about them.
fn owner_present(state: &State, dependent_ns: &str, r: &Value) -> bool {
    let api_version = r["apiVersion"].as_str().unwrap_or_default();
    let kind = r["kind"].as_str().unwrap_or_default();
    let Some(rt) =
        resources::served().find(|rt| rt.kind == kind && rt.api_version() == api_version)
    else {
        return true;
    };
    let ns = if rt.namespaced { dependent_ns } else { "" };
    state
        .get(rt, ns, r["name"].as_str().unwrap_or_default())
        .is_some_and(|o| o.uid() == r["uid"].as_str().unwrap_or_default())
}

/// Objects with an ownerReference to `uid`.
fn dependents(state: &State, uid: &str) -> Vec<ObjRef> {
    if uid.is_empty() {
        return Vec::new();
    }
    state
        .all()
        .filter(|(_, o)| owner_refs(&o.value).iter().any(|r| r["uid"] == uid))
        .map(|(rt, o)| (rt, o.namespace().to_string(), o.name().to_string()))
        .collect()
}

/// Deletes a dependent whose owners are all gone, or drops its references to gone owners.
fn check_dependent(state: &mut State, (rt, ns, name): &ObjRef) -> Result<(), ApiError> {
    let Some(obj) = state.get(rt, ns, name).cloned() else {
        return Ok(());
    };
    let refs = owner_refs(&obj.value);
    if refs.is_empty() {
        return Ok(());
    }
    let (alive, gone): (Vec<Value>, Vec<Value>) =
        refs.into_iter().partition(|r| owner_present(state, ns, r));
    if gone.is_empty() {
        return Ok(());
    }
    if alive.is_empty() {
        if obj.value["metadata"]["deletionTimestamp"].is_null() {
            lifecycle::delete(state, rt, ns, name, &DeleteOptions::default())?;
        }
        return Ok(());
    }
    let mut value = obj.value.clone();
    value["metadata"]["ownerReferences"] = json!(alive);
    lifecycle::store_update(state, rt, value);
    Ok(())
}

/// Carries out an owner's `orphan` or `foregroundDeletion` finalizer.
fn process_owner(state: &mut State, (rt, ns, name): &ObjRef) -> Result<(), ApiError> {
    let Some(obj) = state.get(rt, ns, name).cloned() else {
        return Ok(());
    };
    if obj.value["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let fins = finalizers(&obj.value);
    let uid = obj.uid().to_string();
    let deps = dependents(state, &uid);
    let done = if fins.iter().any(|f| f == ORPHAN) {
        for (drt, dns, dname) in &deps {
            if let Some(dep) = state.get(drt, dns, dname).cloned() {
                let mut value = dep.value.clone();
                let kept: Vec<Value> = owner_refs(&value)
                    .into_iter()
                    .filter(|r| r["uid"] != uid.as_str())
                    .collect();
                value["metadata"]["ownerReferences"] = json!(kept);
                lifecycle::store_update(state, drt, value);
            }
        }
        ORPHAN
    } else if fins.iter().any(|f| f == FOREGROUND) {
        if !deps.is_empty() {
            for (drt, dns, dname) in &deps {
                let being_deleted = state
                    .get(drt, dns, dname)
                    .is_some_and(|d| !d.value["metadata"]["deletionTimestamp"].is_null());
                if !being_deleted {
                    lifecycle::delete(state, drt, dns, dname, &DeleteOptions::default())?;
                }
            }
            return Ok(());
        }
        FOREGROUND
    } else {
        return Ok(());
    };
    // Re-read: orphaning may not have touched the owner, but be exact about what is stored.
    if let Some(current) = state.get(rt, ns, name).cloned() {
        let mut value = current.value.clone();
        let left: Vec<String> = finalizers(&value)
            .into_iter()
            .filter(|f| f != done)
            .collect();
        value["metadata"]["finalizers"] = json!(left);
        lifecycle::store_update(state, rt, value);
    }
    Ok(())
}

fn log(result: Result<(), ApiError>) {
    if let Err(e) = result {
        tracing::warn!("garbage collector: {e}");
    }
}

impl Controller for GarbageCollector {
    fn resync(&mut self, store: &Store) {
        let (with_owners, owners_being_deleted): (Vec<ObjRef>, Vec<ObjRef>) = store.read(|s| {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (rt, o) in s.all() {
                let r = (rt, o.namespace().to_string(), o.name().to_string());
                if !o.value["metadata"]["deletionTimestamp"].is_null() {
                    b.push(r.clone());
                }
                if !owner_refs(&o.value).is_empty() {
                    a.push(r);
                }
            }
            (a, b)
        });
        for r in &with_owners {
            log(store.write(|s| check_dependent(s, r)));
        }
        for r in &owners_being_deleted {
            log(store.write(|s| process_owner(s, r)));
        }
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        let obj = &event.object;
        let me = (
            event.resource,
            obj.namespace().to_string(),
            obj.name().to_string(),
        );
        match event.kind {
            EventType::Deleted => {
                let uid = obj.uid().to_string();
                let deps = store.read(|s| dependents(s, &uid));
                for d in &deps {
                    log(store.write(|s| check_dependent(s, d)));
                }
                // Owners waiting for their dependents in the foreground may now be done.
                for r in owner_refs(&obj.value) {
                    let owner = store.read(|s| {
                        resources::served()
                            .find(|rt| {
                                Some(rt.kind) == r["kind"].as_str()
                                    && Some(rt.api_version().as_str()) == r["apiVersion"].as_str()
                            })
                            .map(|rt| {
                                (
                                    rt,
                                    if rt.namespaced {
                                        me.1.clone()
                                    } else {
                                        String::new()
                                    },
                                    r["name"].as_str().unwrap_or_default().to_string(),
                                )
                            })
                            .filter(|(rt, ns, name)| s.get(rt, ns, name).is_some())
                    });
                    if let Some(owner) = owner {
                        log(store.write(|s| process_owner(s, &owner)));
                    }
                }
            }
            EventType::Added | EventType::Modified => {
                if !owner_refs(&obj.value).is_empty() {
                    log(store.write(|s| check_dependent(s, &me)));
                }
                let fins = finalizers(&obj.value);
                if !obj.value["metadata"]["deletionTimestamp"].is_null()
                    && fins.iter().any(|f| f == ORPHAN || f == FOREGROUND)
                {
                    log(store.write(|s| process_owner(s, &me)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Shape;

    fn put(store: &Store, rt: &'static ResourceType, v: Value) {
        store.write(|s| Ok::<_, ()>(s.put(rt, v))).unwrap();
    }

    /// Runs the collector over everything until nothing changes.
    fn settle(store: &Store) {
        for _ in 0..10 {
            let rv = store.read(|s| s.rv());
            GarbageCollector.resync(store);
            if store.read(|s| s.rv()) == rv {
                return;
            }
        }
    }

    fn setup() -> (Store, &'static ResourceType, &'static ResourceType) {
        let store = Store::new(0);
        let deploy = resources::by_shape(Shape::Deployment);
        let rs = resources::by_shape(Shape::ReplicaSet);
        put(
            &store,
            deploy,
            json!({"metadata": {"name": "web", "namespace": "n", "uid": "d1"}}),
        );
        for (name, owners) in [
            (
                "a",
                json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1"}]),
            ),
            ("b", json!([])),
        ] {
            put(
                &store,
                rs,
                json!({"metadata": {"name": name, "namespace": "n", "uid": format!("rs-{name}"), "ownerReferences": owners}}),
            );
        }
        (store, deploy, rs)
    }

    #[test]
    fn background_deletion_removes_dependents() {
        let (store, deploy, rs) = setup();
        store
            .write(|s| lifecycle::delete(s, deploy, "n", "web", &DeleteOptions::default()))
            .unwrap();
        settle(&store);
        assert!(store.read(|s| s.get(rs, "n", "a").is_none()));
        assert!(
            store.read(|s| s.get(rs, "n", "b").is_some()),
            "unowned objects stay"
        );
    }

    #[test]
    fn orphaning_keeps_dependents_without_the_reference() {
        let (store, deploy, rs) = setup();
        let opts = DeleteOptions {
            propagation: lifecycle::Propagation::Orphan,
            ..Default::default()
        };
        store
            .write(|s| lifecycle::delete(s, deploy, "n", "web", &opts))
            .unwrap();
        settle(&store);
        assert!(store.read(|s| s.get(deploy, "n", "web").is_none()));
        let a = store.read(|s| s.get(rs, "n", "a").cloned()).unwrap();
        assert_eq!(a.value["metadata"]["ownerReferences"], json!([]));
    }

    #[test]
    fn foreground_deletion_waits_for_dependents() {
        let (store, deploy, rs) = setup();
        let opts = DeleteOptions {
            propagation: lifecycle::Propagation::Foreground,
            ..Default::default()
        };
        let held = store
            .write(|s| lifecycle::delete(s, deploy, "n", "web", &opts))
            .unwrap();
        assert_eq!(held.value["metadata"]["finalizers"], json!([FOREGROUND]));
        settle(&store);
        assert!(store.read(|s| s.get(rs, "n", "a").is_none()));
        assert!(store.read(|s| s.get(deploy, "n", "web").is_none()));
    }
}
