//! Deletion, as the API server does it: preconditions, finalizers (an object with finalizers
//! only gets a `deletionTimestamp` and goes when the last finalizer is removed), propagation
//! policies (`Orphan` and `Foreground` become the `orphan` and `foregroundDeletion` finalizers
//! the garbage collector honours), and namespaces, which always go through the namespace
//! controller (`spec.finalizers: [kubernetes]`).
//!
//! Pods on a node are deleted gracefully: DELETE sets `deletionTimestamp` (now + grace) and
//! `deletionGracePeriodSeconds` and leaves the object for the kubelet, which stops the
//! containers and then deletes it again with grace 0. An object goes only when it has no
//! finalizers and its grace period is 0, as in kube-apiserver.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission;
use crate::error::ApiError;
use crate::resources::{ResourceType, Shape};
use crate::store::{State, Stored};

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// The parts of DeleteOptions the sandbox honours.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
    /// `gracePeriodSeconds`; None: the object's own (a pod's `terminationGracePeriodSeconds`).
    pub grace_period_seconds: Option<i64>,
}

impl DeleteOptions {
    /// Reads DeleteOptions from a request body (possibly empty) and the query's
    /// `propagationPolicy`/`orphanDependents`/`gracePeriodSeconds`.
    pub fn parse(
        body: &[u8],
        query_policy: Option<&str>,
        query_orphan: Option<&str>,
        query_grace: Option<&str>,
    ) -> Result<Self, ApiError> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
        };
        let policy = v["propagationPolicy"].as_str().or(query_policy);
        let orphan = v["orphanDependents"]
            .as_bool()
            .or(query_orphan.map(|s| s == "true"));
        let propagation = match (policy, orphan) {
            (Some("Background"), _) => Propagation::Background,
            (Some("Foreground"), _) => Propagation::Foreground,
            (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
            (None, _) => Propagation::Background,
            (Some(other), _) => {
                return Err(ApiError::BadRequest(format!(
                    "DeletionPropagation {other:?} is not supported: supported values are Orphan, Background, Foreground"
                )));
            }
        };
        let grace_period_seconds =
            match (&v["gracePeriodSeconds"], query_grace) {
                (Value::Number(n), _) => n.as_i64(),
                (_, Some(q)) => Some(q.trim().parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(format!("invalid gracePeriodSeconds: {q:?}"))
                })?),
                _ => None,
            };
        let pre = &v["preconditions"];
        Ok(DeleteOptions {
            grace_period_seconds,
            propagation,
            uid: pre["uid"].as_str().map(str::to_string),
            resource_version: pre["resourceVersion"].as_str().map(str::to_string),
            dry_run: v["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d == "All")),
        })
    }
}

/// The object's finalizers.
pub fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes (or starts deleting) one object; returns the object as the response shows it.
pub fn delete(
    state: &mut State,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Arc<Stored>, ApiError> {
    let current = state
        .get(rt, namespace, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let uid = current.uid();
    if opts.uid.as_deref().is_some_and(|u| u != uid) {
        return Err(ApiError::Conflict {
            resource: rt.qualified_plural(),
            group: rt.group,
            name: name.to_string(),
            detail: format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                opts.uid.as_deref().unwrap_or_default()
            ),
        });
    }
    if opts
        .resource_version
        .as_deref()
        .is_some_and(|rv| rv != current.rv.to_string())
    {
        return Err(ApiError::conflict(rt, name));
    }
    if let Some(grace) = pod_grace(rt, &current.value, opts)
        && grace > 0
    {
        return delete_gracefully(state, rt, current, grace, opts);
    }
    let mut fins = finalizers(&current.value);
    let mut value = current.value.clone();
    let being_deleted = !value["metadata"]["deletionTimestamp"].is_null();
    let mut changed = false;
    match opts.propagation {
        Propagation::Orphan if !fins.iter().any(|f| f == ORPHAN) => {
            fins.push(ORPHAN.into());
            changed = true;
        }
        Propagation::Foreground if !fins.iter().any(|f| f == FOREGROUND) => {
            fins.push(FOREGROUND.into());
            changed = true;
        }
        _ => {}
    }
    let namespace_pending = rt.shape == Shape::Namespace
        && value["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if fins.is_empty() && !namespace_pending {
        if opts.dry_run {
            return Ok(current);
        }
        // Checked above that it exists.
        return Ok(state.remove(rt, namespace, name).expect("object exists"));
    }
    if being_deleted && !changed && grace_seconds(&value) == 0 {
        return Ok(current);
    }
    // A forced delete of an object held by finalizers ends its grace period now.
    value["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    if !being_deleted {
        value["metadata"]["deletionTimestamp"] = json!(admission::now());
        if rt.shape == Shape::Namespace {
            value["status"]["phase"] = json!("Terminating");
        }
    }
    if !fins.is_empty() {
        value["metadata"]["finalizers"] = json!(fins);
    }
    if opts.dry_run {
        return Ok(current);
    }
    Ok(state.put(rt, value))
}

/// The grace period a DELETE gives a pod (None for other types): the request's, else the pod's
/// `terminationGracePeriodSeconds`, else 30; 0 for a pod no node runs or that has finished,
/// since nothing would stop its containers.
fn pod_grace(rt: &ResourceType, pod: &Value, opts: &DeleteOptions) -> Option<i64> {
    if rt.shape != Shape::Pod {
        return None;
    }
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return Some(0);
    }
    let grace = opts
        .grace_period_seconds
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    Some(grace.max(0))
}

