//! The intercept sidecar in a workload: injected with the user's own credentials (no webhook)
//! and taken out again, leaving the Deployment and the Service as they were.
//!
//! Injection is one JSON patch of the Deployment that adds the `tether-agent` container and
//! takes the Service's target ports away from the app container:
//! - a **named** targetPort: the app's port loses its name and the sidecar declares a port of
//!   that name, so the endpoints controller resolves the name to the sidecar; the app's probes
//!   that used the name get the number instead;
//! - a **numeric** targetPort: the Service's `targetPort` is pointed at the sidecar's port (a
//!   second patch, after the rollout, so no request meets a pod without a sidecar).
//!
//! Before anything changes, what will change is recorded on the object it belongs to: the
//! app container's original `ports` and probes in the Deployment's [`ANNOTATION`], the
//! Service's original target ports in its [`SERVICE_ANNOTATION`], each in the same patch as the
//! change itself. Restoring undoes exactly those fields, in patches tested against the
//! object's current resourceVersion, so whatever the user changed meanwhile (`kubectl scale`,
//! `set image`, `rollout restart`) is kept.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, Probe, ResourceRequirements, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

use super::client::{Cluster, describe as describe_error};
use super::workload::Target;

/// The sidecar container's name.
pub const SIDECAR: &str = "tether-agent";
/// On the Deployment: the [`Record`] of what injection changed.
pub const ANNOTATION: &str = "tether.dev/agent";
/// On the Service: its original target ports.
pub const SERVICE_ANNOTATION: &str = "tether.dev/original-target-ports";
/// The sidecar's control port on the pod's loopback, unless the pod uses it.
const CONTROL_PORT: u16 = 47099;
/// Where the sidecar's forwarded ports start.
const FIRST_FORWARD: u16 = 47100;
/// How often a patch is retried when the object changed under it.
const CONFLICT_RETRIES: usize = 5;

/// What injection changed in the Deployment, kept in its [`ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The tether version that injected the sidecar.
    pub version: String,
    /// The app container.
    pub container: String,
    pub service: String,
    pub control: u16,
    pub forwards: Vec<Forward>,
    /// The app container's fields before injection, as stored (absent stays absent).
    pub original: Original,
    /// `--replace`: the app container was taken out of the pod, and is in `original`.
    #[serde(default)]
    pub replace: bool,
    /// `--replace`: `user@host` of the intercept, whose next daemon puts the container back
    /// if this one dies holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    pub ports: Option<Value>,
    pub readiness_probe: Option<Value>,
    pub liveness_probe: Option<Value>,
    pub startup_probe: Option<Value>,
    /// `--replace`: the whole app container and its index in the pod's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// One port the sidecar took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    pub listen: u16,
    pub app: u16,
    /// The port name the sidecar now carries, for a named targetPort.
    pub name: Option<String>,
}

/// The Service's original target ports, kept in its [`SERVICE_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub ports: Vec<OriginalTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalTarget {
    pub index: usize,
    pub target_port: Value,
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot {verb} {what}: {reason}")]
    Api {
        verb: &'static str,
        what: String,
        reason: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "{what} changed {CONFLICT_RETRIES} times while tether patched it; try again when nothing else is editing it"
    )]
    Conflicts { what: String },
    #[error("deploy/{workload} did not finish its rollout within {} s: {status}. See `kubectl -n {namespace} rollout status deploy/{workload}`.", .waited.as_secs())]
    Rollout {
        workload: String,
        namespace: String,
        waited: Duration,
        status: String,
    },
    #[error(
        "the {ANNOTATION} annotation of {what} cannot be read ({reason}); remove the tether-agent container and the annotation by hand, or restore the object from your manifests"
    )]
    BadRecord { what: String, reason: String },
}

/// The injection's record, if `deploy` has the sidecar.
pub fn record_of(deploy: &Deployment) -> Result<Option<Record>, AgentError> {
    let Some(text) = deploy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
    else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| AgentError::BadRecord {
            what: format!(
                "deploy/{}",
                deploy.metadata.name.as_deref().unwrap_or_default()
            ),
            reason: e.to_string(),
        })
}

