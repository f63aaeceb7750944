//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in types:
//! like a JSON merge patch, except that lists with a merge key (containers by `name`, container
//! ports by `containerPort`, Service ports by `port`, ...) are merged item by item, and the
//! directives `$patch` (`replace`, `delete`, `merge`), `$setElementOrder/<list>`,
//! `$retainKeys` and `$deleteFromPrimitiveList/<list>` that kubectl sends are honoured.
//!
//! Which lists merge, and on which key, comes from the Go struct tags of the API types; the
//! table in [`merge_key`] carries the ones of the types the sandbox serves. Lists not in it are
//! replaced whole, as for any atomic list.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StrategicError {
    #[error("unknown patch type: {0}")]
    UnknownDirective(String),
    #[error("the patch is not a JSON object")]
    NotAnObject,
    #[error("{0}")]
    Malformed(String),
}

/// How a list field merges, by its path in the object (field names only, list items skipped).
enum ListKind {
    /// Items are maps merged by this key.
    Keyed(&'static str),
    /// Items are scalars merged as a set.
    Set,
    /// The list is replaced whole.
    Atomic,
}

fn merge_key(path: &[&str]) -> ListKind {
    let last = path.last().copied().unwrap_or_default();
    let parent = path
        .len()
        .checked_sub(2)
        .map(|i| path[i])
        .unwrap_or_default();
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    match last {
        "containers" | "initContainers" | "ephemeralContainers" => ListKind::Keyed("name"),
        "ports" if in_container => ListKind::Keyed("containerPort"),
        // Service ports; EndpointSlice and Endpoints ports are atomic.
        "ports" if path.len() == 2 && path[0] == "spec" => ListKind::Keyed("port"),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => {
            ListKind::Keyed("name")
        }
        "volumeMounts" => ListKind::Keyed("mountPath"),
        "volumeDevices" => ListKind::Keyed("devicePath"),
        "hostAliases" => ListKind::Keyed("ip"),
        "topologySpreadConstraints" => ListKind::Keyed("topologyKey"),
        "ownerReferences" => ListKind::Keyed("uid"),
        "conditions" => ListKind::Keyed("type"),
        "addresses" if parent == "status" => ListKind::Keyed("type"),
        "finalizers" if parent == "metadata" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

/// Applies a strategic merge patch to `target`.
pub fn apply(target: &Value, patch: &Value) -> Result<Value, StrategicError> {
    if !patch.is_object() {
        return Err(StrategicError::NotAnObject);
    }
    Ok(merge_value(Some(target), patch, &mut Vec::new())?.unwrap_or(Value::Null))
}

/// Merges `patch` into `target`; `None` means "delete this field".
fn merge_value<'a>(
    target: Option<&Value>,
    patch: &'a Value,
    path: &mut Vec<&'a str>,
) -> Result<Option<Value>, StrategicError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(p) => {
            let base = match target {
                Some(Value::Object(t)) => t.clone(),
                _ => Map::new(),
            };
            merge_map(base, p, path)
        }
        other => Ok(Some(other.clone())),
    }
}

fn merge_map<'a>(
    mut base: Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<Option<Value>, StrategicError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return Ok(Some(Value::Object(strip_directives(replaced))));
        }
        Some("merge") | None => {}
        Some(other) => return Err(StrategicError::UnknownDirective(other.to_string())),
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| StrategicError::Malformed("$retainKeys must be a list".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        base.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, pv) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = base.get_mut(field) {
                items.retain(|v| !remove.contains(v));
            }
            continue;
        }
        path.push(key.as_str());
        let merged = match (base.get(key), pv) {
            (Some(Value::Array(t)), Value::Array(p)) => Some(merge_list(t, p, path)?),
            (None, Value::Array(p)) => Some(merge_list(&[], p, path)?),
            (current, pv) => merge_value(current, pv, path)?,
        };
        path.pop();
        match merged {
            Some(v) => base.insert(key.clone(), v),
            None => base.remove(key),
        };
    }
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(items)), Some(order)) =
                (base.get_mut(field), order.as_array())
        {
            path.push(field);
            reorder(items, order, &merge_key(path));
            path.pop();
        }
    }
    Ok(Some(Value::Object(base)))
}

