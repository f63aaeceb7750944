//! Counting this machine's open TCP connections into routed subnets, for `tether status`,
//! from the kernel's socket tables: what the user's programs have open through tether.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// TCP states that are not an open flow: LISTEN (0A), TIME_WAIT (06), CLOSE (07).
const NOT_OPEN: [&str; 3] = ["0A", "06", "07"];

/// Connections in /proc/net/tcp whose remote address is in one of `routed`.
pub fn count(routed: &[IpNet]) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    count_in(&table, routed)
}

fn count_in(table: &str, routed: &[IpNet]) -> u64 {
    let mut n = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(remote), Some(state)) = (fields.get(2), fields.get(3)) else {
            continue;
        };
        if NOT_OPEN.contains(state) {
            continue;
        }
        // `AABBCCDD:PORT`: the address's network-order bytes read as a host-order integer.
        let Some(ip) = remote
            .split(':')
            .next()
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .map(|raw| IpAddr::V4(Ipv4Addr::from(u32::from_be(raw))))
        else {
            continue;
        };
        if routed.iter().any(|net| net.contains(&ip)) {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_open_connections_into_routed_subnets() {
        // 10.96.1.10:80 established, 10.96.1.10:80 in TIME_WAIT, 1.2.3.4:443 established
        // (not routed), and a listener.
        let table = "  sl  local_address rem_address   st\n\
           0: 0200A8C0:9C40 0A01600A:0050 01 0\n\
           1: 0200A8C0:9C41 0A01600A:0050 06 0\n\
           2: 0200A8C0:9C42 04030201:01BB 01 0\n\
           3: 00000000:0016 00000000:0000 0A 0\n";
        let routed = vec!["10.96.0.0/16".parse().unwrap()];
        assert_eq!(count_in(table, &routed), 1);
    }
}
