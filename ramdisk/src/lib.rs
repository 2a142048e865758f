//! What runs on a node:
//! - `agent`: the deploy agent in the ramdisk (binary `seed-agent`): network up, facts, report,
//!   heartbeat, commands;
//! - `config`: the config agent on deployed nodes (binary `seed-config`), with
//!   os-collect-config / os-refresh-config / os-apply-config semantics;
//! - `initramfs`: assembly of the deploy ramdisk (busybox, kernel modules, agent).

pub mod agent;
pub mod config;
pub mod initramfs;
