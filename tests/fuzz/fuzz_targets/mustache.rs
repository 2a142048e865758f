//! The config agent's mustache renderer (ramdisk::config::mustache, os-apply-config's
//! semantics): any template against any metadata document.
//!
//! Input: the template; after a NUL byte, the metadata as JSON (a fixed document when absent or
//! not JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramdisk::config::mustache;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let (src, meta) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let meta: Value = meta
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or_else(|| {
            json!({
                "hostname": "node-0",
                "list": [1, "two", {"three": 3}, [], null],
                "map": {"a": {"b": {"c": true}}, "empty": {}},
                "zero": 0, "flag": false, "s": "text"
            })
        });
    let src = seed_fuzz::text(src);
    if let Ok(t) = mustache::Template::parse(&src) {
        let _ = t.render(&meta);
    }
});
