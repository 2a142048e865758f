//! Hardware facts, read from `/proc` and `/sys` under a root directory (`/` on a node; a fake
//! tree in tests): CPUs, RAM, disks with size/model/serial, NICs with MAC and link, DMI identity,
//! and the boot mode ([`api::facts`], the report's types, re-exported here).

pub use api::facts::{BootMode, Disk, Dmi, Facts, Nic};
use std::path::Path;

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Collect the facts of the machine whose `/proc` and `/sys` are under `root`.
pub fn collect(root: &Path) -> Facts {
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u32;
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    Facts {
        cpus,
        cpu_model,
        memory_mib: memory_mib(root),
        disks: disks(root),
        nics: nics(root),
        dmi: Dmi {
            vendor: read_trim(&root.join("sys/class/dmi/id/sys_vendor")),
            product: read_trim(&root.join("sys/class/dmi/id/product_name")),
            serial: read_trim(&root.join("sys/class/dmi/id/product_serial")),
            uuid: read_trim(&root.join("sys/class/dmi/id/product_uuid")),
        },
        boot_mode: if root.join("sys/firmware/efi").exists() {
            BootMode::Uefi
        } else {
            BootMode::Bios
        },
    }
}

fn memory_mib(root: &Path) -> u64 {
    let mem = root.join("sys/devices/system/memory");
    let block = u64::from_str_radix(&read_trim(&mem.join("block_size_bytes")), 16).unwrap_or(0);
    let online = sorted_entries(&mem)
        .iter()
        .filter(|n| n.starts_with("memory"))
        .filter(|n| read_trim(&mem.join(n).join("online")) == "1")
        .count() as u64;
    if block > 0 && online > 0 {
        return block * online / (1024 * 1024);
    }
    // No memory blocks (hot-plug off): fall back to MemTotal.
    let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn disks(root: &Path) -> Vec<Disk> {
    let block = root.join("sys/block");
    sorted_entries(&block)
        .into_iter()
        .filter(|n| {
            !["loop", "ram", "zram", "dm-", "sr", "fd", "md"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .map(|name| {
            let d = block.join(&name);
            let sectors: u64 = read_trim(&d.join("size")).parse().unwrap_or(0);
            let mut serial = read_trim(&d.join("device/serial"));
            if serial.is_empty() {
                serial = read_trim(&d.join("serial"));
            }
            Disk {
                size_bytes: sectors * 512,
                model: read_trim(&d.join("device/model")),
                serial,
                rotational: read_trim(&d.join("queue/rotational")) == "1",
                name,
            }
        })
        .collect()
}

fn nics(root: &Path) -> Vec<Nic> {
    let net = root.join("sys/class/net");
    sorted_entries(&net)
        .into_iter()
        .filter(|n| n != "lo")
        .filter(|n| net.join(n).join("device").exists())
        .map(|name| {
            let d = net.join(&name);
            let driver = std::fs::read_link(d.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default();
            Nic {
                mac: read_trim(&d.join("address")),
                link: read_trim(&d.join("carrier")) == "1",
                driver,
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn reads_a_fake_machine() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(r, "proc/cpuinfo", "processor\t: 0\nmodel name\t: QEMU Virtual CPU\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU\n");
        put(r, "proc/meminfo", "MemTotal:        480000 kB\n");
        put(r, "sys/devices/system/memory/block_size_bytes", "8000000\n");
        for i in 0..4 {
            put(
                r,
                &format!("sys/devices/system/memory/memory{i}/online"),
                "1\n",
            );
        }
        put(r, "sys/block/vda/size", "8388608\n");
        put(r, "sys/block/vda/serial", "SEED-DISK-1\n");
        put(r, "sys/block/vda/queue/rotational", "1\n");
        put(r, "sys/block/loop0/size", "0\n");
        put(r, "sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        put(r, "sys/class/net/eth0/carrier", "1\n");
        std::fs::create_dir_all(r.join("sys/class/net/eth0/device")).unwrap();
        put(r, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        put(r, "sys/class/dmi/id/sys_vendor", "QEMU\n");
        put(r, "sys/class/dmi/id/product_uuid", "aaaa-bbbb\n");
        let f = collect(r);
        assert_eq!(f.cpus, 2);
        assert_eq!(f.cpu_model, "QEMU Virtual CPU");
        assert_eq!(f.memory_mib, 512, "4 blocks of 128 MiB");
        assert_eq!(f.disks.len(), 1);
        assert_eq!(f.disks[0].size_bytes, 4 << 30);
        assert_eq!(f.disks[0].serial, "SEED-DISK-1");
        assert!(f.disks[0].rotational);
        assert_eq!(f.nics.len(), 1);
        assert_eq!(f.nics[0].mac, "52:54:00:12:34:56");
        assert!(f.nics[0].link);
        assert_eq!(f.dmi.vendor, "QEMU");
        assert_eq!(f.boot_mode, BootMode::Bios);
        put(r, "sys/firmware/efi/x", "");
        assert_eq!(collect(r).boot_mode, BootMode::Uefi);
    }
}
