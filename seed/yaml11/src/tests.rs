use super::*;

fn one(text: &str) -> Node {
    parse("t.yaml", text).unwrap().expect("a document")
}

fn json(text: &str) -> serde_json::Value {
    one(text).to_json()
}

fn map(n: &Node) -> &[(Key, Node)] {
    match &n.value {
        Value::Map(m) => m,
        _ => panic!("not a mapping: {n:?}"),
    }
}

#[test]
fn yaml11_positions_are_one_based() {
    let n = one("a: 1\nb:\n  - x\n  - \"2\"\n");
    let m = map(&n);
    assert_eq!(m[0].0.name, "a");
    assert_eq!((m[0].0.at.line, m[0].0.at.col), (1, 1));
    assert_eq!((m[0].1.at.line, m[0].1.at.col), (1, 4));
    let Value::List(l) = &m[1].1.value else {
        panic!("a list")
    };
    assert_eq!((l[1].at.line, l[1].at.col), (4, 5));
    assert!(matches!(l[1].value, Value::Str(ref s) if s == "2"));
    assert_eq!(l[1].at.to_string(), "t.yaml:4:5");
    // Block collections are located at their first entry.
    assert_eq!((m[1].1.at.line, m[1].1.at.col), (3, 3));
    assert_eq!((n.at.line, n.at.col), (1, 1));
}

#[test]
fn yaml11_duplicate_keys_are_an_error() {
    let e = parse("d.yaml", "resources:\n  a: 1\n  b: 2\n  a: 3\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "d.yaml:4:3: duplicate key `a` (first at line 2, column 3)"
    );
}

#[test]
fn yaml11_anchors_and_flow_collections() {
    let n = one("x: &v {k: [1, 2.5, ~, true]}\ny: *v\n");
    let m = map(&n);
    assert_eq!(
        m[1].1.to_json(),
        serde_json::json!({"k": [1, 2.5, null, true]})
    );
    // A node with an anchor starts at its anchor.
    assert_eq!((m[0].1.at.line, m[0].1.at.col), (1, 4));
    let flow = &map(&m[0].1)[0].1;
    assert_eq!((flow.at.line, flow.at.col), (1, 11));
}

#[test]
fn yaml11_syntax_error_names_position() {
    let e = parse("bad.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
    assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    assert!(e.at.line >= 1);
}

#[test]
fn yaml11_booleans_numbers_and_strings_as_pyyaml() {
    assert_eq!(
        json("a: True\nb: no\nc: 'yes'\nd: 0755\ne: '0755'\nf: 1e3\ng: ~\nh: On\ni: y\n"),
        serde_json::json!({
            "a": true, "b": false, "c": "yes", "d": 493, "e": "0755",
            "f": "1e3", "g": null, "h": true, "i": "y"
        })
    );
    // Block scalars are strings whatever they hold.
    assert_eq!(json("a: |\n  True\n"), serde_json::json!({"a": "True\n"}));
}

#[test]
fn yaml11_tags() {
    assert_eq!(
        json("a: !!str 12\nb: !!int '12'\nc: !!bool 'Yes'\nd: !custom 7\n"),
        serde_json::json!({"a": "12", "b": 12, "c": true, "d": 7})
    );
    let e = parse("t.yaml", "a: !!int abc\n").unwrap_err();
    assert_eq!(e.to_string(), "t.yaml:1:4: `abc` is not a valid !!int");
}

#[test]
fn yaml11_keys_are_scalar_text() {
    let n = one("1: a\ntrue: b\n0x10: c\n'x': d\n");
    let names: Vec<&str> = map(&n).iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(names, ["1", "true", "0x10", "x"]);
    let n = one("on: 1\nNo: 2\n");
    let names: Vec<&str> = map(&n).iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(names, ["on", "No"], "keys are names as written");
    let e = parse("t.yaml", "? [a]\n: b\n").unwrap_err();
    assert!(e.message.contains("must be a scalar, not a list"), "{e}");
    let e = parse("t.yaml", "~: b\n").unwrap_err();
    assert!(e.message.contains("not null"), "{e}");
}

#[test]
fn yaml11_merge_keys() {
    let text = "base: &b {x: 1, y: 2}\nmore: &m {y: 3, z: 4}\n\
                one:\n  <<: *b\n  y: 9\n\
                two:\n  <<: [*m, *b]\n  w: 0\n\
                quoted:\n  '<<': 1\n";
    let v = json(text);
    assert_eq!(v["one"], serde_json::json!({"x": 1, "y": 9}));
    assert_eq!(
        v["two"],
        serde_json::json!({"y": 3, "z": 4, "x": 1, "w": 0})
    );
    assert_eq!(v["quoted"], serde_json::json!({"<<": 1}));
    // PyYAML's order: merged keys first, the explicit value wins.
    let n = one(text);
    let one_ = &map(&n)[2].1;
    let names: Vec<&str> = map(one_).iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(names, ["x", "y"]);
    let e = parse("t.yaml", "a:\n  <<: 3\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:2:7: a merge key `<<` takes a mapping or a list of mappings"
    );
}

#[test]
fn yaml11_documents() {
    assert!(parse("e.yaml", "").unwrap().is_none());
    assert!(parse("e.yaml", "# only a comment\n").unwrap().is_none());
    assert!(matches!(
        parse("e.yaml", "---\n").unwrap().unwrap().value,
        Value::Null
    ));
    let e = parse("m.yaml", "a: 1\n---\nb: 2\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.yaml:2:1: one YAML document expected, found another"
    );
}

#[test]
fn yaml11_alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = parse("bomb.yaml", &text).unwrap_err();
    assert!(e.message.contains("aliases expanded"), "{e}");
    assert!(parse("t.yaml", "a: *nope\n").is_err());
}

#[test]
fn yaml11_text_schema_keeps_plain_scalars_as_written() {
    let text =
        "mac: [52:54:00:12:34:56]\npassword: 0123\nport: 623\nflag: yes\nnone: ~\nq: !!int '7'\n";
    let v = parse_with("i.yaml", text, Schema::Text)
        .unwrap()
        .unwrap()
        .to_json();
    assert_eq!(
        v,
        serde_json::json!({
            "mac": ["52:54:00:12:34:56"], "password": "0123", "port": "623",
            "flag": "yes", "none": null, "q": 7
        })
    );
    // The same file as PyYAML reads it.
    let v = json(text);
    assert_eq!(v["mac"], serde_json::json!([41_135_085_296_i64]));
    assert_eq!(v["password"], serde_json::json!(83));
}
