//! `LANG=C sort -n`, the order `dib-run-parts` runs scripts and sources environment files in.
//!
//! GNU `sort -n` in the C locale compares the leading number of each line: optional `-`,
//! digits, optionally `.` and more digits (no thousands separator in the C locale). A line
//! with no leading number (`a-nonum`, `-x`, `-`) compares as 0, and `-0` equals `0`. Lines
//! whose numbers are equal are then compared byte by byte as whole lines (sort's last-resort
//! comparison; dib-run-parts does not pass `-s`). So `2-two 9-nine 10-ten 100-x`, with
//! `B`, `_x`, `a-nonum` (all 0) before `1-…` and after `-1-…`, and `01` before `1`.
//!
//! dib-run-parts sets `LANG=C`, not `LC_ALL=C`: a caller exporting `LC_ALL` (or
//! `LC_COLLATE`/`LC_NUMERIC`) would get that locale's tie-breaking instead. seed-config
//! always uses the C locale's order, the one dib-run-parts asks for.

use std::cmp::Ordering;

/// A leading number: negative, integer digits without leading zeros, fraction digits without
/// trailing zeros.
struct Number<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
}

fn leading_number(s: &[u8]) -> Number<'_> {
    let (negative, rest) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let int = &rest[..int_len];
    let frac = match rest.get(int_len) {
        Some(b'.') => {
            let after = &rest[int_len + 1..];
            &after[..after.iter().take_while(|b| b.is_ascii_digit()).count()]
        }
        _ => &[],
    };
    let int = &int[int.iter().take_while(|&&b| b == b'0').count()..];
    let frac = &frac[..frac.len() - frac.iter().rev().take_while(|&&b| b == b'0').count()];
    // "-0", "-" and "-x" are zero, not negative.
    let negative = negative && !(int.is_empty() && frac.is_empty());
    Number {
        negative,
        int,
        frac,
    }
}

/// Compare two magnitudes (digit strings without leading/trailing zeros).
fn magnitude(a: &Number, b: &Number) -> Ordering {
    a.int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(b.int))
        .then_with(|| a.frac.cmp(b.frac))
}

/// `sort -n`'s numeric comparison alone (equal numbers are `Equal`).
pub fn numeric_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let (x, y) = (leading_number(a), leading_number(b));
    match (x.negative, y.negative) {
        (false, false) => magnitude(&x, &y),
        (true, true) => magnitude(&y, &x),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// `LANG=C sort -n`'s order: by leading number, then by bytes.
pub fn cmp(a: &[u8], b: &[u8]) -> Ordering {
    numeric_cmp(a, b).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut v: Vec<&str> = names.to_vec();
        v.sort_by(|a, b| cmp(a.as_bytes(), b.as_bytes()));
        v.into_iter().map(String::from).collect()
    }

    /// The order `printf '%s\n' … | LC_ALL=C sort -n` printed (GNU coreutils 9.1).
    #[test]
    fn matches_gnu_sort_n() {
        let input = [
            "a", "-a", "-0", "0", "-1", "-", "00", "0a", "1", "01", "10", "2", "-b", "-00", "B",
            "_x", "9-d", "100-c", "10-b", "2-a", "a-nonum", "1.5", "1.50",
        ];
        assert_eq!(
            sorted(&input),
            [
                "-1", "-", "-0", "-00", "-a", "-b", "0", "00", "0a", "B", "_x", "a", "a-nonum",
                "01", "1", "1.5", "1.50", "2", "2-a", "9-d", "10", "10-b", "100-c"
            ]
        );
    }

    #[test]
    fn tripleo_post_configure_order() {
        assert_eq!(
            sorted(&["100-tuskar-api", "99-refresh-completed", "2-two", "9-nine"]),
            ["2-two", "9-nine", "99-refresh-completed", "100-tuskar-api"]
        );
        // Bigger than any machine integer: still by value.
        assert_eq!(
            sorted(&["100000000000000000000000-b", "99999999999999999999999-a"]),
            ["99999999999999999999999-a", "100000000000000000000000-b"]
        );
    }
}
