//! Names the laptop's DNS server answers itself: hosts the cluster serves that no public
//! DNS knows yet (the daemon fills this with the hosts of Ingress rules, each pointing at
//! an address routed into the tunnel). A name here either wins over public DNS or only
//! answers when public DNS does not, as [`Precedence`] says.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

/// Whether a local host or public DNS answers a name both know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precedence {
    /// Public DNS first; the local address only for names it does not resolve.
    #[default]
    PublicFirst,
    /// The local address, whatever public DNS says.
    Override,
}

/// One name and the address it gets, with where it came from (for status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHost {
    /// Lower case, without the trailing dot; `*.example.test` matches one label more.
    pub name: String,
    pub address: Ipv4Addr,
    pub source: String,
}

#[derive(Debug, Default)]
struct Table {
    precedence: Precedence,
    by_name: BTreeMap<String, LocalHost>,
}

/// The table, shared by the DNS server and whoever keeps it up to date.
#[derive(Debug, Clone, Default)]
pub struct LocalHosts(Arc<RwLock<Table>>);

impl LocalHosts {
    pub fn new(precedence: Precedence) -> Self {
        LocalHosts(Arc::new(RwLock::new(Table {
            precedence,
            by_name: BTreeMap::new(),
        })))
    }

    /// Replaces every entry; of two entries for one name, the first stays.
    pub fn replace(&self, hosts: Vec<LocalHost>) {
        let mut by_name = BTreeMap::new();
        for mut h in hosts {
            h.name = normalize(&h.name);
            by_name.entry(h.name.clone()).or_insert(h);
        }
        if let Ok(mut table) = self.0.write() {
            table.by_name = by_name;
        }
    }

    pub fn entries(&self) -> Vec<LocalHost> {
        self.0
            .read()
            .map(|t| t.by_name.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn precedence(&self) -> Precedence {
        self.0.read().map(|t| t.precedence).unwrap_or_default()
    }

    /// The address for a query name (any case, trailing dot or not), exact names before
    /// wildcards.
    pub fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        let name = normalize(name);
        let table = self.0.read().ok()?;
        if let Some(h) = table.by_name.get(&name) {
            return Some(h.address);
        }
        let (_, parent) = name.split_once('.')?;
        table.by_name.get(&format!("*.{parent}")).map(|h| h.address)
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, last: u8) -> LocalHost {
        LocalHost {
            name: name.into(),
            address: Ipv4Addr::new(10, 96, 0, last),
            source: "ingress demo/shop".into(),
        }
    }

    #[test]
    fn names_match_exactly_then_by_one_wildcard_label() {
        let hosts = LocalHosts::new(Precedence::PublicFirst);
        hosts.replace(vec![
            host("shop.example.test", 1),
            host("*.apps.example.test", 2),
            host("Shop.Example.Test", 3),
        ]);
        assert_eq!(
            hosts.lookup("shop.example.test."),
            Some(Ipv4Addr::new(10, 96, 0, 1))
        );
        assert_eq!(
            hosts.lookup("SHOP.example.test"),
            Some(Ipv4Addr::new(10, 96, 0, 1))
        );
        assert_eq!(
            hosts.lookup("a.apps.example.test."),
            Some(Ipv4Addr::new(10, 96, 0, 2))
        );
        // A wildcard covers exactly one label.
        assert_eq!(hosts.lookup("a.b.apps.example.test."), None);
        assert_eq!(hosts.lookup("apps.example.test."), None);
        assert_eq!(hosts.lookup("example.test."), None);
        assert_eq!(hosts.entries().len(), 2);
        hosts.replace(Vec::new());
        assert_eq!(hosts.lookup("shop.example.test."), None);
    }
}
