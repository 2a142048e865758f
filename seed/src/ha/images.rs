//! Images in the HA control plane: every member keeps a full copy of the content-addressed
//! image store; blobs never go into etcd.
//!
//! Each member registers the images it holds as `image-replicas/<sha256>/<member>` (JSON: the
//! image's name and the URL of the digest's directory on that member's HTTP server, which
//! serves the image store as it does for deploying agents). A member that lacks a digest others
//! hold fetches `manifest.json` and the stream from one of them into a scratch directory and
//! imports it with [`ImageStore::import`], which checks the size and sha256 before anything is
//! stored: a corrupt or truncated copy is refused and another holder is tried. An image is
//! usable for deploys only once a quorum of the etcd cluster's members hold it ([`usable`]).
//!
//! The replica records are facts about one member, written through the unfenced store (a
//! follower registers what it holds too).

use crate::store::etcd::{member, EtcdStore};
use crate::store::{Expect, Store, StoreError};
use images::ImageStore;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use tracing::{info, warn};

/// The table of replicas: `<sha256>/<member>`.
pub const REPLICAS: &str = "image-replicas";

/// One member's copy of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub name: String,
    /// `http://HOST:PORT/<images url>/<sha256>/`: `manifest.json` and the stream are there.
    pub url: String,
}

/// Why replication failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("image store")]
    Images(#[from] images::store::StoreError),
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("scratch directory")]
    Io(#[from] std::io::Error),
}

/// Register every image of `local` as held by `me`, reachable under `base_url` (the image
/// store's URL on this member's HTTP server, e.g. `http://10.0.0.1:8080/images`). Returns how
/// many records were written.
pub fn register(
    store: &EtcdStore,
    local: &ImageStore,
    me: &str,
    base_url: &str,
) -> Result<usize, ReplicaError> {
    let mut n = 0;
    for img in local.list()? {
        let digest = &img.manifest.stream.sha256;
        let key = format!("{digest}/{me}");
        let rec = Replica {
            name: img.manifest.name.clone(),
            url: format!("{}/{digest}/", base_url.trim_end_matches('/')),
        };
        let value = serde_json::to_vec(&rec).expect("a replica serialises");
        if store.get(REPLICAS, &key)?.map(|r| r.value) != Some(value.clone()) {
            store.put(REPLICAS, &key, value, Expect::Any)?;
            n += 1;
        }
    }
    Ok(n)
}

/// digest → (member, replica) for every registered copy.
pub fn replicas(
    store: &dyn Store,
) -> Result<std::collections::BTreeMap<String, Vec<(String, Replica)>>, StoreError> {
    let mut out: std::collections::BTreeMap<String, Vec<(String, Replica)>> = Default::default();
    for (k, r) in store.list(REPLICAS, "")? {
        let Some((digest, member)) = k.split_once('/') else {
            continue;
        };
        if let Ok(rep) = serde_json::from_slice::<Replica>(&r.value) {
            out.entry(digest.to_string())
                .or_default()
                .push((member.to_string(), rep));
        }
    }
    Ok(out)
}

/// Whether the image with stream digest `digest` is held by a quorum of the cluster's members.
pub fn usable(store: &EtcdStore, digest: &str) -> Result<bool, StoreError> {
    let members = member::member_list(store)?.len();
    let holders = store.list(REPLICAS, &format!("{digest}/"))?.len();
    Ok(holders > members / 2)
}

/// Fetch every image some member holds and `local` lacks, verify it on import, register it.
/// Returns the names fetched; a digest no holder could deliver intact is logged and skipped.
pub fn fetch_missing(
    store: &EtcdStore,
    local: &ImageStore,
    me: &str,
    base_url: &str,
    scratch: &Path,
) -> Result<Vec<String>, ReplicaError> {
    let have: std::collections::HashSet<String> = local
        .list()?
        .into_iter()
        .map(|i| i.manifest.stream.sha256)
        .collect();
    let mut fetched = vec![];
    for (digest, holders) in replicas(store)? {
        if have.contains(&digest) || holders.iter().any(|(m, _)| m == me) {
            continue;
        }
        for (member, rep) in holders {
            match fetch_one(local, &rep, &digest, scratch) {
                Ok(()) => {
                    info!(image = %rep.name, %digest, from = %member, "image replicated");
                    fetched.push(rep.name.clone());
                    break;
                }
                Err(e) => {
                    warn!(image = %rep.name, %digest, from = %member, error = %e, "image copy refused")
                }
            }
        }
    }
    if !fetched.is_empty() {
        register(store, local, me, base_url)?;
    }
    Ok(fetched)
}

