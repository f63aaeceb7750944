//! Server-side printing: `meta.k8s.io/v1` Tables, which `kubectl get` asks for, with the
//! columns kube-apiserver prints for each type.

use std::sync::Arc;

use serde_json::{Value, json};

use super::route::Query;
use crate::resources::{ResourceType, Shape};
use crate::store::Stored;

/// (name, type, priority): priority 1 columns show only with `-o wide`.
type Column = (&'static str, &'static str, u8);

fn columns(shape: Shape) -> &'static [Column] {
    match shape {
        Shape::Namespace => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        Shape::Node => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
        ],
        Shape::Pod => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        Shape::Service => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        Shape::Deployment => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        Shape::ReplicaSet => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
        ],
        Shape::ConfigMap => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        Shape::Secret => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        Shape::Endpoints => &[
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        Shape::ServiceCidr => &[
            ("Name", "string", 0),
            ("CIDRs", "string", 0),
            ("Age", "string", 0),
        ],
        Shape::Ingress => &[
            ("Name", "string", 0),
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        Shape::IngressClass => &[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            ("Age", "string", 0),
        ],
        Shape::Event => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

/// How long ago an RFC 3339 timestamp was, the way kubectl shows ages (`5s`, `3m20s`, `2d`).
pub fn age(timestamp: &Value) -> String {
    let Some(then) = timestamp
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86400 => format!("{d}d{}h", h % 24),
        s if s < 730 * 86400 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn or_none(s: String) -> Value {
    json!(if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    })
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| match p["nodePort"].as_i64() {
                    Some(np) => format!("{}:{np}/{}", p["port"], str_of(&p["protocol"])),
                    None => format!("{}/{}", p["port"], str_of(&p["protocol"])),
                })
                .collect()
        })
        .unwrap_or_default();
    ports.join(",")
}

/// EXTERNAL-IP as kubectl prints it: load-balancer ingress, then externalIPs, with
/// `<pending>` for a LoadBalancer that has neither yet.
fn service_external(spec: &Value, status: &Value) -> String {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let external_ips = strings(&spec["externalIPs"]);
    match str_of(&spec["type"]).as_str() {
        "ExternalName" => str_of(&spec["externalName"]),
        "LoadBalancer" => {
            let mut shown: Vec<String> = status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
                .map(str::to_owned)
                .collect();
            shown.extend(external_ips);
            if shown.is_empty() {
                "<pending>".into()
            } else {
                shown.join(",")
            }
        }
        _ => external_ips.join(","),
    }
}

fn selector(v: &Value) -> String {
    let items: Vec<String> = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", str_of(v)))
                .collect()
        })
        .unwrap_or_default();
    items.join(",")
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let age_cell = json!(age(&o["metadata"]["creationTimestamp"]));
    let (spec, status) = (&o["spec"], &o["status"]);
    let int = |v: &Value| json!(v.as_i64().unwrap_or(0));
    match rt.shape {
        Shape::Namespace => vec![name, json!(status["phase"]), age_cell],
        Shape::Node => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map_or("Unknown", |c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                });
            // kubectl's ROLES: the `node-role.kubernetes.io/<role>` labels.
            let roles: Vec<&str> = o["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            let roles = if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            };
            vec![
                name,
                json!(ready),
                json!(roles),
                age_cell,
                json!(status["nodeInfo"]["kubeletVersion"]),
            ]
        }
        Shape::Pod => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status["phase"]),
                json!(restarts.to_string()),
                age_cell,
                or_none(str_of(&status["podIP"])),
                or_none(str_of(&spec["nodeName"])),
            ]
        }
        Shape::Service => {
            vec![
                name,
                json!(spec["type"]),
                or_none(str_of(&spec["clusterIP"])),
                or_none(service_external(spec, status)),
                or_none(service_ports(spec)),
                age_cell,
                or_none(selector(&spec["selector"])),
            ]
        }
        Shape::Deployment => {
            let containers = spec["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let names: Vec<String> = containers.iter().map(|c| str_of(&c["name"])).collect();
            let images: Vec<String> = containers.iter().map(|c| str_of(&c["image"])).collect();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    status["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                int(&status["updatedReplicas"]),
                int(&status["availableReplicas"]),
                age_cell,
                json!(names.join(",")),
                json!(images.join(",")),
                json!(crate::store::selector::LabelSelector::to_query_string(
                    &spec["selector"]
                )),
            ]
        }
        Shape::ReplicaSet => vec![
            name,
            int(&spec["replicas"]),
            int(&status["replicas"]),
            int(&status["readyReplicas"]),
            age_cell,
        ],
        Shape::ConfigMap => vec![
            name,
            json!(count(&o["data"]) + count(&o["binaryData"])),
            age_cell,
        ],
        Shape::Secret => vec![name, json!(o["type"]), json!(count(&o["data"])), age_cell],
        Shape::Endpoints => {
            let mut eps: Vec<String> = Vec::new();
            for subset in o["subsets"].as_array().cloned().unwrap_or_default() {
                for a in subset["addresses"].as_array().cloned().unwrap_or_default() {
                    for p in subset["ports"].as_array().cloned().unwrap_or_default() {
                        eps.push(format!("{}:{}", str_of(&a["ip"]), p["port"]));
                    }
                }
            }
            vec![name, or_none(eps.join(",")), age_cell]
        }
        Shape::ServiceCidr => {
            let cidrs: Vec<String> = spec["cidrs"]
                .as_array()
                .map(|a| a.iter().map(str_of).collect())
                .unwrap_or_default();
            vec![name, json!(cidrs.join(",")), age_cell]
        }
        Shape::Ingress => vec![
            name,
            or_none(str_of(&spec["ingressClassName"])),
            json!(ingress_hosts(spec)),
            json!(ingress_addresses(status)),
            json!(if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            }),
            age_cell,
        ],
        Shape::IngressClass => {
            let p = &spec["parameters"];
            let parameters = if p.is_object() {
                let group = str_of(&p["apiGroup"]);
                let kind = if group.is_empty() {
                    str_of(&p["kind"])
                } else {
                    format!("{}.{group}", str_of(&p["kind"]))
                };
                format!("{kind}/{}", str_of(&p["name"]))
            } else {
                String::new()
            };
            vec![
                name,
                json!(spec["controller"]),
                or_none(parameters),
                age_cell,
            ]
        }
        Shape::Event => {
            let last = if o["lastTimestamp"].is_null() {
                &o["eventTime"]
            } else {
                &o["lastTimestamp"]
            };
            let io = &o["involvedObject"];
            vec![
                json!(age(last)),
                json!(o["type"]),
                json!(o["reason"]),
                json!(format!(
                    "{}/{}",
                    str_of(&io["kind"]).to_lowercase(),
                    str_of(&io["name"])
                )),
                json!(o["message"]),
            ]
        }
        _ => vec![name, age_cell],
    }
}

