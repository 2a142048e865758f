//! `seed lab up --appliance-config FILE [--appliance-nodes FILE]`: the seed machine boots a copy
//! of its medium whose `SEEDCFG` partition holds the operator's `seed.toml` (and `nodes.yaml`),
//! as a person edits the stick from another computer before the first boot. Both files are
//! checked first, with the appliance's own parsers: a mistake is refused here, at its line,
//! before any machine starts.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The label `cargo xtask appliance` gives the configuration partition.
const LABEL: &str = "SEEDCFG";

/// Check `config` (and `nodes`), copy `medium` to `dir` and write them into the copy's
/// `SEEDCFG`; the copy's path.
pub fn configured_medium(
    medium: &Path,
    dir: &Path,
    config: &Path,
    nodes: Option<&Path>,
) -> Result<PathBuf> {
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("--appliance-config: reading {}", config.display()))?;
    crate::cli::appliance::config::parse(&config.display().to_string(), &text)
        .map_err(|e| anyhow::anyhow!("--appliance-config: {e}"))?;
    files.push(("seed.toml", text.into_bytes()));
    if let Some(n) = nodes {
        let text = std::fs::read_to_string(n)
            .with_context(|| format!("--appliance-nodes: reading {}", n.display()))?;
        let format = crate::inventory::Format::from_path(n);
        crate::inventory::parse_instackenv(&text, format, &[], 0)
            .map_err(|e| anyhow::anyhow!("--appliance-nodes {}: {e}", n.display()))?;
        files.push(("nodes.yaml", text.into_bytes()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = medium
        .file_name()
        .with_context(|| format!("{} is not a file", medium.display()))?;
    let copy = dir.join(name);
    std::fs::copy(medium, &copy)
        .with_context(|| format!("copying {} to {}", medium.display(), copy.display()))?;
    write(&copy, &files).with_context(|| format!("configuring {}", copy.display()))?;
    Ok(copy)
}

/// Write `files` into the FAT partition labelled `SEEDCFG` of the raw image `image` (the
/// hybrid ISO or the disk image: both carry it in their MBR), replacing what is there.
pub fn write(image: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr)
        .with_context(|| format!("reading {}'s partition table", image.display()))?;
    if mbr[510..512] != [0x55, 0xaa] {
        bail!(
            "{} has no MBR partition table (qcow2?): give a raw image or the ISO",
            image.display()
        );
    }
    for (start, len) in partitions(&mbr) {
        let slice = fscommon::StreamSlice::new(&mut f, start, start + len)?;
        let Ok(fs) = fatfs::FileSystem::new(slice, fatfs::FsOptions::new()) else {
            continue;
        };
        if fs.volume_label().trim() != LABEL {
            continue;
        }
        {
            let root = fs.root_dir();
            for (name, bytes) in files {
                let mut out = root.create_file(name)?;
                out.truncate()?;
                out.write_all(bytes)?;
                out.flush()?;
            }
        }
        fs.unmount()?;
        f.flush()?;
        return Ok(());
    }
    bail!("{} has no {LABEL} partition", image.display())
}

/// The (byte offset, byte length) of each MBR partition entry in use.
fn partitions(mbr: &[u8; 512]) -> Vec<(u64, u64)> {
    (0..4)
        .filter_map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            let start = u64::from(u32::from_le_bytes(e[8..12].try_into().ok()?));
            let size = u64::from(u32::from_le_bytes(e[12..16].try_into().ok()?));
            (size > 0 && e[4] != 0).then_some((start * 512, size * 512))
        })
        .collect()
}

