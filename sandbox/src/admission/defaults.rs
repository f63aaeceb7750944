//! The defaults a real API server fills in (its `SetDefaults_*` functions and the admission
//! plugins every cluster runs), so that `kubectl get -o yaml` shows what users expect.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::resources::Shape;

/// Sets `obj[key]` to `value` when it is missing or null.
fn default(obj: &mut Value, key: &str, value: Value) {
    if !(obj.is_object() || obj.is_null()) {
        return;
    }
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = value;
    }
}

fn each(list: &mut Value, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = list.as_array_mut() {
        items.iter_mut().for_each(&mut f);
    }
}

fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = c["image"].as_str().unwrap_or_default();
    // The tag is what follows the last ':' after the last '/', unless a digest pins the image.
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = if image.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    let policy = match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    };
    default(c, "imagePullPolicy", json!(policy));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    each(c.get_mut("ports").unwrap_or(&mut Value::Null), |p| {
        if p.is_object() {
            default(p, "protocol", json!("TCP"));
        }
    });
}

/// Defaults of a pod spec (in a Pod or a template).
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(items) = spec.get_mut(list) {
            each(items, container);
        }
    }
}

/// Defaults that admission plugins add to Pods only (not templates).
fn pod_admission(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        return;
    }
    // ServiceAccount admission.
    default(spec, "serviceAccountName", json!("default"));
    let sa = spec["serviceAccountName"].clone();
    default(spec, "serviceAccount", sa);
    default(spec, "enableServiceLinks", json!(true));
    // Priority admission.
    default(spec, "priority", json!(0));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission.
    if spec["tolerations"].is_null() {
        spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ]);
    }
}

fn workload(obj: &mut Value, deployment: bool) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    default(spec, "replicas", json!(1));
    if deployment {
        default(spec, "revisionHistoryLimit", json!(10));
        default(spec, "progressDeadlineSeconds", json!(600));
        default(spec, "strategy", json!({}));
        let strategy = &mut spec["strategy"];
        default(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            default(strategy, "rollingUpdate", json!({}));
            let ru = &mut strategy["rollingUpdate"];
            default(ru, "maxUnavailable", json!("25%"));
            default(ru, "maxSurge", json!("25%"));
        }
    }
    if let Some(template_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(template_spec);
    }
}

/// Service defaults that do not depend on allocation.
fn service(svc: &mut Value) {
    let spec = &mut svc["spec"];
    if !spec.is_object() {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    default(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if ty == "ExternalName" {
        return;
    }
    default(spec, "sessionAffinity", json!("None"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    each(spec.get_mut("ports").unwrap_or(&mut Value::Null), |p| {
        if p.is_object() {
            default(p, "protocol", json!("TCP"));
            let port = p["port"].clone();
            default(p, "targetPort", port);
        }
    });
}

/// Applies the defaults of one shape to a decoded object.
pub fn apply(shape: Shape, obj: &mut Value) {
    match shape {
        Shape::Pod => {
            pod_spec(&mut obj["spec"]);
            pod_admission(obj);
        }
        Shape::Deployment => workload(obj, true),
        Shape::ReplicaSet => workload(obj, false),
        Shape::Service => service(obj),
        Shape::Namespace => {
            let name = obj["metadata"]["name"].clone();
            if let Some(meta) = obj.get_mut("metadata").filter(|m| m.is_object()) {
                default(meta, "labels", json!({}));
                if let Some(labels) = meta["labels"].as_object_mut() {
                    labels.insert("kubernetes.io/metadata.name".into(), name);
                }
            }
            default(obj, "spec", json!({}));
            if let Some(spec) = obj.get_mut("spec") {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
        }
        Shape::Secret => {
            default(obj, "type", json!("Opaque"));
            // stringData is write-only: merged into data, base64-encoded, and dropped.
            let string_data = obj.as_object_mut().and_then(|o| o.remove("stringData"));
            if let Some(Value::Object(entries)) = string_data {
                default(obj, "data", json!({}));
                if let Some(data) = obj["data"].as_object_mut() {
                    for (k, v) in entries {
                        data.insert(k, json!(B64.encode(v.as_str().unwrap_or_default())));
                    }
                }
            }
        }
        Shape::EndpointSlice => each(obj.get_mut("ports").unwrap_or(&mut Value::Null), |p| {
            default(p, "name", json!(""));
            default(p, "protocol", json!("TCP"));
        }),
        Shape::Endpoints => each(
            obj.get_mut("subsets").unwrap_or(&mut Value::Null),
            |subset| {
                each(subset.get_mut("ports").unwrap_or(&mut Value::Null), |p| {
                    default(p, "protocol", json!("TCP"))
                });
            },
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}});
        apply(Shape::Deployment, &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn service_and_pod_defaults() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply(Shape::Service, &mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "busybox"}]}});
        apply(Shape::Pod, &mut p);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let mut s = json!({"stringData": {"password": "hunter2"}, "data": {"a": "Yg=="}});
        apply(Shape::Secret, &mut s);
        assert_eq!(
            s,
            json!({"type": "Opaque", "data": {"a": "Yg==", "password": "aHVudGVyMg=="}})
        );
    }

    #[test]
    fn malformed_specs_do_not_panic() {
        for shape in [
            Shape::Pod,
            Shape::Deployment,
            Shape::Service,
            Shape::Namespace,
        ] {
            let mut v = json!({"spec": 5});
            apply(shape, &mut v);
            let mut v = json!({"spec": {"containers": 3, "template": [], "ports": "x"}});
            apply(shape, &mut v);
        }
    }
}