/// The HOSTS column: each rule's host, `*` for a rule without one (as kubectl prints).
fn ingress_hosts(spec: &Value) -> String {
    let hosts: Vec<String> = spec["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| str_of(&r["host"]))
        .map(|h| if h.is_empty() { "*".to_string() } else { h })
        .collect();
    if hosts.is_empty() {
        "*".into()
    } else {
        hosts.join(",")
    }
}

/// The ADDRESS column: the load balancer's addresses (ip, else hostname), joined.
fn ingress_addresses(status: &Value) -> String {
    status["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let ip = str_of(&i["ip"]);
            if ip.is_empty() {
                str_of(&i["hostname"])
            } else {
                ip
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The row's `object`: as `includeObject` asks (default: PartialObjectMetadata).
fn row_object(obj: &Value, include: Option<&str>) -> Option<Value> {
    match include {
        Some("None") => None,
        Some("Object") => Some(obj.clone()),
        _ => Some(
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}),
        ),
    }
}

/// A row for one object (also used for watch events).
pub fn row(rt: &ResourceType, obj: &Value, query: &Query) -> Value {
    let mut row = json!({"cells": cells(rt, obj)});
    if let Some(o) = row_object(obj, query.get("includeObject")) {
        row["object"] = o;
    }
    row
}

pub fn column_definitions(rt: &ResourceType) -> Value {
    let defs: Vec<Value> = columns(rt.shape)
        .iter()
        .map(|(name, ty, priority)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        })
        .collect();
    json!(defs)
}

/// A Table of objects.
pub fn table(rt: &ResourceType, objects: &[Arc<Stored>], rv: u64, query: &Query) -> Value {
    let rows: Vec<Value> = objects.iter().map(|o| row(rt, &o.value, query)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": column_definitions(rt),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn service_rows_show_type_ip_and_ports() {
        let svc = resources::find("", "v1", "services").unwrap();
        let obj = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.1.0", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}], "selector": {"app": "web"}}});
        let row = row(svc, &obj, &Query::default());
        assert_eq!(
            row["cells"].as_array().unwrap()[..5],
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.1.0"),
                json!("<none>"),
                json!("80:30080/TCP")
            ]
        );
        assert!(row["cells"][5].as_str().unwrap().ends_with('y'));
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            column_definitions(svc).as_array().unwrap().len(),
            row["cells"].as_array().unwrap().len()
        );
    }

    #[test]
    fn external_ip_shows_load_balancer_addresses_and_external_ips() {
        let external = |obj: Value| service_external(&obj["spec"], &obj["status"]);
        assert_eq!(
            external(json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}})),
            "<pending>"
        );
        assert_eq!(
            external(
                json!({"spec": {"type": "LoadBalancer", "externalIPs": ["198.51.100.7"]},
                "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.128"}]}}})
            ),
            "198.51.100.128,198.51.100.7"
        );
        assert_eq!(
            external(json!({"spec": {"type": "ClusterIP", "externalIPs": ["198.51.100.7"]}})),
            "198.51.100.7"
        );
        assert_eq!(external(json!({"spec": {"type": "NodePort"}})), "");
    }

    #[test]
    fn ingress_rows_show_class_hosts_and_address() {
        let ing = resources::find("networking.k8s.io", "v1", "ingresses").unwrap();
        let obj = json!({"metadata": {"name": "shop"},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example.test"}, {}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.128"}]}}});
        let cells = row(ing, &obj, &Query::default())["cells"].clone();
        assert_eq!(
            cells.as_array().unwrap()[..5],
            [
                json!("shop"),
                json!("nginx"),
                json!("shop.example.test,*"),
                json!("198.51.100.128"),
                json!("80")
            ]
        );
        let bare = row(ing, &json!({"spec": {}}), &Query::default())["cells"].clone();
        assert_eq!(bare[1], "<none>");
        assert_eq!(bare[2], "*");
        assert_eq!(bare[3], "");
    }

    #[test]
    fn every_shape_has_as_many_cells_as_columns() {
        for rt in resources::served() {
            let n = cells(rt, &json!({})).len();
            assert_eq!(n, columns(rt.shape).len(), "{}", rt.plural);
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        let ts = |secs: i64| {
            json!(
                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - secs)
                    .unwrap()
                    .to_string()
            )
        };
        assert_eq!(age(&ts(5)), "5s");
        assert_eq!(age(&ts(200)), "3m20s");
        assert_eq!(age(&ts(3 * 86400 + 7200)), "3d2h");
        assert_eq!(age(&json!(null)), "<unknown>");
    }
}
