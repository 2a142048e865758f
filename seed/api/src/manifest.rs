//! The image manifest: what a golden image is, as the builder writes it, the store keeps it,
//! the seed serves it and the deploy agent reads it. JSON on disk (`manifest.json` beside the
//! stream) and on the wire (inside the agent's deploy command).

use crate::Secret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// GPT partition names (and filesystem labels) the deploy writes; the image's initrd and fstab
/// may rely on them.
pub const PART_BIOS: &str = "seed-bios";
pub const PART_ESP: &str = "seed-esp";
pub const PART_ROOT: &str = "seed-root";
pub const PART_STATE: &str = "seed-state";

/// Where the state partition is mounted in a deployed image, and the identity file on it
/// (JSON [`Identity`]).
pub const STATE_MOUNT: &str = "/var/lib/seed";
pub const IDENTITY_FILE: &str = "identity.json";

/// A golden image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    /// `tiny`, `debian` …: the name images are deployed by.
    pub name: String,
    /// Free-form version of the image (e.g. the workspace version plus a build counter).
    pub version: String,
    /// The root filesystem as one stream.
    pub stream: Stream,
    /// How the deployed disk boots.
    pub boot: Boot,
    /// The smallest disk the layout fits on, in MiB.
    pub min_disk_mib: u64,
    pub layout: Layout,
    /// The elements it was built from, in order (informational).
    #[serde(default)]
    pub elements: Vec<String>,
}

/// The root filesystem stream: a POSIX (ustar/pax) tar, zstd-compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stream {
    /// File name beside the manifest (`rootfs.tar.zst`).
    pub file: String,
    /// sha256 of the compressed stream, lowercase hex: verified by the store when loading and
    /// serving, and by the agent while writing.
    pub sha256: String,
    /// Size of the compressed stream in bytes.
    pub size: u64,
    /// Sum of the file sizes inside (for progress and the root partition's minimum size).
    pub unpacked_size: u64,
}

/// Boot files inside the root filesystem and the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Boot {
    /// Path of the kernel inside the root filesystem, relative (`boot/vmlinuz`).
    pub kernel: String,
    /// Path of the initrd inside the root filesystem, if the image has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line without `root=`: the deploy appends `root=UUID=<root fs uuid> ro`.
    pub cmdline: String,
}

/// The partition layout the deploy writes (GPT, in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Layout {
    /// BIOS boot partition (for BIOS machines), MiB; 0 = none.
    pub bios_boot_mib: u64,
    /// EFI system partition (vfat), MiB; 0 = none. Kernel and initrd are copied there for UEFI.
    pub esp_mib: u64,
    /// Root filesystem (ext4) in MiB, or `None` for what is left after the state partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_mib: Option<u64>,
    /// State partition (ext4) for configuration and persistent data, MiB (last partition).
    pub state_mib: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            bios_boot_mib: 1,
            esp_mib: 64,
            root_mib: None,
            state_mib: 64,
        }
    }
}

/// What the deploy writes to `<state partition>/identity.json`: who the node is and how it
/// reaches the seed. The image's first-boot service reads it to say "booted"; the config agent
/// reads it to fetch its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    /// The node's name at the seed.
    pub node: String,
    /// The seed's base URL (`http://10.80.0.1:8080`).
    pub seed_url: String,
    /// The node's own credential (`Authorization: Bearer …` on `/v1/node/…`; `***` in
    /// `Debug`).
    #[schema(value_type = String)]
    pub credential: Secret,
    /// The image deployed (name@sha256).
    pub image: String,
    /// With an `https://` `seed_url`: the SHA-256 (hex) of the seed's CA certificate, the only
    /// one the node trusts for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_ca: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small manifest for the crate's tests.
    pub(crate) fn tiny() -> Manifest {
        Manifest {
            name: "tiny".into(),
            version: "0.1.0".into(),
            stream: Stream {
                file: "rootfs.tar.zst".into(),
                sha256: "00".repeat(32),
                size: 10,
                unpacked_size: 20,
            },
            boot: Boot {
                kernel: "boot/vmlinuz".into(),
                initrd: Some("boot/initrd.img".into()),
                cmdline: "console=ttyS0".into(),
            },
            min_disk_mib: 512,
            layout: Layout::default(),
            elements: vec!["busybox-base".into()],
        }
    }

    #[test]
    fn manifest_round_trips_as_json() {
        let m = tiny();
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&j).unwrap(), m);
    }

    #[test]
    fn an_identity_hides_its_credential_but_stores_it_plain() {
        let id = Identity {
            node: "node1".into(),
            seed_url: "http://s:8080".into(),
            credential: "s3cret".into(),
            image: "tiny@00".into(),
            seed_ca: None,
        };
        assert!(!format!("{id:?}").contains("s3cret"), "{id:?}");
        let j = serde_json::to_value(&id).unwrap();
        assert_eq!(j["credential"], "s3cret");
        assert_eq!(serde_json::from_value::<Identity>(j).unwrap(), id);
    }
}