/// `deploy` as it was before injection, as far as choosing a target goes: the app
/// container's original ports and probes, and no sidecar.
pub fn original_view(deploy: &Deployment, record: &Record) -> Deployment {
    let mut view = deploy.clone();
    if let Some(pod) = view.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.containers.retain(|c| c.name != SIDECAR);
        if let Some(app) = replaced_container(record) {
            let at = record.original.index.unwrap_or(0).min(pod.containers.len());
            pod.containers.insert(at, app);
            return view;
        }
        if let Some(app) = pod
            .containers
            .iter_mut()
            .find(|c| c.name == record.container)
        {
            app.ports = from_json(&record.original.ports);
            app.readiness_probe = from_json(&record.original.readiness_probe);
            app.liveness_probe = from_json(&record.original.liveness_probe);
            app.startup_probe = from_json(&record.original.startup_probe);
        }
    }
    view
}

/// The app container a `--replace` injection took out of the pod.
pub fn replaced_container(record: &Record) -> Option<Container> {
    record
        .replace
        .then(|| from_json(&record.original.container))?
}

fn from_json<T: serde::de::DeserializeOwned>(value: &Option<Value>) -> Option<T> {
    value.clone().and_then(|v| serde_json::from_value(v).ok())
}

/// `service` with the target ports it had before tether pointed them at a sidecar.
pub fn original_service_view(service: &Service) -> Service {
    let mut view = service.clone();
    let record: Option<ServiceRecord> = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_ANNOTATION))
        .and_then(|t| serde_json::from_str(t).ok());
    if let (Some(record), Some(ports)) = (record, view.spec.as_mut().and_then(|s| s.ports.as_mut()))
    {
        for t in record.ports {
            if let Some(p) = ports.get_mut(t.index) {
                p.target_port = serde_json::from_value(t.target_port).ok();
            }
        }
    }
    view
}

/// The JSON patches that inject the sidecar for `target`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub record: Record,
    pub deployment: Value,
    /// For numeric target ports: pointing the Service at the sidecar.
    pub service: Option<Value>,
}

fn json_pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `ops` that add `key: value` to `metadata.annotations`, creating the map if needed.
fn add_annotation(ops: &mut Vec<Value>, has_annotations: bool, key: &str, value: String) {
    if has_annotations {
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", json_pointer_escape(key)), "value": value}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {key: value}}));
    }
}

/// `ops` that remove `key` from `metadata.annotations`, and the map with it when it would be
/// left empty (the API server omits an empty map, so that is how it looked before).
fn remove_annotation(
    ops: &mut Vec<Value>,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    key: &str,
) {
    let Some(annotations) = annotations.filter(|a| a.contains_key(key)) else {
        return;
    };
    if annotations.len() == 1 {
        ops.push(json!({"op": "remove", "path": "/metadata/annotations"}));
    } else {
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", json_pointer_escape(key))}));
    }
}

fn test_version(ops: &mut Vec<Value>, resource_version: Option<&String>) {
    if let Some(rv) = resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
}

/// The pod template of `deploy`, and the index of the target's container in it (the
/// target was resolved from this Deployment, so the container is there).
fn pod_and_app(deploy: &Deployment, target: &Target) -> (PodSpec, usize) {
    let pod = deploy
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .cloned()
        .unwrap_or_default();
    let index = pod
        .containers
        .iter()
        .position(|c| c.name == target.container)
        .unwrap_or_default();
    (pod, index)
}

/// Every port a container of `pod` declares: the sidecar must not listen on one.
fn declared_ports(pod: &PodSpec) -> impl Iterator<Item = u16> + '_ {
    pod.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| p.container_port as u16)
}

/// The patch's first operations: guard on the Deployment's version, then write `record`.
fn record_ops(deploy: &Deployment, record: &Record) -> Vec<Value> {
    let mut ops = Vec::new();
    test_version(&mut ops, deploy.metadata.resource_version.as_ref());
    add_annotation(
        &mut ops,
        deploy.metadata.annotations.is_some(),
        ANNOTATION,
        serde_json::to_string(record).expect("a record serializes"),
    );
    ops
}

