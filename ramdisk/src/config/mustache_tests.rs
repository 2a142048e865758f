//! The mustache renderer's tests (split from `mustache.rs` to keep it small).
use super::*;
use serde_json::json;

/// Cases from the official mustache spec (github.com/mustache/spec, v1.1: interpolation,
/// sections, inverted, comments, delimiters), minus HTML escaping: os-apply-config renders
/// with escaping switched off, so the escaped-interpolation cases expect the raw text.
/// (name, template, data, expected)
fn spec_cases() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        // ---- interpolation ----
        ("No Interpolation", "Hello from {Mustache}!\n", json!({}), "Hello from {Mustache}!\n"),
        ("Basic Interpolation", "Hello, {{subject}}!\n", json!({"subject": "world"}), "Hello, world!\n"),
        // Escaping is off in os-apply-config: spec expects "&amp;" etc.; we expect raw.
        ("HTML Escaping (off)", "These characters should be HTML escaped: {{forbidden}}\n", json!({"forbidden": "& \" < >"}), "These characters should be HTML escaped: & \" < >\n"),
        ("Triple Mustache", "These characters should not be HTML escaped: {{{forbidden}}}\n", json!({"forbidden": "& \" < >"}), "These characters should not be HTML escaped: & \" < >\n"),
        ("Ampersand", "These characters should not be HTML escaped: {{&forbidden}}\n", json!({"forbidden": "& \" < >"}), "These characters should not be HTML escaped: & \" < >\n"),
        ("Basic Integer Interpolation", "\"{{mph}} miles an hour!\"", json!({"mph": 85}), "\"85 miles an hour!\""),
        ("Triple Mustache Integer Interpolation", "\"{{{mph}}} miles an hour!\"", json!({"mph": 85}), "\"85 miles an hour!\""),
        ("Basic Decimal Interpolation", "\"{{power}} jiggawatts!\"", json!({"power": 1.21}), "\"1.21 jiggawatts!\""),
        ("Basic Null Interpolation", "I ({{cannot}}) be seen!", json!({"cannot": null}), "I () be seen!"),
        ("Context Misses", "I ({{cannot}}) be seen!", json!({}), "I () be seen!"),
        ("Dotted Names - Basic Interpolation", "\"{{person.name}}\" == \"{{#person}}{{name}}{{/person}}\"", json!({"person": {"name": "Joe"}}), "\"Joe\" == \"Joe\""),
        ("Dotted Names - Arbitrary Depth", "\"{{a.b.c.d.e.name}}\" == \"Phil\"", json!({"a": {"b": {"c": {"d": {"e": {"name": "Phil"}}}}}}), "\"Phil\" == \"Phil\""),
        ("Dotted Names - Broken Chains", "\"{{a.b.c}}\" == \"\"", json!({"a": {}}), "\"\" == \"\""),
        ("Dotted Names - Broken Chain Resolution", "\"{{a.b.c.name}}\" == \"\"", json!({"a": {"b": {}}, "c": {"name": "Jim"}}), "\"\" == \"\""),
        ("Dotted Names - Initial Resolution", "\"{{#a}}{{b.c.d.e.name}}{{/a}}\" == \"Phil\"", json!({"a": {"b": {"c": {"d": {"e": {"name": "Phil"}}}}}, "b": {"c": {"d": {"e": {"name": "Wrong"}}}}}), "\"Phil\" == \"Phil\""),
        ("Dotted Names - Context Precedence", "{{#a}}{{b.c}}{{/a}}", json!({"a": {"b": {}}, "b": {"c": "ERROR"}}), ""),
        ("Implicit Iterators - Basic Interpolation", "Hello, {{.}}!\n", json!("world"), "Hello, world!\n"),
        ("Interpolation - Surrounding Whitespace", "| {{string}} |", json!({"string": "---"}), "| --- |"),
        ("Interpolation - Standalone", "  {{string}}\n", json!({"string": "---"}), "  ---\n"),
        ("Interpolation With Padding", "|{{ string }}|", json!({"string": "---"}), "|---|"),
        ("Triple Mustache With Padding", "|{{{ string }}}|", json!({"string": "---"}), "|---|"),
        ("Ampersand With Padding", "|{{& string }}|", json!({"string": "---"}), "|---|"),
        // ---- sections ----
        ("Section Truthy", "\"{{#boolean}}This should be rendered.{{/boolean}}\"", json!({"boolean": true}), "\"This should be rendered.\""),
        ("Section Falsey", "\"{{#boolean}}This should not be rendered.{{/boolean}}\"", json!({"boolean": false}), "\"\""),
        ("Section Null is falsey", "\"{{#null}}This should not be rendered.{{/null}}\"", json!({"null": null}), "\"\""),
        ("Section Context", "\"{{#context}}Hi {{name}}.{{/context}}\"", json!({"context": {"name": "Joe"}}), "\"Hi Joe.\""),
        ("Section Parent contexts", "\"{{#sec}}{{a}}, {{b}}, {{c.d}}{{/sec}}\"", json!({"a": "foo", "b": "wrong", "sec": {"b": "bar"}, "c": {"d": "baz"}}), "\"foo, bar, baz\""),
        ("Section Variable test", "\"{{#foo}}{{.}} is {{foo}}{{/foo}}\"", json!({"foo": "bar"}), "\"bar is bar\""),
        ("Section List Contexts", "{{#tops}}{{#middles}}{{tname.lower}}{{mname}}.{{#bottoms}}{{tname.upper}}{{mname}}{{bname}}.{{/bottoms}}{{/middles}}{{/tops}}", json!({"tops": [{"tname": {"upper": "A", "lower": "a"}, "middles": [{"mname": "1", "bottoms": [{"bname": "x"}, {"bname": "y"}]}]}]}), "a1.A1x.A1y."),
        ("Section Deeply Nested Contexts", "{{#a}}\n{{one}}\n{{#b}}\n{{one}}{{two}}{{one}}\n{{#c}}\n{{one}}{{two}}{{three}}{{two}}{{one}}\n{{/c}}\n{{/b}}\n{{/a}}\n", json!({"a": {"one": 1}, "b": {"two": 2}, "c": {"three": 3}}), "1\n121\n12321\n"),
        ("Section List", "\"{{#list}}{{item}}{{/list}}\"", json!({"list": [{"item": 1}, {"item": 2}, {"item": 3}]}), "\"123\""),
        ("Section Empty List", "\"{{#list}}Yay lists!{{/list}}\"", json!({"list": []}), "\"\""),
        ("Section Doubled", "{{#bool}}\n* first\n{{/bool}}\n* {{two}}\n{{#bool}}\n* third\n{{/bool}}\n", json!({"bool": true, "two": "second"}), "* first\n* second\n* third\n"),
        ("Section Nested (Truthy)", "| A {{#bool}}B {{#bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": true}), "| A B C D E |"),
        ("Section Nested (Falsey)", "| A {{#bool}}B {{#bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": false}), "| A  E |"),
        ("Section Context Misses", "[{{#missing}}Found key 'missing'!{{/missing}}]", json!({}), "[]"),
        ("Section Implicit Iterator - String", "\"{{#list}}({{.}}){{/list}}\"", json!({"list": ["a", "b", "c", "d", "e"]}), "\"(a)(b)(c)(d)(e)\""),
        ("Section Implicit Iterator - Integer", "\"{{#list}}({{.}}){{/list}}\"", json!({"list": [1, 2, 3, 4, 5]}), "\"(1)(2)(3)(4)(5)\""),
        ("Section Implicit Iterator - Decimal", "\"{{#list}}({{.}}){{/list}}\"", json!({"list": [1.1, 2.2, 3.3, 4.4, 5.5]}), "\"(1.1)(2.2)(3.3)(4.4)(5.5)\""),
        ("Section Implicit Iterator - Array", "\"{{#list}}({{#.}}{{.}}{{/.}}){{/list}}\"", json!({"list": [[1, 2, 3], ["a", "b", "c"]]}), "\"(123)(abc)\""),
        ("Section Dotted Names - Truthy", "\"{{#a.b.c}}Here{{/a.b.c}}\" == \"Here\"", json!({"a": {"b": {"c": true}}}), "\"Here\" == \"Here\""),
        ("Section Dotted Names - Falsey", "\"{{#a.b.c}}Here{{/a.b.c}}\" == \"\"", json!({"a": {"b": {"c": false}}}), "\"\" == \"\""),
        ("Section Dotted Names - Broken Chains", "\"{{#a.b.c}}Here{{/a.b.c}}\" == \"\"", json!({"a": {}}), "\"\" == \"\""),
        ("Section Surrounding Whitespace", " | {{#boolean}}\t|\t{{/boolean}} | \n", json!({"boolean": true}), " | \t|\t | \n"),
        ("Section Internal Whitespace", " | {{#boolean}} {{! Important Whitespace }}\n {{/boolean}} | \n", json!({"boolean": true}), " |  \n  | \n"),
        ("Section Indented Inline Sections", " {{#boolean}}YES{{/boolean}}\n {{#boolean}}GOOD{{/boolean}}\n", json!({"boolean": true}), " YES\n GOOD\n"),
        ("Section Standalone Lines", "| This Is\n{{#boolean}}\n|\n{{/boolean}}\n| A Line\n", json!({"boolean": true}), "| This Is\n|\n| A Line\n"),
        ("Section Indented Standalone Lines", "| This Is\n  {{#boolean}}\n|\n  {{/boolean}}\n| A Line\n", json!({"boolean": true}), "| This Is\n|\n| A Line\n"),
        ("Section Standalone Line Endings", "|\r\n{{#boolean}}\r\n{{/boolean}}\r\n|", json!({"boolean": true}), "|\r\n|"),
        ("Section Standalone Without Previous Line", "  {{#boolean}}\n#{{/boolean}}\n/", json!({"boolean": true}), "#\n/"),
        ("Section Standalone Without Newline", "#{{#boolean}}\n/\n  {{/boolean}}", json!({"boolean": true}), "#\n/\n"),
        ("Section Padding", "|{{# boolean }}={{/ boolean }}|", json!({"boolean": true}), "|=|"),
        // ---- inverted ----
        ("Inverted Falsey", "\"{{^boolean}}This should be rendered.{{/boolean}}\"", json!({"boolean": false}), "\"This should be rendered.\""),
        ("Inverted Truthy", "\"{{^boolean}}This should not be rendered.{{/boolean}}\"", json!({"boolean": true}), "\"\""),
        ("Inverted Null is falsey", "\"{{^null}}This should be rendered.{{/null}}\"", json!({"null": null}), "\"This should be rendered.\""),
        ("Inverted Context", "\"{{^context}}Hi {{name}}.{{/context}}\"", json!({"context": {"name": "Joe"}}), "\"\""),
        ("Inverted List", "\"{{^list}}{{n}}{{/list}}\"", json!({"list": [{"n": 1}, {"n": 2}, {"n": 3}]}), "\"\""),
        ("Inverted Empty List", "\"{{^list}}Yay lists!{{/list}}\"", json!({"list": []}), "\"Yay lists!\""),
        ("Inverted Doubled", "{{^bool}}\n* first\n{{/bool}}\n* {{two}}\n{{^bool}}\n* third\n{{/bool}}\n", json!({"bool": false, "two": "second"}), "* first\n* second\n* third\n"),
        ("Inverted Nested (Falsey)", "| A {{^bool}}B {{^bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": false}), "| A B C D E |"),
        ("Inverted Nested (Truthy)", "| A {{^bool}}B {{^bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": true}), "| A  E |"),
        ("Inverted Context Misses", "[{{^missing}}Found key 'missing'!{{/missing}}]", json!({}), "[Found key 'missing'!]"),
        ("Inverted Dotted Names - Truthy", "\"{{^a.b.c}}Not Here{{/a.b.c}}\" == \"\"", json!({"a": {"b": {"c": true}}}), "\"\" == \"\""),
        ("Inverted Dotted Names - Falsey", "\"{{^a.b.c}}Not Here{{/a.b.c}}\" == \"Not Here\"", json!({"a": {"b": {"c": false}}}), "\"Not Here\" == \"Not Here\""),
        ("Inverted Dotted Names - Broken Chains", "\"{{^a.b.c}}Not Here{{/a.b.c}}\" == \"Not Here\"", json!({"a": {}}), "\"Not Here\" == \"Not Here\""),
        ("Inverted Surrounding Whitespace", " | {{^boolean}}\t|\t{{/boolean}} | \n", json!({"boolean": false}), " | \t|\t | \n"),
        ("Inverted Standalone Lines", "| This Is\n{{^boolean}}\n|\n{{/boolean}}\n| A Line\n", json!({"boolean": false}), "| This Is\n|\n| A Line\n"),
        ("Inverted Standalone Indented Lines", "| This Is\n  {{^boolean}}\n|\n  {{/boolean}}\n| A Line\n", json!({"boolean": false}), "| This Is\n|\n| A Line\n"),
        ("Inverted Standalone Line Endings", "|\r\n{{^boolean}}\r\n{{/boolean}}\r\n|", json!({"boolean": false}), "|\r\n|"),
        ("Inverted Standalone Without Previous Line", "  {{^boolean}}\n^{{/boolean}}\n/", json!({"boolean": false}), "^\n/"),
        ("Inverted Standalone Without Newline", "^{{^boolean}}\n/\n  {{/boolean}}", json!({"boolean": false}), "^\n/\n"),
        ("Inverted Padding", "|{{^ boolean }}={{/ boolean }}|", json!({"boolean": false}), "|=|"),
        // ---- comments ----
        ("Comment Inline", "12345{{! Comment Block! }}67890", json!({}), "1234567890"),
        ("Comment Multiline", "12345{{!\n  This is a\n  multi-line comment...\n}}67890\n", json!({}), "1234567890\n"),
        ("Comment Standalone", "Begin.\n{{! Comment Block! }}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
        ("Comment Indented Standalone", "Begin.\n  {{! Indented Comment Block! }}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
        ("Comment Standalone Line Endings", "|\r\n{{! Standalone Comment }}\r\n|", json!({}), "|\r\n|"),
        ("Comment Standalone Without Previous Line", "  {{! I'm Still Standalone }}\n!", json!({}), "!"),
        ("Comment Standalone Without Newline", "!\n  {{! I'm Still Standalone }}", json!({}), "!\n"),
        ("Comment Multiline Standalone", "Begin.\n{{!\nSomething's going on here...\n}}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
        ("Comment Indented Multiline Standalone", "Begin.\n  {{!\n    Something's going on here...\n  }}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
        ("Comment Indented Inline", "  12 {{! 34 }}\n", json!({}), "  12 \n"),
        ("Comment Surrounding Whitespace", "12345 {{! Comment Block! }} 67890", json!({}), "12345  67890"),
        // ---- delimiters ----
        ("Delimiters Pair Behavior", "{{=<% %>=}}(<%text%>)", json!({"text": "Hey!"}), "(Hey!)"),
        ("Delimiters Special Characters", "({{=[ ]=}}[text])", json!({"text": "It worked!"}), "(It worked!)"),
        ("Delimiters Sections", "[\n{{#section}}\n  {{data}}\n  |data|\n{{/section}}\n\n{{= | | =}}\n|#section|\n  {{data}}\n  |data|\n|/section|\n]\n", json!({"section": true, "data": "I got interpolated."}), "[\n  I got interpolated.\n  |data|\n\n  {{data}}\n  I got interpolated.\n]\n"),
        ("Delimiters Standalone Tag", "Begin.\n{{=@ @=}}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
        ("Delimiters Indented Standalone Tag", "Begin.\n  {{=@ @=}}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
        ("Delimiters Pair with Padding", "|{{= @   @ =}}|", json!({}), "||"),
    ]
}

#[test]
fn mustache_spec_cases() {
    let mut failures = Vec::new();
    for (name, template, data, expected) in spec_cases() {
        match render(template, &data) {
            Ok(got) if got == expected => {}
            other => failures.push(format!("{name}: got {other:?}, want {expected:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "spec failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tripleo_mysql_example_exactly() {
    let template = "[client]\nuser = root\n{{#mysql.root-password}}\npassword = {{.}}\n{{/mysql.root-password}}\n";
    let data = json!({"mysql": {"root-password": "Heifs23jk3"}});
    assert_eq!(
        render(template, &data).unwrap(),
        "[client]\nuser = root\npassword = Heifs23jk3\n"
    );
    // Without the key, the password line disappears entirely.
    assert_eq!(
        render(template, &json!({})).unwrap(),
        "[client]\nuser = root\n"
    );
}

/// os-apply-config's own renderer tests (test_json_renderer.py, test_apply_config.py).
#[test]
fn os_apply_config_renderer_cases() {
    let ctx = json!({"a": {"b": [1, 2, 3, "foo"], "c": "the quick brown fox"}});
    assert_eq!(render("{{a.b}}", &ctx).unwrap(), "[1, 2, 3, \"foo\"]");
    assert_eq!(render("{{a.c}}", &ctx).unwrap(), "the quick brown fox");
    assert_eq!(
        render("ab{{x.a}}cd", &json!({"x": {"a": "123"}})).unwrap(),
        "ab123cd"
    );
    assert_eq!(render("{{badkey}}", &json!({})).unwrap(), "");
    assert_eq!(
        render("{{b}}/{{n}}", &json!({"b": true, "n": null})).unwrap(),
        "true/"
    );
    assert_eq!(
        render("{{o}}", &json!({"o": {"k": "é"}})).unwrap(),
        "{\"k\": \"\\u00e9\"}"
    );
    // Python truthiness: 0 and "" are false.
    assert_eq!(
        render("{{#z}}x{{/z}}{{^e}}y{{/e}}", &json!({"z": 0, "e": ""})).unwrap(),
        "y"
    );
}

#[test]
fn errors_name_the_line() {
    let e = Template::parse("a\nb\n{{#foo}}bar={{bar}}{{/bar}}").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("section end tag mismatch"), "{e}");
    let e = Template::parse("ok\n\n\n{{#open}}\nnever closed\n").unwrap_err();
    assert_eq!((e.line, e.message.contains("never closed")), (4, true));
    let e = Template::parse("x\n{{unclosed\n").unwrap_err();
    assert_eq!(e.line, 2);
    let e = Template::parse("{{/nothing}}").unwrap_err();
    assert_eq!(e.line, 1);
    let e = Template::parse("\n{{}}").unwrap_err();
    assert_eq!(e.to_string(), "line 2: empty tag");
}

/// Found by `cargo xtask fuzz` (a libFuzzer slow unit): sections nested 20 deep over a 5-item
/// list never finished rendering. Now an error at once, naming a section's line.
#[test]
fn nested_sections_over_lists_are_bounded() {
    let data = serde_json::json!({"list": [1, 2, 3, 4, 5], "s": "x"});
    let src = "{{#list}}\n".repeat(20) + "{{s}}" + &"{{/list}}\n".repeat(20);
    let started = std::time::Instant::now();
    let e = render(&src, &data).unwrap_err();
    assert!(e.message.contains("nested"), "{e}");
    assert!((1..=20).contains(&e.line), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Empty sections multiply the work too, with nothing written.
    let src = "{{#list}}".repeat(20) + &"{{/list}}".repeat(20);
    assert!(render(&src, &data).is_err());
    // Three levels over five items are fine.
    let src = "{{#list}}".repeat(3) + "{{.}}" + &"{{/list}}".repeat(3);
    assert_eq!(render(&src, &data).unwrap().len(), 125);
}

/// `repr(float)` as Python 3.11 prints it (what `json.dumps` writes for a float).
#[test]
fn floats_render_as_python_repr() {
    let cases = [
        (1e-7, "1e-07"),
        (2.5, "2.5"),
        (2.0, "2.0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (1e20, "1e+20"),
        (123456.789, "123456.789"),
        (-1.25e-10, "-1.25e-10"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ];
    for (f, want) in cases {
        let mut out = String::new();
        python_float(f, &mut out);
        assert_eq!(out, want, "{f:?}");
    }
    let t = Template::parse("{{f}} {{l}} {{i}}").unwrap();
    let data = serde_json::json!({"f": 1e-7, "l": [0.5, 3e30], "i": 7});
    assert_eq!(t.render(&data).unwrap(), "1e-07 [0.5, 3e+30] 7");
}
