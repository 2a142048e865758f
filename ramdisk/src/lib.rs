//! What runs on a node: the deploy agent, the config agent (collect / refresh / apply) and
//! initramfs assembly.
//!
//! `config` is the config agent (os-apply-config / os-refresh-config semantics). The deploy
//! agent (`deploy`) and initramfs assembly come beside it later.

pub mod config;
