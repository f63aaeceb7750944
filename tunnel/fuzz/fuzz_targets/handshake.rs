#![no_main]
//! The handshake's decoders: the fixed preamble, the laptop's hello and the manager's reply.
use libfuzzer_sys::fuzz_target;
use tether_tunnel::wire::handshake::{Hello, HelloReply, Preamble};

fuzz_target!(|data: &[u8]| {
    let _ = Preamble::decode(data);
    let _ = Hello::decode(data);
    let _ = HelloReply::decode(data);
});
