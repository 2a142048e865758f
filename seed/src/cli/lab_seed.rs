//! `seed lab up --seed`: the lab with a seed daemon on its wire, its nodes enrolled.
//!
//! Writes `<lab>/seed/{nodes.yaml,seed.toml}`, imports the nodes into `<lab>/seed/seed.redb`
//! (once), and runs `seed daemon` as a child of the lab process (stopped with it). The daemon
//! joins the lab's multicast wire through its userspace stack as 10.80.0.1 and serves DHCP
//! (reservations .10+, discovery on), HTTP boot with the ramdisk, TFTP with iPXE's
//! `undionly.kpxe`/`snponly.efi` from the offline cache (for nodes with `--chain-tftp`), and the
//! API on 127.0.0.1. Its image store is `<lab>/seed/http/images` (served to the agents); the
//! golden images built under `target/images/<name>/` (`cargo xtask image build tiny`) are
//! imported at start, so `seed node deploy node1 --image tiny --wait` works right after
//! `seed node inspect`.

use anyhow::{Context, Result};
use qemu::spec::{LabFile, NodeSpec};
use qemu::wire::WireAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Options of the lab's seed.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Also run a seed daemon on the lab's wire with the nodes enrolled.
    #[arg(long)]
    pub seed: bool,
    /// Where the ramdisk is (`vmlinuz`, `initramfs.zst`, from `cargo xtask ramdisk`).
    #[arg(long, default_value = "target/ramdisk")]
    pub ramdisk: PathBuf,
    /// Built golden images to import (`<dir>/<name>/manifest.json`, from `cargo xtask image
    /// build NAME`).
    #[arg(long, default_value = "target/images")]
    pub images: PathBuf,
    /// Port of the seed's API on 127.0.0.1.
    #[arg(long, default_value_t = 6385)]
    pub api_port: u16,
    /// The API's bearer token.
    #[arg(long, default_value = "lab-seed-token")]
    pub token: String,
    /// Nodes (comma separated names) that take the TFTP chain: their iPXE ROM first loads
    /// `undionly.kpxe` (BIOS) / `snponly.efi` (UEFI) by TFTP. Applied when the nodes are
    /// enrolled, i.e. the first `--seed` run of a lab.
    #[arg(long, value_delimiter = ',')]
    pub chain_tftp: Vec<String>,
    /// A directory holding `undionly.kpxe` and `snponly.efi` (default: `/usr/lib/ipxe` if the
    /// ipxe package is installed, else the ipxe package of the offline cache, `cargo xtask fetch`).
    #[arg(long)]
    pub ipxe: Option<PathBuf>,
}

/// The lab's seed daemon; killed when dropped.
pub struct LabSeed {
    child: Child,
}

impl Drop for LabSeed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The iPXE boot files served by TFTP.
const IPXE_FILES: [&str; 2] = ["undionly.kpxe", "snponly.efi"];

/// The offline cache: [`crate::cache::dir`] (kept here for the callers that name it so).
pub use crate::cache::dir as cache_dir;

/// Where iPXE's boot files are: `--ipxe`, the installed ipxe package, or the cache's ipxe .deb
/// unpacked (once) under `dir`. `None` when there is none.
fn ipxe_source(dir: &Path, a: &SeedArgs) -> Result<Option<PathBuf>> {
    if let Some(d) = &a.ipxe {
        anyhow::ensure!(
            d.join(IPXE_FILES[0]).is_file(),
            "--ipxe {}: no {} there",
            d.display(),
            IPXE_FILES[0]
        );
        return Ok(Some(d.clone()));
    }
    let system = Path::new("/usr/lib/ipxe");
    if system.join(IPXE_FILES[0]).is_file() {
        return Ok(Some(system.into()));
    }
    let unpacked = dir.join("ipxe-package");
    let lib = unpacked.join("usr/lib/ipxe");
    if lib.join(IPXE_FILES[0]).is_file() {
        return Ok(Some(lib));
    }
    let debs = cache_dir().join("debs");
    let Some(deb) = std::fs::read_dir(&debs).ok().and_then(|rd| {
        rd.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ipxe_"))
        })
    }) else {
        return Ok(None);
    };
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .output()
        .context("running dpkg-deb")?;
    anyhow::ensure!(
        out.status.success(),
        "unpacking {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(Some(lib))
}

