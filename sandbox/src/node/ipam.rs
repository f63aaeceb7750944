//! Pod addresses in the node's /24: `.1` is the node, `.255` the broadcast address, so pods get
//! `.2` to `.254`. Addresses are handed out round-robin from the last one given, as the CNI
//! `host-local` plugin does, so a freed address is not reused at once: conntrack entries and
//! EndpointSlices that still name a deleted pod must not reach the next pod by accident.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const FIRST: u8 = 2;
const LAST: u8 = 254;

/// No address is left in the pod range.
#[derive(Debug, thiserror::Error)]
#[error("no free pod address left in {network}/24 ({count} pods hold them all)")]
pub struct Exhausted {
    pub network: Ipv4Addr,
    pub count: usize,
}

/// Which pod (by UID) holds which address.
#[derive(Debug)]
pub struct Ipam {
    network: [u8; 3],
    by_uid: BTreeMap<String, u8>,
    used: [bool; 256],
    last: u8,
}

impl Ipam {
    /// An allocator for `network` (a /24; its last octet is ignored).
    pub fn new(network: Ipv4Addr) -> Self {
        let [a, b, c, _] = network.octets();
        Ipam {
            network: [a, b, c],
            by_uid: BTreeMap::new(),
            used: [false; 256],
            last: FIRST - 1,
        }
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.network;
        Ipv4Addr::new(a, b, c, host)
    }

    /// The address `uid` holds, if any.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).map(|h| self.addr(*h))
    }

    /// The address of `uid`: the one it holds, or the next free one.
    pub fn assign(&mut self, uid: &str) -> Result<Ipv4Addr, Exhausted> {
        if let Some(ip) = self.get(uid) {
            return Ok(ip);
        }
        let span = u16::from(LAST - FIRST) + 1;
        let start = u16::from(self.last.clamp(FIRST - 1, LAST));
        let found = (1..=span)
            .map(|step| {
                let offset = (start + step - u16::from(FIRST)) % span;
                // offset < span <= 253, so FIRST + offset fits a u8.
                FIRST + offset as u8
            })
            .find(|host| !self.used[usize::from(*host)]);
        let Some(host) = found else {
            return Err(Exhausted {
                network: self.addr(0),
                count: self.by_uid.len(),
            });
        };
        self.used[usize::from(host)] = true;
        self.last = host;
        self.by_uid.insert(uid.to_string(), host);
        Ok(self.addr(host))
    }

    /// Frees the address of `uid` (nothing happens when it holds none).
    pub fn release(&mut self, uid: &str) {
        if let Some(host) = self.by_uid.remove(uid) {
            self.used[usize::from(host)] = false;
        }
    }

    /// UIDs holding an address.
    pub fn uids(&self) -> Vec<String> {
        self.by_uid.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam() -> Ipam {
        Ipam::new(Ipv4Addr::new(10, 244, 0, 0))
    }

    #[test]
    fn addresses_start_at_two_and_are_stable_per_uid() {
        let mut ipam = ipam();
        assert_eq!(ipam.assign("a").unwrap(), Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(ipam.assign("b").unwrap(), Ipv4Addr::new(10, 244, 0, 3));
        assert_eq!(ipam.assign("a").unwrap(), Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(ipam.get("b"), Some(Ipv4Addr::new(10, 244, 0, 3)));
    }

    #[test]
    fn freed_addresses_are_not_reused_at_once() {
        let mut ipam = ipam();
        ipam.assign("a").unwrap();
        ipam.release("a");
        assert_eq!(ipam.assign("b").unwrap(), Ipv4Addr::new(10, 244, 0, 3));
        assert_eq!(ipam.get("a"), None);
    }

    #[test]
    fn the_range_wraps_and_runs_out_with_a_clear_error() {
        let mut ipam = ipam();
        for i in 0..253 {
            ipam.assign(&format!("p{i}")).unwrap();
        }
        assert_eq!(
            ipam.get("p252"),
            Some(Ipv4Addr::new(10, 244, 0, 254)),
            ".254 is the last pod address"
        );
        let err = ipam.assign("one-more").unwrap_err();
        assert!(err.to_string().contains("10.244.0.0/24"), "{err}");
        ipam.release("p10");
        assert_eq!(ipam.assign("late").unwrap(), Ipv4Addr::new(10, 244, 0, 12));
        assert_eq!(ipam.uids().len(), 253);
    }
}
