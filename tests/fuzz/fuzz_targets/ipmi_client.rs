//! The seed's side of IPMI (seed::power): the parsers of what a BMC answers, which the seed
//! reads from any address on the BMC network — Get Channel Authentication Capabilities (the
//! IPMI 1.5 downgrade check), Get Chassis Status and Get System Boot Options. (The RMCP+
//! session messages are parsed inside `ipmi-rs`, whose parsers are not public: its session
//! runs against the fuzzed BMC core only in the tests.)
//!
//! Input: one completion code byte, then the answer (the whole datagram for the capabilities,
//! the response data for the chassis commands).
#![no_main]

use libfuzzer_sys::fuzz_target;
use seed::power::{chassis, ipmi_caps};

fuzz_target!(|data: &[u8]| {
    let _ = ipmi_caps::parse(data);
    let Some((&cc, rest)) = data.split_first() else {
        return;
    };
    let _ = chassis::parse_chassis_status(cc, rest);
    let _ = chassis::parse_boot_flags(cc, rest);
    let _ = chassis::check_completion(rest.first().copied().unwrap_or(0), cc);
    let _ = chassis::completion_meaning(rest.first().copied().unwrap_or(0), cc);
});
