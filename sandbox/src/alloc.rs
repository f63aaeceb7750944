//! Which ClusterIPs and NodePorts Services hold. The store keeps this index in step with every
//! Service it writes or removes, so allocation (in admission) and release (on any delete, also
//! by garbage collection) cannot drift from the stored objects.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

/// The Service CIDR, as the `kubernetes` ServiceCIDR object states it.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's address.
pub const KUBERNETES_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The `kube-dns` Service's address.
pub const KUBE_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The NodePort range.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Identifies the Service holding an address or port: (namespace, name).
pub type Holder = (String, String);

#[derive(Debug)]
pub struct Allocations {
    net: Ipv4Net,
    ips: HashMap<Ipv4Addr, Holder>,
    node_ports: HashMap<u16, Holder>,
    /// Where the search for the next free dynamic address starts.
    ip_cursor: u32,
    port_cursor: u16,
}

impl Default for Allocations {
    fn default() -> Self {
        Allocations {
            // A constant that parses (checked by a unit test).
            net: SERVICE_CIDR.parse().expect("valid CIDR"),
            ips: HashMap::new(),
            node_ports: HashMap::new(),
            ip_cursor: 0,
            port_cursor: *NODE_PORTS.start(),
        }
    }
}

/// The ClusterIPs a Service object holds (`spec.clusterIPs`, else `spec.clusterIP`).
pub fn service_ips(svc: &Value) -> Vec<Ipv4Addr> {
    let spec = &svc["spec"];
    let mut ips: Vec<Ipv4Addr> = match spec["clusterIPs"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect(),
        None => Vec::new(),
    };
    if ips.is_empty()
        && let Some(ip) = spec["clusterIP"].as_str().and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// The NodePorts a Service object holds.
pub fn service_node_ports(svc: &Value) -> Vec<u16> {
    match svc["spec"]["ports"].as_array() {
        Some(ports) => ports
            .iter()
            .filter_map(|p| p["nodePort"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .collect(),
        None => Vec::new(),
    }
}

impl Allocations {
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// Records what a stored Service holds.
    pub fn hold(&mut self, holder: &Holder, svc: &Value) {
        for ip in service_ips(svc) {
            self.ips.insert(ip, holder.clone());
        }
        for port in service_node_ports(svc) {
            self.node_ports.insert(port, holder.clone());
        }
    }

    /// Forgets what a Service held (it was removed or is being rewritten).
    pub fn release(&mut self, holder: &Holder, svc: &Value) {
        for ip in service_ips(svc) {
            if self.ips.get(&ip) == Some(holder) {
                self.ips.remove(&ip);
            }
        }
        for port in service_node_ports(svc) {
            if self.node_ports.get(&port) == Some(holder) {
                self.node_ports.remove(&port);
            }
        }
    }

    /// Who holds an address, if anyone.
    pub fn ip_holder(&self, ip: Ipv4Addr) -> Option<&Holder> {
        self.ips.get(&ip)
    }

    /// Who holds a NodePort, if anyone.
    pub fn port_holder(&self, port: u16) -> Option<&Holder> {
        self.node_ports.get(&port)
    }

    /// A free address from the dynamic part of the range (above the first 256 addresses, which
    /// are left for addresses users request, like kube-apiserver's static band).
    pub fn free_ip(&mut self) -> Option<Ipv4Addr> {
        let base = u32::from(self.net.network());
        let size = 1u32 << (32 - self.net.prefix_len());
        let static_band = 256.min(size / 2);
        let dynamic = size - static_band - 1;
        for step in 0..dynamic {
            let offset = static_band + (self.ip_cursor + step) % dynamic;
            let ip = Ipv4Addr::from(base + offset);
            if !self.ips.contains_key(&ip) {
                self.ip_cursor = (self.ip_cursor + step + 1) % dynamic;
                return Some(ip);
            }
        }
        // The dynamic band is full: fall back to the static band, as kube-apiserver does.
        (1..static_band)
            .map(|o| Ipv4Addr::from(base + o))
            .find(|ip| !self.ips.contains_key(ip))
    }

    /// A free NodePort not in `taken` (ports already chosen for the same Service).
    pub fn free_node_port(&mut self, taken: &[u16]) -> Option<u16> {
        let (lo, hi) = (*NODE_PORTS.start(), *NODE_PORTS.end());
        let count = hi - lo + 1;
        for step in 0..count {
            let port = lo + (self.port_cursor - lo + step) % count;
            if !self.node_ports.contains_key(&port) && !taken.contains(&port) {
                self.port_cursor = lo + (port - lo + 1) % count;
                return Some(port);
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
    fn hold_and_release_track_holders() {
        let mut a = Allocations::default();
        assert_eq!(a.net().to_string(), SERVICE_CIDR);
        let holder = ("default".to_string(), "web".to_string());
        let svc = json!({"spec": {"clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"], "ports": [{"nodePort": 30001}]}});
        a.hold(&holder, &svc);
        assert_eq!(a.ip_holder("10.96.5.5".parse().unwrap()), Some(&holder));
        assert_eq!(a.port_holder(30001), Some(&holder));
        let other = ("default".to_string(), "other".to_string());
        a.release(&other, &svc);
        assert!(a.port_holder(30001).is_some(), "only the holder releases");
        a.release(&holder, &svc);
        assert!(a.ip_holder("10.96.5.5".parse().unwrap()).is_none());
        assert!(a.port_holder(30001).is_none());
    }

    #[test]
    fn free_addresses_skip_held_ones_and_the_static_band() {
        let mut a = Allocations::default();
        let first = a.free_ip().unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 96, 1, 0));
        a.hold(
            &("a".into(), "b".into()),
            &json!({"spec": {"clusterIP": "10.96.1.1"}}),
        );
        assert_eq!(a.free_ip().unwrap(), Ipv4Addr::new(10, 96, 1, 2));
        let p = a.free_node_port(&[30000]).unwrap();
        assert_eq!(p, 30001);
    }
}
