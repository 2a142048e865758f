//! `seed image list|show|import|delete`: the seed's image store (content-addressed, verified on
//! import), opened directly from its directory like `seed node` opens the node store. `list`
//! and `show` read the running daemon's store through its API instead when one is named
//! (`--api`, `SEED_API`) or answers on 127.0.0.1:6385 and no `--dir` was given, so beside a
//! running lab they show the images its deploys use.

use super::client::{self, Client};
use crate::daemon::api::image_view;
use anyhow::Context;
use api::image::ImageView;
use images::ImageStore;
use std::io::Write;
use std::path::{Path, PathBuf};

/// List, show, import and delete golden images in the seed's image store.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image store directory (the daemon's images dir)
    /// [default: the node store's directory + /images, i.e.
    /// ${XDG_STATE_HOME:-$HOME/.local/state}/seed/images].
    #[arg(long, env = "SEED_IMAGES_DIR", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The daemon's API, for `list` and `show` [default: 127.0.0.1:6385 (https with --ca)
    /// when it answers and no --dir is given; else the store directory is opened].
    #[arg(long, env = "SEED_API", global = true, value_name = "URL")]
    pub api: Option<String>,
    /// The API's bearer token.
    #[arg(long, env = "SEED_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<api::Secret>,
    /// The CA certificate (PEM) the daemon's HTTPS must chain to (`seed ca export`).
    #[arg(long, env = "SEED_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// One line per image: name, version, stream size, minimum disk, sha256.
    List,
    /// One image as a person reads it: version, stream, boot, layout, elements.
    Show {
        /// The image's name.
        name: String,
        /// Re-hash the stream against the manifest too.
        #[arg(long)]
        verify: bool,
    },
    /// Import a built image (its manifest.json, or the directory holding it, e.g.
    /// target/images/tiny): size and sha256 are checked before anything is stored.
    Import {
        /// manifest.json or its directory.
        path: PathBuf,
    },
    /// Remove an image's name (and its stream if no other name uses it).
    Delete {
        /// The image's name.
        name: String,
    },
}

fn default_dir() -> anyhow::Result<PathBuf> {
    let store = super::node::default_store_path()?;
    Ok(store
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("images"))
}

/// Run `seed image …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out = &mut std::io::stdout().lock();
    if matches!(args.command, ImageCommand::List | ImageCommand::Show { .. }) {
        let tls = args.ca.is_some();
        if let Some(url) = client::daemon_url(args.api.as_deref(), args.dir.is_some(), tls) {
            let c = Client::new(
                &url,
                args.token.as_ref().map(api::Secret::expose),
                args.ca.as_deref(),
            )?;
            return run_api(&c, args.command, out);
        }
    }
    let dir = match args.dir {
        Some(d) => d,
        None => default_dir()?,
    };
    let store =
        ImageStore::open(&dir).with_context(|| format!("opening image store {}", dir.display()))?;
    run_with(&store, args.command, out)
}

/// `list` and `show` from the daemon's image store, through its API.
fn run_api(c: &Client, cmd: ImageCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::List => {
            let all: Vec<ImageView> = c.get("/v1/images")?;
            if all.is_empty() {
                writeln!(out, "no images in the seed at {}", c.base())?;
            }
            list(&all, out)
        }
        ImageCommand::Show { name, verify } => {
            let query = if verify { "?verify=true" } else { "" };
            let img: ImageView = c
                .get(&format!("/v1/images/{name}{query}"))
                .with_context(|| format!("image {name}"))?;
            show(&img, out)
        }
        ImageCommand::Import { .. } | ImageCommand::Delete { .. } => {
            unreachable!("import and delete open the store directory")
        }
    }
}

/// One line per image.
fn list(all: &[ImageView], out: &mut dyn Write) -> anyhow::Result<()> {
    for img in all {
        let m = &img.manifest;
        writeln!(
            out,
            "{:<16} {:<10} {:>10} min disk {:>6} MiB  sha256 {}",
            m.name,
            m.version,
            human(m.stream.size),
            m.min_disk_mib,
            short(&m.stream.sha256)
        )?;
    }
    Ok(())
}