/// What `image`'s `SEEDCFG` partition holds as `name` (`None` if it has no such file).
pub fn read(image: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut f =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr)?;
    for (start, len) in partitions(&mbr) {
        f.seek(SeekFrom::Start(0))?;
        let slice = fscommon::StreamSlice::new(&mut f, start, start + len)?;
        let Ok(fs) = fatfs::FileSystem::new(slice, fatfs::FsOptions::new()) else {
            continue;
        };
        if fs.volume_label().trim() != LABEL {
            continue;
        }
        let Ok(mut file) = fs.root_dir().open_file(name) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        file.read_to_end(&mut out)?;
        return Ok(Some(out));
    }
    bail!("{} has no {LABEL} partition", image.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with an MBR whose partition 2 is a FAT volume labelled `label`, after a
    /// partition 1 that is not FAT.
    fn image(dir: &Path, label: &str) -> PathBuf {
        let path = dir.join("medium.iso");
        let mut img = vec![0u8; 6 << 20];
        let fat_start = 2u64 << 20;
        let mut fat = std::io::Cursor::new(vec![0u8; 4 << 20]);
        let mut padded = [b' '; 11];
        padded[..label.len()].copy_from_slice(label.as_bytes());
        fatfs::format_volume(
            &mut fat,
            fatfs::FormatVolumeOptions::new().volume_label(padded),
        )
        .unwrap();
        {
            let fs = fatfs::FileSystem::new(&mut fat, fatfs::FsOptions::new()).unwrap();
            let mut f = fs.root_dir().create_file("seed.toml").unwrap();
            f.write_all(b"# shipped\n").unwrap();
            drop(f);
            fs.unmount().unwrap();
        }
        img[fat_start as usize..].copy_from_slice(fat.get_ref());
        let entry = |i: usize, start: u64, sectors: u64, kind: u8, img: &mut Vec<u8>| {
            let e = &mut img[446 + 16 * i..446 + 16 * (i + 1)];
            e[4] = kind;
            e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
        };
        entry(0, 2048, 2048, 0x83, &mut img);
        entry(1, fat_start / 512, 8192, 0x0c, &mut img);
        img[510] = 0x55;
        img[511] = 0xaa;
        std::fs::write(&path, img).unwrap();
        path
    }

    #[test]
    fn the_copy_carries_the_config_and_the_medium_is_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let medium = image(tmp.path(), LABEL);
        let config = tmp.path().join("ha.toml");
        let toml = "[provisioning]\naddress = \"10.80.0.2/24\"\n[dhcp]\npool_start = \"10.80.0.200\"\npool_end = \"10.80.0.250\"\n[api]\ntoken = \"lab-operator-token\"\n[ha]\nenabled = true\nfloating_address = \"10.80.0.1/24\"\n";
        std::fs::write(&config, toml).unwrap();
        let nodes = tmp.path().join("nodes.yaml");
        std::fs::write(&nodes, "nodes:\n  - name: node1\n    mac: [\"52:54:00:00:00:01\"]\n    pm_type: ipmi\n    pm_addr: 10.80.0.3\n    pm_port: 6231\n    pm_user: admin\n    pm_password: password\n").unwrap();
        let out = tmp.path().join("lab");
        let copy = configured_medium(&medium, &out, &config, Some(&nodes)).unwrap();
        assert_eq!(copy, out.join("medium.iso"));
        assert_eq!(read(&copy, "seed.toml").unwrap().unwrap(), toml.as_bytes());
        assert!(read(&copy, "nodes.yaml")
            .unwrap()
            .unwrap()
            .starts_with(b"nodes:"));
        assert_eq!(
            read(&medium, "seed.toml").unwrap().unwrap(),
            b"# shipped\n",
            "the built medium is left as built"
        );
    }

    #[test]
    fn a_bad_config_is_refused_at_its_line_before_anything_is_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let medium = image(tmp.path(), LABEL);
        let config = tmp.path().join("ha.toml");
        std::fs::write(
            &config,
            "[provisioning]\naddress = \"10.80.0.2/24\"\n[ha]\nenabled = true\nfloating_address = \"10.99.0.1/24\"\n",
        )
        .unwrap();
        let out = tmp.path().join("lab");
        let e = configured_medium(&medium, &out, &config, None).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("ha.toml:5:") && text.contains("floating_address"),
            "{text}"
        );
        assert!(!out.exists(), "nothing copied");
    }

    #[test]
    fn an_image_without_seedcfg_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let medium = image(tmp.path(), "OTHER");
        let e = write(&medium, &[("seed.toml", b"x".to_vec())]).unwrap_err();
        assert!(format!("{e:#}").contains("no SEEDCFG partition"), "{e:#}");
        std::fs::write(&medium, vec![0u8; 1024]).unwrap();
        let e = write(&medium, &[("seed.toml", b"x".to_vec())]).unwrap_err();
        assert!(format!("{e:#}").contains("no MBR"), "{e:#}");
    }
}
