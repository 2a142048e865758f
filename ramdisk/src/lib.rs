//! What runs on a node: the deploy agent, the config agent (collect / refresh / apply) and
//! initramfs assembly.