/// Drops directive keys from a replacement value.
fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn merge_list<'a>(
    target: &[Value],
    patch: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<Value, StrategicError> {
    // `[{"$patch": "replace"}, ...]` replaces the list with the other items.
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let items: Vec<Value> = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(items));
    }
    match merge_key(path) {
        ListKind::Atomic => Ok(Value::Array(patch.to_vec())),
        ListKind::Set => {
            let mut out = target.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListKind::Keyed(key) => {
            let mut out = target.to_vec();
            for p in patch {
                let Some(pm) = p.as_object() else {
                    return Err(StrategicError::Malformed(format!(
                        "the list items of {} must be objects",
                        path.join(".")
                    )));
                };
                let Some(k) = pm.get(key) else {
                    return Err(StrategicError::Malformed(format!(
                        "map: {p} does not contain declared merge key: {key}"
                    )));
                };
                let pos = out.iter().position(|t| t.get(key) == Some(k));
                let delete = pm.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Some(v) = merge_value(Some(&out[i]), p, path)? {
                            out[i] = v;
                        }
                    }
                    (None, false) => {
                        if let Some(v) = merge_value(None, p, path)? {
                            out.push(v);
                        }
                    }
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// Orders `items` as `$setElementOrder` lists them; items it does not name keep their place
/// after the named ones.
fn reorder(items: &mut Vec<Value>, order: &[Value], kind: &ListKind) {
    let id = |v: &Value| -> Value {
        match kind {
            ListKind::Keyed(k) => v.get(*k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&id).collect();
    let mut named: Vec<Value> = Vec::new();
    for w in &wanted {
        if let Some(i) = items.iter().position(|it| id(it) == *w) {
            named.push(items.remove(i));
        }
    }
    named.append(items);
    *items = named;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "labels": {"a": "1"}, "finalizers": ["x"]},
        "spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "busybox"}
        ]}}}})
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}
        ]}}}});
        let out = apply(&deployment(), &patch).unwrap();
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().unwrap().len(), 2, "the sidecar stays");
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let patch = json!({"metadata": {"labels": {"a": null, "b": "2"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
                "containers": [{"name": "web", "$patch": "delete"}]}}}});
        let out = apply(&deployment(), &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let names: Vec<_> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("side")]);

        let replace = json!({"spec": {"template": {"spec": {"$patch": "replace", "containers": [{"name": "only", "image": "x"}]}}}});
        let out = apply(&deployment(), &replace).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"],
            json!({"containers": [{"name": "only", "image": "x"}]})
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_atomic_lists_are_replaced() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}], "externalIPs": ["1.2.3.4"]}});
        let out = apply(&svc, &json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}], "externalIPs": ["5.6.7.8"]}})).unwrap();
        assert_eq!(
            out["spec"]["ports"][1],
            json!({"port": 443, "name": "https", "targetPort": 8443})
        );
        assert_eq!(out["spec"]["externalIPs"], json!(["5.6.7.8"]));
    }

    #[test]
    fn malformed_patches_are_errors() {
        assert_eq!(
            apply(&deployment(), &json!([1])),
            Err(StrategicError::NotAnObject)
        );
        assert!(
            apply(
                &deployment(),
                &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
            )
            .is_err()
        );
        assert!(
            apply(
                &deployment(),
                &json!({"spec": {"template": {"spec": {"containers": [5]}}}})
            )
            .is_err()
        );
        assert!(apply(&deployment(), &json!({"metadata": {"$patch": "explode"}})).is_err());
        assert!(apply(&deployment(), &json!({"metadata": {"$retainKeys": 3}})).is_err());
    }
}