/// The grace period an object being deleted still has (0 when none was given).
fn grace_seconds(value: &Value) -> i64 {
    value["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(0)
}

/// Starts (or shortens) a pod's graceful deletion: the object stays, with `deletionTimestamp`
/// at the end of the grace period. A later delete may shorten the period, never extend it.
fn delete_gracefully(
    state: &mut State,
    rt: &'static ResourceType,
    current: Arc<Stored>,
    grace: i64,
    opts: &DeleteOptions,
) -> Result<Arc<Stored>, ApiError> {
    let meta = &current.value["metadata"];
    if !meta["deletionTimestamp"].is_null() && grace_seconds(&current.value) <= grace {
        return Ok(current);
    }
    let mut value = current.value.clone();
    let mut fins = finalizers(&value);
    let extra = match opts.propagation {
        Propagation::Orphan => Some(ORPHAN),
        Propagation::Foreground => Some(FOREGROUND),
        Propagation::Background => None,
    };
    if let Some(f) = extra
        && meta["deletionTimestamp"].is_null()
        && !fins.iter().any(|x| x == f)
    {
        fins.push(f.into());
        value["metadata"]["finalizers"] = json!(fins);
    }
    let deadline = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    value["metadata"]["deletionTimestamp"] =
        json!(deadline.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    value["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if opts.dry_run {
        return Ok(current);
    }
    Ok(state.put(rt, value))
}

/// Stores an updated object, or removes it when it is being deleted, has no finalizers left
/// (the last finalizer was just removed) and no grace period left.
pub fn store_update(state: &mut State, rt: &'static ResourceType, value: Value) -> Arc<Stored> {
    let namespace_pending = rt.shape == Shape::Namespace
        && value["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if !value["metadata"]["deletionTimestamp"].is_null()
        && finalizers(&value).is_empty()
        && grace_seconds(&value) == 0
        && !namespace_pending
    {
        let ns = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        state.put(rt, value);
        // Just stored under this key.
        return state.remove(rt, &ns, &name).expect("object exists");
    }
    state.put(rt, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use crate::store::Store;

    #[test]
    fn finalizers_hold_objects_until_removed() {
        let store = Store::new(0);
        let cm = resources::by_shape(Shape::ConfigMap);
        let obj =
            json!({"metadata": {"name": "a", "namespace": "n", "uid": "u1", "finalizers": ["x"]}});
        store.write(|s| Ok::<_, ()>(s.put(cm, obj))).unwrap();
        let held = store
            .write(|s| delete(s, cm, "n", "a", &DeleteOptions::default()))
            .unwrap();
        assert!(!held.value["metadata"]["deletionTimestamp"].is_null());
        assert!(store.read(|s| s.get(cm, "n", "a").is_some()));
        let mut released = held.value.clone();
        released["metadata"]["finalizers"] = json!([]);
        store
            .write(|s| Ok::<_, ()>(store_update(s, cm, released)))
            .unwrap();
        assert!(store.read(|s| s.get(cm, "n", "a").is_none()));
    }

    #[test]
    fn preconditions_and_options() {
        let store = Store::new(0);
        let cm = resources::by_shape(Shape::ConfigMap);
        store
            .write(|s| {
                Ok::<_, ()>(s.put(
                    cm,
                    json!({"metadata": {"name": "a", "namespace": "n", "uid": "u1"}}),
                ))
            })
            .unwrap();
        let opts = DeleteOptions::parse(br#"{"preconditions":{"uid":"other"}}"#, None, None, None)
            .unwrap();
        assert_eq!(
            store
                .write(|s| delete(s, cm, "n", "a", &opts))
                .unwrap_err()
                .code(),
            409
        );
        let opts = DeleteOptions::parse(b"", Some("Orphan"), None, None).unwrap();
        assert_eq!(opts.propagation, Propagation::Orphan);
        assert!(DeleteOptions::parse(b"{", None, None, None).is_err());
        assert!(
            DeleteOptions::parse(br#"{"propagationPolicy":"Sideways"}"#, None, None, None).is_err()
        );
        let gone = store
            .write(|s| delete(s, cm, "n", "a", &DeleteOptions::default()))
            .unwrap();
        assert_eq!(gone.name(), "a");
        assert_eq!(
            store
                .write(|s| delete(s, cm, "n", "a", &DeleteOptions::default()))
                .unwrap_err()
                .code(),
            404
        );
    }
}
