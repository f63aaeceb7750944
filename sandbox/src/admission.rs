//! What happens to an object between the request body and the store: typed decoding
//! ([`typed`]), server-managed metadata (uid, creationTimestamp, generation), defaults
//! ([`defaults`]), validation ([`validate`]), Service allocation ([`services`]) and the
//! Ingress checks and default IngressClass ([`ingress`]).
//!
//! Everything here runs under the store lock, before the store is changed, so a rejected
//! request changes nothing.

pub mod defaults;
pub mod ingress;
pub mod services;
pub mod typed;
pub mod validate;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::resources::{ResourceType, Shape};
use crate::store::State;

pub use typed::FieldValidation;

/// The current time as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A name from `generateName` plus five characters, as the API server makes them.
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    let keep = prefix.len().min(63 - 5);
    format!("{}{suffix}", &prefix[..prefix.floor_char_boundary(keep)])
}

fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    // Made an object on the line above.
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// The body of the object without `metadata` and `status`: a change here bumps `generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Defaults, validation and allocation shared by create and update.
fn admit_shape(
    state: &mut State,
    rt: &'static ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    defaults::apply(rt.shape, obj);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut causes: Vec<Cause> = Vec::new();
    causes.extend(validate::labels(
        "metadata.labels",
        &obj["metadata"]["labels"],
    ));
    match rt.shape {
        Shape::Pod => causes.extend(validate::pod_spec("spec", &obj["spec"])),
        Shape::Deployment | Shape::ReplicaSet => {
            causes.extend(validate::workload_spec(&obj["spec"]));
            if let Some(old) = old
                && old["spec"]["selector"] != obj["spec"]["selector"]
            {
                causes.push(Cause::immutable(
                    "spec.selector",
                    obj["spec"]["selector"].to_string(),
                ));
            }
        }
        Shape::Service => causes.extend(services::admit(
            obj,
            old,
            &mut state.alloc,
            &(namespace, name.clone()),
        )),
        Shape::Ingress => causes.extend(ingress::validate_ingress(&obj["spec"])),
        Shape::IngressClass => causes.extend(ingress::validate_class(obj, old)),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, &name, causes))
    }
}

/// Checks that an object may be created in `namespace`: it exists and is not terminating.
pub fn check_namespace(state: &State, namespace: &str) -> Result<(), ApiError> {
    let ns_rt = crate::resources::by_shape(Shape::Namespace);
    match state.get(ns_rt, "", namespace) {
        None => Err(ApiError::not_found(ns_rt, namespace)),
        Some(ns) if !ns.value["metadata"]["deletionTimestamp"].is_null() => {
            Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Prepares a new object for the store. `namespace` comes from the URL ("" when cluster-scoped).
/// The pod's QoS class, as kube-apiserver sets it at creation: Guaranteed when every
/// container limits CPU and memory with requests equal to the limits (requests default to
/// limits), BestEffort when no container requests or limits either, else Burstable.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let of = |c: &Value, kind: &str, res: &str| {
        c["resources"][kind][res]
            .as_str()
            .map(str::to_string)
            .or_else(|| c["resources"][kind][res].as_number().map(|n| n.to_string()))
    };
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            ["cpu", "memory"]
                .iter()
                .any(|r| of(c, k, r).is_some_and(|q| !is_zero(&q)))
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| match of(c, "limits", r) {
            Some(limit) => of(c, "requests", r).is_none_or(|req| req == limit),
            None => false,
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn is_zero(quantity: &str) -> bool {
    quantity
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<f64>()
        .is_ok_and(|v| v == 0.0)
}

pub fn admit_create(
    state: &mut State,
    rt: &'static ResourceType,
    namespace: &str,
    body: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let (mut obj, warnings) = typed::decode(rt, body, fv)?;
    let m = meta(&mut obj);
    let body_ns = m
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if rt.namespaced {
        if !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        m.insert("namespace".into(), json!(namespace));
    } else {
        m.remove("namespace");
    }
    let mut name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        let prefix = m
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if prefix.is_empty() {
            let cause = Cause {
                reason: "FieldValueRequired",
                field: "metadata.name".into(),
                message: "Required value: name or generateName is required".into(),
            };
            return Err(ApiError::invalid(rt, "", vec![cause]));
        }
        name = generated_name(&prefix);
        while state.get(rt, namespace, &name).is_some() {
            name = generated_name(&prefix);
        }
        m.insert("name".into(), json!(name));
    }
    let causes = validate::name(rt, &name);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    for server_managed in [
        "resourceVersion",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        m.remove(server_managed);
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now()));
    m.insert("generation".into(), json!(1));
    if rt.namespaced {
        check_namespace(state, namespace)?;
    }
    if state.get(rt, namespace, &name).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    if rt.has_status {
        obj["status"] = match rt.shape {
            Shape::Pod => json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])}),
            Shape::Namespace => json!({"phase": "Active"}),
            Shape::Service | Shape::Ingress => json!({"loadBalancer": {}}),
            // Nodes and ServiceCIDRs are written whole by the sandbox itself.
            Shape::Node | Shape::ServiceCidr => obj["status"].clone(),
            _ => json!({}),
        };
        if obj["status"].is_null()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
    }
    if rt.shape == Shape::Ingress {
        ingress::default_class(state, &mut obj);
    }
    admit_shape(state, rt, &mut obj, None)?;
    Ok((obj, warnings))
}

