//! The deploy agent's image stream reader (ramdisk::agent::deploy::stream): a zstd-compressed
//! tar, as the HTTP body brings it, hashed and unpacked onto a root directory.
//!
//! Input: the stream. It is unpacked for real, so the target keeps it in a cage: one worker
//! thread with its own filesystem context (`unshare(CLONE_FS)`) chrooted into a scratch
//! directory, so an entry escaping the root lands in the scratch directory — where the target
//! sees it and panics — and never on this machine's files. libFuzzer's own thread keeps the
//! real root for its corpus and artifacts. (Not root: no chroot, a warning, the scratch
//! directory only.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use ramdisk::agent::deploy::stream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

struct Cage {
    tx: SyncSender<Vec<u8>>,
    done: Receiver<()>,
}

/// The directory the image lands in, as the worker sees it, and the worker's `/`.
fn paths(chrooted: bool, scratch: &Path) -> (PathBuf, PathBuf) {
    if chrooted {
        ("/root-fs".into(), "/".into())
    } else {
        (scratch.join("root-fs"), scratch.to_path_buf())
    }
}

fn worker(rx: Receiver<Vec<u8>>, done: SyncSender<()>, scratch: PathBuf) {
    // SAFETY: unshare(2) with CLONE_FS only detaches this thread's root and cwd.
    let unshared = unsafe { libc::unshare(libc::CLONE_FS) } == 0;
    let chrooted = unshared && std::os::unix::fs::chroot(&scratch).is_ok();
    if chrooted {
        std::env::set_current_dir("/").expect("cd /");
    } else {
        eprintln!(
            "image_stream: no chroot (not root?): unpacking in {}",
            scratch.display()
        );
    }
    let (root, top) = paths(chrooted, &scratch);
    for body in rx {
        std::fs::create_dir_all(&root).expect("scratch root");
        let _ = stream::write(
            &body[..],
            &root,
            "",
            0,
            Duration::from_secs(3600),
            &mut |_| {},
        );
        for e in std::fs::read_dir(&top).expect("scratch").flatten() {
            assert_eq!(
                e.path(),
                root,
                "an image entry landed outside the root: {:?}",
                e.path()
            );
        }
        std::fs::remove_dir_all(&root).expect("clean scratch root");
        done.send(()).expect("fuzzer thread");
    }
}

fn cage() -> &'static Mutex<Cage> {
    static CAGE: OnceLock<Mutex<Cage>> = OnceLock::new();
    CAGE.get_or_init(|| {
        let scratch = seed_fuzz::scratch("image-stream");
        let (tx, rx) = sync_channel(0);
        let (done_tx, done) = sync_channel(0);
        std::thread::spawn(move || worker(rx, done_tx, scratch));
        Mutex::new(Cage { tx, done })
    })
}

fuzz_target!(|data: &[u8]| {
    let cage = cage().lock().expect("cage");
    cage.tx.send(data.to_vec()).expect("worker");
    // A panic in the worker aborts the process (libFuzzer's panic hook) with this input.
    cage.done.recv().expect("worker");
});
