//! The builder against a fake host: tree, manifest and reproducible stream, the Debian base,
//! clear errors for missing pieces, the minimum disk size.

use super::*;

/// A host over a temporary "cache": a fake kernel package and busybox.
struct FakeHost {
    root: PathBuf,
    initrds: usize,
}

impl FakeHost {
    fn new(root: &Path) -> FakeHost {
        let k = root.join("kernel");
        std::fs::create_dir_all(k.join("boot")).unwrap();
        std::fs::create_dir_all(k.join("lib/modules/6.1.0-test")).unwrap();
        std::fs::write(k.join("boot/vmlinuz-6.1.0-test"), b"kernel").unwrap();
        let b = root.join("busybox");
        std::fs::create_dir_all(b.join("bin")).unwrap();
        std::fs::write(b.join("bin/busybox"), b"busybox").unwrap();
        std::fs::write(b.join(".unpacked"), b"").unwrap();
        FakeHost {
            root: root.into(),
            initrds: 0,
        }
    }
}

impl Host for FakeHost {
    fn package(&mut self, name: &str) -> Result<PathBuf, HostError> {
        match name {
            "linux-image-*" => Ok(self.root.join("kernel")),
            "busybox-static" => Ok(self.root.join("busybox")),
            _ => Err(format!("{name} is not in the cache").into()),
        }
    }
    fn workspace_binary(&mut self, _: &str, bin: &str) -> Result<PathBuf, HostError> {
        let p = self.root.join(bin);
        std::fs::write(&p, b"ELF").unwrap();
        Ok(p)
    }
    fn busybox_applets(&mut self, _: &Path) -> Result<Vec<String>, HostError> {
        Ok(vec![
            "bin/sh".into(),
            "sbin/init".into(),
            "usr/bin/wget".into(),
        ])
    }
    fn boot_files(&mut self) -> Result<PathBuf, HostError> {
        let d = self.root.join("boot-files");
        std::fs::create_dir_all(d.join("ramdisk")).unwrap();
        std::fs::write(d.join("ramdisk/vmlinuz"), b"deploy kernel").unwrap();
        Ok(d)
    }
    fn initrd(&mut self, spec: &InitrdSpec) -> Result<Vec<u8>, HostError> {
        self.initrds += 1;
        assert!(spec.busybox.is_file(), "{}", spec.busybox.display());
        Ok([&b"initrd:"[..], &spec.init].concat())
    }
    fn debian_base(&mut self) -> Result<PathBuf, HostError> {
        // A base as mmdebstrap writes it: merged /usr, accounts with a system user.
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            if kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, path, std::str::from_utf8(data).unwrap())
                    .unwrap();
            } else {
                b.append_data(&mut h, path, data).unwrap();
            }
        };
        add("./etc/", tar::EntryType::Directory, 0o755, b"");
        add(
            "./etc/passwd",
            tar::EntryType::Regular,
            0o644,
            b"root:x:0:0:root:/root:/bin/bash\nsystemd-network:x:998:998::/:/usr/sbin/nologin\n",
        );
        add(
            "./etc/group",
            tar::EntryType::Regular,
            0o644,
            b"root:x:0:\nsystemd-network:x:998:\n",
        );
        add("./usr/bin/", tar::EntryType::Directory, 0o755, b"");
        add("./bin", tar::EntryType::Symlink, 0o777, b"usr/bin");
        add("./usr/bin/sh", tar::EntryType::Regular, 0o755, b"dash");
        let p = self.root.join("base.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        Ok(p)
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn elements(d: &Path) {
    write(
        d,
        "base/element.toml",
        "description = \"b\"\nbase = \"busybox\"\npackages = [\"busybox-static\"]\n",
    );
    write(
        d,
        "kernel/element.toml",
        "description = \"k\"\n[kernel]\npackage = \"linux-image-*\"\n\
         [initrd]\ninit = \"init\"\nmodules = [\"ext4\"]\n",
    );
    write(d, "kernel/init", "#!/bin/sh\n");
    write(
        d,
        "app/element.toml",
        "description = \"a\"\ndepends = [\"base\"]\noverlay = \"overlay\"\n\
         boot_files = \"/usr/share/seed\"\n\
         [modes]\n\"etc/app.conf\" = 0o600\n\
         [[binary]]\npackage = \"ramdisk\"\nbin = \"seed-config\"\ndest = \"/usr/bin/seed-config\"\n\
         [[user]]\nname = \"app\"\nuid = 1000\nhome = \"/home/app\"\ncreate_home = true\n\
         [[service]]\nname = \"hello\"\nexec = \"/usr/bin/hello\"\nkind = \"respawn\"\n\
         [[service]]\nname = \"first\"\nexec = \"/usr/lib/first\"\nkind = \"wait\"\n",
    );
    write(d, "app/overlay/etc/app.conf", "x=1\n");
}

fn image() -> ImageDef {
    element::parse_str(
        Path::new("t.toml"),
        "name = \"t\"\nversion = \"1.0\"\nelements = [\"kernel\", \"app\"]\n",
    )
    .unwrap()
}

/// A temporary directory with the test elements in its `elements/`.
fn with_elements() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let els = d.path().join("elements");
    elements(&els);
    (d, els)
}

