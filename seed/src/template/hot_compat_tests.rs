//! Real-world HOT templates: keys and semantics Heat accepts that the seed must accept the same
//! way (parameter `tags` and `custom_constraint`, paths into missing keys), and every error of
//! a template reported at once.

use serde_json::{json, Value as Json};

use super::*;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const TAGGED: &str = "heat_template_version: 2016-10-14
parameters:
  flavor:
    type: string
    default: baremetal
    tags: [role_specific, compute]
    constraints:
      - custom_constraint: nova.flavor
  image:
    type: string
    default: overcloud-full
    constraints:
      - custom_constraint: glance.image
        description: an image in Glance
      - length: {min: 3}
resources: {}
";

#[test]
fn template_parameter_tags_and_custom_constraint_are_accepted_and_recorded() {
    let t = Template::parse("t.yaml", TAGGED).unwrap();
    let flavor = t.parameter("flavor").unwrap();
    assert_eq!(flavor.tags, ["role_specific", "compute"]);
    assert!(matches!(
        &flavor.constraints[..],
        [Constraint { kind: ConstraintKind::Custom(n), .. }] if n == "nova.flavor"
    ));
    let image = t.parameter("image").unwrap();
    assert!(image.tags.is_empty());
    assert!(matches!(&image.constraints[0].kind, ConstraintKind::Custom(n) if n == "glance.image"));
    // A custom constraint enforces nothing (the seed has no Nova or Glance to ask); the
    // constraints beside it still apply.
    let stack = Stack::new(t.clone(), &params(&[("flavor", "no-such-flavor")])).unwrap();
    assert_eq!(stack.params["flavor"], json!("no-such-flavor"));
    let e = Stack::new(t, &params(&[("image", "ab")])).unwrap_err();
    assert!(
        matches!(e.problem(), Some(Problem::Constraint { name, .. }) if name == "image"),
        "{e}"
    );
}

#[test]
fn template_parameter_tags_and_custom_constraint_must_be_well_formed() {
    let bad_tags = TAGGED.replace("[role_specific, compute]", "role_specific");
    let e = Template::parse("t.yaml", &bad_tags).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("t.yaml:6:11: `tags` must be a list"),
        "{e}"
    );
    let bad_name = TAGGED.replace("nova.flavor", "[nova.flavor]");
    let e = Template::parse("t.yaml", &bad_name).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("t.yaml:8:28: `custom_constraint` must be a string"),
        "{e}"
    );
}

/// Every member exists; the wait condition got one signal, servers have an address.
struct Created;

impl Resolver for Created {
    fn reference(&self, member: &str) -> Option<Json> {
        Some(json!(format!("id-{member}")))
    }
    fn attribute(&self, member: &str, attribute: &str) -> Option<Json> {
        match (member, attribute) {
            ("wait", "data") => Some(json!({"1": "cloud up"})),
            (_, "ip") => Some(json!("10.0.0.7")),
            _ => None,
        }
    }
}

const PATHS: &str = "heat_template_version: 2021-04-16
parameters:
  net: {type: json, default: {subnets: [{cidr: 10.0.0.0/24}]}}
  dns: {type: comma_delimited_list, default: '1.1.1.1'}
  name: {type: string, default: web}
resources:
  handle:
    type: OS::Heat::WaitConditionHandle
  wait:
    type: OS::Heat::WaitCondition
    properties:
      handle: {get_resource: handle}
      count: 1
      timeout: 60
  grp:
    type: OS::Heat::ResourceGroup
    properties:
      count: 2
      resource_def:
        type: OS::Seed::Server
        properties:
          image: x
          metadata: {gateway: {get_param: [net, subnets, 0, gateway]}}
outputs:
  missing_key: {value: {get_param: [net, missing_key]}}
  deep_missing: {value: {get_param: [net, subnets, 0, gateway]}}
  past_the_end: {value: {get_param: [dns, 5]}}
  into_a_string: {value: {get_param: [name, x]}}
  found: {value: {get_param: [net, subnets, 0, cidr]}}
  joined: {value: {list_join: ['-', [a, {get_param: [net, nope]}]]}}
  attr_missing: {value: {get_attr: [wait, data, missing]}}
  attr_found: {value: {get_attr: [wait, data, '1']}}
  attr_into_a_string: {value: {get_attr: [grp, resource.0.ip, 3]}}
  refs_past_the_end: {value: {get_attr: [grp, refs, 7]}}
  members_missing: {value: {get_attr: [grp, attributes, ip, missing]}}
