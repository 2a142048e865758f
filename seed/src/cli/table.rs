//! The CLI's text layout: columns padded to their widest cell, `key:  value` blocks, and sizes
//! as people read them. Hand-written: a table crate would buy nothing for plain left-aligned
//! ASCII columns.

use std::time::{Duration, UNIX_EPOCH};

/// Rows as columns padded to their widest cell, two spaces apart; the last cell of a row is
/// not padded and no line ends in blanks.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// A header row.
pub fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `key:  value` lines, the values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<w$}  {v}\n", format!("{k}:"), w = w + 1))
        .collect()
}

/// MiB as `8 GiB` when whole GiB, else `N MiB`.
pub fn mib(m: u64) -> String {
    if m >= 1024 && m.is_multiple_of(1024) {
        format!("{} GiB", m / 1024)
    } else {
        format!("{m} MiB")
    }
}

/// Bytes as `40 GiB`, `1.5 GiB` or `N MiB`.
pub fn bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    if b >= GIB {
        let g = b as f64 / GIB as f64;
        if b.is_multiple_of(GIB) {
            format!("{} GiB", b / GIB)
        } else {
            format!("{g:.1} GiB")
        }
    } else {
        format!("{} MiB", b >> 20)
    }
}

/// Milliseconds since the epoch as an HTTP date.
pub fn date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_trailing_blanks() {
        let rows = vec![
            header(&["NAME", "STATE", "ERROR"]),
            vec!["a".into(), "available".into(), String::new()],
            vec!["long-name".into(), "x".into(), "boom".into()],
        ];
        assert_eq!(
            table(&rows),
            "NAME       STATE      ERROR\na          available\nlong-name  x          boom\n"
        );
        assert_eq!(
            fields(&[("name", "a".into()), ("last error", "-".into())]),
            "name:        a\nlast error:  -\n"
        );
        assert_eq!((mib(8192), mib(100)), ("8 GiB".into(), "100 MiB".into()));
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