/// Which part of the object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but status (for types with a status subresource).
    Main,
    /// The status subresource: status only.
    Status,
}

/// Prepares a replacement for `old`, checking `resourceVersion` for optimistic concurrency.
pub fn admit_update(
    state: &mut State,
    rt: &'static ResourceType,
    old: &Value,
    body: Value,
    part: Part,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let (mut obj, warnings) = typed::decode(rt, body, fv)?;
    let name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let m = meta(&mut obj);
    let body_name = m.get("name").and_then(Value::as_str).unwrap_or_default();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(ns) = m
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && ns != old["metadata"]["namespace"].as_str().unwrap_or_default()
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    if let Some(rv) = m
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(rt, &name));
    }
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    m.insert("name".into(), json!(name));
    for fixed in [
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(fixed) {
            Some(v) => m.insert(fixed.into(), v.clone()),
            None => m.remove(fixed),
        };
    }
    m.remove("selfLink");
    m.remove("managedFields");
    // An object being deleted may lose finalizers but not gain them.
    if old_meta.contains_key("deletionTimestamp") {
        let old_f = old_meta
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_f = m
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if new_f.iter().any(|f| !old_f.contains(f)) {
            let cause = Cause::forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted",
            );
            return Err(ApiError::invalid(rt, &name, vec![cause]));
        }
    }
    if rt.has_status {
        match part {
            Part::Main => match old.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    if let Some(o) = obj.as_object_mut() {
                        o.remove("status");
                    }
                }
            },
            Part::Status => {
                let status = obj.get("status").cloned();
                obj = old.clone();
                match status {
                    Some(s) => obj["status"] = s,
                    None => {
                        if let Some(o) = obj.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
        }
    }
    admit_shape(state, rt, &mut obj, Some(old))?;
    if spec_part(&obj) != spec_part(old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        obj["metadata"]["generation"] = json!(generation);
    }
    Ok((obj, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use crate::store::Store;

    fn store_with_default_ns() -> Store {
        let store = Store::new(0);
        let ns = resources::by_shape(Shape::Namespace);
        store
            .write(|s| {
                let (obj, _) = admit_create(
                    s,
                    ns,
                    "",
                    json!({"metadata": {"name": "default"}}),
                    FieldValidation::Strict,
                )?;
                s.put(ns, obj);
                Ok::<_, ApiError>(())
            })
            .unwrap();
        store
    }

    #[test]
    fn create_fills_server_metadata_and_generate_name() {
        let store = store_with_default_ns();
        let cm = resources::by_shape(Shape::ConfigMap);
        let (obj, _) = store
            .write(|s| {
                admit_create(
                    s,
                    cm,
                    "default",
                    json!({"metadata": {"generateName": "web-"}}),
                    FieldValidation::Warn,
                )
            })
            .unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
        let err = store
            .write(|s| {
                admit_create(
                    s,
                    cm,
                    "nope",
                    json!({"metadata": {"name": "a"}}),
                    FieldValidation::Warn,
                )
            })
            .unwrap_err();
        assert_eq!(err.to_string(), r#"namespaces "nope" not found"#);
    }

    #[test]
    fn updates_check_resource_version_and_bump_generation_on_spec_changes() {
        let store = store_with_default_ns();
        let deploy = resources::by_shape(Shape::Deployment);
        let body = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
        let stored = store
            .write(|s| {
                let (obj, _) =
                    admit_create(s, deploy, "default", body.clone(), FieldValidation::Strict)?;
                Ok::<_, ApiError>(s.put(deploy, obj))
            })
            .unwrap();
        let old = stored.value.clone();
        let mut stale = old.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let err = store
            .write(|s| admit_update(s, deploy, &old, stale, Part::Main, FieldValidation::Warn))
            .unwrap_err();
        assert_eq!(err.code(), 409);
        let mut relabeled = old.clone();
        relabeled["metadata"]["labels"] = json!({"x": "y"});
        let (obj, _) = store
            .write(|s| {
                admit_update(
                    s,
                    deploy,
                    &old,
                    relabeled,
                    Part::Main,
                    FieldValidation::Warn,
                )
            })
            .unwrap();
        assert_eq!(obj["metadata"]["generation"], 1);
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        scaled["status"] = json!({"replicas": 9});
        let (obj, _) = store
            .write(|s| admit_update(s, deploy, &old, scaled, Part::Main, FieldValidation::Warn))
            .unwrap();
        assert_eq!(obj["metadata"]["generation"], 2);
        assert_eq!(
            obj["status"],
            json!({}),
            "the main resource does not write status"
        );
    }

    #[test]
    fn the_qos_class_is_the_api_servers() {
        let pod = |resources: Value| json!({"containers": [{"name": "a", "resources": resources}, {"name": "b"}]});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "0"}}))),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        let full = json!({"limits": {"cpu": "1", "memory": "64Mi"}});
        assert_eq!(qos_class(&pod(full.clone())), "Burstable", "b has none");
        let both = json!({"containers": [{"name": "a", "resources": full.clone()}, {"name": "b", "resources": full}]});
        assert_eq!(qos_class(&both), "Guaranteed");
        let unequal = json!({"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "500m", "memory": "64Mi"}}}]});
        assert_eq!(qos_class(&unequal), "Burstable");
    }
}
