//! What the fuzz targets share: splitting one fuzzer input into several datagrams, so the
//! stateful engines (DHCP, TFTP, the BMC) see sequences and not only first packets.
//!
//! The framing is `u16` big-endian length + that many bytes, repeated; a length running past
//! the end takes what is left. The seed corpus (`corpus/<target>/`) is written in it.

/// The chunks of `data`, at most `max` of them.
pub fn chunks(mut data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < max {
        let n = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

/// `data` as text, lossily: the text parsers take `&str`; invalid UTF-8 becomes U+FFFD.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// A directory of this process for the files a target needs (`$SEED_FUZZ_SCRATCH`, which
/// `cargo xtask fuzz` sets to a directory it removes afterwards, else the temporary directory),
/// created.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("SEED_FUZZ_SCRATCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}