";

/// Heat answers a path into something that is not there with `''` (`get_param`) or null
/// (`get_attr`), never an error: real templates rely on it for optional keys of json
/// parameters and of attributes.
#[test]
fn template_paths_into_missing_keys_give_what_heat_gives() {
    let t = Template::parse("p.yaml", PATHS).unwrap();
    let stack = Stack::new(t, &[]).unwrap();
    // At bind time, in a property.
    let props = stack.properties("grp-0", &Created).unwrap();
    assert_eq!(props["metadata"], json!({"gateway": ""}));
    // At evaluation, in outputs.
    let outputs: std::collections::BTreeMap<String, Json> =
        stack.outputs(&Created).unwrap().into_iter().collect();
    assert_eq!(outputs["missing_key"], json!(""));
    assert_eq!(outputs["deep_missing"], json!(""));
    assert_eq!(outputs["past_the_end"], json!(""));
    assert_eq!(outputs["into_a_string"], json!(""));
    assert_eq!(outputs["found"], json!("10.0.0.0/24"));
    assert_eq!(outputs["joined"], json!("a-"));
    assert_eq!(outputs["attr_missing"], Json::Null);
    assert_eq!(outputs["attr_found"], json!("cloud up"));
    assert_eq!(outputs["attr_into_a_string"], Json::Null);
    assert_eq!(outputs["refs_past_the_end"], Json::Null);
    assert_eq!(outputs["members_missing"], json!({"0": null, "1": null}));
}

/// A real template usually has several blockers: all of them are reported in one go, each
/// with its position, in the order of the file; a declaration that failed adds no follow-up
/// errors where it is referred to.
#[test]
fn template_every_error_is_reported_at_once_with_its_position() {
    let text = "heat_template_version: 2021-04-16
parameter_defaults: {}
parameters:
  flavor: {type: string, tgs: [x]}
  image: {type: string, default: tiny}
resources:
  net:
    type: OS::Neutron::Net
  server:
    type: OS::Seed::Server
    properties:
      image: {get_param: image}
      metadata: {net: {get_resource: net}, f: {get_param: flavor}}
  other:
    type: OS::Seed::Server
    properties: {imgae: x}
outputs:
  a: {value: {get_param: nope}}
  b: {value: {get_attr: [server, address]}}
";
    let e = Template::parse("all.yaml", text).unwrap_err();
    let shown: Vec<String> = e.errors().iter().map(Error::to_string).collect();
    let at: Vec<&str> = shown
        .iter()
        .map(|s| s.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "all.yaml:2:1",   // unknown top-level key
            "all.yaml:4:26",  // unknown parameter key
            "all.yaml:8:11",  // unknown resource type
            "all.yaml:16:18", // unknown property
            "all.yaml:18:15", // undeclared parameter
            "all.yaml:19:15", // unknown attribute
        ],
        "{e}"
    );
    assert!(shown[1].contains("unknown key `tgs`"), "{}", shown[1]);
    assert_eq!(
        e.location().unwrap().line,
        2,
        "the first error stands for all"
    );
    // One line per error.
    assert_eq!(e.to_string().lines().collect::<Vec<_>>(), shown);

    // A malformed section is one error, not one per reference into it.
    let text = "heat_template_version: 2021-04-16
parameters: [image]
resources: [server]
outputs:
  a: {value: {get_attr: [server, ip]}}
  b: {value: {get_param: image}}
  c: {value: {get_resource: server}}
";
    let e = Template::parse("s.yaml", text).unwrap_err();
    assert_eq!(e.errors().len(), 2, "{e}");
}

#[test]
fn template_errors_at_once_are_capped() {
    let mut text = String::from("heat_template_version: 2021-04-16\noutputs:\n");
    for i in 0..(MAX_ERRORS + 5) {
        text.push_str(&format!("  o{i}: {{value: {{get_param: p{i}}}}}\n"));
    }
    let e = Template::parse("many.yaml", &text).unwrap_err();
    assert_eq!(e.errors().len(), MAX_ERRORS);
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), MAX_ERRORS + 1);
    assert_eq!(lines[0], "many.yaml:3:16: no parameter `p0` is declared");
    assert_eq!(lines[MAX_ERRORS], "… and 5 more errors");
}
