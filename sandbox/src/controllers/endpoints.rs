//! The Endpoints and EndpointSlice controllers: for each Service with a selector, the pods in
//! its namespace that match, with an IP, become its `Endpoints` (ready ones in `addresses`,
//! others in `notReadyAddresses`, terminating ones left out) and its `discovery.k8s.io/v1`
//! EndpointSlices (terminating ones kept with `terminating: true`), one slice per distinct set
//! of resolved ports. Named `targetPort`s resolve per pod against its container ports.
//!
//! Selector-less Services are left alone: whoever made them (bootstrap, for `kubernetes` and
//! `kube-dns`) writes their endpoints. Both kinds carry an ownerReference to the Service, so
//! the garbage collector removes them with it. Nothing is written unless content changed.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Controller;
use super::objects::{self, controller_ref, pod_ready, terminating};
use crate::admission::Part;
use crate::bootstrap::NODE_NAME;
use crate::error::ApiError;
use crate::lifecycle::{self, DeleteOptions};
use crate::resources::{self, Shape};
use crate::store::{Event, State, Store};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

pub struct Endpoints;

/// One pod as an endpoint of one Service.
struct Member {
    ip: String,
    pod: Value,
    /// Resolved ports, as EndpointPort objects.
    ports: Vec<Value>,
    ready: bool,
    serving: bool,
    terminating: bool,
    hostname: Option<String>,
}

/// The container port a Service port's targetPort names or numbers, for one pod.
fn resolve_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    let target = &svc_port["targetPort"];
    match target {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if s.parse::<i64>().is_ok() => s.parse().ok(),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()?
            .iter()
            .filter_map(|c| c["ports"].as_array())
            .flatten()
            .find(|p| {
                p["name"] == name.as_str()
                    && p["protocol"].as_str().unwrap_or("TCP")
                        == svc_port["protocol"].as_str().unwrap_or("TCP")
            })
            .and_then(|p| p["containerPort"].as_i64()),
        _ => svc_port["port"].as_i64(),
    }
}

