//! The kube-proxy ruleset as a pure function of Services and EndpointSlices: first a plan (one
//! entry per Service port: where it answers and which endpoints serve it), then the nftables
//! script that makes it so.
//!
//! The table follows the layout of kube-proxy's own nftables mode, for the same reasons:
//!
//! - One verdict map keyed by `address . protocol . port` finds a Service port in one lookup
//!   however many Services there are; NodePorts have their own map on the node address.
//! - Each Service port's chain picks an endpoint with `numgen random mod N`, a vmap to one
//!   chain per endpoint, which DNATs: new connections spread evenly, conntrack keeps each
//!   connection on its endpoint.
//! - DNATed traffic that leaves on the bridge from a pod address is masqueraded to the node
//!   address. Without that, a pod that reaches a Service landing on a pod of the same bridge
//!   (itself included: hairpin) gets the reply straight from the endpoint's address, bridged
//!   past the node's conntrack, and drops it since it expected the Service address. Real
//!   clusters get the same effect from `br_netfilter`, which the sandbox does not rely on.
//! - A Service port without a ready endpoint is rejected (TCP reset, ICMP port unreachable
//!   otherwise) before DNAT, so clients fail at once instead of waiting for a timeout.
//!
//! Hook priorities are numbers because nft 1.0 accepts the name `dstnat` on prerouting only:
//! -110 rejects after conntrack (-200) and before DNAT (-100); masquerade runs at `srcnat`.
//!
//! Endpoints count when `conditions.ready` is not false and `conditions.terminating` is not
//! true. The target port comes from each EndpointSlice's port of the same name and protocol,
//! which is how named targetPorts resolve per pod.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The table kube-proxy owns in the node namespace.
pub const TABLE: &str = "tether-proxy";
/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where the rules apply: the node address (NodePorts), the bridge and the pod CIDR (masquerade).
#[derive(Debug, Clone)]
pub struct Env {
    pub node_ip: Ipv4Addr,
    pub bridge: String,
    pub pod_cidr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One Service port: where it answers and which endpoints serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (port name empty for an unnamed port), for comments and logs.
    pub id: String,
    pub proto: Proto,
    /// ClusterIPs, externalIPs and load-balancer IPs, each with the Service port.
    pub frontends: Vec<(Ipv4Addr, u16)>,
    pub node_port: Option<u16>,
    /// Ready endpoints (address, target port), sorted, without duplicates.
    pub backends: Vec<(Ipv4Addr, u16)>,
}

fn ipv4s<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    items.into_iter().filter_map(|s| s.parse().ok()).collect()
}

fn port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The Service ports that get rules, in the order the Services are given.
pub fn plan(services: &[Service], slices: &[EndpointSlice]) -> Vec<ServicePort> {
    // (namespace, service name) → its IPv4 slices.
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let ns = slice.metadata.namespace.as_deref().unwrap_or("");
        if let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc)).or_default().push(slice);
        }
    }
    let mut planned = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName")
            || spec.cluster_ip.as_deref() == Some("None")
        {
            continue;
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let mut ips = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ipv4s(ips),
            _ => ipv4s(spec.cluster_ip.as_slice()),
        };
        ips.extend(ipv4s(spec.external_ips.iter().flatten()));
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        ips.extend(ipv4s(
            ingress.iter().flat_map(|i| i.iter()).flat_map(|i| &i.ip),
        ));
        let with_node_ports = matches!(
            spec.type_.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
        let svc_slices = by_service.get(&(ns, name)).map_or(&[][..], |v| &v[..]);
        for sp in spec.ports.iter().flatten() {
            let (Some(proto), Some(svc_port)) =
                (Proto::parse(sp.protocol.as_deref()), port(sp.port))
            else {
                continue;
            };
            let port_name = sp.name.as_deref().unwrap_or("");
            let node_port = sp.node_port.and_then(port).filter(|_| with_node_ports);
            planned.push(ServicePort {
                id: format!("{ns}/{name}:{port_name}"),
                proto,
                frontends: ips.iter().map(|ip| (*ip, svc_port)).collect(),
                node_port,
                backends: backends(svc_slices, port_name, proto),
            });
        }
    }
    planned
}

/// The ready endpoints of one Service port across its slices.
fn backends(slices: &[&EndpointSlice], port_name: &str, proto: Proto) -> Vec<(Ipv4Addr, u16)> {
    let mut found = BTreeSet::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Proto::parse(p.protocol.as_deref()) == Some(proto)
        });
        let Some(target) = target.and_then(|p| p.port).and_then(port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready) != Some(false);
            let terminating = cond.and_then(|c| c.terminating) == Some(true);
            if ready && !terminating {
                found.extend(ipv4s(&ep.addresses).into_iter().map(|ip| (ip, target)));
            }
        }
    }
    found.into_iter().collect()
}

/// Keeps the characters of a comment that cannot end or break the string nft parses.
fn comment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/:.-_".contains(*c))
        .collect()
}

