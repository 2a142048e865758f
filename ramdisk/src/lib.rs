//! What runs on a node:
//! - `agent`: the deploy agent in the ramdisk (binary `seed-agent`): network up, facts, report,
//!   heartbeat, commands;
//! - `config`: the config agent on deployed nodes (binary `seed-config`), with
//!   os-collect-config / os-refresh-config / os-apply-config semantics;
//! - `initramfs`: assembly of the deploy ramdisk (busybox, kernel modules, agent).
//! - `tls`: the agents' HTTPS to the seed, pinned to its CA by the fingerprint they are given.

pub mod agent;
pub mod config;
pub mod initramfs;
pub mod tls;
