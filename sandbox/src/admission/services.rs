//! Service validation and allocation: ClusterIPs from the service CIDR and NodePorts from
//! 30000-32767, with kube-apiserver's messages for addresses out of range or already taken.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::alloc::{Allocations, NODE_PORTS};
use crate::error::{Cause, go_quote};

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn go_string_slice(ips: &[&str]) -> String {
    let items: Vec<String> = ips.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// Validates ports and type, then fills `clusterIP(s)` and NodePorts, allocating what is not
/// requested. `old` is the stored Service on update. `holder` is (namespace, name).
pub fn admit(
    svc: &mut Value,
    old: Option<&Value>,
    alloc: &mut Allocations,
    holder: &(String, String),
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &mut svc["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if !TYPES.contains(&ty.as_str()) {
        causes.push(Cause::unsupported("spec.type", &ty, TYPES));
        return causes;
    }
    let old_spec = old.map(|o| &o["spec"]);

    // ExternalName Services have no address and no ports to proxy.
    if ty == "ExternalName" {
        if spec["externalName"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required("spec.externalName"));
        }
        if let Some(map) = spec.as_object_mut() {
            map.remove("clusterIP");
            map.remove("clusterIPs");
        }
        return causes;
    }

    // An update that leaves the address out keeps the allocated one (as `kubectl apply` relies on).
    let requested = requested_ip(spec);
    let old_ip = old_spec
        .and_then(|o| o["clusterIP"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let headless = requested.as_deref() == Some("None");
    let ports_missing = spec["ports"].as_array().is_none_or(Vec::is_empty);
    if ports_missing && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    causes.extend(ports(spec, &ty));

    let ip = match (requested, old_ip) {
        (None, Some(old)) => old,
        (Some(new), Some(old)) if new != old => {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                go_string_slice(&[new.as_str()]),
                "may not change once set",
            ));
            old
        }
        (Some(ip), Some(_)) => ip,
        (Some(ip), None) if ip == "None" => ip,
        (Some(ip), None) => match check_requested(&ip, alloc, holder) {
            Ok(()) => ip,
            Err(cause) => {
                causes.push(cause);
                return causes;
            }
        },
        (None, None) => match alloc.free_ip() {
            Some(ip) => ip.to_string(),
            None => {
                causes.push(Cause::invalid(
                    "spec.clusterIPs",
                    "[]string{}",
                    "failed to allocate IP: range is full",
                ));
                return causes;
            }
        },
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    if ip != "None" {
        spec["ipFamilies"] = json!(["IPv4"]);
        if spec["ipFamilyPolicy"].is_null() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
    } else if spec["ipFamilyPolicy"].is_null() {
        spec["ipFamilyPolicy"] = json!("RequireDualStack");
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    causes.extend(node_ports(spec, old_spec, &ty, alloc, holder));
    causes
}

/// `spec.clusterIP`, else `spec.clusterIPs[0]`, if set.
fn requested_ip(spec: &Value) -> Option<String> {
    spec["clusterIP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| spec["clusterIPs"][0].as_str().filter(|s| !s.is_empty()))
        .map(str::to_string)
}

fn check_requested(ip: &str, alloc: &Allocations, holder: &(String, String)) -> Result<(), Cause> {
    let shown = go_string_slice(&[ip]);
    let Ok(addr) = ip.parse::<Ipv4Addr>() else {
        return Err(Cause::invalid_str(
            "spec.clusterIPs[0]",
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    };
    let net = alloc.net();
    if !net.contains(&addr) || addr == net.network() || addr == net.broadcast() {
        return Err(Cause::invalid(
            "spec.clusterIPs",
            shown,
            format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {net}"
            ),
        ));
    }
    match alloc.ip_holder(addr) {
        Some(h) if h != holder => Err(Cause::invalid(
            "spec.clusterIPs",
            shown,
            format!("failed to allocate IP {ip}: provided IP is already allocated"),
        )),
        _ => Ok(()),
    }
}

fn ports(spec: &Value, ty: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let list = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut seen: Vec<(i64, &str)> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or_default();
        if list.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        if !name.is_empty() {
            causes.extend(super::validate::label_1123(&format!("{at}.name"), name));
            if names.contains(&name) {
                causes.push(Cause::duplicate(format!("{at}.name"), go_quote(name)));
            }
            names.push(name);
        }
        match p["port"].as_i64() {
            None | Some(0) => causes.push(Cause::required(format!("{at}.port"))),
            Some(n) if !(1..=65535).contains(&n) => causes.push(Cause::invalid(
                format!("{at}.port"),
                n,
                "must be between 1 and 65535, inclusive",
            )),
            Some(n) => {
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                if seen.contains(&(n, proto)) {
                    causes.push(Cause::duplicate(
                        at.clone(),
                        format!(
                            "core.ServicePort{{Name:{}, Protocol:{}, Port:{n}}}",
                            go_quote(name),
                            go_quote(proto)
                        ),
                    ));
                }
                seen.push((n, proto));
            }
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            causes.push(Cause::unsupported(
                format!("{at}.protocol"),
                proto,
                PROTOCOLS,
            ));
        }
        if let Some(t) = p["targetPort"].as_i64()
            && !(1..=65535).contains(&t)
        {
            causes.push(Cause::invalid(
                format!("{at}.targetPort"),
                t,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ty == "ClusterIP" && p["nodePort"].as_i64().is_some_and(|n| n != 0) {
            causes.push(Cause::forbidden(
                format!("{at}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    causes
}

fn node_ports(
    spec: &mut Value,
    old_spec: Option<&Value>,
    ty: &str,
    alloc: &mut Allocations,
    holder: &(String, String),
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"] != false);
    let old_ports = old_spec
        .map(|o| o["ports"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default();
    let Some(ports) = spec["ports"].as_array_mut() else {
        return causes;
    };
    if !wants_node_ports {
        // A type change away from NodePort drops the ports the server had allocated.
        for p in ports.iter_mut() {
            let held = p["nodePort"].as_i64();
            if held.is_some()
                && old_ports.iter().any(|o| o["nodePort"].as_i64() == held)
                && let Some(m) = p.as_object_mut()
            {
                m.remove("nodePort");
            }
        }
        return causes;
    }
    let mut chosen: Vec<u16> = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let at = format!("spec.ports[{i}].nodePort");
        let requested = p["nodePort"].as_i64().filter(|n| *n != 0);
        let kept = old_ports
            .iter()
            .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
            .and_then(|o| o["nodePort"].as_i64());
        match requested.or(kept) {
            Some(n) => {
                p["nodePort"] = json!(n);
                let in_range = u16::try_from(n).ok().filter(|n| NODE_PORTS.contains(n));
                match in_range {
                    None => causes.push(Cause::invalid(
                        &at,
                        n,
                        format!(
                            "provided port is not in the valid range. The range of valid ports is {}-{}",
                            NODE_PORTS.start(),
                            NODE_PORTS.end()
                        ),
                    )),
                    Some(port) => {
                        if alloc.port_holder(port).is_some_and(|h| h != holder) {
                            causes.push(Cause::invalid(&at, n, "provided port is already allocated"));
                        }
                        chosen.push(port);
                    }
                }
            }
            None => match alloc.free_node_port(&chosen) {
                Some(port) => {
                    p["nodePort"] = json!(port);
                    chosen.push(port);
                }
                None => causes.push(Cause::invalid(&at, 0, "range is full")),
            },
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> (String, String) {
        ("default".into(), "x".into())
    }

    #[test]
    fn out_of_range_addresses_get_the_real_message() {
        let mut alloc = Allocations::default();
        let mut svc =
            json!({"spec": {"type": "ClusterIP", "clusterIP": "1.1.1.1", "ports": [{"port": 80}]}});
        let causes = admit(&mut svc, None, &mut alloc, &holder());
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.clusterIPs");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/16"#
        );
    }

    #[test]
    fn addresses_are_allocated_kept_and_not_shared() {
        let mut alloc = Allocations::default();
        let mut svc =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(admit(&mut svc, None, &mut alloc, &holder()).is_empty());
        let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip]));
        let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!(NODE_PORTS.contains(&(port as u16)));
        alloc.hold(&holder(), &svc);

        // An update without the address keeps it; changing it is refused.
        let mut update =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(admit(&mut update, Some(&svc), &mut alloc, &holder()).is_empty());
        assert_eq!(update["spec"]["clusterIP"], ip.as_str());
        assert_eq!(update["spec"]["ports"][0]["nodePort"], port);
        let mut moved = json!({"spec": {"clusterIP": "10.96.9.9", "ports": [{"port": 80}]}});
        assert_eq!(
            admit(&mut moved, Some(&svc), &mut alloc, &holder())[0].field,
            "spec.clusterIPs[0]"
        );

        // Another Service cannot take the same address or NodePort.
        let other = ("default".to_string(), "y".to_string());
        let mut clash = json!({"spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        assert!(
            admit(&mut clash, None, &mut alloc, &other)[0]
                .message
                .ends_with("provided IP is already allocated")
        );
        let mut clash =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}});
        assert!(
            admit(&mut clash, None, &mut alloc, &other)[0]
                .message
                .ends_with("provided port is already allocated")
        );
    }

    #[test]
    fn missing_ports_and_bad_types_are_invalid() {
        let mut alloc = Allocations::default();
        let mut svc = json!({"spec": {"type": "ClusterIP"}});
        assert_eq!(
            admit(&mut svc, None, &mut alloc, &holder())[0],
            Cause::required("spec.ports")
        );
        let mut svc = json!({"spec": {"type": "Weird", "ports": [{"port": 1}]}});
        assert_eq!(
            admit(&mut svc, None, &mut alloc, &holder())[0].field,
            "spec.type"
        );
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        assert!(admit(&mut headless, None, &mut alloc, &holder()).is_empty());
    }
}