/// Plans the injection into `deploy` (which has no sidecar yet) for `target`, with the
/// sidecar running `image`.
pub fn plan(deploy: &Deployment, target: &Target, image: &str) -> Plan {
    let (pod, index) = pod_and_app(deploy, target);
    let app = &pod.containers[index];
    let used: BTreeSet<u16> = declared_ports(&pod)
        .chain(target.all.iter().map(|m| m.app_port))
        .collect();
    let mut free = (CONTROL_PORT..).filter(|p| !used.contains(p));
    let control = free.next().unwrap_or(CONTROL_PORT);
    let mut forwards: Vec<Forward> = Vec::new();
    let mut free = free.filter(|p| *p >= FIRST_FORWARD);
    for m in &target.all {
        if forwards.iter().any(|f| f.app == m.app_port) {
            continue;
        }
        forwards.push(Forward {
            listen: free.next().unwrap_or(FIRST_FORWARD),
            app: m.app_port,
            name: m.named.clone(),
        });
    }
    let original = Original {
        ports: app.ports.as_ref().map(to_json),
        readiness_probe: app.readiness_probe.as_ref().map(to_json),
        liveness_probe: app.liveness_probe.as_ref().map(to_json),
        startup_probe: app.startup_probe.as_ref().map(to_json),
        ..Original::default()
    };
    let record = Record {
        version: super::manifests::VERSION.to_owned(),
        container: target.container.clone(),
        service: target.service_name().to_owned(),
        control,
        forwards: forwards.clone(),
        original,
        replace: false,
        holder: None,
    };

    let names: BTreeSet<&str> = forwards.iter().filter_map(|f| f.name.as_deref()).collect();
    let mut ops = record_ops(deploy, &record);
    let base = format!("/spec/template/spec/containers/{index}");
    if !names.is_empty() {
        let ports: Vec<ContainerPort> = app
            .ports
            .iter()
            .flatten()
            .map(|p| match &p.name {
                Some(n) if names.contains(n.as_str()) => ContainerPort {
                    name: None,
                    ..p.clone()
                },
                _ => p.clone(),
            })
            .collect();
        ops.push(json!({"op": "replace", "path": format!("{base}/ports"), "value": ports}));
        let probes = [
            ("readinessProbe", &app.readiness_probe),
            ("livenessProbe", &app.liveness_probe),
            ("startupProbe", &app.startup_probe),
        ];
        for (field, probe) in probes {
            if let Some(probe) = probe
                && let Some(numbered) = number_probe(probe, app)
            {
                ops.push(
                    json!({"op": "replace", "path": format!("{base}/{field}"), "value": numbered}),
                );
            }
        }
    }
    ops.push(json!({"op": "add", "path": "/spec/template/spec/containers/-", "value": sidecar(image, control, &forwards)}));

    let numeric: Vec<(usize, u16)> = target
        .all
        .iter()
        .filter(|m| m.named.is_none())
        .filter_map(|m| {
            let f = forwards.iter().find(|f| f.app == m.app_port)?;
            Some((m.index, f.listen))
        })
        .collect();
    let service = (!numeric.is_empty()).then(|| {
        let ports = target
            .service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let record = ServiceRecord {
            ports: numeric
                .iter()
                .map(|(i, _)| OriginalTarget {
                    index: *i,
                    target_port: to_json(&ports[*i].target_port),
                })
                .collect(),
        };
        let mut ops = Vec::new();
        test_version(&mut ops, target.service.metadata.resource_version.as_ref());
        add_annotation(
            &mut ops,
            target.service.metadata.annotations.is_some(),
            SERVICE_ANNOTATION,
            serde_json::to_string(&record).expect("a record serializes"),
        );
        for (i, listen) in &numeric {
            ops.push(json!({"op": "replace", "path": format!("/spec/ports/{i}/targetPort"), "value": listen}));
        }
        Value::Array(ops)
    });
    Plan {
        record,
        deployment: Value::Array(ops),
        service,
    }
}

/// Plans a `--replace` injection into `deploy` (which has no sidecar yet): the app container
/// is taken out of the pod and kept whole in the record, and the sidecar listens on every
/// port the app declared or a Service targets, by the same numbers and names, so no Service
/// changes. The app's probes go with it.
pub fn plan_replace(deploy: &Deployment, target: &Target, image: &str, holder: &str) -> Plan {
    let (pod, index) = pod_and_app(deploy, target);
    let app = &pod.containers[index];
    let mut forwards: Vec<Forward> = Vec::new();
    let declared = app
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| (p.container_port as u16, p.name.clone()));
    let targeted = target.all.iter().map(|m| (m.app_port, m.named.clone()));
    for (port, name) in declared.chain(targeted) {
        if !forwards.iter().any(|f| f.app == port) {
            forwards.push(Forward {
                listen: port,
                app: port,
                name,
            });
        }
    }
    let used: BTreeSet<u16> = declared_ports(&pod)
        .chain(forwards.iter().map(|f| f.listen))
        .collect();
    let control = (CONTROL_PORT..)
        .find(|p| !used.contains(p))
        .unwrap_or(CONTROL_PORT);
    let record = Record {
        version: super::manifests::VERSION.to_owned(),
        container: target.container.clone(),
        service: target.service_name().to_owned(),
        control,
        forwards: forwards.clone(),
        original: Original {
            container: Some(to_json(app)),
            index: Some(index),
            ..Original::default()
        },
        replace: true,
        holder: Some(holder.to_owned()),
    };
    let mut ops = record_ops(deploy, &record);
    ops.push(json!({"op": "remove", "path": format!("/spec/template/spec/containers/{index}")}));
    let mut container = sidecar(image, control, &forwards);
    if let Some(args) = container.args.as_mut() {
        args.push("--replace".into());
    }
    ops.push(json!({"op": "add", "path": "/spec/template/spec/containers/-", "value": container}));
    Plan {
        record,
        deployment: Value::Array(ops),
        service: None,
    }
}

