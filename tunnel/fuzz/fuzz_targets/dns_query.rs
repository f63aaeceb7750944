#![no_main]
//! DNS queries arriving at the laptop's DNS server, and the routing decision on their name.
use libfuzzer_sys::fuzz_target;
use tether_tunnel::stack::dns::{parse_query, route};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, name)) = parse_query(data) {
        let _ = route(&name, "cluster.local");
    }
});
