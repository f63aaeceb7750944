//! What the workload and endpoints controllers share: writing objects through the same
//! admission path as the API (so uid, resourceVersion, generation and defaults are right),
//! ownerReferences, and reading a pod's state the way the Kubernetes controllers do.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::{self, FieldValidation, Part};
use crate::error::ApiError;
use crate::lifecycle;
use crate::resources::ResourceType;
use crate::store::selector::LabelSelector;
use crate::store::{State, Stored};

/// Creates an object as a POST would.
pub fn create(
    state: &mut State,
    rt: &'static ResourceType,
    namespace: &str,
    body: Value,
) -> Result<Arc<Stored>, ApiError> {
    let (obj, _) = admission::admit_create(state, rt, namespace, body, FieldValidation::Ignore)?;
    Ok(state.put(rt, obj))
}

/// Replaces an object (or its status) as a PUT would; `new` carries the resourceVersion it
/// was derived from, so a concurrent change is a conflict rather than lost.
pub fn update(
    state: &mut State,
    rt: &'static ResourceType,
    old: &Value,
    new: Value,
    part: Part,
) -> Result<Arc<Stored>, ApiError> {
    let (obj, _) = admission::admit_update(state, rt, old, new, part, FieldValidation::Ignore)?;
    Ok(lifecycle::store_update(state, rt, obj))
}

/// A controller ownerReference to `owner`.
pub fn controller_ref(rt: &ResourceType, owner: &Value) -> Value {
    json!({
        "apiVersion": rt.api_version(),
        "kind": rt.kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of the object's controller (the ownerReference with `controller: true`).
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// The name of the object's controller when it is of `kind`.
pub fn controller_name<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true && r["kind"] == kind)
        .and_then(|r| r["name"].as_str())
}

pub fn terminating(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// A `spec.selector` (matchLabels/matchExpressions) as a matcher; None when it is empty or
/// unparsable, since an empty selector must not select everything.
pub fn selector(spec_selector: &Value) -> Option<LabelSelector> {
    let query = LabelSelector::to_query_string(spec_selector);
    if query.is_empty() {
        return None;
    }
    LabelSelector::parse(&query).ok()
}

/// A pod that counts toward its ReplicaSet: not being deleted and not finished.
pub fn pod_active(pod: &Value) -> bool {
    !terminating(pod)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

pub fn pod_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

/// Ready for at least `min_ready_seconds`, as of `now`.
pub fn pod_available(pod: &Value, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = ready_condition(pod)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    since.is_some_and(|t| now.duration_since(t).as_secs() >= min_ready_seconds)
}

/// Sets an annotation; true when that changed it.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) -> bool {
    if obj["metadata"]["annotations"][key] == value {
        return false;
    }
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value);
    true
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

/// A condition list with `cond` set: its transition time kept when the status is unchanged,
/// as the Kubernetes controllers do.
pub fn set_condition(conditions: &Value, mut cond: Value, now: &str) -> Value {
    let mut list: Vec<Value> = conditions.as_array().cloned().unwrap_or_default();
    let pos = list.iter().position(|c| c["type"] == cond["type"]);
    match pos {
        Some(i) => {
            let old = &list[i];
            if old["status"] == cond["status"] {
                cond["lastTransitionTime"] = old["lastTransitionTime"].clone();
                if old["reason"] == cond["reason"] && old["message"] == cond["message"] {
                    cond["lastUpdateTime"] = old["lastUpdateTime"].clone();
                }
            } else {
                cond["lastTransitionTime"] = json!(now);
            }
            list[i] = cond;
        }
        None => {
            cond["lastTransitionTime"] = json!(now);
            list.push(cond);
        }
    }
    json!(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_honours_min_ready_seconds() {
        let pod = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert!(pod_available(&pod, 0, at("2025-01-01T00:00:00Z")));
        assert!(!pod_available(&pod, 10, at("2025-01-01T00:00:05Z")));
        assert!(pod_available(&pod, 10, at("2025-01-01T00:00:10Z")));
        assert!(selector(&json!({})).is_none());
    }
}
