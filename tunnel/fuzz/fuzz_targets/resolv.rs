#![no_main]
//! resolv.conf files (a pod's, the machine's): parsing never panics, and what comes out is
//! what the parser promises.
use libfuzzer_sys::fuzz_target;
use tether_tunnel::resolv::ResolvConf;

fuzz_target!(|data: &[u8]| {
    let conf = ResolvConf::parse(&String::from_utf8_lossy(data));
    assert!(conf.nameservers.iter().all(|ns| ns.port() == 53));
    assert!(conf.search.iter().all(|s| !s.ends_with('.')));
    assert!(conf.search.iter().all(|s| !s.contains(char::is_whitespace)));
});
