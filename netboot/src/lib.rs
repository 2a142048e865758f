//! Netboot services for the seed: DHCPv4 (authoritative and ProxyDHCP), TFTP, HTTP boot and
//! per-node iPXE scripts.
//!
//! Every protocol is split in two: a sans-IO core (`dhcp::engine`, `tftp::engine`) that takes
//! bytes and the current time and returns bytes to send, and a thin tokio transport at the edge
//! (`dhcp::udp`, `tftp::udp`, `http::server`). The cores never open sockets, read clocks or touch
//! the filesystem except through the narrow traits they are handed, so the same cores run on
//! kernel sockets and on the userspace wire (`wire`: smoltcp on a QEMU socket, a TAP or an
//! AF_PACKET device, chosen by the config's `[wire]` section).
//!
//! What a node boots is decided by a [`boot::BootPolicy`]: the standalone `seed netboot` uses the
//! static table from its config file; the seed daemon answers from each node's lifecycle state.

pub mod boot;
pub mod config;
pub mod dhcp;
pub mod http;
pub mod ipxe;
pub mod mac;
pub mod metrics;
pub mod server;
pub mod tftp;
pub mod wire;

pub use boot::{BootAction, BootPolicy};
pub use mac::MacAddr;