/// Keep this member's copies in step with the others' until `stop`: every `every`, register
/// what `local` holds and fetch what others hold and it lacks. On a thread of its own (the
/// store calls and downloads block). `base_url` is the image store's URL on this member's HTTP
/// server; `scratch` a directory on the image store's filesystem.
pub fn spawn_replicator(
    store: EtcdStore,
    local: ImageStore,
    me: String,
    base_url: String,
    scratch: std::path::PathBuf,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("image-replicas".into())
        .spawn(move || {
            let mut last_error = String::new();
            while !stop.is_cancelled() {
                let round = register(&store, &local, &me, &base_url)
                    .and_then(|_| fetch_missing(&store, &local, &me, &base_url, &scratch));
                match round {
                    Ok(_) => last_error.clear(),
                    Err(e) => {
                        let e = fsutil::error_chain(&e);
                        if e != last_error {
                            warn!(error = %e, "image replication");
                        }
                        last_error = e;
                    }
                }
                let until = std::time::Instant::now() + every;
                while !stop.is_cancelled() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        })
}

/// Forget every copy `member` registered (it left the cluster: its URLs answer no more).
pub fn forget(store: &dyn Store, member: &str) -> Result<usize, StoreError> {
    let suffix = format!("/{member}");
    let mut n = 0;
    for (k, _) in store.list(REPLICAS, "")? {
        if k.ends_with(&suffix) {
            store.delete(REPLICAS, &k, Expect::Any)?;
            n += 1;
        }
    }
    Ok(n)
}

/// `url` into `to` (streamed), at most `limit` bytes.
fn download(url: &str, limit: u64, to: &Path) -> Result<u64, ReplicaError> {
    let fail = |reason: String| ReplicaError::Fetch {
        url: url.into(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .proxy(None)
        .build()
        .new_agent();
    let mut resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut f = std::fs::File::create(to)?;
    let mut body = resp.body_mut().as_reader();
    std::io::copy(&mut (&mut body).take(limit), &mut f).map_err(|e| fail(e.to_string()))
}

fn fetch_one(
    local: &ImageStore,
    rep: &Replica,
    digest: &str,
    scratch: &Path,
) -> Result<(), ReplicaError> {
    let dir = scratch.join(format!(".replica-{digest}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let res = (|| {
        let mpath = dir.join("manifest.json");
        download(&format!("{}manifest.json", rep.url), 1 << 20, &mpath)?;
        let mbytes = std::fs::read(&mpath)?;
        let m: images::Manifest =
            serde_json::from_slice(&mbytes).map_err(|e| ReplicaError::Fetch {
                url: format!("{}manifest.json", rep.url),
                reason: e.to_string(),
            })?;
        if m.stream.sha256 != digest || m.stream.file.contains('/') {
            return Err(ReplicaError::Fetch {
                url: rep.url.clone(),
                reason: format!("manifest for {} under digest {digest}", m.stream.sha256),
            });
        }
        // One byte over the declared size is enough to refuse a longer stream.
        let url = format!("{}{}", rep.url, m.stream.file);
        download(&url, m.stream.size + 1, &dir.join(&m.stream.file))?;
        local.import(&mpath)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::member::LocalCluster;
    use std::io::{BufRead, BufReader, Write};

    /// A GET-only file server for `root` on 127.0.0.1 (one thread per connection, bounded).
    fn serve(root: std::path::PathBuf) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in l.incoming().take(64).flatten() {
                let root = root.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) <= 2 {
                            break;
                        }
                    }
                    let mut c = conn;
                    match std::fs::read(root.join(path.trim_start_matches('/'))) {
                        Ok(b) => {
                            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", b.len());
                            let _ = c.write_all(&b);
                        }
                        Err(_) => {
                            let _ = write!(c, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        }
                    }
                });
            }
        });
        url
    }

    fn image(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let src = dir.join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("rootfs.tar.zst"), bytes).unwrap();
        let (sha256, size) = images::store::hash_file(&src.join("rootfs.tar.zst")).unwrap();
        let m = images::Manifest {
            name: name.into(),
            version: "t".into(),
            stream: images::Stream {
                file: "rootfs.tar.zst".into(),
                sha256,
                size,
                unpacked_size: size,
            },
            boot: images::Boot {
                kernel: "boot/vmlinuz".into(),
                initrd: None,
                cmdline: String::new(),
            },
            min_disk_mib: 64,
            layout: images::Layout::default(),
            elements: vec![],
        };
        std::fs::write(src.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        src.join("manifest.json")
    }

    /// Member a holds an image; it is not usable (1 of 3); b fetches and verifies it: usable.
    /// A copy corrupted at its holder is refused by the verifying import.
    #[test]
    fn replicated_verified_and_usable_at_quorum() {
        let d = tempfile::tempdir().unwrap();
        let c = LocalCluster::start(3, &d.path().join("etcd")).unwrap();
        let s = EtcdStore::connect(&c.config()).unwrap();
        let (ha, hb) = (d.path().join("a"), d.path().join("b"));
        let a = ImageStore::open(&ha).unwrap();
        let b = ImageStore::open(&hb).unwrap();
        let (ua, ub) = (serve(ha.clone()), serve(hb.clone()));
        let img = a
            .import(&image(d.path(), "golden", b"a golden stream"))
            .unwrap();
        let digest = img.manifest.stream.sha256.clone();
        assert_eq!(register(&s, &a, "a", &ua).unwrap(), 1);
        assert_eq!(register(&s, &a, "a", &ua).unwrap(), 0, "idempotent");
        assert!(!usable(&s, &digest).unwrap(), "1 of 3 members");

        let got = fetch_missing(&s, &b, "b", &ub, d.path()).unwrap();
        assert_eq!(got, ["golden"]);
        assert_eq!(b.verify("golden").unwrap().manifest.stream.sha256, digest);
        assert!(usable(&s, &digest).unwrap(), "2 of 3 members");

        // A second image, corrupted on a after it registered: c refuses it.
        let img2 = a
            .import(&image(d.path(), "other", b"another stream"))
            .unwrap();
        register(&s, &a, "a", &ua).unwrap();
        std::fs::write(&img2.stream, b"another strea!").unwrap();
        let hc = d.path().join("c");
        let cstore = ImageStore::open(&hc).unwrap();
        let got = fetch_missing(&s, &cstore, "c", &serve(hc.clone()), d.path()).unwrap();
        assert_eq!(got, ["golden"], "only the intact image");
        assert!(cstore.get("other").is_err());
    }
}
