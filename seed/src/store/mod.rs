//! The state store: one trait, an embedded implementation (one file) and, later, etcd.