/// The nodes as an instackenv-style inventory for `seed node import`; `chain_tftp` names the
/// nodes that take the TFTP chain, `extra` is added to every node (e.g. a capability line).
pub fn instackenv(nodes: &[NodeSpec], chain_tftp: &[String], extra: &str) -> String {
    let mut s =
        String::from("# The lab's nodes, instackenv-style (written by seed lab up)\nnodes:\n");
    for n in nodes {
        s += &format!(
            "  - name: {}\n    mac: [{}]\n    pm_type: ipmi\n    pm_addr: {}\n    pm_port: {}\n    pm_user: {}\n    pm_password: {}\n",
            n.name,
            n.macs.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "),
            n.bmc.address,
            n.bmc.port,
            n.bmc.username,
            n.bmc.password
        );
        if chain_tftp.contains(&n.name) {
            s += "    boot_chain: tftp\n";
        }
        for line in extra.lines() {
            s += &format!("    {line}\n");
        }
    }
    s
}

/// [`instackenv`] with each node's BMC at its address on the lab's BMC network
/// (`nodes[].bmc.lan`, UDP 623), as a seed machine on that network enrolls them; nodes without
/// one keep 127.0.0.1.
pub fn instackenv_on_bmc_network(nodes: &[NodeSpec], chain_tftp: &[String], extra: &str) -> String {
    let on_lan: Vec<NodeSpec> = nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            if let Some(lan) = n.bmc.lan.clone() {
                n.bmc.address = lan.address;
                n.bmc.port = lan.port;
            }
            n
        })
        .collect();
    instackenv(&on_lan, chain_tftp, extra)
}

/// A seed daemon on a lab's wire: one configuration for `seed lab up --seed` and the QEMU tests,
/// so what the tests check is what a person runs. The daemon joins the wire as 10.80.0.1, gives
/// each of `nodes`' MACs a fixed address from 10.80.0.10 up (strangers get .200–.250), serves
/// HTTP boot from `<dir>/http` (the image store is `<dir>/http/images`), and TFTP from
/// `<dir>/tftp` when `tftp` is set.
#[derive(Debug, Clone)]
pub struct WireSeed {
    /// Holds `seed.redb`, `state/`, `http/` and `tftp/`.
    pub dir: PathBuf,
    /// The lab's wire.
    pub wire: WireAddr,
    /// The nodes given fixed addresses, in order.
    pub nodes: Vec<NodeSpec>,
    /// Holds the ramdisk's `vmlinuz` and `initramfs.zst`.
    pub ramdisk: PathBuf,
    /// The API's bearer token.
    pub token: String,
    /// The API's port on 127.0.0.1.
    pub api_port: u16,
    /// Serve `<dir>/tftp` (iPXE's boot files for nodes taking the TFTP chain).
    pub tftp: bool,
    /// Enroll unknown MACs that PXE-boot.
    pub discovery: bool,
    /// The agent's heartbeat period; `None`: the daemon's default.
    pub heartbeat_secs: Option<u64>,
    /// The DHCP lease time; `None`: the daemon's default.
    pub lease_secs: Option<u64>,
    /// Faults injected into the seed's wire (the fault campaign).
    pub wire_faults: Option<netboot::wire::WireFaults>,
    /// `[lifecycle]` inspect and deploy timeouts (s); `None`: the daemon's defaults.
    pub step_timeouts: Option<(u64, u64)>,
}

impl WireSeed {
    /// The lab's defaults: token `lab-seed-token`, API on 6385, no TFTP, discovery on.
    pub fn new(dir: &Path, wire: WireAddr, nodes: Vec<NodeSpec>, ramdisk: &Path) -> WireSeed {
        WireSeed {
            dir: dir.into(),
            wire,
            nodes,
            ramdisk: ramdisk.into(),
            token: "lab-seed-token".into(),
            api_port: 6385,
            tftp: false,
            discovery: true,
            heartbeat_secs: None,
            lease_secs: None,
            wire_faults: None,
            step_timeouts: None,
        }
    }

    /// The store file.
    pub fn store(&self) -> PathBuf {
        self.dir.join("seed.redb")
    }

    /// The image store (inside the HTTP root: the agents stream images from it).
    pub fn images(&self) -> PathBuf {
        self.dir.join("http").join("images")
    }

    /// Install iPXE's boot files from `src` (a directory holding `undionly.kpxe` and
    /// `snponly.efi`) into the TFTP root and the HTTP root, and serve TFTP. A NIC whose iPXE
    /// ROM misses DHCP (a busy wire drops frames: the lab's wire is a hub) falls back to the
    /// firmware's own PXE or HTTP boot, which then chainloads iPXE from here instead of
    /// stopping at "Nothing to boot".
    pub fn install_ipxe(&mut self, src: &Path) -> Result<()> {
        for root in [self.dir.join("tftp"), self.dir.join("http")] {
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
            for f in IPXE_FILES {
                let from = src.join(f);
                if from.is_file() {
                    std::fs::copy(&from, root.join(f))
                        .with_context(|| format!("installing {}", from.display()))?;
                }
            }
        }
        self.tftp = true;
        Ok(())
    }