/// Serialising the k8s-openapi types into JSON cannot fail (no maps with non-string keys).
fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `probe` with a named port replaced by the number the app container declares for it, or
/// `None` when it names no port.
fn number_probe(probe: &Probe, app: &Container) -> Option<Probe> {
    let number = |port: &IntOrString| match port {
        IntOrString::String(name) => app
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| IntOrString::Int(p.container_port)),
        IntOrString::Int(_) => None,
    };
    let mut out = probe.clone();
    let mut changed = false;
    if let Some(h) = out.http_get.as_mut()
        && let Some(n) = number(&h.port)
    {
        h.port = n;
        changed = true;
    }
    if let Some(t) = out.tcp_socket.as_mut()
        && let Some(n) = number(&t.port)
    {
        t.port = n;
        changed = true;
    }
    changed.then_some(out)
}

/// The sidecar container: the agent image's `sidecar` role, locked down like the manager.
fn sidecar(image: &str, control: u16, forwards: &[Forward]) -> Container {
    let mut args = vec![
        "sidecar".to_owned(),
        "--control".to_owned(),
        format!("127.0.0.1:{control}"),
    ];
    for f in forwards {
        args.push("--forward".into());
        args.push(format!("{}={}", f.listen, f.app));
    }
    Container {
        name: SIDECAR.into(),
        image: Some(image.into()),
        args: Some(args),
        ports: Some(
            forwards
                .iter()
                .map(|f| ContainerPort {
                    name: f.name.clone(),
                    container_port: f.listen.into(),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(super::manifests::quantities("10m", "16Mi")),
            limits: Some(super::manifests::quantities("500m", "128Mi")),
            ..Default::default()
        }),
        security_context: Some(super::manifests::locked_down()),
        ..Default::default()
    }
}

/// The JSON patch that takes the sidecar out of `deploy` and restores what `record` says the
/// injection changed, leaving everything else as it is now.
pub fn restore_deployment(deploy: &Deployment, record: &Record) -> Value {
    let containers = deploy
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut ops = Vec::new();
    test_version(&mut ops, deploy.metadata.resource_version.as_ref());
    remove_annotation(&mut ops, deploy.metadata.annotations.as_ref(), ANNOTATION);
    if record.replace {
        // The sidecar out, then the app container back where it was.
        if let Some(i) = containers.iter().position(|c| c.name == SIDECAR) {
            ops.push(
                json!({"op": "remove", "path": format!("/spec/template/spec/containers/{i}")}),
            );
        }
        if let Some(app) = &record.original.container {
            let left = containers.iter().filter(|c| c.name != SIDECAR).count();
            let at = record.original.index.unwrap_or(0).min(left);
            ops.push(json!({"op": "add", "path": format!("/spec/template/spec/containers/{at}"), "value": app}));
        }
        return Value::Array(ops);
    }
    if let Some(i) = containers.iter().position(|c| c.name == record.container) {
        let base = format!("/spec/template/spec/containers/{i}");
        let app = to_json(&containers[i]);
        let fields = [
            ("ports", &record.original.ports),
            ("readinessProbe", &record.original.readiness_probe),
            ("livenessProbe", &record.original.liveness_probe),
            ("startupProbe", &record.original.startup_probe),
        ];
        for (field, original) in fields {
            let now = app.get(field);
            match (original, now) {
                (Some(v), Some(n)) if v != n => ops
                    .push(json!({"op": "replace", "path": format!("{base}/{field}"), "value": v})),
                (Some(v), None) => {
                    ops.push(json!({"op": "add", "path": format!("{base}/{field}"), "value": v}))
                }
                (None, Some(_)) => {
                    ops.push(json!({"op": "remove", "path": format!("{base}/{field}")}))
                }
                _ => {}
            }
        }
    }
    // Removed last: the indices above are of the list with the sidecar in it.
    if let Some(i) = containers.iter().position(|c| c.name == SIDECAR) {
        ops.push(json!({"op": "remove", "path": format!("/spec/template/spec/containers/{i}")}));
    }
    Value::Array(ops)
}

/// The JSON patch that gives `service` its original target ports back, if tether changed
/// them.
pub fn restore_service(service: &Service) -> Option<Value> {
    let annotations = service.metadata.annotations.as_ref()?;
    let record: ServiceRecord = serde_json::from_str(annotations.get(SERVICE_ANNOTATION)?).ok()?;
    let mut ops = Vec::new();
    test_version(&mut ops, service.metadata.resource_version.as_ref());
    remove_annotation(&mut ops, Some(annotations), SERVICE_ANNOTATION);
    let count = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map_or(0, Vec::len);
    for t in record.ports.iter().filter(|t| t.index < count) {
        ops.push(json!({"op": "replace", "path": format!("/spec/ports/{}/targetPort", t.index), "value": t.target_port}));
    }
    Some(Value::Array(ops))
}

fn api_error(verb: &'static str, what: String) -> impl FnOnce(kube::Error) -> AgentError {
    move |source| {
        let reason = match &source {
            kube::Error::Api(s) if s.code == 403 => format!(
                "forbidden ({}); ask for `patch` on {} in that namespace",
                s.message,
                what.split('/').next().unwrap_or("it")
            ),
            e => describe_error(e),
        };
        AgentError::Api {
            verb,
            what,
            reason,
            source: Box::new(source),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    // A failed `test` op: 409 on some versions; kube-apiserver answers a JSON patch it could
    // not apply with 422 Invalid and no causes at all (validation errors of the result have
    // causes), so that is taken as a changed object too: the retry reads it again.
    matches!(e, kube::Error::Api(s) if s.code == 409
        || s.code == 422 && s.reason == "Invalid" && s.details.as_ref().is_none_or(|d| d.causes.is_empty()))
}

/// Gets the Deployment, computes a patch from it and applies it, again while the object
/// changes under the patch's resourceVersion test. `compute` returning `None` means nothing to
/// do.
pub async fn patch_deployment(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    mut compute: impl FnMut(&Deployment) -> Result<Option<Value>, AgentError>,
) -> Result<Option<Deployment>, AgentError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    let what = format!("deployments/{name} in namespace {namespace}");
    for _ in 0..CONFLICT_RETRIES {
        let current = api
            .get(name)
            .await
            .map_err(api_error("read", what.clone()))?;
        let Some(ops) = compute(&current)? else {
            return Ok(None);
        };
        let patch: Patch<()> =
            Patch::Json(serde_json::from_value(ops).expect("valid JSON patch ops"));
        match api.patch(name, &PatchParams::default(), &patch).await {
            Ok(d) => return Ok(Some(d)),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_error("patch", what)(e)),
        }
    }
    Err(AgentError::Conflicts { what })
}

/// Like [`patch_deployment`], for a Service.
pub async fn patch_service(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    mut compute: impl FnMut(&Service) -> Option<Value>,
) -> Result<(), AgentError> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), namespace);
    let what = format!("services/{name} in namespace {namespace}");
    for _ in 0..CONFLICT_RETRIES {
        let current = match api.get(name).await {
            Ok(s) => s,
            // A Service deleted meanwhile has nothing left to restore.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(api_error("read", what)(e)),
        };
        let Some(ops) = compute(&current) else {
            return Ok(());
        };
        let patch: Patch<()> =
            Patch::Json(serde_json::from_value(ops).expect("valid JSON patch ops"));
        match api.patch(name, &PatchParams::default(), &patch).await {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_error("patch", what)(e)),
        }
    }
    Err(AgentError::Conflicts { what })
}

