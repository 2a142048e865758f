//! Heat (HOT) templates (seed::template): parse, bind parameters, expand groups, evaluate every
//! member's properties and the outputs, and plan an update — what `seed stack create|update`
//! does with an operator's file and `-P key=value` arguments.
//!
//! Input: the template text; after a NUL byte, optional `key=value` lines (the parameters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use seed::template::{plan, split_assignment, Resolver, Stack, Template};
use serde_json::{json, Value as Json};

/// Every member exists, with the attributes the sample templates read.
struct Created;

impl Resolver for Created {
    fn reference(&self, member: &str) -> Option<Json> {
        Some(json!(format!("id-{member}")))
    }
    fn attribute(&self, member: &str, attribute: &str) -> Option<Json> {
        match attribute {
            "ip" => Some(json!("10.0.0.5")),
            "list" => Some(json!([member, 1, {"a": [true, null]}])),
            "map" => Some(json!({"k": member, "n": 2})),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, params) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = seed_fuzz::text(text);
    let params = seed_fuzz::text(params);
    let params: Vec<(String, String)> = params
        .lines()
        .filter_map(split_assignment)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Ok(template) = Template::parse("fuzz.yaml", &text) else {
        return;
    };
    let Ok(stack) = Stack::new(template.clone(), &params) else {
        return;
    };
    for m in stack.members.iter().take(64) {
        let _ = stack.properties(&m.name, &Created);
    }
    let _ = stack.outputs(&Created);
    // An update with the same template and no parameters: defaults replace the given ones.
    if let Ok(next) = stack.update(template, &[]) {
        let _ = plan(&stack, &next);
    }
});