/// The Service's pods as endpoints, sorted by IP.
fn members(state: &State, svc: &Value) -> Vec<Member> {
    let pod_rt = resources::by_shape(Shape::Pod);
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let svc_name = svc["metadata"]["name"].as_str().unwrap_or_default();
    let Some(sel) = objects::selector(&json!({"matchLabels": svc["spec"]["selector"]})) else {
        return Vec::new();
    };
    let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let svc_ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Member> = state
        .list(pod_rt, Some(ns), None)
        .map(|p| &p.value)
        .filter(|p| sel.matches(&p["metadata"]["labels"]))
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .filter_map(|p| {
            let ip = p["status"]["podIP"].as_str().filter(|ip| !ip.is_empty())?;
            let ports: Vec<Value> = svc_ports
                .iter()
                .filter_map(|sp| {
                    let port = resolve_port(sp, p)?;
                    let mut v = json!({"name": sp["name"].as_str().unwrap_or_default(), "port": port,
                        "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(ap) = sp["appProtocol"].as_str() {
                        v["appProtocol"] = json!(ap);
                    }
                    Some(v)
                })
                .collect();
            if ports.is_empty() && !svc_ports.is_empty() {
                return None;
            }
            let serving = publish_not_ready || pod_ready(p);
            let terminating = terminating(p);
            let hostname = p["spec"]["hostname"]
                .as_str()
                .filter(|h| !h.is_empty() && p["spec"]["subdomain"] == svc_name)
                .map(str::to_string);
            Some(Member {
                ip: ip.to_string(),
                pod: p.clone(),
                ports,
                ready: publish_not_ready || (serving && !terminating),
                serving,
                terminating,
                hostname,
            })
        })
        .collect();
    out.sort_by_key(|m| ip_key(&m.ip));
    out
}

fn ip_key(ip: &str) -> (Option<std::net::IpAddr>, String) {
    (ip.parse().ok(), ip.to_string())
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"]})
}

fn node_name(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or(NODE_NAME)
}

/// The labels both kinds carry: the Service's, plus the headless marker.
fn labels(svc: &Value) -> serde_json::Map<String, Value> {
    let mut l = svc["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if svc["spec"]["clusterIP"] == "None" {
        l.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    l
}

/// One Endpoints subset being built.
#[derive(Default)]
struct Subset {
    ports: Vec<Value>,
    ready: Vec<Value>,
    not_ready: Vec<Value>,
}

/// The `subsets` of the Service's Endpoints: addresses grouped by their port set.
fn subsets(svc: &Value, members: &[Member]) -> Value {
    let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    for m in members
        .iter()
        .filter(|m| !m.terminating || publish_not_ready)
    {
        let mut ports = m.ports.clone();
        ports.sort_by_key(|p| p["name"].as_str().unwrap_or_default().to_string());
        let key = Value::from(ports.clone()).to_string();
        let group = groups.entry(key).or_insert_with(|| Subset {
            ports,
            ..Default::default()
        });
        let mut address =
            json!({"ip": m.ip, "nodeName": node_name(&m.pod), "targetRef": target_ref(&m.pod)});
        if let Some(h) = &m.hostname {
            address["hostname"] = json!(h);
        }
        if m.ready {
            group.ready.push(address);
        } else {
            group.not_ready.push(address);
        }
    }
    let list: Vec<Value> = groups
        .into_values()
        .map(|g| {
            let mut s = json!({});
            if !g.ready.is_empty() {
                s["addresses"] = json!(g.ready);
            }
            if !g.not_ready.is_empty() {
                s["notReadyAddresses"] = json!(g.not_ready);
            }
            if !g.ports.is_empty() {
                s["ports"] = json!(g.ports);
            }
            s
        })
        .collect();
    json!(list)
}

/// The wanted slices: (ports, endpoints) per distinct port set; one empty slice when none.
fn slices(members: &[Member]) -> Vec<(Value, Vec<Value>)> {
    let mut groups: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    for m in members {
        let key = Value::from(m.ports.clone()).to_string();
        let group = groups
            .entry(key)
            .or_insert_with(|| (json!(m.ports), Vec::new()));
        let mut e = json!({
            "addresses": [m.ip],
            "conditions": {"ready": m.ready, "serving": m.serving, "terminating": m.terminating},
            "targetRef": target_ref(&m.pod),
            "nodeName": node_name(&m.pod),
        });
        if let Some(h) = &m.hostname {
            e["hostname"] = json!(h);
        }
        group.1.push(e);
    }
    if groups.is_empty() {
        return vec![(json!([]), Vec::new())];
    }
    groups.into_values().collect()
}

/// Writes one Service's Endpoints and EndpointSlices.
pub fn reconcile(state: &mut State, ns: &str, name: &str) -> Result<(), ApiError> {
    let svc_rt = resources::by_shape(Shape::Service);
    let Some(svc) = state.get(svc_rt, ns, name).cloned() else {
        return Ok(());
    };
    let svc = &svc.value;
    let has_selector = svc["spec"]["selector"]
        .as_object()
        .is_some_and(|s| !s.is_empty());
    if !has_selector || svc["spec"]["type"] == "ExternalName" || terminating(svc) {
        return Ok(());
    }
    let members = members(state, svc);
    let owner = json!([controller_ref(svc_rt, svc)]);
    write_endpoints(state, ns, name, svc, &members, &owner)?;
    write_slices(state, ns, name, svc, &members, &owner)
}

fn write_endpoints(
    state: &mut State,
    ns: &str,
    name: &str,
    svc: &Value,
    members: &[Member],
    owner: &Value,
) -> Result<(), ApiError> {
    let ep_rt = resources::by_shape(Shape::Endpoints);
    let subsets = subsets(svc, members);
    let labels = json!(labels(svc));
    match state.get(ep_rt, ns, name).cloned() {
        None => {
            let mut body =
                json!({"metadata": {"name": name, "labels": labels, "ownerReferences": owner}});
            if subsets.as_array().is_some_and(|s| !s.is_empty()) {
                body["subsets"] = subsets;
            }
            objects::create(state, ep_rt, ns, body)?;
        }
        Some(current) => {
            let cur = &current.value;
            let same_subsets = cur["subsets"] == subsets
                || (cur["subsets"].is_null() && subsets.as_array().is_some_and(Vec::is_empty));
            if same_subsets
                && cur["metadata"]["labels"] == labels
                && cur["metadata"]["ownerReferences"] == *owner
            {
                return Ok(());
            }
            let mut new = cur.clone();
            new["metadata"]["labels"] = labels;
            new["metadata"]["ownerReferences"] = owner.clone();
            new["subsets"] = subsets;
            objects::update(state, ep_rt, cur, new, Part::Main)?;
        }
    }
    Ok(())
}

fn write_slices(
    state: &mut State,
    ns: &str,
    name: &str,
    svc: &Value,
    members: &[Member],
    owner: &Value,
) -> Result<(), ApiError> {
    let slice_rt = resources::by_shape(Shape::EndpointSlice);
    let mut labels = labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), json!(name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    let labels = json!(labels);
    let mut existing: Vec<Value> = state
        .list(slice_rt, Some(ns), None)
        .map(|s| s.value.clone())
        .filter(|s| {
            s["metadata"]["labels"][SERVICE_NAME_LABEL] == name
                && s["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
        })
        .collect();
    for (ports, endpoints) in slices(members) {
        let ports_of = |s: &Value| s["ports"].as_array().cloned().unwrap_or_default();
        let wanted_ports = ports.as_array().cloned().unwrap_or_default();
        let reuse = existing
            .iter()
            .position(|s| ports_of(s) == wanted_ports)
            .or_else(|| (!existing.is_empty()).then_some(0));
        let mut body = match reuse {
            Some(i) => existing.remove(i),
            None => {
                json!({"metadata": {"generateName": format!("{name}-")}, "addressType": "IPv4"})
            }
        };
        let before = body.clone();
        body["metadata"]["labels"] = labels.clone();
        body["metadata"]["ownerReferences"] = owner.clone();
        body["endpoints"] = json!(endpoints);
        body["ports"] = ports.clone();
        if reuse.is_none() {
            objects::create(state, slice_rt, ns, body)?;
        } else if !same_slice(&before, &body) {
            objects::update(state, slice_rt, &before, body, Part::Main)?;
        }
    }
    for stale in existing {
        let stale_name = stale["metadata"]["name"].as_str().unwrap_or_default();
        lifecycle::delete(state, slice_rt, ns, stale_name, &DeleteOptions::default())?;
    }
    Ok(())
}

/// Stored slices carry defaults (e.g. port `name: ""`) the wanted ones may lack; compare what
/// matters after the same normalization.
fn same_slice(stored: &Value, wanted: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        crate::admission::defaults::apply(Shape::EndpointSlice, &mut v);
        json!([
            v["metadata"]["labels"],
            v["metadata"]["ownerReferences"],
            v["endpoints"],
            v["ports"]
        ])
    };
    norm(stored) == norm(wanted)
}

fn log(ns: &str, name: &str, result: Result<(), ApiError>) {
    if let Err(e) = result {
        tracing::warn!("endpoints controller ({ns}/{name}): {e}");
    }
}

impl Endpoints {
    fn reconcile_all(store: &Store, targets: Vec<(String, String)>) {
        for (ns, name) in targets {
            log(&ns, &name, store.write(|s| reconcile(s, &ns, &name)));
        }
    }
}

impl Controller for Endpoints {
    fn resync(&mut self, store: &Store) {
        let svc_rt = resources::by_shape(Shape::Service);
        let all = store.read(|s| {
            s.list(svc_rt, None, None)
                .map(|o| (o.namespace().to_string(), o.name().to_string()))
                .collect()
        });
        Self::reconcile_all(store, all);
    }

    fn on_event(&mut self, store: &Store, event: &Event) {
        let obj = &event.object;
        let ns = obj.namespace().to_string();
        let targets: Vec<(String, String)> = match event.resource.shape {
            Shape::Service | Shape::Endpoints => vec![(ns, obj.name().to_string())],
            Shape::EndpointSlice => obj.value["metadata"]["labels"][SERVICE_NAME_LABEL]
                .as_str()
                .map(|svc| vec![(ns.clone(), svc.to_string())])
                .unwrap_or_default(),
            Shape::Pod => {
                let svc_rt = resources::by_shape(Shape::Service);
                let labels = [
                    Some(&obj.value["metadata"]["labels"]),
                    event
                        .previous
                        .as_ref()
                        .map(|p| &p.value["metadata"]["labels"]),
                ];
                store.read(|s| {
                    s.list(svc_rt, Some(&ns), None)
                        .filter(|svc| {
                            objects::selector(
                                &json!({"matchLabels": svc.value["spec"]["selector"]}),
                            )
                            .is_some_and(|sel| labels.iter().flatten().any(|l| sel.matches(l)))
                        })
                        .map(|svc| (ns.clone(), svc.name().to_string()))
                        .collect()
                })
            }
            _ => return,
        };
        Self::reconcile_all(store, targets);
    }
}