/// Takes the sidecar out of deploy/`name` and restores its Service: the Service first, so
/// it never targets a port that the new pods no longer have. Returns whether there was a
/// sidecar.
pub async fn remove(cluster: &Cluster, namespace: &str, name: &str) -> Result<bool, AgentError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    let what = format!("deployments/{name} in namespace {namespace}");
    let deploy = match api.get(name).await {
        Ok(d) => d,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
        Err(e) => return Err(api_error("read", what)(e)),
    };
    let Some(record) = record_of(&deploy)? else {
        return Ok(false);
    };
    patch_service(cluster, namespace, &record.service, restore_service).await?;
    patch_deployment(cluster, namespace, name, |d| {
        Ok(record_of(d)?.map(|r| restore_deployment(d, &r)))
    })
    .await?;
    Ok(true)
}

/// The Deployments in `namespace` (every namespace when `None`) that have a sidecar.
pub async fn injected(
    cluster: &Cluster,
    namespace: Option<&str>,
) -> Result<Vec<(String, String)>, AgentError> {
    let api: Api<Deployment> = match namespace {
        Some(ns) => Api::namespaced(cluster.client.clone(), ns),
        None => Api::all(cluster.client.clone()),
    };
    let what = match namespace {
        Some(ns) => format!("deployments in namespace {ns}"),
        None => "deployments in all namespaces".to_owned(),
    };
    let list = api
        .list(&Default::default())
        .await
        .map_err(api_error("list", what))?;
    Ok(list
        .items
        .iter()
        .filter(|d| {
            d.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION))
        })
        .map(|d| {
            (
                d.metadata.namespace.clone().unwrap_or_default(),
                d.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect())
}

/// How long a rollout of the workload may take before tether gives up waiting.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until deploy/`name` has rolled out (as `kubectl rollout status` decides), telling
/// `progress` what is still missing whenever that changes.
pub async fn wait_rolled_out(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(), AgentError> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut last = String::from("waiting for the rollout to start");
    let deadline = tokio::time::Instant::now() + ROLLOUT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) | Ok(None) => {
                return Err(AgentError::Rollout {
                    workload: name.into(),
                    namespace: ns.into(),
                    waited: ROLLOUT_TIMEOUT,
                    status: last,
                });
            }
            Ok(Some(Err(e))) => tracing::debug!("watch error during the rollout: {e}"),
            Ok(Some(Ok(d))) => match super::rollout::rollout_status(&d) {
                Ok(()) => return Ok(()),
                Err(now) if now != last => {
                    progress(format!("Rolling out deploy/{name}: {now}"));
                    last = now;
                }
                Err(_) => {}
            },
        }
    }
}