#[test]
fn builds_tree_manifest_and_reproducible_stream() {
    let (d, els) = with_elements();
    let mut host = FakeHost::new(&d.path().join("cache"));
    let m1 = build(&image(), &els, &mut host, &d.path().join("out1")).unwrap();
    let m2 = build(&image(), &els, &mut host, &d.path().join("out2")).unwrap();
    assert_eq!(m1, m2);
    assert_eq!(m1.elements, ["kernel", "base", "app"]);
    assert_eq!(m1.boot.initrd.as_deref(), Some("boot/initrd.img"));
    assert_eq!(m1.boot.cmdline, "console=ttyS0");
    assert_eq!(host.initrds, 2);
    assert!(m1.min_disk_mib > Layout::default().esp_mib + Layout::default().state_mib);
    let on_disk: Manifest =
        serde_json::from_slice(&std::fs::read(d.path().join("out1/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, m1);

    // Read the stream back and look at what the elements put there.
    let files = read_stream(&d.path().join("out1/rootfs.tar.zst"));
    assert_eq!(files["etc/app.conf"].0, 0o600);
    assert!(
        !files.contains_key(".unpacked"),
        "host bookkeeping stays out"
    );
    assert_eq!(files["bin/sh"].2, "/bin/busybox");
    assert_eq!(files["boot/vmlinuz"].2, "kernel");
    assert_eq!(files["boot/initrd.img"].2, "initrd:#!/bin/sh\n");
    assert_eq!(files["usr/bin/seed-config"].0, 0o755);
    assert_eq!(
        files["usr/share/seed/ramdisk/vmlinuz"],
        (0o644, 0, "deploy kernel".into())
    );
    assert_eq!(files["home/app/"].1, 1000);
    assert!(files["etc/passwd"]
        .2
        .contains("app:x:1000:1000:app:/home/app:/bin/sh"));
    assert_eq!(files["etc/shadow"].0, 0o600);
    assert!(files["etc/seed-image"]
        .2
        .contains("SEED_IMAGE_VERSION='1.0'"));
    let tab = &files["etc/inittab"].2;
    let first = tab.find("/usr/lib/first").unwrap();
    let hello = tab.find("::respawn:/usr/bin/hello").unwrap();
    assert!(
        first < hello,
        "wait services come before respawn ones:\n{tab}"
    );
    assert!(files.contains_key("tmp/") && files["tmp/"].0 == 0o1777);
}

/// A built stream, path by path: (mode, uid, content of a file or target of a link).
fn read_stream(path: &Path) -> std::collections::BTreeMap<String, (u32, u64, String)> {
    let dec = zstd::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut ar = tar::Archive::new(dec);
    let mut files = std::collections::BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mode = e.header().mode().unwrap();
        let uid = e.header().uid().unwrap();
        let mut s = String::new();
        if e.header().entry_type().is_file() {
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        } else if let Some(l) = e.link_name().unwrap() {
            s = l.to_string_lossy().into_owned();
        }
        files.insert(p, (mode, uid, s));
    }
    files
}

#[test]
fn debian_base_keeps_its_accounts_and_gets_units_instead_of_inittab() {
    let (d, els) = with_elements();
    write(
        &els,
        "deb/element.toml",
        "description = \"d\"\nbase = \"debian\"\n",
    );
    // `app` depends on the busybox base: the Debian image lists its elements without it.
    write(
        &els,
        "app2/element.toml",
        "description = \"a\"\n[[user]]\nname = \"app\"\nuid = 1000\n\
         [[service]]\nname = \"hello\"\nexec = \"/usr/bin/hello\"\nkind = \"respawn\"\n",
    );
    let mut img = image();
    img.elements = vec!["deb".into(), "kernel".into(), "app2".into()];
    let mut host = FakeHost::new(&d.path().join("cache"));
    let m = build(&img, &els, &mut host, &d.path().join("out")).unwrap();
    assert_eq!(host.initrds, 1, "the initrd's busybox came from the cache");
    let files: std::collections::BTreeMap<String, String> =
        read_stream(&d.path().join("out/rootfs.tar.zst"))
            .into_iter()
            .map(|(p, (_, _, s))| (p, s))
            .collect();
    let passwd = &files["etc/passwd"];
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
        "{passwd}"
    );
    assert!(passwd.contains("systemd-network:x:998:"), "{passwd}");
    assert!(passwd.contains("app:x:1000:1000:"), "{passwd}");
    assert!(files["etc/group"].contains("systemd-network:x:998:"));
    assert!(files["etc/shadow"].contains("app:*:"));
    assert!(!files.contains_key("etc/inittab"), "no busybox init");
    assert!(files["etc/systemd/system/hello.service"].contains("Restart=always"));
    assert_eq!(
        files["etc/systemd/system/multi-user.target.wants/hello.service"],
        "/etc/systemd/system/hello.service"
    );
    assert_eq!(files["etc/machine-id"], "");
    assert_eq!(files["bin"], "usr/bin");
    assert_eq!(m.boot.initrd.as_deref(), Some("boot/initrd.img"));
}

#[test]
fn missing_pieces_are_clear_errors() {
    let (d, els) = with_elements();
    let mut host = FakeHost::new(&d.path().join("cache"));
    let mut img = image();
    img.elements = vec!["app".into()];
    let e = build(&img, &els, &mut host, &d.path().join("o")).unwrap_err();
    assert!(
        e.to_string().contains("no element provides a kernel"),
        "{e}"
    );

    write(
        &els,
        "bad/element.toml",
        "description = \"x\"\npackages = [\"nonesuch\"]\n",
    );
    img.elements = vec!["kernel".into(), "app".into(), "bad".into()];
    let e = build(&img, &els, &mut host, &d.path().join("o")).unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.contains("element bad: package nonesuch: nonesuch is not in the cache"),
        "{chain}"
    );
}

#[test]
fn min_disk_counts_partitions_and_root() {
    let l = Layout::default();
    // 100 MiB unpacked → root 100 + 25 + 64.
    assert_eq!(min_disk_mib(&l, 100 << 20), 1 + 1 + 64 + 189 + 64 + 1);
    let big = Layout {
        root_mib: Some(1024),
        ..Layout::default()
    };
    assert_eq!(min_disk_mib(&big, 100 << 20), 1 + 1 + 64 + 1024 + 64 + 1);
}
