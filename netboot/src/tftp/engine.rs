//! The sans-IO core of one read transfer: option negotiation (RFC 2347/2348/2349/7440) and the
//! sender side of the DATA/ACK exchange, lockstep or windowed.
//!
//! A [`Transfer`] is driven by two events — a packet from the peer ([`Transfer::handle_packet`])
//! and the clock passing its deadline ([`Transfer::handle_timeout`]) — and produces packets with
//! [`Transfer::poll_transmit`] until it returns `None`, then the next deadline with
//! [`Transfer::deadline`]. File contents come through the narrow [`BlockSource`] trait, one block
//! at a time, so a file is never held in memory and tests use a byte vector.
//!
//! Blocks are numbered internally from 1 as `u64`; the 16-bit wire number wraps 65535 → 0, which
//! is what tftpd-hpa, curl, atftp and iPXE expect for files over 32 MiB at 512-byte blocks.
//! Duplicate ACKs never trigger retransmission (the sorcerer's apprentice bug): only the timer
//! does, or an ACK for a block inside the window (the client's way to say "resend from here",
//! RFC 7440 §4).

use super::packet::{self, ErrorCode, PeerPacket, Request};
use std::time::{Duration, Instant};

/// Largest block size of RFC 2348.
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest block size of RFC 2348.
pub const MIN_BLKSIZE: u16 = 8;
/// Block size without negotiation (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

/// Server-side limits the negotiation clamps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Retransmission timeout when the client asks for none.
    pub default_timeout: Duration,
    /// Retransmissions of the same window before the transfer is given up.
    pub max_retries: u32,
    /// Largest window we agree to (clients asking for more get this).
    pub max_window: u16,
    /// Largest block we agree to (clients asking for more get this).
    pub max_blksize: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
            max_window: 256,
            max_blksize: MAX_BLKSIZE,
        }
    }
}

/// A request we answer with an ERROR packet instead of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The ERROR packet for this refusal, written into `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        packet::encode_error(out, self.code, &self.message);
    }
}

/// The parameters both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Options acknowledged in the OACK, in the client's order; empty: no OACK, send DATA 1.
    pub oack: Vec<(&'static str, String)>,
}

/// Negotiate the options of a read request for a file of `file_len` bytes. Unknown options are
/// ignored (RFC 2347); a known option with a value out of its range is refused with error 8.
pub fn negotiate(req: &Request, file_len: u64, limits: &Limits) -> Result<Negotiated, Refusal> {
    let bad = |name: &str, value: &str| {
        Refusal::new(
            ErrorCode::OptionNegotiation,
            format!("unacceptable value {value:?} for option {name}"),
        )
    };
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        oack: Vec::new(),
    };
    for (name, value) in &req.options {
        let v = value.trim();
        // The value as a number within `range`, else the refusal.
        let within = |range: std::ops::RangeInclusive<u32>| {
            v.parse::<u32>()
                .ok()
                .filter(|x| range.contains(x))
                .ok_or_else(|| bad(name, value))
        };
        match name.as_str() {
            "blksize" => {
                let size = within(u32::from(MIN_BLKSIZE)..=u32::MAX)?;
                let size = size.min(u32::from(limits.max_blksize.min(MAX_BLKSIZE))) as u16;
                n.blksize = size;
                n.oack.push(("blksize", size.to_string()));
            }
            "windowsize" => {
                let w = within(1..=65535)?;
                let w = w.min(u32::from(limits.max_window.max(1))) as u16;
                n.windowsize = w;
                n.oack.push(("windowsize", w.to_string()));
            }
            "timeout" => {
                let t = within(1..=255)?;
                n.timeout = Duration::from_secs(u64::from(t));
                n.oack.push(("timeout", t.to_string()));
            }
            "tsize" => {
                // A reading client sends 0; we answer with the real size.
                let _: u64 = v.parse().map_err(|_| bad(name, value))?;
                n.oack.push(("tsize", file_len.to_string()));
            }
            _ => {}
        }
    }
    Ok(n)
}

