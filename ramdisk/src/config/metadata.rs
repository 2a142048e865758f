//! Metadata: the JSON files a node's configuration is rendered from, merged as
//! os-apply-config's `collect_config.py` does, and single-key look-ups (`--key`).
//!
//! Files are read in order; a missing file is skipped, an unreadable or malformed one is an
//! error naming it. Top-level objects are deep-merged, later wins: objects merge key by key,
//! anything else (lists included) replaces. A top-level value that is not a non-empty object
//! is ignored.

use crate::config::mustache::python_json;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Where os-collect-config leaves the list of metadata files (`--os-config-files`).
pub const OS_CONFIG_FILES_PATH: &str = "/var/lib/os-collect-config/os_config_files.json";
/// The list's old location, read when the new one is empty or missing.
pub const OS_CONFIG_FILES_PATH_OLD: &str = "/var/run/os-collect-config/os_config_files.json";
/// heat-cfntools' caches, searched before the listed files (`--fallback-metadata`).
pub const FALLBACK_METADATA: &[&str] = &[
    "/var/cache/heat-cfntools/last_metadata",
    "/var/lib/heat-cfntools/cfn-init-data",
    "/var/lib/cloud/data/cfn-init-data",
];

/// A metadata file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file exists but could not be read.
    #[error("could not open {} for reading", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("could not parse metadata file: {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An `os_config_files.json` that is not a JSON list of paths.
    #[error("no list defined in json file: {}", path.display())]
    NotAList {
        /// The file.
        path: PathBuf,
    },
    /// `--subhash` names something that is not an object.
    #[error("key '{0}' does not correspond to a hash in the metadata file")]
    NotAHash(String),
}

/// Read, parse and deep-merge `files` in order (missing files skipped, empty paths ignored).
pub fn collect(files: &[PathBuf]) -> Result<Value, MetadataError> {
    let mut merged = Value::Object(Map::new());
    for path in files.iter().filter(|p| !p.as_os_str().is_empty()) {
        if !path.exists() {
            continue;
        }
        let doc = read_json(path)?;
        if doc.as_object().is_some_and(|o| !o.is_empty()) {
            merged = deep_merge(merged, doc);
        }
    }
    Ok(merged)
}

/// A JSON file's document.
fn read_json(path: &Path) -> Result<Value, MetadataError> {
    let text = std::fs::read_to_string(path).map_err(|source| MetadataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| MetadataError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Merge `b` over `a`: objects key by key (recursively), anything else replaces.
pub fn deep_merge(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                let merged = match a.remove(&k) {
                    Some(old @ Value::Object(_)) => deep_merge(old, v),
                    _ => v,
                };
                a.insert(k, merged);
            }
            Value::Object(a)
        }
        (_, b) => b,
    }
}

/// Read an `os_config_files.json`: a JSON list of paths; a missing file is an empty list.
pub fn load_list_from_json(path: &Path) -> Result<Vec<PathBuf>, MetadataError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let doc = read_json(path)?;
    let not_a_list = || MetadataError::NotAList {
        path: path.to_path_buf(),
    };
    doc.as_array()
        .ok_or_else(not_a_list)?
        .iter()
        .map(|v| v.as_str().map(PathBuf::from).ok_or_else(not_a_list))
        .collect()
}

/// Descend into the object named by the dotted `keys` (`--subhash`).
pub fn strip_hash(config: Value, keys: Option<&str>) -> Result<Value, MetadataError> {
    let Some(keys) = keys.filter(|k| !k.is_empty()) else {
        return Ok(config);
    };
    let mut h = config;
    for k in keys.split('.') {
        match h.get_mut(k).map(Value::take) {
            Some(v @ Value::Object(_)) => h = v,
            _ => return Err(MetadataError::NotAHash(keys.to_string())),
        }
    }
    Ok(h)
}

/// Look up a dotted key as `--key` does: object members by name, list items by (possibly
/// negative) index; a `null` value counts as missing.
pub fn extract_key<'v>(config: &'v Value, key: &str) -> Option<&'v Value> {
    let mut v = config;
    for part in key.split('.') {
        v = match v {
            Value::Object(m) => m.get(part)?,
            Value::Array(items) => {
                let i: i64 = part.trim().parse().ok()?;
                let i = if i < 0 { items.len() as i64 + i } else { i };
                items.get(usize::try_from(i).ok()?)?
            }
            _ => return None,
        };
        if v.is_null() {
            return None;
        }
    }
    Some(v)
}

