//! One line for an error and its causes, shared by every crate that logs or reports errors
//! (std only, like the rest of this crate, so the ramdisk's static binaries can use it).

/// `e: its source: its source …`: an error and its whole chain of causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use std::io;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("reading the lease file")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_joins_every_cause() {
        let e = Outer(io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "reading the lease file: disk on fire");
        assert_eq!(error_chain(&e.0), "disk on fire");
    }
}
