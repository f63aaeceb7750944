//! Reading a resolv.conf: where DNS queries go, and what the cluster domain is.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                        conf.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                // The last search (or domain) line wins, as in glibc.
                Some("search") | Some("domain") => {
                    conf.search = words.map(|w| w.trim_end_matches('.').to_owned()).collect();
                }
                _ => {}
            }
        }
        conf
    }

    /// The cluster domain: the part after `svc.` in the search path (a pod's search path is
    /// `<ns>.svc.<domain> svc.<domain> <domain>`), else `cluster.local`.
    pub fn cluster_domain(&self) -> String {
        self.search
            .iter()
            .find_map(|s| s.strip_prefix("svc."))
            .unwrap_or("cluster.local")
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_resolv_conf() {
        let conf = ResolvConf::parse(
            "# generated\nsearch shop.svc.corp.example svc.corp.example corp.example\n\
             nameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.96.0.10:53".parse().unwrap(),
                "[fd00::a]:53".parse().unwrap()
            ]
        );
        assert_eq!(conf.cluster_domain(), "corp.example");
        assert_eq!(conf.search.len(), 3);
    }

    #[test]
    fn defaults() {
        let conf = ResolvConf::parse("nameserver bogus\n");
        assert!(conf.nameservers.is_empty());
        assert_eq!(conf.cluster_domain(), "cluster.local");
    }
}