/// Reads the served file one block at a time.
pub trait BlockSource {
    /// Fill `buf` from byte `offset`; returns how many bytes were read (short only at the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl BlockSource for &[u8] {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl BlockSource for std::fs::File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        // Positional reads until the buffer is full or EOF: one block, never the whole file.
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// What a packet from the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// It moved the transfer forward (there may be packets to send).
    Progress,
    /// Well-formed but changes nothing (duplicate or stale ACK, stray packet).
    Ignored,
    /// Not a TFTP packet we can parse: dropped (count it).
    Malformed,
    /// The final block was acknowledged.
    Done,
    /// The peer sent an ERROR: the transfer ends.
    Aborted { code: u16, message: String },
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    Done,
    /// Retransmitted `max_retries` times without an answer.
    TimedOut,
    Aborted,
    /// The file could not be read; an ERROR goes out, then the transfer ends.
    SourceFailed,
}

/// What `poll_transmit` wrote into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    Oack,
    /// A DATA packet with `payload` bytes of file content; `retransmit` if sent before.
    Data {
        payload: usize,
        retransmit: bool,
    },
    Error,
}

/// One read transfer (sender side).
#[derive(Debug)]
pub struct Transfer {
    blksize: u64,
    window: u64,
    timeout: Duration,
    max_retries: u32,
    file_len: u64,
    /// Number of the final block (short, possibly empty).
    last_block: u64,
    /// The OACK while it waits for ACK 0.
    oack: Option<Vec<(&'static str, String)>>,
    oack_unsent: bool,
    /// Highest block acknowledged.
    acked: u64,
    /// Next block to put on the wire.
    next: u64,
    /// Highest block ever sent (to flag retransmissions).
    high_sent: u64,
    retries: u32,
    deadline: Instant,
    state: State,
}

impl Transfer {
    /// Start a transfer for a negotiated request of a `file_len`-byte file at `now`.
    pub fn new(neg: Negotiated, file_len: u64, limits: &Limits, now: Instant) -> Self {
        let blksize = u64::from(neg.blksize);
        let has_oack = !neg.oack.is_empty();
        Self {
            blksize,
            window: u64::from(neg.windowsize.max(1)),
            timeout: neg.timeout,
            max_retries: limits.max_retries,
            file_len,
            last_block: file_len / blksize + 1,
            oack: has_oack.then_some(neg.oack),
            oack_unsent: has_oack,
            acked: 0,
            next: 1,
            high_sent: 0,
            retries: 0,
            deadline: now + neg.timeout,
            state: State::Running,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Number of DATA blocks in the whole transfer, the final short or empty one included.
    pub fn total_blocks(&self) -> u64 {
        self.last_block
    }

    /// When [`Transfer::handle_timeout`] must be called next; `None` once the transfer ended.
    pub fn deadline(&self) -> Option<Instant> {
        (self.state == State::Running).then_some(self.deadline)
    }

    /// Whether nothing is left to do or send.
    pub fn is_finished(&self) -> bool {
        self.state != State::Running
    }

    /// Feed a datagram from the peer.
    pub fn handle_packet(&mut self, buf: &[u8], now: Instant) -> Input {
        if self.state != State::Running {
            return Input::Ignored;
        }
        let pkt = match packet::parse_peer(buf) {
            Ok(p) => p,
            Err(_) => return Input::Malformed,
        };
        match pkt {
            PeerPacket::Error { code, message } => {
                self.state = State::Aborted;
                Input::Aborted {
                    code,
                    message: message.to_string(),
                }
            }
            PeerPacket::Other(_) => Input::Ignored,
            PeerPacket::Ack(block) => self.on_ack(block, now),
        }
    }

    fn on_ack(&mut self, block: u16, now: Instant) -> Input {
        if self.oack.is_some() {
            if block != 0 {
                return Input::Ignored;
            }
            self.oack = None;
            self.oack_unsent = false;
            self.progress(now);
            return Input::Progress;
        }
        // The one block in [acked, next - 1] whose wire number is `block` (the window is far
        // smaller than 65536, so there is at most one).
        let diff = u64::from(block.wrapping_sub(self.acked as u16));
        let k = self.acked + diff;
        if diff == 0 || k >= self.next {
            // Duplicate (already acknowledged) or for a block never sent: never retransmit on it.
            return Input::Ignored;
        }
        self.acked = k;
        if k == self.last_block {
            self.state = State::Done;
            return Input::Done;
        }
        // A full window acknowledged moves on; an ACK inside the window means the client lost
        // what followed it: resend from there.
        self.next = k + 1;
        self.progress(now);
        Input::Progress
    }

    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.deadline = now + self.timeout;
    }

    /// The clock passed [`Transfer::deadline`]: resend the OACK or the unacknowledged window,
    /// or give up after `max_retries`. Calls before the deadline do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Running || now < self.deadline {
            return;
        }
        if self.retries >= self.max_retries {
            self.state = State::TimedOut;
            return;
        }
        self.retries += 1;
        if self.oack.is_some() {
            self.oack_unsent = true;
        } else {
            self.next = self.acked + 1;
        }
        self.deadline = now + self.timeout;
    }

