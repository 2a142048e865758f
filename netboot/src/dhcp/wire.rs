//! Framing checks on a raw DHCPv4 packet, made before `dhcproto` decodes it.
//!
//! `dhcproto` trusts its input more than a server on a shared wire can: `Message::chaddr` slices
//! by `hlen` (a value over 16 panics), a few options `debug_assert!` their length or subtract from
//! it, and a broken option silently ends the option list instead of failing. So every packet is
//! walked here first (fixed header, magic cookie, each option's length against the packet end and
//! against the size its code requires), and only a well-framed BOOTREQUEST reaches the decoder.
//! Consecutive options with one code are checked as one: `dhcproto` concatenates them (RFC 3396
//! long options) before decoding, so two well-sized halves can make one badly sized option.
//! Hand-written because it is the validation layer the crate lacks, not a second parser: it
//! produces nothing but a verdict.

use dhcproto::v4::{Decodable, Decoder, Message, MessageType};

/// Size of the fixed BOOTP header plus the DHCP magic cookie.
pub const HEADER_LEN: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a packet was dropped before being looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("truncated: {0} bytes, a DHCP message has at least 240")]
    Truncated(usize),
    #[error("not a BOOTREQUEST (op={0})")]
    NotRequest(u8),
    #[error("not a BOOTREPLY (op={0})")]
    NotReply(u8),
    #[error("not Ethernet (htype={htype}, hlen={hlen})")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("option {code} runs past the end of the packet")]
    OptionOverrun { code: u8 },
    #[error("option {code} has length {len}, which its type does not allow")]
    OptionLength { code: u8, len: usize },
    #[error("no message type (option 53)")]
    NoMessageType,
    #[error("undecodable: {0}")]
    Decode(String),
}

/// The length an option code requires, as a predicate on its (concatenated) length.
fn length_ok(code: u8, len: usize) -> bool {
    match code {
        // message type, option overload, NetBIOS node type, auto-configure
        53 | 52 | 46 | 116 => len == 1,
        // max message size, boot file size
        57 | 13 => len == 2,
        // client network interface identifier (PXE)
        94 => len == 3,
        // addresses and 32-bit times
        1
        | 16
        | 28
        | 32
        | 50
        | 54
        | 118
        | 150
        | 2
        | 24
        | 35
        | 38
        | 51
        | 58
        | 59
        | 91
        | 106
        | 152..=155 => len == 4,
        // lists of addresses
        3..=11 | 41 | 42 | 44 | 45 | 48 | 49 | 65 | 68..=76 | 89 | 92 => len.is_multiple_of(4),
        // client system architecture: one or more 16-bit types
        93 => len >= 2 && len.is_multiple_of(2),
        // rapid commit carries nothing; client FQDN has three fixed bytes; BLQ status a code
        80 => len == 0,
        81 => len >= 3,
        151 => len >= 1,
        // message type lists, strings, opaque data: any length, including zero
        _ => true,
    }
}

/// Check the framing of `pkt`. `Ok` means `dhcproto` can decode it without tripping over it.
pub fn check(pkt: &[u8]) -> Result<(), Malformed> {
    check_op(pkt, 1)
}

/// [`check`] for a BOOTREPLY (another server's OFFER, heard by [`super::probe`]).
pub fn check_reply(pkt: &[u8]) -> Result<(), Malformed> {
    check_op(pkt, 2)
}

fn check_op(pkt: &[u8], op: u8) -> Result<(), Malformed> {
    if pkt.len() < HEADER_LEN {
        return Err(Malformed::Truncated(pkt.len()));
    }
    if pkt[0] != op {
        return Err(if op == 1 {
            Malformed::NotRequest(pkt[0])
        } else {
            Malformed::NotReply(pkt[0])
        });
    }
    let (htype, hlen) = (pkt[1], pkt[2]);
    if htype != 1 || hlen != 6 {
        return Err(Malformed::NotEthernet { htype, hlen });
    }
    if pkt[236..240] != MAGIC {
        return Err(Malformed::NoMagic);
    }
    let mut i = HEADER_LEN;
    let mut msg_type = false;
    // The run of consecutive options with one code, as the decoder will concatenate it.
    let mut run: Option<(u8, usize)> = None;
    // Some clients omit the end option and pad to the end; the list then simply stops there.
    while let Some(&code) = pkt.get(i) {
        if code == 0 || code == 255 {
            end_run(run.take())?;
            if code == 255 {
                break;
            }
            i += 1;
            continue;
        }
        let len = usize::from(*pkt.get(i + 1).ok_or(Malformed::OptionOverrun { code })?);
        if i + 2 + len > pkt.len() {
            return Err(Malformed::OptionOverrun { code });
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            other => {
                end_run(other)?;
                Some((code, len))
            }
        };
        msg_type |= code == 53;
        i += 2 + len;
    }
    end_run(run)?;
    if !msg_type {
        return Err(Malformed::NoMessageType);
    }
    Ok(())
}

