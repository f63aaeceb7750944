#![no_main]
//! Datagram framing on UDP flows: splitting never reads past the buffer.
use libfuzzer_sys::fuzz_target;
use tether_tunnel::wire::datagram::split_datagram;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some((datagram, tail)) = split_datagram(rest) {
        assert!(datagram.len() <= u16::MAX as usize);
        rest = tail;
    }
});
