#![no_main]
//! The handshake's decoders: the fixed preamble, the laptop's hello and the manager's reply,
//! with their capability sets. What decodes encodes back to the same value (unknown
//! capability names are dropped on the way in, so values are compared, not bytes).
use libfuzzer_sys::fuzz_target;
use tether_tunnel::wire::handshake::{Hello, HelloReply, Preamble};

fuzz_target!(|data: &[u8]| {
    let _ = Preamble::decode(data);
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(Hello::decode(&hello.encode()).ok(), Some(hello));
    }
    if let Ok(reply) = HelloReply::decode(data) {
        assert_eq!(HelloReply::decode(&reply.encode()).ok(), Some(reply));
    }
});
