//! Deletion, as the API server does it: preconditions, finalizers (an object with finalizers
//! only gets a `deletionTimestamp` and goes when the last finalizer is removed), propagation
//! policies (`Orphan` and `Foreground` become the `orphan` and `foregroundDeletion` finalizers
//! the garbage collector honours), and namespaces, which always go through the namespace
//! controller (`spec.finalizers: [kubernetes]`).

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
}

impl DeleteOptions {
    /// Reads DeleteOptions from a request body (possibly empty) and the query's
    /// `propagationPolicy`/`orphanDependents`.
    pub fn parse(
        body: &[u8],
        query_policy: Option<&str>,
        query_orphan: Option<&str>,
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
        let pre = &v["preconditions"];
        Ok(DeleteOptions {
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
    if being_deleted && !changed {
        return Ok(current);
    }
    if !being_deleted {
        value["metadata"]["deletionTimestamp"] = json!(admission::now());
        value["metadata"]["deletionGracePeriodSeconds"] = json!(0);
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

/// Stores an updated object, or removes it when it is being deleted and has no finalizers left
/// (the last finalizer was just removed).
pub fn store_update(state: &mut State, rt: &'static ResourceType, value: Value) -> Arc<Stored> {
    let namespace_pending = rt.shape == Shape::Namespace
        && value["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if !value["metadata"]["deletionTimestamp"].is_null()
        && finalizers(&value).is_empty()
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
        let opts =
            DeleteOptions::parse(br#"{"preconditions":{"uid":"other"}}"#, None, None).unwrap();
        assert_eq!(
            store
                .write(|s| delete(s, cm, "n", "a", &opts))
                .unwrap_err()
                .code(),
            409
        );
        let opts = DeleteOptions::parse(b"", Some("Orphan"), None).unwrap();
        assert_eq!(opts.propagation, Propagation::Orphan);
        assert!(DeleteOptions::parse(b"{", None, None).is_err());
        assert!(DeleteOptions::parse(br#"{"propagationPolicy":"Sideways"}"#, None, None).is_err());
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
