//! The BMC side of RMCP+/IPMI (qemu::ipmi, the lab's virtual BMC), sans-IO.
//!
//! Input: one byte of power state, then length-prefixed datagrams (`seed_fuzz::chunks`) handled
//! in order by one BMC core, 100 ms apart. Also the frame and request parsers alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu::ipmi::{message, BmcConfig, BmcCore};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    if let Ok(message::Frame::V15 { msg, .. }) = message::parse(data) {
        let _ = message::parse_request(msg);
    }
    let Some((&powered, rest)) = data.split_first() else {
        return;
    };
    let mut bmc = BmcCore::new(
        BmcConfig {
            username: "admin".into(),
            password: "password".into(),
            guid: [7; 16],
        },
        1,
    );
    bmc.set_ipmi15_only(powered & 2 != 0);
    let mut now = Instant::now();
    for d in seed_fuzz::chunks(rest, 16) {
        let _ = bmc.handle(d, now, powered & 1 != 0);
        now += Duration::from_millis(100);
    }
});
