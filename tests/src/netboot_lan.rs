//! The real `seed netboot` alone on a fresh [`Lan`] (the client addressed by hand at `.2`), for
//! the protocol tests: its scratch directory holds `netboot.toml`, `state/` and the roots it
//! serves; programs run in the client namespace.

use crate::netns::Lan;
use crate::proc::Child;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// A running `seed netboot`; the process and the namespaces go on drop.
pub struct NetbootLan {
    pub lan: Lan,
    pub seed: Child,
    pub dir: tempfile::TempDir,
}

impl NetbootLan {
    /// Make the directories `roots` (relative to the scratch dir), write the config — the
    /// interface, `server_ip` and `state_dir`, then what `tables` returns for the LAN and the
    /// scratch dir — and start the server; returns once each line of `ready` was logged.
    pub fn start(
        roots: &[&str],
        ready: &[&str],
        tables: impl FnOnce(&Lan, &Path) -> String,
    ) -> Self {
        let lan = Lan::new(None);
        lan.address_client(2);
        let dir = tempfile::tempdir().expect("scratch dir");
        let d = dir.path();
        for r in roots {
            std::fs::create_dir_all(d.join(r)).expect("creating a root");
        }
        let config = format!(
            "interface = {:?}\nserver_ip = \"{}\"\nstate_dir = {:?}\n\n{}",
            lan.server_if,
            lan.server_ip(),
            d.join("state"),
            tables(&lan, d)
        );
        let cfg_path = d.join("netboot.toml");
        std::fs::write(&cfg_path, config).expect("writing netboot.toml");
        let seed = crate::spawn_netboot(&lan.server, &cfg_path, ready, Duration::from_secs(120));
        NetbootLan { lan, seed, dir }
    }

    /// `rel` under the scratch dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The server's address, as text.
    pub fn ip(&self) -> String {
        self.lan.server_ip().to_string()
    }

    /// Run `program args` in the client namespace.
    pub fn client(&self, program: &str, args: &[&str]) -> Output {
        self.lan
            .client
            .cmd(crate::require(program))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }
}

/// `len` random bytes (from /dev/urandom).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    std::fs::File::open("/dev/urandom")
        .expect("/dev/urandom")
        .take(len as u64)
        .read_to_end(&mut data)
        .expect("reading /dev/urandom");
    data
}