    /// Write the next packet to send into `out`; `None` when nothing is due until the next event.
    pub fn poll_transmit(
        &mut self,
        source: &mut dyn BlockSource,
        out: &mut Vec<u8>,
    ) -> Option<Transmit> {
        if self.state != State::Running {
            return None;
        }
        if let Some(oack) = &self.oack {
            if self.oack_unsent {
                self.oack_unsent = false;
                packet::encode_oack(out, oack);
                return Some(Transmit::Oack);
            }
            return None;
        }
        let window_end = (self.acked + self.window).min(self.last_block);
        if self.next > window_end {
            return None;
        }
        let block = self.next;
        let offset = (block - 1) * self.blksize;
        let want = self.blksize.min(self.file_len.saturating_sub(offset)) as usize;
        packet::encode_data_header(out, block as u16, want);
        match source.read_at(offset, &mut out[4..]) {
            Ok(n) if n == want => {}
            Ok(_) => return self.fail_source("file changed size during transfer", out),
            Err(e) => return self.fail_source(&format!("read error: {e}"), out),
        }
        self.next += 1;
        let retransmit = block <= self.high_sent;
        self.high_sent = self.high_sent.max(block);
        Some(Transmit::Data {
            payload: want,
            retransmit,
        })
    }

    fn fail_source(&mut self, why: &str, out: &mut Vec<u8>) -> Option<Transmit> {
        self.state = State::SourceFailed;
        Refusal::new(ErrorCode::NotDefined, why).encode(out);
        Some(Transmit::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(opts: &[(&str, &str)]) -> Request {
        Request {
            write: false,
            filename: "f".into(),
            mode: "octet".into(),
            options: opts
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    fn ack(block: u16) -> Vec<u8> {
        let mut v = vec![0, 4];
        v.extend_from_slice(&block.to_be_bytes());
        v
    }

    /// Everything the transfer wants to send now, as (opcode, block, payload).
    fn drain(t: &mut Transfer, src: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
        let mut src = src;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while t.poll_transmit(&mut src, &mut buf).is_some() {
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            let blk = u16::from_be_bytes([buf[2], buf[3]]);
            out.push((op, blk, buf[4..].to_vec()));
            assert!(out.len() < 100_000, "runaway transmit");
        }
        out
    }

    fn start(opts: &[(&str, &str)], data: &[u8], now: Instant) -> Transfer {
        let limits = Limits::default();
        let neg = negotiate(&req(opts), data.len() as u64, &limits).unwrap();
        Transfer::new(neg, data.len() as u64, &limits, now)
    }

    #[test]
    fn negotiates_options_into_an_oack() {
        let l = Limits::default();
        let n = negotiate(
            &req(&[
                ("blksize", "1428"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("windowsize", "16"),
                ("frobnicate", "1"),
            ]),
            12345,
            &l,
        )
        .unwrap();
        assert_eq!(n.blksize, 1428);
        assert_eq!(n.windowsize, 16);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.oack,
            vec![
                ("blksize", "1428".to_string()),
                ("tsize", "12345".to_string()),
                ("timeout", "3".to_string()),
                ("windowsize", "16".to_string()),
            ]
        );
        // No options: no OACK, plain RFC 1350.
        let n = negotiate(&req(&[]), 1, &l).unwrap();
        assert!(n.oack.is_empty());
        assert_eq!((n.blksize, n.windowsize), (512, 1));
    }

    #[test]
    fn blksize_bounds() {
        let l = Limits::default();
        for bad in ["7", "0", "-1", "abc", "", "99999999999"] {
            let e = negotiate(&req(&[("blksize", bad)]), 0, &l).unwrap_err();
            assert_eq!(e.code, ErrorCode::OptionNegotiation, "{bad}");
        }
        assert_eq!(
            negotiate(&req(&[("blksize", "8")]), 0, &l).unwrap().blksize,
            8
        );
        assert_eq!(
            negotiate(&req(&[("blksize", "65464")]), 0, &l)
                .unwrap()
                .blksize,
            65464
        );
        // Too big is clamped, not refused (RFC 2348: the server may answer smaller).
        let n = negotiate(&req(&[("blksize", "65465")]), 0, &l).unwrap();
        assert_eq!(n.blksize, 65464);
        assert_eq!(n.oack, vec![("blksize", "65464".to_string())]);
        let small = Limits {
            max_blksize: 1468,
            ..l
        };
        assert_eq!(
            negotiate(&req(&[("blksize", "9000")]), 0, &small)
                .unwrap()
                .blksize,
            1468
        );
    }

    #[test]
    fn windowsize_and_timeout_bounds() {
        let l = Limits::default();
        for (name, bad) in [
            ("windowsize", "0"),
            ("windowsize", "65536"),
            ("windowsize", "x"),
            ("timeout", "0"),
            ("timeout", "256"),
            ("tsize", "big"),
        ] {
            assert!(
                negotiate(&req(&[(name, bad)]), 0, &l).is_err(),
                "{name}={bad}"
            );
        }
        let n = negotiate(&req(&[("windowsize", "65535")]), 0, &l).unwrap();
        assert_eq!(n.windowsize, l.max_window);
    }

    #[test]
    fn lockstep_without_options_and_short_last_block() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let now = Instant::now();
        let mut t = start(&[], &data, now);
        assert_eq!(t.total_blocks(), 2);
        let sent = drain(&mut t, &data);
        assert_eq!(sent, vec![(3, 1, data[..512].to_vec())]);
        assert_eq!(t.handle_packet(&ack(1), now), Input::Progress);
        let sent = drain(&mut t, &data);
        assert_eq!(sent, vec![(3, 2, data[512..].to_vec())]);
        assert_eq!(t.handle_packet(&ack(2), now), Input::Done);
        assert!(t.is_finished());
        assert_eq!(t.deadline(), None);
        assert!(drain(&mut t, &data).is_empty());
    }

    #[test]
    fn exact_multiple_needs_an_empty_final_block() {
        let data = vec![7u8; 1024];
        let now = Instant::now();
        let mut t = start(&[], &data, now);
        assert_eq!(t.total_blocks(), 3);
        for b in 1..=2u16 {
            let s = drain(&mut t, &data);
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].2.len(), 512);
            assert_eq!(t.handle_packet(&ack(b), now), Input::Progress);
        }
        let s = drain(&mut t, &data);
        assert_eq!(s, vec![(3, 3, vec![])]);
        assert_eq!(t.handle_packet(&ack(3), now), Input::Done);

        // An empty file is one empty block.
        let mut t = start(&[], &[], now);
        assert_eq!(drain(&mut t, &[]), vec![(3, 1, vec![])]);
        assert_eq!(t.handle_packet(&ack(1), now), Input::Done);
    }

    #[test]
    fn oack_then_window() {
        let data: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let now = Instant::now();
        let mut t = start(
            &[("blksize", "10"), ("windowsize", "4"), ("tsize", "0")],
            &data,
            now,
        );
        let s = drain(&mut t, &data);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, packet::OACK);
        assert_eq!(
            s[0].2,
            b"ksize\x0010\x00windowsize\x004\x00tsize\x00100\x00".to_vec()
        );
        // A stray ACK 1 before ACK 0 changes nothing.
        assert_eq!(t.handle_packet(&ack(1), now), Input::Ignored);
        assert_eq!(t.handle_packet(&ack(0), now), Input::Progress);
        let s = drain(&mut t, &data);
        assert_eq!(s.iter().map(|p| p.1).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(s[3].2, data[30..40].to_vec());
        assert_eq!(t.handle_packet(&ack(4), now), Input::Progress);
        let s = drain(&mut t, &data);
        assert_eq!(s.iter().map(|p| p.1).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
        // The client lost block 7: it acks 6, we resend from 7 with a full window.
        assert_eq!(t.handle_packet(&ack(6), now), Input::Progress);
        let s = drain(&mut t, &data);
        assert_eq!(s.iter().map(|p| p.1).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
        assert_eq!(t.handle_packet(&ack(10), now), Input::Progress);
        // 100 bytes at 10: blocks 1..=10 full, 11 empty.
        let s = drain(&mut t, &data);
        assert_eq!(s, vec![(3, 11, vec![])]);
        assert_eq!(t.handle_packet(&ack(11), now), Input::Done);
    }

    #[test]
    fn duplicate_acks_do_not_retransmit() {
        let data = vec![1u8; 5000];
        let now = Instant::now();
        let mut t = start(&[], &data, now);
        drain(&mut t, &data);
        assert_eq!(t.handle_packet(&ack(1), now), Input::Progress);
        assert_eq!(drain(&mut t, &data).len(), 1);
        // The sorcerer's apprentice: a delayed duplicate ACK 1 must not resend block 2.
        assert_eq!(t.handle_packet(&ack(1), now), Input::Ignored);
        assert!(drain(&mut t, &data).is_empty());
        // Nor an ACK for a block never sent, nor an old one.
        assert_eq!(t.handle_packet(&ack(5), now), Input::Ignored);
        assert_eq!(t.handle_packet(&ack(0), now), Input::Ignored);
        assert!(drain(&mut t, &data).is_empty());
        assert_eq!(t.handle_packet(&ack(2), now), Input::Progress);
        assert_eq!(drain(&mut t, &data)[0].1, 3);
    }

    #[test]
    fn retransmits_on_timeout_then_gives_up() {
        let data = vec![3u8; 2000];
        let t0 = Instant::now();
        let mut t = start(&[("timeout", "2"), ("windowsize", "2")], &data, t0);
        assert_eq!(drain(&mut t, &data)[0].0, packet::OACK);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(2)));
        // Early timer: nothing.
        t.handle_timeout(t0 + Duration::from_secs(1));
        assert!(drain(&mut t, &data).is_empty());
        // The OACK is lost: resent at the deadline.
        let t1 = t0 + Duration::from_secs(2);
        t.handle_timeout(t1);
        assert_eq!(drain(&mut t, &data)[0].0, packet::OACK);
        assert_eq!(t.handle_packet(&ack(0), t1), Input::Progress);
        let mut buf = Vec::new();
        let mut src: &[u8] = &data;
        assert_eq!(
            t.poll_transmit(&mut src, &mut buf),
            Some(Transmit::Data {
                payload: 512,
                retransmit: false
            })
        );
        assert_eq!(drain(&mut t, &data).len(), 1);
        // The window goes unanswered: resent whole, flagged as retransmission.
        let mut now = t1;
        for _ in 0..5 {
            now += Duration::from_secs(2);
            t.handle_timeout(now);
            assert_eq!(
                t.poll_transmit(&mut src, &mut buf),
                Some(Transmit::Data {
                    payload: 512,
                    retransmit: true
                })
            );
            assert_eq!(
                drain(&mut t, &data).iter().map(|p| p.1).collect::<Vec<_>>(),
                vec![2]
            );
        }
        now += Duration::from_secs(2);
        t.handle_timeout(now);
        assert_eq!(*t.state(), State::TimedOut);
        assert!(t.is_finished());
        assert!(drain(&mut t, &data).is_empty());
    }

    #[test]
    fn progress_resets_the_retry_budget() {
        let data = vec![0u8; 512 * 20];
        let mut now = Instant::now();
        let mut t = start(&[], &data, now);
        for b in 1..=20u16 {
            drain(&mut t, &data);
            // Each block needs 4 retransmissions: fine, since every ACK resets the count.
            for _ in 0..4 {
                now += Duration::from_secs(1);
                t.handle_timeout(now);
                assert_eq!(drain(&mut t, &data)[0].1, b);
            }
            assert_eq!(t.handle_packet(&ack(b), now), Input::Progress);
        }
        assert_eq!(*t.state(), State::Running);
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        // 8-byte blocks: 70000 blocks cross 65535 without a big buffer.
        let data = vec![9u8; 8 * 70_000 + 3];
        let now = Instant::now();
        let mut t = start(&[("blksize", "8"), ("windowsize", "256")], &data, now);
        drain(&mut t, &data);
        assert_eq!(t.handle_packet(&ack(0), now), Input::Progress);
        let mut seen = 0u64;
        let mut wire_after_65535 = None;
        loop {
            let s = drain(&mut t, &data);
            assert!(!s.is_empty());
            for (op, blk, payload) in &s {
                assert_eq!(*op, packet::DATA);
                seen += 1;
                assert_eq!(*blk, seen as u16);
                if seen == 65536 {
                    wire_after_65535 = Some(*blk);
                }
                let expect = if seen == 70_001 { 3 } else { 8 };
                assert_eq!(payload.len(), expect, "block {seen}");
            }
            let last = s.last().unwrap().1;
            match t.handle_packet(&ack(last), now) {
                Input::Done => break,
                Input::Progress => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, 70_001);
        assert_eq!(wire_after_65535, Some(0));
    }

    #[test]
    fn peer_error_and_garbage() {
        let data = vec![0u8; 10];
        let now = Instant::now();
        let mut t = start(&[("tsize", "0")], &data, now);
        drain(&mut t, &data);
        assert_eq!(t.handle_packet(b"\x00", now), Input::Malformed);
        assert_eq!(t.handle_packet(b"\x00\x09zz", now), Input::Malformed);
        assert_eq!(t.handle_packet(b"\x00\x03\x00\x01", now), Input::Ignored);
        assert_eq!(
            t.handle_packet(b"\x00\x05\x00\x08tsize only\0", now),
            Input::Aborted {
                code: 8,
                message: "tsize only".into()
            }
        );
        assert!(t.is_finished());
    }

    #[test]
    fn a_file_that_shrinks_ends_with_an_error() {
        let data = vec![0u8; 2000];
        let now = Instant::now();
        let mut t = start(&[], &data, now);
        let shorter: &[u8] = &data[..100];
        let mut src = shorter;
        let mut buf = Vec::new();
        assert_eq!(t.poll_transmit(&mut src, &mut buf), Some(Transmit::Error));
        assert_eq!(&buf[..4], b"\x00\x05\x00\x00");
        assert_eq!(*t.state(), State::SourceFailed);
        assert!(t.is_finished());
    }
}
