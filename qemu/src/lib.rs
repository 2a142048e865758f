//! The virtual datacenter: QEMU nodes on a private wire, virtual BMCs speaking IPMI, and labs
//! that tie them together for tests, developers and users.

pub mod ipmi;
