//! What the manager takes from its resolv.conf (parsed by [`tether_tunnel::resolv`]) beyond
//! the nameservers: the cluster domain.

/// The cluster domain: the part after `svc.` in the search path (a pod's search path is
/// `<ns>.svc.<domain> svc.<domain> <domain>`), else `cluster.local`.
pub fn cluster_domain(search: &[String]) -> String {
    search
        .iter()
        .find_map(|s| s.strip_prefix("svc."))
        .unwrap_or("cluster.local")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_tunnel::resolv::ResolvConf;

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
        assert_eq!(cluster_domain(&conf.search), "corp.example");
        assert_eq!(conf.search.len(), 3);
    }

    #[test]
    fn defaults() {
        let conf = ResolvConf::parse("nameserver bogus\n");
        assert!(conf.nameservers.is_empty());
        assert_eq!(cluster_domain(&conf.search), "cluster.local");
    }
}
