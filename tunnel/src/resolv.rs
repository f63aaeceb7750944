//! Reading a resolv.conf: the one parser every part of tether uses.
//!
//! The manager reads its pod's file (the nameservers it forwards to, the search path that
//! names the cluster domain), the laptop reads the machine's file before pointing it at
//! tether's DNS server, and the test kit finds the nameserver it measures.
//!
//! It reads the file as glibc does (resolv.conf(5)): `#` or `;` starts a comment anywhere
//! on a line; a `nameserver` is an IPv4 or IPv6 address, served on port 53; the last
//! `search` or `domain` line wins. What it does not understand it skips, as glibc does, so
//! a file with a typo in one line still yields the rest.
//!
//! Why not the `resolv-conf` crate: it parses `options` into typed fields and drops the ones
//! it does not know, while the laptop must copy the machine's options lines as they are into
//! the file it writes; it also drops search entries holding a comma and keeps trailing
//! dots, where tether's behaviour is to keep the former and strip the latter.

use std::net::{IpAddr, SocketAddr};

/// The port every resolv.conf nameserver is asked on.
const DNS_PORT: u16 = 53;

/// What a resolv.conf says, as far as tether cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvConf {
    /// In file order, on port 53.
    pub nameservers: Vec<SocketAddr>,
    /// The last `search` or `domain` line's names, without trailing dots.
    pub search: Vec<String>,
    /// Each `options` line's words, one entry per line, in file order.
    pub options: Vec<Vec<String>>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            // `split` always yields at least one piece, possibly empty.
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                        conf.nameservers.push(SocketAddr::new(ip, DNS_PORT));
                    }
                }
                Some("search" | "domain") => {
                    conf.search = words.map(|w| w.trim_end_matches('.').to_owned()).collect();
                }
                Some("options") => conf.options.push(words.map(str::to_owned).collect()),
                _ => {}
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_pods_file() {
        let conf = ResolvConf::parse(
            "# generated\nsearch shop.svc.corp.example svc.corp.example corp.example\n\
             nameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5\n",
        );
        assert_eq!(conf.nameservers, addrs(&["10.96.0.10:53", "[fd00::a]:53"]));
        assert_eq!(
            conf.search,
            ["shop.svc.corp.example", "svc.corp.example", "corp.example"]
        );
        assert_eq!(conf.options, [["ndots:5"]]);
    }

    #[test]
    fn comments_start_anywhere() {
        let conf = ResolvConf::parse(
            "; whole line\n#nameserver 10.0.0.9\nnameserver 10.0.0.1 # the office\n\
             nameserver 10.0.0.2;second\n  search a.example ; b.example\n",
        );
        assert_eq!(conf.nameservers, addrs(&["10.0.0.1:53", "10.0.0.2:53"]));
        assert_eq!(conf.search, ["a.example"]);
    }

    #[test]
    fn the_last_search_or_domain_line_wins() {
        let conf = ResolvConf::parse("search a.example b.example.\ndomain c.example.\n");
        assert_eq!(conf.search, ["c.example"]);
        let conf = ResolvConf::parse("domain c.example\nsearch a.example. b.example\n");
        assert_eq!(conf.search, ["a.example", "b.example"]);
        // An empty search line clears the list, as glibc's parser does.
        assert!(
            ResolvConf::parse("search a.example\nsearch\n")
                .search
                .is_empty()
        );
    }

    #[test]
    fn what_it_does_not_understand_is_skipped() {
        let conf = ResolvConf::parse(
            "nameserver bogus\nnameserver\nnameserver fe80::1%eth0\nsortlist 10.0.0.0\n\
             nameservers 10.0.0.3\nnameserver 10.0.0.4 extra\r\n",
        );
        assert_eq!(conf.nameservers, addrs(&["10.0.0.4:53"]));
        assert!(conf.search.is_empty());
    }

    #[test]
    fn options_lines_are_kept_one_by_one() {
        let conf = ResolvConf::parse("options edns0   timeout:2\noptions rotate # spread\n");
        assert_eq!(conf.options, [vec!["edns0", "timeout:2"], vec!["rotate"]]);
    }

    proptest! {
        #[test]
        fn never_panics(text in "(?s).{0,512}") {
            let _ = ResolvConf::parse(&text);
        }

        #[test]
        fn every_valid_nameserver_is_found(ips in proptest::collection::vec(any::<IpAddr>(), 0..6)) {
            let text: String = ips.iter().map(|ip| format!("nameserver {ip}\n")).collect();
            let want: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
            prop_assert_eq!(ResolvConf::parse(&text).nameservers, want);
        }
    }
}