    /// The daemon's `seed.toml`.
    pub fn config(&self) -> Result<String> {
        let mut c = format!(
            r#"# A seed on a lab's wire (written by seed lab up --seed, or a QEMU test)
store = {store:?}

[api]
token = "{token}"
listen = "127.0.0.1:{api_port}"
tls = "off"                     # the lab's API on loopback, plain HTTP for curl and the CLI

[ramdisk]
kernel = {kernel:?}
initrd = {initrd:?}

[images]
dir = {images:?}

[netboot]
server_ip = "10.80.0.1"
state_dir = {state:?}

[netboot.wire]
kind = "qemu-mcast"
group = "{group}"
port = {port}
pcap = true

[netboot.dhcp]
subnet = "10.80.0.0/24"
router = "10.80.0.1"
pool = {{ start = "10.80.0.200", end = "10.80.0.250" }}
discovery = {discovery}

[netboot.http]
root = {http:?}
port = 8080
"#,
            store = self.store(),
            token = self.token,
            api_port = self.api_port,
            kernel = self.ramdisk.join("vmlinuz"),
            initrd = self.ramdisk.join("initramfs.zst"),
            images = self.images(),
            state = self.dir.join("state"),
            group = self.wire.group,
            port = self.wire.port,
            discovery = self.discovery,
            http = self.dir.join("http"),
        );
        if let Some(secs) = self.lease_secs {
            c = c.replace(
                "router = \"10.80.0.1\"\n",
                &format!("router = \"10.80.0.1\"\nlease_time = {secs}\n"),
            );
        }
        if let Some(secs) = self.heartbeat_secs {
            c += &format!("\n[agent]\nheartbeat_secs = {secs}\n");
        }
        if self.tftp {
            c += &format!("\n[netboot.tftp]\nroot = {:?}\n", self.dir.join("tftp"));
        }
        if let Some((inspect, deploy)) = self.step_timeouts {
            c += &format!(
                "\n[lifecycle]\ninspect_timeout_secs = {inspect}\ndeploy_timeout_secs = {deploy}\n"
            );
        }
        if let Some(f) = self.wire_faults {
            c += &format!(
                "\n[netboot.wire.faults]\ndrop_pct = {}\ncorrupt_pct = {}\nseed = {}\n",
                f.drop_pct, f.corrupt_pct, f.seed
            );
        }
        let mut ip = 10;
        for n in &self.nodes {
            for mac in &n.macs {
                anyhow::ensure!(
                    ip < 200,
                    "more MACs than the lab's /24 has fixed addresses for"
                );
                c += &format!(
                    "\n[[netboot.nodes]]\nmac = \"{mac}\"\nip = \"10.80.0.{ip}\"\nhostname = \"{}\"\n",
                    n.name
                );
                ip += 1;
            }
        }
        Ok(c)
    }
}

