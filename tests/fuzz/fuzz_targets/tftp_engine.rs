//! The TFTP server (netboot::tftp): the request parser, option negotiation, the path resolver
//! and the sans-IO transfer engine.
//!
//! Input: length-prefixed chunks (`seed_fuzz::chunks`): the request (RRQ/WRQ), two bytes of
//! file length, then the peer's packets; an empty chunk is a retransmission timeout. After each
//! input the engine transmits until it has nothing more to send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netboot::tftp::engine::{negotiate, BlockSource, Limits, Transfer};
use netboot::tftp::packet::parse_request;
use netboot::tftp::root::Root;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A served root with one file and a symlink pointing out of it (resolve must refuse it).
fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = seed_fuzz::scratch("tftp-root");
        std::fs::create_dir_all(dir.join("pxe")).expect("root");
        std::fs::write(dir.join("pxe/undionly.kpxe"), b"ipxe").expect("file");
        let _ = std::os::unix::fs::symlink("/etc", dir.join("out"));
        Root::new(&dir).expect("root")
    })
}

fuzz_target!(|data: &[u8]| {
    let chunks = seed_fuzz::chunks(data, 64);
    let Some((first, rest)) = chunks.split_first() else {
        return;
    };
    let Ok(Some(req)) = parse_request(first) else {
        return;
    };
    if let Ok(p) = root().resolve(&req.filename) {
        assert!(p.starts_with(root().path()), "{p:?} escapes the root");
    }
    let Some((len, peer)) = rest.split_first() else {
        return;
    };
    let file_len = match len.len() {
        0 => 0,
        1 => u64::from(len[0]),
        _ => u64::from(u16::from_be_bytes([len[0], len[1]])),
    };
    let limits = Limits::default();
    let Ok(neg) = negotiate(&req, file_len, &limits) else {
        return;
    };
    let file: Vec<u8> = (0..file_len).map(|i| i as u8).collect();
    let mut source: &[u8] = &file;
    let mut now = Instant::now();
    let mut t = Transfer::new(neg, file_len, &limits, now);
    let mut out = Vec::new();
    drain(&mut t, &mut source, &mut out, &limits);
    for pkt in peer {
        if t.is_finished() {
            break;
        }
        if pkt.is_empty() {
            now = t.deadline().unwrap_or(now) + Duration::from_millis(1);
            t.handle_timeout(now);
        } else {
            now += Duration::from_millis(5);
            let _ = t.handle_packet(pkt, now);
        }
        drain(&mut t, &mut source, &mut out, &limits);
    }
});

/// Transmit until the engine has nothing to send: at most a window of blocks (or an OACK or an
/// ERROR), so more than `max_window` + 1 packets in a row means it never stops.
fn drain(t: &mut Transfer, source: &mut dyn BlockSource, out: &mut Vec<u8>, limits: &Limits) {
    for _ in 0..=usize::from(limits.max_window) + 1 {
        if t.poll_transmit(source, out).is_none() {
            return;
        }
    }
    panic!("poll_transmit never stops");
}