fn run_with(store: &ImageStore, cmd: ImageCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::List => {
            let all = store.list().context("listing images")?;
            if all.is_empty() {
                writeln!(out, "no images in {}", store.dir().display())?;
            }
            let all: Vec<ImageView> = all.into_iter().map(|i| image_view(i, false)).collect();
            list(&all, out)?;
        }
        ImageCommand::Show { name, verify } => {
            let img = if verify {
                store.verify(&name)
            } else {
                store.get(&name)
            }
            .with_context(|| format!("image {name}"))?;
            show(&image_view(img, verify), out)?;
        }
        ImageCommand::Import { path } => {
            let manifest = if path.is_dir() {
                path.join("manifest.json")
            } else {
                path.clone()
            };
            let img = store
                .import(&manifest)
                .with_context(|| format!("importing {}", manifest.display()))?;
            writeln!(
                out,
                "imported {} {} ({}, sha256 {})",
                img.manifest.name,
                img.manifest.version,
                human(img.manifest.stream.size),
                img.manifest.stream.sha256
            )?;
        }
        ImageCommand::Delete { name } => {
            store
                .delete(&name)
                .with_context(|| format!("deleting image {name}"))?;
            writeln!(out, "deleted {name}")?;
        }
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn show(img: &ImageView, out: &mut dyn Write) -> anyhow::Result<()> {
    let m = &img.manifest;
    let l = &m.layout;
    let mib = |v: u64| {
        if v == 0 {
            "none".to_string()
        } else {
            format!("{v} MiB")
        }
    };
    writeln!(out, "image:      {} {}", m.name, m.version)?;
    writeln!(out, "stream:     {} ({})", img.stream, img.relative)?;
    writeln!(
        out,
        "            {} compressed, {} unpacked",
        human(m.stream.size),
        human(m.stream.unpacked_size)
    )?;
    writeln!(
        out,
        "sha256:     {}{}",
        m.stream.sha256,
        if img.verified { " (verified)" } else { "" }
    )?;
    writeln!(out, "kernel:     /{}", m.boot.kernel)?;
    writeln!(
        out,
        "initrd:     {}",
        m.boot
            .initrd
            .as_deref()
            .map(|i| format!("/{i}"))
            .unwrap_or_else(|| "none".into())
    )?;
    writeln!(out, "cmdline:    {} root=UUID=<root> ro", m.boot.cmdline)?;
    writeln!(out, "min disk:   {} MiB", m.min_disk_mib)?;
    writeln!(
        out,
        "layout:     bios boot {}, esp {}, root {}, state {}",
        mib(l.bios_boot_mib),
        mib(l.esp_mib),
        l.root_mib
            .map(mib)
            .unwrap_or_else(|| "rest of the disk".into()),
        mib(l.state_mib)
    )?;
    writeln!(
        out,
        "elements:   {}",
        if m.elements.is_empty() {
            "-".to_string()
        } else {
            m.elements.join(", ")
        }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use images::{Boot, Layout, Manifest, Stream};
    use sha2::Digest;

    /// A source directory for images to import, and an empty store in its own directory (kept
    /// alive with the store).
    fn stores() -> (tempfile::TempDir, tempfile::TempDir, ImageStore) {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        (src, dir, store)
    }

    fn built(dir: &Path, body: &[u8]) -> PathBuf {
        std::fs::write(dir.join("rootfs.tar.zst"), body).unwrap();
        let m = Manifest {
            name: "tiny".into(),
            version: "0.1.0".into(),
            stream: Stream {
                file: "rootfs.tar.zst".into(),
                sha256: hex::encode(sha2::Sha256::digest(body)),
                size: body.len() as u64,
                unpacked_size: 3 << 20,
            },
            boot: Boot {
                kernel: "boot/vmlinuz".into(),
                initrd: Some("boot/initrd.img".into()),
                cmdline: "console=ttyS0".into(),
            },
            min_disk_mib: 200,
            layout: Layout::default(),
            elements: vec!["busybox-base".into(), "debian-kernel".into()],
        };
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        dir.to_path_buf()
    }

    fn run_str(store: &ImageStore, cmd: ImageCommand) -> anyhow::Result<String> {
        let mut out = Vec::new();
        run_with(store, cmd, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn import_list_show_delete() {
        let (src, _dir, store) = stores();
        let path = built(src.path(), b"a stream");
        let s = run_str(&store, ImageCommand::Import { path }).unwrap();
        assert!(s.starts_with("imported tiny 0.1.0"), "{s}");
        let s = run_str(&store, ImageCommand::List).unwrap();
        assert!(
            s.starts_with("tiny ") && s.contains("min disk    200 MiB"),
            "{s}"
        );
        let s = run_str(
            &store,
            ImageCommand::Show {
                name: "tiny".into(),
                verify: true,
            },
        )
        .unwrap();
        assert!(s.contains("(verified)"), "{s}");
        assert!(s.contains("initrd:     /boot/initrd.img"), "{s}");
        assert!(s.contains("root rest of the disk, state 64 MiB"), "{s}");
        assert!(s.contains("elements:   busybox-base, debian-kernel"), "{s}");
        run_str(
            &store,
            ImageCommand::Delete {
                name: "tiny".into(),
            },
        )
        .unwrap();
        let s = run_str(&store, ImageCommand::List).unwrap();
        assert!(s.starts_with("no images"), "{s}");
    }

    #[test]
    fn corrupt_import_is_refused_and_named() {
        let (src, _dir, store) = stores();
        let path = built(src.path(), b"good bytes");
        std::fs::write(src.path().join("rootfs.tar.zst"), b"evil bytes").unwrap();
        let e = run_str(&store, ImageCommand::Import { path }).unwrap_err();
        let chain = format!("{e:#}");
        assert!(chain.contains("has sha256"), "{chain}");
        assert!(store.list().unwrap().is_empty());
    }

    /// `seed image list|show` beside a running daemon read the daemon's image store, not a
    /// directory of their own.
    #[test]
    fn list_and_show_through_the_api() {
        use crate::daemon::{api::Api, test_support, Daemon};
        let (src, dir, store) = stores();
        store
            .import(&built(src.path(), b"a stream").join("manifest.json"))
            .unwrap();
        let d = Daemon::new(
            std::sync::Arc::new(crate::store::memory::MemStore::new()),
            test_support::settings(Default::default(), true),
        )
        .unwrap();
        assert!(d.set_images(store, "images"));
        let (addr, stop) = test_support::serve(Api::new(d, "tok"));
        let c = Client::new(&addr, Some("tok"), None).unwrap();
        let run = |cmd| {
            let mut out = Vec::new();
            run_api(&c, cmd, &mut out).map(|()| String::from_utf8(out).unwrap())
        };
        let s = run(ImageCommand::List).unwrap();
        assert!(
            s.starts_with("tiny ") && s.contains("min disk    200 MiB"),
            "{s}"
        );
        let s = run(ImageCommand::Show {
            name: "tiny".into(),
            verify: true,
        })
        .unwrap();
        assert!(s.contains("(verified)"), "{s}");
        assert!(s.contains(&dir.path().display().to_string()), "{s}");
        assert!(s.contains("elements:   busybox-base, debian-kernel"), "{s}");
        let e = run(ImageCommand::Show {
            name: "nope".into(),
            verify: false,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("404"), "{e:#}");
        // The rule `seed node list` uses: a named API wins, a named directory keeps it local.
        assert_eq!(
            client::daemon_url(Some(&addr), false, false).as_deref(),
            Some(format!("http://{addr}").as_str())
        );
        assert_eq!(client::daemon_url(None, true, false), None);
        stop.cancel();
    }
}
