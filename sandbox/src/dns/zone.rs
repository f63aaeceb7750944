//! What cluster DNS knows: a snapshot of the Services, their EndpointSlices and the
//! namespaces, taken from the store and indexed for answering. Building it is a pure function
//! of stored JSON, so tests make zones without a store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use crate::resources::{self, Shape};
use crate::store::State;

/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of a Service or of an EndpointSlice, with names lower-cased for matching SRV
/// labels (DNS names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
}

/// One address of a Service's EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// The endpoint's `hostname` (the pod's `spec.hostname` when its subdomain is the Service).
    pub hostname: Option<String>,
    pub ready: bool,
    /// The ports of the slice that holds this endpoint (target ports, resolved per pod).
    pub ports: Vec<Port>,
}

impl Endpoint {
    /// The label naming this endpoint under its Service: its hostname, else its address with
    /// dashes (as CoreDNS names endpoints without a hostname).
    pub fn label(&self) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None => dashed(self.ip),
        }
    }
}

/// `10.244.0.5` → `10-244-0-5`.
pub fn dashed(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{a}-{b}-{c}-{d}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A Service with virtual addresses.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: names resolve to endpoints.
    Headless,
    /// A CNAME to this name.
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub kind: Kind,
    pub ports: Vec<Port>,
    pub publish_not_ready: bool,
    /// Every IPv4 endpoint of every slice of the Service, one entry per address.
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    /// The endpoints DNS publishes: ready ones, or all with `publishNotReadyAddresses`.
    pub fn published(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| e.ready || self.publish_not_ready)
    }
}

/// The indexed contents of the `cluster.local` zone.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// Namespaces that exist (as objects or as the home of a Service).
    pub namespaces: BTreeSet<String>,
    /// Services by (namespace, name).
    pub services: BTreeMap<(String, String), Service>,
    /// Changes whenever the store does: the SOA serial.
    pub serial: u32,
}

fn ports(v: &Value) -> Vec<Port> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p["name"].as_str().unwrap_or_default().to_ascii_lowercase(),
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p["port"].as_u64()?).ok()?,
            })
        })
        .collect()
}

fn service(v: &Value) -> Service {
    let spec = &v["spec"];
    let kind = if spec["type"] == "ExternalName" {
        Kind::ExternalName(
            spec["externalName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    } else if spec["clusterIP"] == "None" {
        Kind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str()?.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = spec["clusterIP"].as_str().and_then(|s| s.parse().ok())
        {
            ips.push(ip);
        }
        Kind::ClusterIp(ips)
    };
    Service {
        kind,
        ports: ports(&spec["ports"]),
        publish_not_ready: spec["publishNotReadyAddresses"] == true,
        endpoints: Vec::new(),
    }
}

/// The endpoints of one EndpointSlice (IPv4 slices only).
fn slice_endpoints(v: &Value) -> Vec<Endpoint> {
    if v["addressType"] != "IPv4" {
        return Vec::new();
    }
    let ports = ports(&v["ports"]);
    let mut out = Vec::new();
    for e in v["endpoints"].as_array().into_iter().flatten() {
        // A missing `ready` means ready, as the EndpointSlice API documents.
        let ready = e["conditions"]["ready"] != false;
        let hostname = e["hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase);
        for ip in e["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
                out.push(Endpoint {
                    ip,
                    hostname: hostname.clone(),
                    ready,
                    ports: ports.clone(),
                });
            }
        }
    }
    out
}

impl Zone {
    /// Builds a zone from stored objects: Services, EndpointSlices and Namespaces.
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Value>,
        slices: impl IntoIterator<Item = &'a Value>,
        namespaces: impl IntoIterator<Item = &'a Value>,
        serial: u32,
    ) -> Zone {
        let mut zone = Zone {
            serial,
            ..Zone::default()
        };
        for ns in namespaces {
            if let Some(name) = ns["metadata"]["name"].as_str() {
                zone.namespaces.insert(name.to_ascii_lowercase());
            }
        }
        for svc in services {
            let meta = &svc["metadata"];
            let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
                continue;
            };
            zone.namespaces.insert(ns.to_ascii_lowercase());
            zone.services.insert(
                (ns.to_ascii_lowercase(), name.to_ascii_lowercase()),
                service(svc),
            );
        }
        for slice in slices {
            let meta = &slice["metadata"];
            let (Some(ns), Some(svc)) = (
                meta["namespace"].as_str(),
                meta["labels"][SERVICE_NAME_LABEL].as_str(),
            ) else {
                continue;
            };
            let key = (ns.to_ascii_lowercase(), svc.to_ascii_lowercase());
            if let Some(service) = zone.services.get_mut(&key) {
                for e in slice_endpoints(slice) {
                    // Slices may overlap while the controller moves endpoints: keep one entry
                    // per address, preferring a ready one.
                    match service.endpoints.iter_mut().find(|x| x.ip == e.ip) {
                        Some(x) if !x.ready && e.ready => *x = e,
                        Some(_) => {}
                        None => service.endpoints.push(e),
                    }
                }
            }
        }
        zone
    }

    /// Takes a snapshot of the store's contents.
    pub fn from_state(state: &State) -> Zone {
        let values = |shape| {
            state
                .list(resources::by_shape(shape), None, None)
                .map(|o| &o.value)
        };
        Zone::build(
            values(Shape::Service),
            values(Shape::EndpointSlice),
            values(Shape::Namespace),
            // The serial only needs to change with the contents; wrapping is allowed (RFC 1982).
            state.rv() as u32,
        )
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<&Service> {
        self.services.get(&(ns.to_string(), name.to_string()))
    }

    /// The name of the Service or endpoint an address belongs to, for PTR answers: labels
    /// below the zone (`svc.ns.svc` or `host.svc.ns.svc`).
    pub fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
        for ((ns, name), svc) in &self.services {
            if let Kind::ClusterIp(ips) = &svc.kind
                && ips.contains(&IpAddr::V4(ip))
            {
                return Some(format!("{name}.{ns}.svc"));
            }
        }
        for ((ns, name), svc) in &self.services {
            if svc.kind == Kind::Headless
                && let Some(e) = svc.published().find(|e| e.ip == ip)
            {
                return Some(format!("{}.{name}.{ns}.svc", e.label()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slices_join_their_service_and_duplicates_keep_the_ready_one() {
        let svc = json!({"metadata": {"namespace": "Default", "name": "Web"},
            "spec": {"clusterIP": "None", "ports": [{"name": "HTTP", "port": 80}]}});
        let a = json!({"metadata": {"namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": false}},
                          {"addresses": ["10.244.0.6"], "hostname": "web-0"}]});
        let b = json!({"metadata": {"namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}]});
        let v6 = json!({"metadata": {"namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"]}]});
        let zone = Zone::build([&svc], [&a, &b, &v6], [], 1);
        let web = zone.service("default", "web").unwrap();
        assert_eq!(web.kind, Kind::Headless);
        assert_eq!(web.ports[0].name, "http");
        assert_eq!(web.ports[0].protocol, "tcp");
        assert_eq!(web.endpoints.len(), 2);
        assert!(web.endpoints.iter().all(|e| e.ready));
        assert_eq!(web.endpoints[1].label(), "web-0");
        assert_eq!(web.endpoints[0].label(), "10-244-0-5");
        assert!(zone.namespaces.contains("default"));
        assert_eq!(
            zone.reverse("10.244.0.6".parse().unwrap()).as_deref(),
            Some("web-0.web.default.svc")
        );
    }
}