/// The nftables script for a plan: creates the table when missing, deletes it and writes it
/// anew, so `nft -f` replaces every rule in one transaction.
pub fn render(ports: &[ServicePort], env: &Env) -> String {
    // Element keys already taken: a later Service claiming the same address and port (two
    // Services listing one externalIP) loses, as nft would refuse a duplicate element.
    let mut claimed = BTreeSet::new();
    let mut node_claimed = BTreeSet::new();
    let mut service_ips = Vec::new();
    let mut node_ports = Vec::new();
    let mut no_endpoints = Vec::new();
    let mut chains = String::new();
    for (i, sp) in ports.iter().enumerate() {
        let proto = sp.proto.nft();
        let chain = format!("svc-{i}");
        let keys: Vec<String> = sp
            .frontends
            .iter()
            .filter(|(ip, port)| claimed.insert((*ip, sp.proto, *port)))
            .map(|(ip, port)| format!("{ip} . {proto} . {port}"))
            .collect();
        let node_port = sp.node_port.filter(|p| {
            node_claimed.insert((sp.proto, *p)) && claimed.insert((env.node_ip, sp.proto, *p))
        });
        if sp.backends.is_empty() {
            no_endpoints.extend(keys);
            if let Some(p) = node_port {
                no_endpoints.push(format!("{} . {proto} . {p}", env.node_ip));
            }
            continue;
        }
        service_ips.extend(keys.into_iter().map(|k| format!("{k} : goto {chain}")));
        if let Some(p) = node_port {
            node_ports.push(format!("{proto} . {p} : goto {chain}"));
        }
        let picks: Vec<String> = (0..sp.backends.len())
            .map(|j| format!("{j} : goto {chain}-ep-{j}"))
            .collect();
        let _ = writeln!(
            chains,
            "\tchain {chain} {{\n\t\tnumgen random mod {} vmap {{ {} }} comment \"{}\"\n\t}}",
            sp.backends.len(),
            picks.join(", "),
            comment(&sp.id),
        );
        for (j, (ip, port)) in sp.backends.iter().enumerate() {
            let _ = writeln!(
                chains,
                "\tchain {chain}-ep-{j} {{\n\t\tmeta l4proto {proto} dnat ip to {ip}:{port}\n\t}}"
            );
        }
    }
    let elements = |items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", items.join(", "))
        }
    };
    let Env {
        node_ip,
        bridge,
        pod_cidr,
    } = env;
    format!(
        "# tether-sandbox kube-proxy: the whole table is replaced on every change.\n\
add table ip {TABLE}\n\
delete table ip {TABLE}\n\
table ip {TABLE} {{\n\
\tset no-endpoints {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n{no_endpoints}\t}}\n\
\tmap service-ips {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n{service_ips}\t}}\n\
\tmap node-ports {{\n\t\ttype inet_proto . inet_service : verdict\n{node_ports}\t}}\n\
\tchain filter-prerouting {{\n\t\ttype filter hook prerouting priority -110; policy accept;\n\
\t\tct state new ip daddr . meta l4proto . th dport @no-endpoints jump reject-no-endpoints\n\t}}\n\
\tchain filter-output {{\n\t\ttype filter hook output priority -110; policy accept;\n\
\t\tct state new ip daddr . meta l4proto . th dport @no-endpoints jump reject-no-endpoints\n\t}}\n\
\tchain reject-no-endpoints {{\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}}\n\
\tchain nat-prerouting {{\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services\n\t}}\n\
\tchain nat-output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}}\n\
\tchain nat-postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
\t\tct status dnat oifname \"{bridge}\" ip saddr {pod_cidr} masquerade\n\t}}\n\
\tchain services {{\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\
\t\tip daddr {node_ip} meta l4proto . th dport vmap @node-ports\n\t}}\n\
{chains}}}\n",
        no_endpoints = elements(&no_endpoints),
        service_ips = elements(&service_ips),
        node_ports = elements(&node_ports),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Env {
        Env {
            node_ip: Ipv4Addr::new(10, 244, 0, 1),
            bridge: "cbr0".into(),
            pod_cidr: "10.244.0.0/24".into(),
        }
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        svc(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "externalIPs": ["192.0.2.7"],
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web", "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]}}),
        )
    }

    fn web_slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({"metadata": {"name": name, "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints}))
    }

    #[test]
    fn ports_resolve_per_slice_and_only_ready_endpoints_count() {
        let slices = [
            web_slice(
                "web-a",
                json!([
                    {"addresses": ["10.244.0.3"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.4"], "conditions": {"ready": false}},
                    {"addresses": ["10.244.0.5"], "conditions": {"ready": true, "terminating": true}},
                    {"addresses": ["10.244.0.6"]},
                ]),
            ),
            web_slice(
                "web-b",
                json!([{"addresses": ["10.244.0.3"], "conditions": {"ready": true}}]),
            ),
            // Another Service's slice, and an IPv6 one of this Service: both ignored.
            slice(json!({"metadata": {"name": "other", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "other"}}, "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9}], "endpoints": [{"addresses": ["10.244.0.9"]}]})),
            slice(json!({"metadata": {"name": "v6", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv6",
                "ports": [{"name": "http", "port": 9}], "endpoints": [{"addresses": ["fd00::1"]}]})),
        ];
        let plan = plan(&[web()], &slices);
        assert_eq!(plan.len(), 2);
        let http = &plan[0];
        assert_eq!(http.id, "default/web:http");
        assert_eq!(http.proto, Proto::Tcp);
        assert_eq!(
            http.frontends,
            vec![
                (Ipv4Addr::new(10, 96, 0, 20), 80),
                (Ipv4Addr::new(192, 0, 2, 7), 80)
            ]
        );
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.backends,
            vec![
                (Ipv4Addr::new(10, 244, 0, 3), 8080),
                (Ipv4Addr::new(10, 244, 0, 6), 8080)
            ]
        );
        assert_eq!(plan[1].proto, Proto::Udp);
        assert_eq!(plan[1].backends[0].1, 5353);
    }

    #[test]
    fn external_name_and_headless_services_get_no_rules() {
        let services = [
            svc(
                json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
            ),
            svc(
                json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
            ),
        ];
        assert!(plan(&services, &[]).is_empty());
        let text = render(&[], &env());
        assert!(!text.contains("elements"), "{text}");
    }

    #[test]
    fn load_balancer_addresses_are_frontends_with_the_service_port() {
        let lb = svc(
            json!({"metadata": {"name": "web-lb", "namespace": "demo"}, "spec": {
            "type": "LoadBalancer", "clusterIP": "10.96.0.30", "externalIPs": ["198.51.100.64"],
            "ports": [{"port": 8080, "protocol": "TCP", "targetPort": 8080, "nodePort": 31000}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.128", "ipMode": "VIP"}]}}}),
        );
        let plan = plan(&[lb], &[]);
        assert_eq!(
            plan[0].frontends,
            vec![
                (Ipv4Addr::new(10, 96, 0, 30), 8080),
                (Ipv4Addr::new(198, 51, 100, 64), 8080),
                (Ipv4Addr::new(198, 51, 100, 128), 8080)
            ]
        );
        assert_eq!(plan[0].node_port, Some(31000));
    }

    #[test]
    fn node_ports_only_for_node_port_and_load_balancer_services() {
        let mut s = web();
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(plan(&[s], &[]).iter().all(|p| p.node_port.is_none()));
    }

    #[test]
    fn the_script_replaces_the_table_and_spreads_over_endpoints() {
        let slices = [web_slice(
            "web-a",
            json!([{"addresses": ["10.244.0.3"]}, {"addresses": ["10.244.0.4"]}]),
        )];
        let text = render(&plan(&[web()], &slices), &env());
        let head: Vec<&str> = text.lines().skip(1).take(3).collect();
        assert_eq!(
            head,
            [
                "add table ip tether-proxy",
                "delete table ip tether-proxy",
                "table ip tether-proxy {"
            ]
        );
        for expected in [
            "10.96.0.20 . tcp . 80 : goto svc-0",
            "192.0.2.7 . tcp . 80 : goto svc-0",
            "tcp . 30080 : goto svc-0",
            "udp . 30053 : goto svc-1",
            "numgen random mod 2 vmap { 0 : goto svc-0-ep-0, 1 : goto svc-0-ep-1 } comment \"default/web:http\"",
            "meta l4proto tcp dnat ip to 10.244.0.4:8080",
            "meta l4proto udp dnat ip to 10.244.0.3:5353",
            "ct status dnat oifname \"cbr0\" ip saddr 10.244.0.0/24 masquerade",
            "ip daddr 10.244.0.1 meta l4proto . th dport vmap @node-ports",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn ports_without_ready_endpoints_are_rejected_not_forwarded() {
        let slices = [web_slice(
            "web-a",
            json!([{"addresses": ["10.244.0.3"], "conditions": {"ready": false}}]),
        )];
        let text = render(&plan(&[web()], &slices), &env());
        assert!(
            text.contains(
                "elements = { 10.96.0.20 . tcp . 80, 192.0.2.7 . tcp . 80, 10.244.0.1 . tcp . 30080, "
            ),
            "{text}"
        );
        assert!(!text.contains("goto svc-0"), "{text}");
        assert!(!text.contains("dnat ip to"), "{text}");
    }

    #[test]
    fn a_shared_external_ip_goes_to_the_first_service_only() {
        let mut other = web();
        other.metadata.name = Some("web2".into());
        other.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.21".into());
        other.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.21".into()]);
        let text = render(&plan(&[web(), other], &[]), &env());
        assert_eq!(text.matches("192.0.2.7 . tcp . 80").count(), 1, "{text}");
    }
}
