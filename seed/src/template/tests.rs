//! Template tests: the sample overcloud, the table of errors (each naming FILE:LINE:COLUMN),
//! scaling and removal policies, update planning, and evaluation of functions.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value as Json};

use super::*;

fn sample_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/templates/overcloud.yaml")
}

fn sample() -> Template {
    Template::load(&sample_path()).expect("the sample template parses")
}

fn params(pairs: &[&str]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = split_assignment(p).expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn names(stack: &Stack) -> Vec<&str> {
    stack.members.iter().map(|m| m.name.as_str()).collect()
}

/// A fake orchestrator: every member exists, with predictable attributes.
struct Fake;

impl Resolver for Fake {
    fn reference(&self, member: &str) -> Option<Json> {
        Some(json!(format!("id-{member}")))
    }
    fn attribute(&self, member: &str, attribute: &str) -> Option<Json> {
        match attribute {
            "ip" => Some(json!(format!("10.0.0.{}", member.len()))),
            "mac" => Some(json!(format!("52:54:00:00:00:{:02x}", member.len()))),
            "node" => Some(json!(format!("node-of-{member}"))),
            "value" => Some(json!("s3cret")),
            _ => None,
        }
    }
}

#[test]
fn template_sample_parses_binds_and_orders() {
    let t = sample();
    assert_eq!(t.version, "wallaby");
    assert_eq!(t.resources.len(), 8);
    let stack = Stack::new(t, &[]).unwrap();
    let order = names(&stack);
    assert_eq!(order.len(), 9, "{order:?}");
    for m in [
        "controller",
        "compute-0",
        "compute-1",
        "mysql_root_password",
    ] {
        assert!(order.contains(&m), "{m} missing from {order:?}");
    }
    // Every member comes after everything it depends on.
    for (i, m) in stack.members.iter().enumerate() {
        for d in &m.depends_on {
            let j = order.iter().position(|n| n == d).unwrap();
            assert!(j < i, "{} must come after {d}: {order:?}", m.name);
        }
    }
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(pos("mysql_root_password") < pos("mysql_config"));
    assert!(pos("compute-1") < pos("compute_deployments"));
    assert!(pos("compute_deployments") < pos("cloud_up"));
    assert_eq!(
        stack.member("cloud_up").unwrap().depends_on,
        [
            "cloud_up_handle",
            "compute_deployments",
            "controller_deployment"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn template_sample_evaluates_properties_and_outputs() {
    let stack = Stack::new(sample(), &params(&["cloud_name=lab", "compute_count=3"])).unwrap();
    // str_replace with a get_param, resolved at bind time.
    let controller = stack.properties("controller", &Fake).unwrap();
    assert_eq!(controller["name"], json!("lab-controller"));
    assert_eq!(controller["image"], json!("overcloud-full"));
    // list_join and %index% in a group member.
    let c2 = stack.properties("compute-2", &Fake).unwrap();
    assert_eq!(c2["name"], json!("lab-compute-2"));
    assert_eq!(c2["metadata"], json!({"role": "compute", "index": "2"}));
    // The generated password, delivered as os-apply-config metadata; get_param path into json.
    let config = stack.properties("mysql_config", &Fake).unwrap();
    assert_eq!(
        config["config"],
        json!({"mysql": {"root-password": "s3cret"},
               "ntp": {"servers": ["0.pool.ntp.org", "1.pool.ntp.org"]},
               "nova": {"cpu_allocation_ratio": 4}})
    );
    // Both roles receive it.
    let deploy = stack.properties("controller_deployment", &Fake).unwrap();
    assert_eq!(deploy["server"], json!("id-controller"));
    assert_eq!(deploy["config"], json!("id-mysql_config"));
    let group = stack.properties("compute_deployments", &Fake).unwrap();
    assert_eq!(
        group["servers"],
        json!({"0": "id-compute-0", "1": "id-compute-1", "2": "id-compute-2"})
    );
    let outputs: BTreeMap<String, Json> = stack.outputs(&Fake).unwrap().into_iter().collect();
    assert_eq!(outputs["controller_ip"], json!("10.0.0.10"));
    assert_eq!(
        outputs["compute_ips"],
        json!(["10.0.0.9", "10.0.0.9", "10.0.0.9"])
    );
    assert_eq!(outputs["compute_macs"]["1"], json!("52:54:00:00:00:09"));
    assert_eq!(outputs["keystone_url"], json!("http://10.0.0.10:5000/v3"));
    assert_eq!(outputs["first_compute_node"], json!("node-of-compute-0"));
}

#[test]
fn template_evaluation_waits_for_missing_attributes() {
    struct Nothing;
    impl Resolver for Nothing {
        fn reference(&self, _: &str) -> Option<Json> {
            None
        }
        fn attribute(&self, _: &str, _: &str) -> Option<Json> {
            None
        }
    }
    let stack = Stack::new(sample(), &[]).unwrap();
    let e = stack.properties("mysql_config", &Nothing).unwrap_err();
    assert!(
        matches!(e.problem(), Some(Problem::NotReady { resource, attribute })
            if resource == "mysql_root_password" && attribute == "value"),
        "{e}"
    );
    // Properties that need only parameters evaluate without any resource.
    assert_eq!(
        stack.properties("compute-0", &Nothing).unwrap()["image"],
        json!("overcloud-full")
    );
}

#[test]
fn template_scale_out_plans_exactly_one_new_compute() {
    let t = sample();
    let old = Stack::new(t.clone(), &[]).unwrap();
    let new = old.update(t, &params(&["compute_count=3"])).unwrap();
    let p = plan(&old, &new);
    assert_eq!(p.create, ["compute-2"]);
    assert!(p.delete.is_empty() && p.replace.is_empty(), "{p:?}");
    // The deployment group gains a server: updated in place; nothing else moves.
    assert_eq!(p.update, ["compute_deployments"]);
    assert!(p.unchanged.contains(&"controller".to_string()));
    // Same template, same parameters: nothing to do.
    let again = new
        .update(new.template.clone(), &params(&["compute_count=3"]))
        .unwrap();
    assert!(plan(&new, &again).is_empty());
}

#[test]
fn template_removal_policies_remove_the_named_member_for_good() {
    let t = sample();
    let old = Stack::new(t.clone(), &params(&["compute_count=3"])).unwrap();
    let policy = r#"compute_removal_policies=[{"resource_list": ["1"]}]"#;
    let new = old
        .update(t.clone(), &params(&["compute_count=2", policy]))
        .unwrap();
    let p = plan(&old, &new);
    assert_eq!(p.delete, ["compute-1"]);
    assert!(p.create.is_empty() && p.replace.is_empty(), "{p:?}");
    // The deployment group loses that server.
    assert_eq!(p.update, ["compute_deployments"]);
    assert_eq!(
        new.members_of("compute")
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["compute-0", "compute-2"]
    );
    // Scaling out later never reuses the removed index.
    let later = new
        .update(t.clone(), &params(&["compute_count=3"]))
        .unwrap();
    assert_eq!(plan(&new, &later).create, ["compute-3"]);
    // A stack stored as (template, parameters, removed) comes back identical.
    let restored = Stack::restore(
        t.clone(),
        &params(&["compute_count=3"]),
        later.removed.clone(),
    )
    .unwrap();
    assert_eq!(names(&restored), names(&later));
    assert!(plan(&later, &restored).is_empty());
    // Without a policy, scale-in removes the newest member.
    let plain = old.update(t, &params(&["compute_count=2"])).unwrap();
    assert_eq!(plan(&old, &plain).delete, ["compute-2"]);
}

#[test]
fn template_changed_config_updates_deployments_changed_image_replaces_servers() {
    let text = std::fs::read_to_string(sample_path()).unwrap();
    let old = Stack::new(Template::parse("overcloud.yaml", &text).unwrap(), &[]).unwrap();

    // A new key in the software config: the config is replaced (configs are immutable), the
    // deployments using it are updated in place, the servers are untouched.
    let changed = text.replace(
        "        nova: {get_param: [extra_config, nova]}",
        "        nova: {get_param: [extra_config, nova]}\n        debug: true",
    );
    assert_ne!(changed, text);
    let new = old
        .update(Template::parse("overcloud.yaml", &changed).unwrap(), &[])
        .unwrap();
    let p = plan(&old, &new);
    assert_eq!(p.replace, ["mysql_config"]);
    assert_eq!(p.update, ["controller_deployment", "compute_deployments"]);
    assert!(p.create.is_empty() && p.delete.is_empty());
    for s in ["controller", "compute-0", "compute-1"] {
        assert!(p.unchanged.contains(&s.to_string()), "{s}: {p:?}");
    }

    // A new image replaces every server, and the deployments on them follow.
    let new = old
        .update(old.template.clone(), &params(&["image=overcloud-2"]))
        .unwrap();
    let p = plan(&old, &new);
    assert_eq!(
        p.replace,
        [
            "controller",
            "compute-0",
            "compute-1",
            "controller_deployment"
        ]
    );
    assert!(
        p.update.contains(&"compute_deployments".to_string()),
        "{p:?}"
    );
    assert!(p.unchanged.contains(&"mysql_config".to_string()));

    // Metadata only: the server is updated in place.
    let meta = text.replace(
        "metadata: {role: control}",
        "metadata: {role: control, rack: r1}",
    );
    let new = old
        .update(Template::parse("overcloud.yaml", &meta).unwrap(), &[])
        .unwrap();
    assert_eq!(plan(&old, &new).update, ["controller"]);
}

#[test]
fn template_hidden_parameter_value_is_not_echoed() {
    let t = Template::parse(
        "h.yaml",
        "heat_template_version: 2018-08-31\nparameters:\n  pw:\n    type: string\n    hidden: true\n    constraints:\n      - length: {min: 8}\n",
    )
    .unwrap();
    let e = Stack::new(t, &params(&["pw=hunter2"])).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(
        e.to_string().starts_with("h.yaml:7:9: parameter `pw`"),
        "{e}"
    );
}

const BASE: &str = "heat_template_version: 2021-04-16
parameters:
  count:
    type: number
    default: 1
    constraints:
      - range: {min: 1, max: 5}
  name:
    type: string
    default: web
    constraints:
      - allowed_pattern: '[a-z]+'
resources:
  srv:
    type: OS::Seed::Server
    properties:
      image: {get_param: name}
";

/// Line and column (1-based) of the `nth` occurrence (0-based) of `needle` in `text`.
fn pos_of(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in:\n{text}"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn template_errors_name_file_line_column() {
    struct Case {
        name: &'static str,
        /// Appended to BASE (resources section) unless it starts with "heat_template_version".
        text: String,
        /// `key=value` parameters for binding (binding errors only).
        params: &'static [&'static str],
        /// Where the error must point: the `nth` occurrence of this text.
        at: (&'static str, usize),
        check: fn(&Problem) -> bool,
    }
    let with = |extra: &str| format!("{BASE}{extra}");
    let cases = [
        Case {
            name: "unknown function",
            text: with("  other:\n    type: OS::Seed::Server\n    properties:\n      image: {get_file: img.qcow2}\n"),
            params: &[],
            at: ("get_file", 0),
            check: |p| *p == Problem::UnknownFunction("get_file".into()),
        },
        Case {
            name: "unknown resource type",
            text: with("  flavor:\n    type: OS::Nova::Flavor\n"),
            params: &[],
            at: ("OS::Nova::Flavor", 0),
            check: |p| matches!(p, Problem::UnknownType(t) if t == "OS::Nova::Flavor"),
        },
        Case {
            name: "missing required property",
            text: with("  bare:\n    type: OS::Seed::Server\n    properties:\n      profile: compute\n"),
            params: &[],
            at: ("profile: compute", 0),
            check: |p| matches!(p, Problem::MissingProperty { property: "image", .. }),
        },
        Case {
            name: "missing properties altogether",
            text: with("  wait:\n    type: OS::Heat::WaitCondition\n"),
            params: &[],
            at: ("wait:", 0),
            check: |p| matches!(p, Problem::MissingProperty { property: "handle", .. }),
        },
        Case {
            name: "unknown property",
            text: with("  other:\n    type: OS::Seed::Server\n    properties:\n      image: x\n      flavor: m1.large\n"),
            params: &[],
            at: ("flavor:", 0),
            check: |p| matches!(p, Problem::UnknownProperty { property, .. } if property == "flavor"),
        },
        Case {
            name: "wrong property kind",
            text: with("  grp:\n    type: OS::Heat::ResourceGroup\n    properties:\n      count: many\n      resource_def: {type: OS::Seed::Server, properties: {image: x}}\n"),
            params: &[],
            at: ("many", 0),
            check: |p| matches!(p, Problem::WrongKind { expected, .. } if expected == "an integer"),
        },
        Case {
            name: "resource_def checked like a resource",
            text: with("  grp:\n    type: OS::Heat::ResourceGroup\n    properties:\n      resource_def:\n        type: OS::Seed::Server\n        properties: {imgae: x}\n"),
            params: &[],
            at: ("imgae", 0),
            check: |p| matches!(p, Problem::UnknownProperty { property, .. } if property == "imgae"),
        },
        Case {
            name: "bad parameter type",
            text: BASE.to_string(),
            params: &["count=three"],
            at: ("count:", 0),
            check: |p| matches!(p, Problem::ParameterType { name, why } if name == "count" && why.contains("`three` is not a number")),
        },
        Case {
            name: "bad default type",
            text: "heat_template_version: 2013-05-23\nparameters:\n  on:\n    type: boolean\n    default: [1]\n".into(),
            params: &[],
            at: ("[1]", 0),
            check: |p| matches!(p, Problem::ParameterType { name, .. } if name == "on"),
        },
        Case {
            name: "range constraint violation",
            text: BASE.to_string(),
            params: &["count=9"],
            at: ("range", 0),
            check: |p| matches!(p, Problem::Constraint { name, why } if name == "count" && why.contains("out of range 1..5")),
        },
        Case {
            name: "pattern constraint violation",
            text: BASE.to_string(),
            params: &["name=Web1"],
            at: ("allowed_pattern", 0),
            check: |p| matches!(p, Problem::Constraint { name, .. } if name == "name"),
        },
        Case {
            name: "given parameter not declared",
            text: BASE.to_string(),
            params: &["colour=blue"],
            at: ("parameters:", 0),
            check: |p| *p == Problem::UndeclaredParameter("colour".into()),
        },
        Case {
            name: "dependency cycle",
            text: with("  a:\n    type: OS::Heat::WaitCondition\n    depends_on: b\n    properties: {handle: {get_resource: h}, timeout: 1}\n  b:\n    type: OS::Heat::WaitConditionHandle\n    depends_on: [a]\n  h:\n    type: OS::Heat::WaitConditionHandle\n"),
            params: &[],
            at: ("  a:", 0),
            check: |p| *p == Problem::Cycle(vec!["a".into(), "b".into(), "a".into()]),
        },
        Case {
            name: "get_resource of a missing resource",
            text: with("  dep:\n    type: OS::Heat::SoftwareDeployment\n    properties:\n      server: {get_resource: ghost}\n"),
            params: &[],
            at: ("get_resource", 0),
            check: |p| *p == Problem::UnknownResource("ghost".into()),
        },
        Case {
            name: "depends_on a missing resource",
            text: with("  h:\n    type: OS::Heat::WaitConditionHandle\n    depends_on: [srv, ghost]\n"),
            params: &[],
            at: ("ghost", 0),
            check: |p| *p == Problem::UnknownResource("ghost".into()),
        },
        Case {
            name: "get_attr of an unknown attribute",
            text: with("  dep:\n    type: OS::Heat::SoftwareDeployment\n    properties:\n      server: {get_attr: [srv, colour]}\n"),
            params: &[],
            at: ("get_attr", 0),
            check: |p| matches!(p, Problem::UnknownAttribute { attribute, .. } if attribute == "colour"),
        },
        Case {
            name: "get_param of an undeclared parameter",
            text: with("  h:\n    type: OS::Heat::WaitConditionHandle\n    metadata: {x: {get_param: nope}}\n"),
            params: &[],
            at: ("get_param: nope", 0),
            check: |p| *p == Problem::UnknownParameter("nope".into()),
        },
        Case {
            name: "unknown top-level key",
            text: format!("{BASE}conditions:\n  never: false\n"),
            params: &[],
            at: ("conditions", 0),
            check: |p| matches!(p, Problem::UnknownKey { key, .. } if key == "conditions"),
        },
        Case {
            name: "unknown resource key",
            text: with("  h:\n    type: OS::Heat::WaitConditionHandle\n    deletion_policy: Retain\n"),
            params: &[],
            at: ("deletion_policy", 0),
            check: |p| matches!(p, Problem::UnknownKey { key, .. } if key == "deletion_policy"),
        },
        Case {
            name: "unsupported version",
            text: "heat_template_version: 2012-12-12\n".into(),
            params: &[],
            at: ("2012-12-12", 0),
            check: |p| *p == Problem::Version("2012-12-12".into()),
        },
        Case {
            name: "value not allowed",
            text: with("  cfg:\n    type: OS::Heat::SoftwareConfig\n    properties: {group: puppet, config: x}\n"),
            params: &[],
            at: ("puppet", 0),
            check: |p| matches!(p, Problem::NotAllowed { found, .. } if found == "puppet"),
        },
        Case {
            name: "malformed function arguments",
            text: with("  h:\n    type: OS::Heat::WaitConditionHandle\n    metadata: {x: {str_replace: {template: a}}}\n"),
            params: &[],
            at: ("str_replace", 0),
            check: |p| matches!(p, Problem::FunctionArgs { function: "str_replace", .. }),
        },
    ];
    for case in cases {
        let result = Template::parse("bad.yaml", &case.text)
            .and_then(|t| Stack::new(t, &params(case.params)));
        let err = match result {
            Ok(_) => panic!("{}: no error", case.name),
            Err(e) => e,
        };
        let (line, col) = pos_of(&case.text, case.at.0, case.at.1);
        // The cycle and missing-properties cases point at the name, not the indentation.
        let col = col + case.at.0.len() - case.at.0.trim_start().len();
        let prefix = format!("bad.yaml:{line}:{col}: ");
        assert!(
            err.to_string().starts_with(&prefix),
            "{}: `{err}` does not start with `{prefix}`",
            case.name
        );
        let problem = err.problem().expect("located");
        assert!(
            (case.check)(problem),
            "{}: unexpected {problem:?}",
            case.name
        );
    }
}

#[test]
fn template_versions_by_date_and_name_are_accepted() {
    for v in [
        "2013-05-23",
        "2016-10-14",
        "'2021-04-16'",
        "newton",
        "queens",
        "wallaby",
    ] {
        let t = Template::parse("v.yaml", &format!("heat_template_version: {v}\n"))
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(t.version, v.trim_matches('\''));
    }
}

/// Heat reads templates with PyYAML (YAML 1.1): `True`, `False`, `yes` and `off` are booleans
/// there, and TripleO's templates write them so. A YAML 1.2 reader took `True` for a string.
#[test]
fn template_yaml_1_1_booleans_as_heat() {
    let t = Template::parse(
        "b.yaml",
        "heat_template_version: 2018-08-31
parameters:
  pw:
    type: string
    hidden: True
  flag:
    type: boolean
    default: yes
outputs:
  disabled:
    value: False
  flag:
    value: {get_param: flag}
  quoted:
    value: 'False'
  switch:
    value: off
",
    )
    .unwrap();
    assert!(t.parameters[0].hidden, "`hidden: True` is a boolean");
    assert_eq!(t.parameters[1].default, Some(json!(true)));
    let stack = Stack::new(t, &params(&["pw=hunter22"])).unwrap();
    let outputs: BTreeMap<String, Json> = stack.outputs(&Fake).unwrap().into_iter().collect();
    assert_eq!(outputs["disabled"], json!(false));
    assert_eq!(outputs["flag"], json!(true));
    assert_eq!(outputs["quoted"], json!("False"));
    assert_eq!(outputs["switch"], json!(false));
}

#[test]
fn template_parameter_types_convert() {
    let t = Template::parse(
        "p.yaml",
        "heat_template_version: 2021-04-16
parameters:
  n: {type: number}
  b: {type: boolean}
  l: {type: comma_delimited_list, constraints: [{allowed_values: [a, b, c]}]}
  j: {type: json}
  s: {type: string, default: 42}
",
    )
    .unwrap();
    let stack = Stack::new(
        t.clone(),
        &params(&["n=2.5", "b=yes", "l=a, c", r#"j={"k": [1, 2]}"#]),
    )
    .unwrap();
    assert_eq!(stack.params["n"], json!(2.5));
    assert_eq!(stack.params["b"], json!(true));
    assert_eq!(stack.params["l"], json!(["a", "c"]));
    assert_eq!(stack.params["j"], json!({"k": [1, 2]}));
    assert_eq!(stack.params["s"], json!("42"));
    // A list item outside allowed_values.
    let e = Stack::new(t.clone(), &params(&["n=1", "b=no", "l=a,z", "j=1"])).unwrap_err();
    assert!(
        matches!(e.problem(), Some(Problem::Constraint { name, .. }) if name == "l"),
        "{e}"
    );
    // A parameter without default that is not given.
    let e = Stack::new(t, &params(&["n=1", "b=no", "l=a"])).unwrap_err();
    assert_eq!(e.problem(), Some(&Problem::MissingParameter("j".into())));
    assert!(e.to_string().starts_with("p.yaml:6:3:"), "{e}");
}

#[test]
fn template_get_param_paths_and_functions_evaluate() {
    let t = Template::parse(
        "f.yaml",
        "heat_template_version: 2021-04-16
parameters:
  net: {type: json, default: {subnets: [{cidr: 10.0.0.0/24}, {cidr: 10.1.0.0/24}]}}
  dns: {type: comma_delimited_list, default: '1.1.1.1,8.8.8.8'}
resources:
  h:
    type: OS::Heat::WaitConditionHandle
    metadata:
      second: {get_param: [net, subnets, 1, cidr]}
      first_dns: {get_param: [dns, 0]}
      joined: {list_join: [' ', {get_param: dns}, [x, 1]]}
      url: {str_replace: {template: 'curl $URL -d $DATA', params: {$URL: {get_attr: [h, endpoint]}, $DATA: {a: 1}}}}
",
    );
    // `h` refers to its own attribute: a cycle, named.
    let e = t.unwrap_err();
    assert_eq!(
        e.problem(),
        Some(&Problem::Cycle(vec!["h".into(), "h".into()]))
    );

    let t = Template::parse(
        "f.yaml",
        "heat_template_version: 2021-04-16
parameters:
  net: {type: json, default: {subnets: [{cidr: 10.0.0.0/24}, {cidr: 10.1.0.0/24}]}}
  dns: {type: comma_delimited_list, default: '1.1.1.1,8.8.8.8'}
resources:
  w:
    type: OS::Heat::WaitConditionHandle
  h:
    type: OS::Heat::WaitConditionHandle
    metadata:
      second: {get_param: [net, subnets, 1, cidr]}
      first_dns: {get_param: [dns, 0]}
      joined: {list_join: [' ', {get_param: dns}, [x, 1]]}
      url: {str_replace: {template: 'curl $URL -d $DATA', params: {$URL: {get_attr: [w, endpoint]}, $DATA: {a: 1}}}}
",
    )
    .unwrap();
    struct Endpoint;
    impl Resolver for Endpoint {
        fn reference(&self, _: &str) -> Option<Json> {
            None
        }
        fn attribute(&self, m: &str, a: &str) -> Option<Json> {
            (m == "w" && a == "endpoint").then(|| json!("http://seed/signal"))
        }
    }
    let stack = Stack::new(t, &[]).unwrap();
    let meta = stack.member("h").unwrap().metadata.clone().unwrap();
    let v = stack.evaluate(&meta, &Endpoint).unwrap();
    assert_eq!(
        v,
        json!({
            "second": "10.1.0.0/24",
            "first_dns": "1.1.1.1",
            "joined": "1.1.1.1 8.8.8.8 x 1",
            "url": "curl http://seed/signal -d {\"a\":1}",
        })
    );
    assert_eq!(
        stack.member("h").unwrap().depends_on,
        ["w".to_string()].into()
    );
}

#[test]
fn template_values_from_parameters_are_checked_at_bind_time() {
    let t = Template::parse(
        "b.yaml",
        "heat_template_version: 2021-04-16
parameters:
  transport: {type: string, default: PIGEON}
  ram: {type: string, default: lots}
resources:
  h:
    type: OS::Heat::WaitConditionHandle
  s:
    type: OS::Seed::Server
    properties:
      image: x
      min_ram_mib: {get_param: ram}
  d:
    type: OS::Heat::SoftwareDeployment
    properties:
      server: {get_resource: s}
      signal_transport: {get_param: transport}
",
    )
    .unwrap();
    let e = Stack::new(t.clone(), &params(&["transport=NO_SIGNAL"])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("b.yaml:12:21: property `min_ram_mib`"),
        "{e}"
    );
    let e = Stack::new(t.clone(), &params(&["ram=4096"])).unwrap_err();
    assert!(
        matches!(e.problem(), Some(Problem::NotAllowed { found, .. }) if found == "PIGEON"),
        "{e}"
    );
    assert!(e.to_string().starts_with("b.yaml:17:26:"), "{e}");
    Stack::new(t.clone(), &params(&["ram=4096", "transport=NO_SIGNAL"])).unwrap();
    let e = Stack::new(t, &params(&["ram=1", "ram=2"])).unwrap_err();
    assert!(e.to_string().contains("given more than once"), "{e}");
}

#[test]
fn template_read_error_names_the_path() {
    let e = Template::load(Path::new("/nonexistent/t.yaml")).unwrap_err();
    assert!(matches!(e, Error::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/t.yaml"));
}