/// How long the Service's endpoints may lag a finished rollout before tether goes on.
const ENDPOINTS_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until the ready endpoints of Service `service` are all pods that have the sidecar
/// (`with_sidecar`) or all pods without it, and, given `port`, serve that port. A rollout is
/// finished before the EndpointSlice controller and kube-proxy follow it; until they do,
/// connections still go to the pods it replaced. Gives up quietly after a while, or when
/// EndpointSlices cannot be read (a Role without them): the intercept works either way, the
/// first connections just may miss it.
pub async fn wait_endpoints(
    cluster: &Cluster,
    ns: &str,
    service: &str,
    with_sidecar: bool,
    port: Option<u16>,
) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::{WatchStreamExt, watcher};
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let (store, writer) = kube::runtime::reflector::store();
    let mut events = kube::runtime::reflector::reflector(writer, watcher(slices, config))
        .default_backoff()
        .boxed();
    let settled = async {
        while let Some(event) = events.next().await {
            if event.is_err() {
                return;
            }
            if !super::rollout::listed(&store) {
                continue;
            }
            let state = store.state();
            // Terminating endpoints are not ready, and kube-proxy sends nothing to them
            // while ready ones exist; waiting for them to go would wait out the old pods'
            // grace period.
            let names: Vec<String> = state
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .filter_map(|e| e.target_ref.as_ref()?.name.clone())
                .collect();
            let serves_port = port.is_none_or(|want| {
                state.iter().any(|s| {
                    s.ports
                        .iter()
                        .flatten()
                        .any(|p| p.port == Some(i32::from(want)))
                })
            });
            if names.is_empty() || !serves_port {
                continue;
            }
            let mut all = true;
            for name in &names {
                let has = match pods.get_opt(name).await {
                    Ok(Some(p)) => p
                        .spec
                        .is_some_and(|s| s.containers.iter().any(|c| c.name == SIDECAR)),
                    Ok(None) => !with_sidecar,
                    Err(_) => return,
                };
                if has != with_sidecar {
                    all = false;
                    break;
                }
            }
            if all {
                return;
            }
        }
    };
    if tokio::time::timeout(ENDPOINTS_TIMEOUT, settled)
        .await
        .is_err()
    {
        tracing::info!(
            "the endpoints of Service {service} did not follow the rollout within {ENDPOINTS_TIMEOUT:?}; going on"
        );
    }
}

#[cfg(test)]
mod tests;
