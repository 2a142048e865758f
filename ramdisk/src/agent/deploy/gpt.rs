//! A GPT writer (UEFI spec 2.10, §5.3): protective MBR carrying boot code, primary header and
//! 128-entry array at LBA 1–33, their backup at the end of the disk.
//!
//! Hand-written instead of the `gpt` crate on purpose: that crate draws a v4 UUID from the
//! blocking `getrandom` inside `create_from_device`/`add_partition_at`, and in a freshly booted
//! VM without a hardware RNG the kernel's CRNG takes minutes to initialize (measured: 127 s under
//! TCG). Here every GUID comes from the caller, and the format is small: two headers, one array,
//! two CRC32s.

use super::choose::{Part, Role, SECTOR};

/// Entries in the array (the minimum the spec allows: 16 KiB).
pub const ENTRIES: usize = 128;
const ENTRY_SIZE: usize = 128;
/// Sectors of the array.
const ARRAY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

/// Partition type GUIDs.
pub const TYPE_BIOS_BOOT: uuid::Uuid = uuid::uuid!("21686148-6449-6e6f-744e-656564454649");
pub const TYPE_ESP: uuid::Uuid = uuid::uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
pub const TYPE_LINUX_FS: uuid::Uuid = uuid::uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4");
/// Attribute bit 2: legacy BIOS bootable (what `gptmbr.bin` looks for).
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

fn crc32(b: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(b)
}

/// The type and attributes of a role.
pub fn type_of(role: Role) -> (uuid::Uuid, u64) {
    match role {
        Role::BiosBoot => (TYPE_BIOS_BOOT, 0),
        Role::Esp => (TYPE_ESP, 0),
        // gptmbr.bin chains to the partition with this attribute: extlinux's, on the root.
        Role::Root => (TYPE_LINUX_FS, ATTR_LEGACY_BIOS_BOOTABLE),
        Role::State => (TYPE_LINUX_FS, 0),
    }
}

/// The bytes to write: `(byte offset, data)` for the start and the end of the disk.
#[derive(Debug, Clone)]
pub struct Tables {
    /// LBA 0–33: protective MBR, primary header, array.
    pub head: Vec<u8>,
    /// The last 33 sectors: array copy, backup header.
    pub tail: Vec<u8>,
    pub tail_offset: u64,
}

/// Lay out the tables for a disk of `disk_bytes`. `part_guids[i]` is the unique GUID of
/// `parts[i]`; `bootcode` goes in the MBR's first 440 bytes.
pub fn tables(
    disk_bytes: u64,
    disk_guid: uuid::Uuid,
    parts: &[Part],
    part_guids: &[uuid::Uuid],
    bootcode: &[u8; 440],
) -> Tables {
    assert_eq!(parts.len(), part_guids.len());
    let total = disk_bytes / SECTOR;
    let last = total - 1;
    let mut array = vec![0u8; ENTRIES * ENTRY_SIZE];
    for (p, guid) in parts.iter().zip(part_guids) {
        let (ty, attrs) = type_of(p.role);
        let e = &mut array[(p.number as usize - 1) * ENTRY_SIZE..][..ENTRY_SIZE];
        e[0..16].copy_from_slice(&ty.to_bytes_le());
        e[16..32].copy_from_slice(&guid.to_bytes_le());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&(p.first_lba + p.sectors - 1).to_le_bytes());
        e[48..56].copy_from_slice(&attrs.to_le_bytes());
        for (i, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_crc = crc32(&array);
    let header = |my_lba: u64, alt_lba: u64, array_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(last - 1 - ARRAY_SECTORS).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    let mut mbr = vec![0u8; SECTOR as usize];
    mbr[..440].copy_from_slice(bootcode);
    // One partition of type 0xEE covering the disk (capped at 2^32-1 sectors).
    let pe = &mut mbr[446..462];
    pe[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    pe[4] = 0xee;
    pe[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    pe[8..12].copy_from_slice(&1u32.to_le_bytes());
    pe[12..16].copy_from_slice(&(u32::try_from(last).unwrap_or(u32::MAX)).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let mut head = mbr;
    head.extend(header(1, last, 2));
    head.extend(&array);
    let mut tail = array;
    tail.extend(header(last, 1, last - ARRAY_SECTORS));
    Tables {
        head,
        tail,
        tail_offset: (last - ARRAY_SECTORS) * SECTOR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::deploy::choose;

    #[test]
    fn tables_are_self_consistent() {
        let size = 1u64 << 30;
        let parts = choose::plan(&images::Layout::default(), size).unwrap();
        let guids: Vec<_> = (0..parts.len() as u128)
            .map(|i| uuid::Uuid::from_u128(i + 1))
            .collect();
        let t = tables(
            size,
            uuid::Uuid::from_u128(99),
            &parts,
            &guids,
            &[0x90; 440],
        );
        assert_eq!(t.head.len(), 34 * 512);
        assert_eq!(t.tail.len(), 33 * 512);
        assert_eq!(t.tail_offset + t.tail.len() as u64, size);
        assert_eq!(&t.head[..440], &[0x90; 440][..]);
        assert_eq!(t.head[450], 0xee);
        let h = &t.head[512..1024];
        assert_eq!(&h[..8], b"EFI PART");
        // Header CRC over the 92 bytes with the CRC field zeroed.
        let mut z = h[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(crc32(&z).to_le_bytes(), h[16..20]);
        let array = &t.head[1024..];
        assert_eq!(crc32(array).to_le_bytes(), h[88..92]);
        assert_eq!(&t.tail[..ENTRIES * ENTRY_SIZE], array);
        // The root entry: type, range, attribute, name.
        let e = &array[2 * 128..3 * 128];
        assert_eq!(&e[..16], &TYPE_LINUX_FS.to_bytes_le());
        assert_eq!(u64::from_le_bytes(e[32..40].try_into().unwrap()), 66 * 2048);
        assert_eq!(u64::from_le_bytes(e[48..56].try_into().unwrap()), 4);
        let name: Vec<u16> = e[56..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        assert_eq!(String::from_utf16(&name).unwrap(), "seed-root");
        // The backup header points back at the primary and at its own array.
        let b = &t.tail[ENTRIES * ENTRY_SIZE..];
        let lba = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let last = size / 512 - 1;
        assert_eq!((lba(24), lba(32), lba(72)), (last, 1, last - 32));
    }
}
