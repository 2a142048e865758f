//! Real-world HOT templates: keys and semantics Heat accepts that the seed must accept the same
//! way (parameter `tags` and `custom_constraint`, paths into missing keys).

use serde_json::json;

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
