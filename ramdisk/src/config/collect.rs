//! Collect, narrowed to what a node can do without the network yet: keep the last metadata
//! of each source in a cache directory, list them in `os_config_files.json` (the file
//! os-apply-config reads), and merge them. The metadata service's long-poll fetch will feed
//! [`store`] later.

use crate::config::metadata::{self, MetadataError};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the list of cached files in the cache directory.
pub const OS_CONFIG_FILES: &str = "os_config_files.json";

/// Why the cache could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct CacheError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let err = |source| CacheError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Store each source's metadata as `<cache>/<name>.json` (in the order given: later sources
/// win the merge) and write `<cache>/os_config_files.json` listing them. Returns the list's
/// path.
pub fn store(cache: &Path, sources: &[(&str, Value)]) -> Result<PathBuf, CacheError> {
    let mut files = Vec::new();
    for (name, value) in sources {
        let path = cache.join(format!("{name}.json"));
        let bytes = serde_json::to_vec_pretty(value).expect("a JSON value serialises");
        write_atomic(&path, &bytes)?;
        files.push(Value::String(path.display().to_string()));
    }
    let list = cache.join(OS_CONFIG_FILES);
    write_atomic(
        &list,
        &serde_json::to_vec(&Value::Array(files)).expect("serialises"),
    )?;
    Ok(list)
}

/// The merged metadata of everything listed in `<cache>/os_config_files.json`.
pub fn collect(cache: &Path) -> Result<Value, MetadataError> {
    let files = metadata::load_list_from_json(&cache.join(OS_CONFIG_FILES))?;
    metadata::collect(&files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn store_then_collect_merges_in_order() {
        let d = tempfile::tempdir().unwrap();
        let list = store(
            d.path(),
            &[
                (
                    "ec2",
                    json!({"local-ipv4": "192.0.2.99", "a": {"x": 1, "y": 2}}),
                ),
                (
                    "seed",
                    json!({"local-ipv4": "198.51.100.50", "a": {"x": 3}}),
                ),
            ],
        )
        .unwrap();
        assert_eq!(list, d.path().join(OS_CONFIG_FILES));
        assert_eq!(
            collect(d.path()).unwrap(),
            json!({"local-ipv4": "198.51.100.50", "a": {"x": 3, "y": 2}})
        );
        assert_eq!(collect(&d.path().join("empty")).unwrap(), json!({}));
    }
}
