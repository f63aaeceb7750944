#![no_main]
//! Raw packets from the TUN device, as the stack classifies them.
use libfuzzer_sys::fuzz_target;
use tether_tunnel::stack::packet::classify;

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
});