/// How `--key` prints a value: objects, lists and booleans as JSON, strings raw, numbers as
/// numbers.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => {
            let mut out = String::new();
            python_json(other, &mut out);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge_all(docs: &[Value]) -> Value {
        docs.iter().cloned().fold(json!({}), deep_merge)
    }

    /// os-apply-config's TestMergeConfigs and OCCTestCase.
    #[test]
    fn os_apply_config_merge_cases() {
        assert_eq!(
            merge_all(&[json!({"a": "1"}), json!({"b": "Y"})]),
            json!({"a": "1", "b": "Y"})
        );
        assert_eq!(
            merge_all(&[json!({"a": "1"}), json!({"a": "Z"})]),
            json!({"a": "Z"})
        );
        assert_eq!(
            merge_all(&[
                json!({"a": "1"}),
                json!({"b": {"x": "foo-bar", "y": "tribbles"}}),
                json!({"b": {"x": "shazam"}})
            ]),
            json!({"a": "1", "b": {"x": "shazam", "y": "tribbles"}})
        );
        assert_eq!(
            merge_all(&[json!({"a": 1}), json!({"a": [7, 8, 9]})]),
            json!({"a": [7, 8, 9]})
        );
        assert_eq!(
            merge_all(&[json!({"a": [1, 2, 3]}), json!({"a": [4, 5, 6]})]),
            json!({"a": [4, 5, 6]})
        );
    }

    #[test]
    fn collect_reads_in_order_skips_missing_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let ec2 = dir.path().join("ec2.json");
        let cfn = dir.path().join("cfn.json");
        std::fs::write(
            &ec2,
            r#"{"local-ipv4": "192.0.2.99", "instance-id": "feeddead"}"#,
        )
        .unwrap();
        std::fs::write(
            &cfn,
            r#"{"foo": {"bar": "foo-bar"}, "local-ipv4": "198.51.100.50"}"#,
        )
        .unwrap();
        let missing = dir.path().join("nope.json");
        let got = collect(&[missing.clone(), ec2, PathBuf::new(), cfn]).unwrap();
        assert_eq!(
            got,
            json!({"local-ipv4": "198.51.100.50", "instance-id": "feeddead", "foo": {"bar": "foo-bar"}})
        );
        assert_eq!(collect(&[missing]).unwrap(), json!({}));
        assert_eq!(collect(&[]).unwrap(), json!({}));

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let err = collect(std::slice::from_ref(&bad)).unwrap_err();
        assert!(
            matches!(&err, MetadataError::Parse { path, .. } if *path == bad),
            "{err}"
        );
    }

    #[test]
    fn os_config_files_list() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("os_config_files.json");
        assert_eq!(load_list_from_json(&p).unwrap(), Vec::<PathBuf>::new());
        std::fs::write(&p, "").unwrap();
        assert!(load_list_from_json(&p).is_err());
        std::fs::write(&p, r#"["/tmp/config.json"]"#).unwrap();
        assert_eq!(
            load_list_from_json(&p).unwrap(),
            vec![PathBuf::from("/tmp/config.json")]
        );
        std::fs::write(&p, "{}").unwrap();
        assert!(matches!(
            load_list_from_json(&p),
            Err(MetadataError::NotAList { .. })
        ));
    }

    #[test]
    fn strip_hash_cases() {
        let h = json!({"a": {"b": {"x": "y"}}, "c": [1, 2, 3]});
        assert_eq!(
            strip_hash(h.clone(), Some("a.b")).unwrap(),
            json!({"x": "y"})
        );
        assert!(strip_hash(h.clone(), Some("a.nonexistent")).is_err());
        assert!(strip_hash(h.clone(), Some("c")).is_err());
        assert_eq!(strip_hash(h.clone(), None).unwrap(), h);
    }

    #[test]
    fn extract_and_format_keys() {
        let c = json!({"x": "foo", "y": false, "z": null, "database": {"url": "sqlite:///blah"}, "l": [1, 2]});
        assert_eq!(
            extract_key(&c, "database.url"),
            Some(&json!("sqlite:///blah"))
        );
        assert_eq!(
            format_value(extract_key(&c, "database").unwrap()),
            r#"{"url": "sqlite:///blah"}"#
        );
        assert_eq!(format_value(extract_key(&c, "l").unwrap()), "[1, 2]");
        assert_eq!(format_value(extract_key(&c, "y").unwrap()), "false");
        assert_eq!(extract_key(&c, "z"), None);
        assert_eq!(extract_key(&c, "l.0"), Some(&json!(1)));
        assert_eq!(extract_key(&c, "l.-1"), Some(&json!(2)));
        assert_eq!(extract_key(&c, "l.2"), None);
        assert_eq!(extract_key(&c, "does.not.exist"), None);
        assert_eq!(extract_key(&c, "x.y"), None);
    }
}
