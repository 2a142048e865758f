//! Node enrolment (seed::inventory::parse_instackenv): an instackenv list as JSON or YAML, what
//! `seed node import` and `POST /v1/nodes` read.
//!
//! Input: one byte choosing the format (even: JSON, odd: YAML), then the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seed::inventory::{parse_instackenv, Format};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = if sel & 1 == 0 {
        Format::Json
    } else {
        Format::Yaml
    };
    let text = seed_fuzz::text(rest);
    let _ = parse_instackenv(&text, format, &[], 1_700_000_000_000);
});
