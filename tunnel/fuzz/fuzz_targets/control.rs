#![no_main]
//! Control-channel messages (cluster info, keepalives).
use libfuzzer_sys::fuzz_target;
use tether_tunnel::wire::control::ControlMessage;

fuzz_target!(|data: &[u8]| {
    let _ = ControlMessage::decode(data);
});
