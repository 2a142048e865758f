//! Where the offline cache lives: a leaf every layer may use (the CLI, the etcd members the
//! tests start, xtask).

use std::path::PathBuf;

/// The offline cache (`$SEED_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/seed`), as `cargo
/// xtask fetch` fills it. The one definition: xtask and the tests call this too.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEED_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        })
        .join("seed")
}
