#![no_main]
//! Flow requests and replies: the first frames of every tunnel stream.
use libfuzzer_sys::fuzz_target;
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};

fuzz_target!(|data: &[u8]| {
    let _ = FlowRequest::decode(data);
    let _ = FlowReply::decode(data);
});