/// Write the seed's files, enroll the nodes (first time only) and start the daemon.
pub fn start(lab_dir: &Path, file: &LabFile, a: &SeedArgs) -> Result<LabSeed> {
    let dir = lab_dir.join("seed");
    std::fs::create_dir_all(dir.join("http"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding the seed binary")?;
    for name in &a.chain_tftp {
        anyhow::ensure!(
            file.nodes.iter().any(|n| &n.name == name),
            "--chain-tftp {name}: the lab has no such node"
        );
    }
    let ramdisk = std::fs::canonicalize(&a.ramdisk).unwrap_or_else(|_| a.ramdisk.clone());
    let mut ws = WireSeed::new(&dir, file.wire, file.nodes.clone(), &ramdisk);
    ws.token = a.token.clone();
    ws.api_port = a.api_port;
    match ipxe_source(&dir, a)? {
        Some(src) => ws.install_ipxe(&src)?,
        None => anyhow::ensure!(
            a.chain_tftp.is_empty(),
            "--chain-tftp needs iPXE's undionly.kpxe: run `cargo xtask fetch` or pass --ipxe"
        ),
    }
    let inv = dir.join("nodes.yaml");
    std::fs::write(&inv, instackenv(&file.nodes, &a.chain_tftp, ""))?;
    let store = dir.join("seed.redb");
    if !store.exists() {
        let out = Command::new(&exe)
            .args(["node", "import"])
            .arg(&inv)
            .env("SEED_STORE", &store)
            // Offline into the store: never through a daemon the caller's SEED_API points at.
            .env_remove("SEED_API")
            .output()
            .context("running seed node import")?;
        anyhow::ensure!(
            out.status.success(),
            "enrolling the lab's nodes: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let cfg = dir.join("seed.toml");
    std::fs::write(&cfg, ws.config()?)?;
    let imported = import_images(&a.images, &ws.images())?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let mut child = Command::new(&exe)
        .args(["daemon", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting seed daemon")?;
    wait_for_api(&mut child, a.api_port, &dir.join("daemon.log"))?;
    println!(
        "seed daemon on the lab wire as 10.80.0.1 (log {}, capture {})",
        dir.join("daemon.log").display(),
        dir.join("state/wire.pcap").display()
    );
    println!(
        "  API: http://127.0.0.1:{} with token {:?}",
        a.api_port, a.token
    );
    println!(
        "  inspect: seed node inspect node1 --api http://127.0.0.1:{} --token {}",
        a.api_port, a.token
    );
    match imported.first() {
        Some(img) => println!(
            "  deploy:  seed node deploy node1 --image {img} --wait --api http://127.0.0.1:{} --token {}",
            a.api_port, a.token
        ),
        None => println!(
            "  deploy:  no image in {} (build one with `cargo xtask image build tiny`)",
            a.images.display()
        ),
    }
    Ok(LabSeed { child })
}

/// Import every `<from>/<name>/manifest.json` into the image store at `store`; returns the
/// names imported. A missing `from` is no error (no image built yet).
fn import_images(from: &Path, store: &Path) -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(vec![]);
    };
    let mut manifests: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("manifest.json"))
        .filter(|p| p.is_file())
        .collect();
    manifests.sort();
    if manifests.is_empty() {
        return Ok(vec![]);
    }
    let images = images::ImageStore::open(store)
        .with_context(|| format!("opening the image store {}", store.display()))?;
    let mut names = Vec::new();
    for m in manifests {
        let img = images
            .import(&m)
            .with_context(|| format!("importing {}", m.display()))?;
        println!(
            "image {} {} imported ({} bytes, sha256 {})",
            img.manifest.name,
            img.manifest.version,
            img.manifest.stream.size,
            img.manifest.stream.sha256
        );
        names.push(img.manifest.name);
    }
    // `tiny` first: it is the one the README deploys.
    names.sort_by_key(|n| (n != "tiny", n.clone()));
    Ok(names)
}

/// Wait until the daemon's API accepts connections, so that `lab up --detach` returns to a
/// seed that answers (the first `seed node inspect` after it used to be refused).
fn wait_for_api(child: &mut Child, port: u16, log: &Path) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("seed daemon exited ({status}):\n{text}");
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            anyhow::bail!(
                "seed daemon's API is not up on {addr} after 60 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bmc_network_inventory_names_each_bmc_at_its_lan_address() {
        let lab = qemu::Plan::new("inv", 2).lab_file();
        let text = instackenv_on_bmc_network(&lab.nodes, &[], "");
        assert!(
            text.contains("pm_addr: 10.81.0.11\n    pm_port: 623\n"),
            "{text}"
        );
        assert!(text.contains("pm_addr: 10.81.0.12\n"), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
        let local = instackenv(&lab.nodes, &[], "");
        assert!(
            local.contains("pm_addr: 127.0.0.1\n    pm_port: 6231\n"),
            "{local}"
        );
    }

    #[test]
    fn imports_built_images_and_tolerates_none() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("http/images");
        assert!(import_images(&t.path().join("absent"), &store)
            .unwrap()
            .is_empty());
        let built = t.path().join("built/tiny");
        std::fs::create_dir_all(&built).unwrap();
        let body = b"rootfs";
        std::fs::write(built.join("rootfs.tar.zst"), body).unwrap();
        let m = serde_json::json!({
            "name": "tiny", "version": "1",
            "stream": {"file": "rootfs.tar.zst", "size": body.len(), "unpacked_size": 0,
                       "sha256": "1d1f4e1e9ca0d27cebc2c3a38ac7d5b7b1b2b1c7d6a7f4d1e6f0c0a4a3d2c1b0"},
            "boot": {"kernel": "boot/vmlinuz", "cmdline": ""},
            "min_disk_mib": 64,
            "layout": {"bios_boot_mib": 1, "esp_mib": 64, "state_mib": 64}
        });
        std::fs::write(built.join("manifest.json"), m.to_string()).unwrap();
        // A wrong digest is refused, loudly.
        let e = import_images(&t.path().join("built"), &store).unwrap_err();
        assert!(format!("{e:#}").contains("sha256"), "{e:#}");
        let mut m = m;
        m["stream"]["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body)).into();
        std::fs::write(built.join("manifest.json"), m.to_string()).unwrap();
        assert_eq!(
            import_images(&t.path().join("built"), &store).unwrap(),
            vec!["tiny".to_string()]
        );
        assert!(images::ImageStore::open(&store)
            .unwrap()
            .verify("tiny")
            .is_ok());
    }
}
