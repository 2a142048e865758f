//! Scalars as PyYAML's `SafeLoader` resolves them (YAML 1.1), the loader behind Heat's
//! templates, os-apply-config's `.oac` files and TripleO's instackenv files.
//!
//! Hand-written because no maintained Rust YAML crate resolves YAML 1.1 as PyYAML does: the
//! YAML 1.2 core schema reads `yes`, `on`, `0755` and `1_000` differently, and serde-saphyr's
//! YAML 1.1 mode also takes `y`/`n` as booleans, which PyYAML does not. The patterns below are
//! PyYAML's own (`resolver.py`), tried in PyYAML's order for the scalar's first character.

use regex::Regex;
use std::sync::LazyLock;

use crate::Value;

/// `tag:yaml.org,2002:int`, PyYAML's pattern.
static INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    )
    .expect("valid pattern")
});

/// `tag:yaml.org,2002:float`, PyYAML's pattern (an exponent needs a dot and a sign: `1e3` and
/// `1.0e3` are strings, `1.0e+3` is a float).
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    )
    .expect("valid pattern")
});

/// `tag:yaml.org,2002:null`.
pub(crate) fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// `tag:yaml.org,2002:bool` for a plain scalar (the exact spellings PyYAML resolves).
fn plain_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// The value of a plain (unquoted, untagged) scalar. Timestamps stay strings, as Heat's loader
/// makes them; an integer beyond 64 bits stays its text.
pub(crate) fn plain(s: &str) -> Value {
    if is_null(s) {
        return Value::Null;
    }
    if let Some(b) = plain_bool(s) {
        return Value::Bool(b);
    }
    if FLOAT.is_match(s) {
        if let Some(f) = float(s) {
            return Value::Float(f);
        }
    }
    if INT.is_match(s) {
        if let Some(i) = int(s) {
            return Value::Int(i);
        }
    }
    Value::Str(s.to_string())
}

/// The value of a scalar with an explicit core-schema tag (`!!str`, `!!int`, …); `None` when the
/// text cannot be one (`!!int abc`). Other tags (`!!binary`, `!!timestamp`, local tags) keep the
/// text.
pub(crate) fn tagged(s: &str, suffix: &str) -> Option<Value> {
    match suffix {
        "null" => Some(Value::Null),
        // PyYAML's construct_yaml_bool looks the lower-cased text up.
        "bool" => match s.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Some(Value::Bool(true)),
            "no" | "false" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        "int" => int(s).map(Value::Int),
        "float" => float(s).map(Value::Float),
        _ => Some(Value::Str(s.to_string())),
    }
}

/// The sign and the digits of a number, underscores removed (PyYAML's first steps).
fn sign_and_digits(s: &str) -> (i128, String) {
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    match clean.as_bytes().first() {
        Some(b'-') => (-1, clean[1..].to_string()),
        Some(b'+') => (1, clean[1..].to_string()),
        _ => (1, clean),
    }
}

/// PyYAML's `construct_yaml_int`: `0b` binary, `0x` hex, a leading `0` octal, `a:b:c` base 60.
fn int(s: &str) -> Option<i64> {
    let (sign, v) = sign_and_digits(s);
    let magnitude: i128 = if v == "0" {
        0
    } else if let Some(b) = v.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(h) = v.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if v.len() > 1 && v.starts_with('0') {
        i128::from_str_radix(&v[1..], 8).ok()?
    } else if v.contains(':') {
        let mut total: i128 = 0;
        for part in v.split(':') {
            total = total
                .checked_mul(60)?
                .checked_add(part.parse::<i128>().ok()?)?;
        }
        total
    } else {
        v.parse::<i128>().ok()?
    };
    i64::try_from(sign.checked_mul(magnitude)?).ok()
}

/// PyYAML's `construct_yaml_float`: `.inf`, `.nan`, `a:b.c` base 60, else a decimal.
fn float(s: &str) -> Option<f64> {
    let (sign, v) = sign_and_digits(s);
    let sign = sign as f64;
    let v = v.to_ascii_lowercase();
    if v == ".inf" {
        return Some(sign * f64::INFINITY);
    }
    if v == ".nan" {
        return Some(f64::NAN);
    }
    if v.contains(':') {
        let mut total = 0.0;
        for part in v.split(':') {
            total = total * 60.0 + part.parse::<f64>().ok()?;
        }
        return Some(sign * total);
    }
    // Python's float() reads `1.` and `1.e+3`; Rust's parser wants a digit after the dot
    // before an exponent.
    let v = v.replace(".e", ".0e");
    v.parse::<f64>().ok().map(|f| sign * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f:?}"),
            Value::Str(s) => format!("str {s}"),
            Value::List(_) | Value::Map(_) => "collection".into(),
        }
    }

    /// Each plain scalar and what PyYAML 6's `yaml.safe_load` gives for it.
    #[test]
    fn yaml11_plain_scalars_resolve_as_pyyaml() {
        let cases = [
            ("", "null"),
            ("~", "null"),
            ("Null", "null"),
            ("nULL", "str nULL"),
            ("True", "bool true"),
            ("FALSE", "bool false"),
            ("yes", "bool true"),
            ("No", "bool false"),
            ("on", "bool true"),
            ("OFF", "bool false"),
            ("y", "str y"),
            ("n", "str n"),
            ("yEs", "str yEs"),
            ("0", "int 0"),
            ("-17", "int -17"),
            ("+3", "int 3"),
            ("0755", "int 493"),
            ("0o755", "str 0o755"),
            ("0x1F", "int 31"),
            ("0b101", "int 5"),
            ("1_000", "int 1000"),
            ("190:20:30", "int 685230"),
            ("09", "str 09"),
            ("99999999999999999999", "str 99999999999999999999"),
            ("1.5", "float 1.5"),
            ("1.", "float 1.0"),
            ("-.5", "str -.5"),
            (".5", "float 0.5"),
            ("1.0e+3", "float 1000.0"),
            ("1.e+3", "float 1000.0"),
            ("1e3", "str 1e3"),
            ("1.0e3", "str 1.0e3"),
            ("1_0.5", "float 10.5"),
            ("190:20:30.15", "float 685230.15"),
            ("-.inf", "float -inf"),
            (".NaN", "float NaN"),
            ("2001-12-14", "str 2001-12-14"),
            ("12:30", "int 750"),
            ("hello", "str hello"),
            ("=", "str ="),
            ("<<", "str <<"),
        ];
        for (text, want) in cases {
            assert_eq!(show(&plain(text)), want, "plain scalar {text:?}");
        }
    }

    #[test]
    fn yaml11_explicit_tags() {
        assert_eq!(show(&tagged("12", "str").unwrap()), "str 12");
        assert_eq!(show(&tagged("12", "int").unwrap()), "int 12");
        assert_eq!(show(&tagged("0x10", "int").unwrap()), "int 16");
        assert_eq!(show(&tagged("YES", "bool").unwrap()), "bool true");
        assert_eq!(show(&tagged("3", "float").unwrap()), "float 3.0");
        assert_eq!(show(&tagged("anything", "null").unwrap()), "null");
        assert_eq!(
            show(&tagged("2001-12-14", "timestamp").unwrap()),
            "str 2001-12-14"
        );
        assert!(tagged("abc", "int").is_none());
        assert!(tagged("maybe", "bool").is_none());
        assert!(tagged("x", "float").is_none());
    }
}