/// The verdict on one finished run of same-code options.
fn end_run(run: Option<(u8, usize)>) -> Result<(), Malformed> {
    match run {
        Some((code, len)) if !length_ok(code, len) => Err(Malformed::OptionLength { code, len }),
        _ => Ok(()),
    }
}

/// Check and decode a request. The decode runs under `catch_unwind` as a second line of defence:
/// a decoder panic on some input [`check`] did not foresee costs one packet, never the server.
pub fn decode_request(pkt: &[u8]) -> Result<(Message, MessageType), Malformed> {
    check(pkt)?;
    decode_checked(pkt)
}

/// Check and decode a reply, as [`decode_request`] does a request.
pub fn decode_reply(pkt: &[u8]) -> Result<(Message, MessageType), Malformed> {
    check_reply(pkt)?;
    decode_checked(pkt)
}

/// Decode a checked packet (under `catch_unwind`) and name its message type.
fn decode_checked(pkt: &[u8]) -> Result<(Message, MessageType), Malformed> {
    let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(pkt)))
        .map_err(|_| Malformed::Decode("decoder panicked".into()))?
        .map_err(|e| Malformed::Decode(e.to_string()))?;
    let ty = decoded.opts().msg_type().ok_or(Malformed::NoMessageType)?;
    Ok((decoded, ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[236..240].copy_from_slice(&MAGIC);
        p
    }

    #[test]
    fn accepts_a_minimal_discover() {
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1, 255]);
        check(&p).unwrap();
        let (_, ty) = decode_request(&p).unwrap();
        assert_eq!(ty, MessageType::Discover);
    }

    #[test]
    fn names_each_framing_fault() {
        let mut short = base();
        short.truncate(100);
        assert_eq!(check(&short), Err(Malformed::Truncated(100)));

        let mut reply = base();
        reply[0] = 2;
        reply.extend_from_slice(&[53, 1, 2, 255]);
        assert_eq!(check(&reply), Err(Malformed::NotRequest(2)));

        let mut hlen = base();
        hlen[2] = 200;
        hlen.extend_from_slice(&[53, 1, 1, 255]);
        assert!(matches!(check(&hlen), Err(Malformed::NotEthernet { .. })));

        let mut cookie = base();
        cookie[239] = 0;
        assert_eq!(check(&cookie), Err(Malformed::NoMagic));

        let mut overrun = base();
        overrun.extend_from_slice(&[53, 1, 1, 60, 200, b'P']);
        assert_eq!(check(&overrun), Err(Malformed::OptionOverrun { code: 60 }));

        let mut bad_len = base();
        bad_len.extend_from_slice(&[53, 3, 1, 1, 1, 255]);
        assert_eq!(
            check(&bad_len),
            Err(Malformed::OptionLength { code: 53, len: 3 })
        );

        // Lengths that would trip dhcproto's debug assertions or underflow.
        for opt in [[81u8, 1, 0], [94, 1, 0], [80, 1, 0]] {
            let mut p = base();
            p.extend_from_slice(&[53, 1, 1]);
            p.extend_from_slice(&opt);
            p.push(255);
            assert!(
                matches!(check(&p), Err(Malformed::OptionLength { .. })),
                "{opt:?}"
            );
        }

        // RFC 3396: dhcproto joins consecutive same-code options, so two 3-byte halves of
        // option 94 make one of 6 (a debug assertion in the crate; found by the fuzzer).
        let mut split = base();
        split.extend_from_slice(&[53, 1, 1, 94, 3, 1, 2, 1, 94, 3, 1, 2, 1, 255]);
        assert_eq!(
            check(&split),
            Err(Malformed::OptionLength { code: 94, len: 6 })
        );
        // ...while a list split mid-address is whole again once joined, and a pad ends a run.
        let mut joined = base();
        joined.extend_from_slice(&[53, 1, 1, 3, 2, 10, 0, 3, 2, 0, 1, 255]);
        check(&joined).unwrap();
        decode_request(&joined).unwrap();
        let mut padded = base();
        padded.extend_from_slice(&[53, 1, 1, 94, 3, 1, 2, 1, 0, 94, 3, 1, 2, 1, 255]);
        check(&padded).unwrap();

        let mut no_type = base();
        no_type.extend_from_slice(&[12, 2, b'h', b'i', 255]);
        assert_eq!(check(&no_type), Err(Malformed::NoMessageType));
    }

    #[test]
    fn random_garbage_never_panics() {
        // A cheap fuzz: mutate a valid packet byte by byte; every outcome must be Ok or Err.
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1, 93, 2, 0, 0, 60, 9]);
        p.extend_from_slice(b"PXEClient");
        p.extend_from_slice(&[81, 3, 0, 0, 0, 255]);
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut q = p.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let at = HEADER_LEN + (seed as usize % (q.len() - HEADER_LEN));
                q[at] = (seed >> 8) as u8;
            }
            let _ = decode_request(&q);
        }
    }
}
