//! `--type` checks for `--key`, as os-apply-config's `value_types.py`: a value printed for a
//! shell script must match its declared shape, so metadata cannot inject shell syntax.

use regex::Regex;

/// A value that does not match the requested type, or an unknown type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueTypeError {
    /// The type name is not one of [`TYPES`].
    #[error("requested validation of unknown type: {0}")]
    UnknownType(String),
    /// The value does not match the type's pattern.
    #[error("cannot interpret value '{value}' as type {type_name}")]
    Mismatch {
        /// The value as it would be printed.
        value: String,
        /// The requested type.
        type_name: String,
    },
}

/// The types and their patterns (os-apply-config's, with the `(?#…)` comments dropped: the
/// regex crate has no inline comments). Python's `re.match` anchors at the start only; every
/// pattern here carries its own `^…$` (raw's empty pattern matches anything).
pub const TYPES: &[(&str, &str)] = &[
    ("int", r"^[0-9]+$"),
    ("default", r"^[A-Za-z0-9_]*$"),
    ("netaddress", r"^[A-Za-z0-9/.:-]*$"),
    ("netdevice", r"^[A-Za-z0-9/.:-]*$"),
    (
        "dsn",
        r"^[a-zA-Z0-9]+://([a-zA-Z0-9+_-]+(:[^@]+)?)?(@?[a-zA-Z0-9/_.-]+)?(/[a-zA-Z0-9_-]+)?(\?[a-zA-Z0-9=_-]+)?$",
    ),
    (
        "swiftdevices",
        r"^(r\d+z\d+-[A-Za-z0-9.-_]+:%PORT%/[^,]+,?)+$",
    ),
    ("username", r"^[A-Za-z0-9_-]+$"),
    ("raw", r""),
];

/// Check `value` against the type named `type_name`.
pub fn ensure_type(value: &str, type_name: &str) -> Result<(), ValueTypeError> {
    let pattern = TYPES
        .iter()
        .find(|(name, _)| *name == type_name)
        .map(|(_, p)| *p)
        .ok_or_else(|| ValueTypeError::UnknownType(type_name.to_string()))?;
    let re = Regex::new(pattern).expect("built-in pattern compiles");
    if re.is_match(value) {
        Ok(())
    } else {
        Err(ValueTypeError::Mismatch {
            value: value.to_string(),
            type_name: type_name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// os-apply-config's test_value_type.py, case by case: (value, type, accepted).
    #[test]
    fn os_apply_config_value_type_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("123", "int", true),
            ("foobar", "default", true),
            ("x86_64", "default", true),
            ("foo\nbar", "default", false),
            ("", "default", true),
            ("", "raw", true),
            ("192.0.2.1", "netaddress", true),
            ("192.0.2.0/24", "netaddress", true),
            ("::", "netaddress", true),
            ("2001:db8::2:1", "netaddress", true),
            ("host.0domain-name.test", "netaddress", true),
            ("", "netaddress", true),
            ("192.0.2.1;DROP TABLE foo", "default", false),
            ("eth0", "netdevice", true),
            ("br-ctlplane", "netdevice", true),
            ("eth0:1", "netdevice", true),
            ("br-tun; DROP TABLE bar", "netdevice", false),
            ("mysql://user@host/db", "dsn", true),
            ("mysql://user:pass@host/db", "dsn", true),
            ("mysql://user:pass@host/db?charset=utf8", "dsn", true),
            ("sqlite://", "dsn", true),
            ("sqlite:///tmp/foo.db", "dsn", true),
            ("mysql:/user:pass@host/db?charset=utf8", "dsn", false),
            (
                "mysql://user:pass@host/db?charset=utf8;DROP TABLE foo",
                "dsn",
                false,
            ),
            ("r1z1-127.0.0.1:%PORT%/d1", "swiftdevices", true),
            (
                "r1z1-127.0.0.1:%PORT%/d1,r1z1-127.0.0.1:%PORT%/d2",
                "swiftdevices",
                true,
            ),
            ("", "swiftdevices", false),
            ("rz1-127.0.0.1:%PORT%/d1", "swiftdevices", false),
        ];
        for (value, ty, ok) in cases {
            assert_eq!(ensure_type(value, ty).is_ok(), *ok, "{value:?} as {ty}");
        }
        assert_eq!(
            ensure_type("foo", "badtype"),
            Err(ValueTypeError::UnknownType("badtype".into()))
        );
    }
}
