//! What runs on a node: the deploy agent (`agent`, binary `seed-agent`), and the initramfs
//! assembly that packs it with busybox and kernel modules (`initramfs`).

pub mod agent;
pub mod initramfs;
