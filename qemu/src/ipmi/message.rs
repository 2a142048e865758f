//! Wire formats: the RMCP header, IPMI v1.5 and v2.0 (RMCP+) session wrappers, ASF presence
//! ping, and IPMI LAN messages with their two checksums (IPMI v2.0 §13).

use super::crypto;

/// RMCP header of every IPMI datagram: version 6, reserved, no-ACK sequence, class IPMI.
pub const RMCP_IPMI: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
/// Auth type byte that marks an RMCP+ (IPMI v2.0) session header.
pub const AUTH_RMCPP: u8 = 0x06;

/// RMCP+ payload types (§13.27.3).
pub mod payload {
    /// An IPMI message.
    pub const IPMI: u8 = 0x00;
    /// OEM explicit (carries an IANA + OEM id we do not support).
    pub const OEM: u8 = 0x02;
    /// RMCP+ Open Session Request.
    pub const OPEN_REQ: u8 = 0x10;
    /// RMCP+ Open Session Response.
    pub const OPEN_RSP: u8 = 0x11;
    /// RAKP message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP message 4.
    pub const RAKP4: u8 = 0x15;
    /// Payload type byte flag: payload encrypted.
    pub const ENCRYPTED: u8 = 0x80;
    /// Payload type byte flag: packet carries an AuthCode trailer.
    pub const AUTHENTICATED: u8 = 0x40;
}

/// Why a datagram was dropped without reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not RMCP, or a class we do not serve.
    #[error("not an RMCP IPMI/ASF datagram")]
    NotRmcp,
    /// Shorter than its headers or its length fields claim.
    #[error("truncated packet")]
    Truncated,
    /// IPMI v1.5 with an authentication type other than none.
    #[error("unsupported IPMI v1.5 authentication type")]
    V15Auth,
    /// Bad IPMI message checksum.
    #[error("bad IPMI message checksum")]
    Checksum,
}

/// A parsed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// ASF presence ping (RMCP class 6) with its message tag.
    Ping {
        /// Echoed in the pong.
        tag: u8,
    },
    /// IPMI v1.5 session wrapper, auth type none.
    V15 {
        /// Session ID (0 outside a session).
        session_id: u32,
        /// The IPMI message.
        msg: &'a [u8],
    },
    /// IPMI v2.0 / RMCP+ session wrapper.
    V20 {
        /// Payload type byte, encrypted/authenticated flags included.
        ptype: u8,
        /// Session ID (the BMC's, 0 outside a session).
        session_id: u32,
        /// Session sequence number.
        seq: u32,
        /// The (possibly encrypted) payload.
        payload: &'a [u8],
        /// Everything after the payload: integrity pad, pad length, next header, AuthCode.
        trailer: &'a [u8],
        /// From the auth type byte to the end of the datagram (what the AuthCode covers,
        /// minus the AuthCode itself).
        session_part: &'a [u8],
    },
}

fn u32le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

/// Parse one UDP datagram.
pub fn parse(d: &[u8]) -> Result<Frame<'_>, Malformed> {
    if d.len() < 4 || d[0] != 0x06 {
        return Err(Malformed::NotRmcp);
    }
    match d[3] & 0x1f {
        0x06 => {
            // ASF: IANA (4) | type | tag | reserved | data length.
            if d.len() < 12 || d[4..8] != [0x00, 0x00, 0x11, 0xbe] || d[8] != 0x80 {
                return Err(Malformed::NotRmcp);
            }
            Ok(Frame::Ping { tag: d[9] })
        }
        0x07 => {
            let s = &d[4..];
            if s.is_empty() {
                return Err(Malformed::Truncated);
            }
            if s[0] == AUTH_RMCPP {
                if s.len() < 12 {
                    return Err(Malformed::Truncated);
                }
                let ptype = s[1];
                if ptype & 0x3f == payload::OEM {
                    return Err(Malformed::NotRmcp);
                }
                let len = u16::from_le_bytes([s[10], s[11]]) as usize;
                if s.len() < 12 + len {
                    return Err(Malformed::Truncated);
                }
                Ok(Frame::V20 {
                    ptype,
                    session_id: u32le(&s[2..]),
                    seq: u32le(&s[6..]),
                    payload: &s[12..12 + len],
                    trailer: &s[12 + len..],
                    session_part: s,
                })
            } else if s[0] == 0x00 {
                if s.len() < 10 {
                    return Err(Malformed::Truncated);
                }
                let len = s[9] as usize;
                if s.len() < 10 + len {
                    return Err(Malformed::Truncated);
                }
                Ok(Frame::V15 {
                    session_id: u32le(&s[5..]),
                    msg: &s[10..10 + len],
                })
            } else {
                Err(Malformed::V15Auth)
            }
        }
        _ => Err(Malformed::NotRmcp),
    }
}

/// The pong answering a presence ping: IPMI supported, no other interactions.
pub fn pong(tag: u8) -> Vec<u8> {
    let mut v = vec![
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, tag, 0x00, 0x10,
    ];
    v.extend_from_slice(&[0x00, 0x00, 0x11, 0xbe, 0, 0, 0, 0, 0x81, 0x00]);
    v.extend_from_slice(&[0; 6]);
    v
}

/// An IPMI v1.5 datagram, auth type none, outside a session.
pub fn build_v15(msg: &[u8]) -> Vec<u8> {
    let mut v = RMCP_IPMI.to_vec();
    v.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0, msg.len() as u8]);
    v.extend_from_slice(msg);
    v
}

/// An RMCP+ datagram. With `k1`, it is marked authenticated and gets the integrity pad, pad
/// length, next header and an HMAC-SHA1-96 AuthCode over everything from the auth type on.
pub fn build_v20(
    ptype: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    k1: Option<&[u8]>,
) -> Vec<u8> {
    let mut v = RMCP_IPMI.to_vec();
    let ptype = if k1.is_some() {
        ptype | payload::AUTHENTICATED
    } else {
        ptype
    };
    v.extend_from_slice(&[AUTH_RMCPP, ptype]);
    v.extend_from_slice(&session_id.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    v.extend_from_slice(payload);
    if let Some(k1) = k1 {
        // Pad so that auth type .. next header is a multiple of 4 bytes.
        let covered = v.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        v.extend(std::iter::repeat_n(0xff, pad));
        v.extend_from_slice(&[pad as u8, 0x07]);
        let code = crypto::integrity_sha1_96(k1, &v[4..]);
        v.extend_from_slice(&code);
    }
    v
}

/// Two's-complement checksum: the bytes plus it sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// An IPMI request message (LAN format, §13.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Responder (BMC) slave address.
    pub rs_addr: u8,
    /// Network function (even: request).
    pub netfn: u8,
    /// Responder LUN.
    pub rs_lun: u8,
    /// Requester software ID.
    pub rq_addr: u8,
    /// Requester sequence (6 bits).
    pub rq_seq: u8,
    /// Requester LUN.
    pub rq_lun: u8,
    /// Command.
    pub cmd: u8,
    /// Request data.
    pub data: &'a [u8],
}

/// Parse an IPMI request message, checking both checksums.
pub fn parse_request(m: &[u8]) -> Result<Request<'_>, Malformed> {
    if m.len() < 7 {
        return Err(Malformed::Truncated);
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(Malformed::Checksum);
    }
    Ok(Request {
        rs_addr: m[0],
        netfn: m[1] >> 2,
        rs_lun: m[1] & 3,
        rq_addr: m[3],
        rq_seq: m[4] >> 2,
        rq_lun: m[4] & 3,
        cmd: m[5],
        data: &m[6..m.len() - 1],
    })
}

/// Build the response message to `rq`: completion code `cc`, then `data`.
pub fn build_response(rq: &Request<'_>, cc: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![rq.rq_addr, ((rq.netfn | 1) << 2) | rq.rq_lun];
    v.push(checksum(&v));
    v.extend_from_slice(&[rq.rs_addr, (rq.rq_seq << 2) | rq.rs_lun, rq.cmd, cc]);
    v.extend_from_slice(data);
    let c = checksum(&v[3..]);
    v.push(c);
    v
}

/// Build a request message (what a remote console sends; used by tests and tools).
pub fn build_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x20, netfn << 2];
    v.push(checksum(&v));
    v.extend_from_slice(&[0x81, rq_seq << 2, cmd]);
    v.extend_from_slice(data);
    let c = checksum(&v[3..]);
    v.push(c);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_checksums() {
        let m = build_request(0x00, 0x02, 5, &[0x01]);
        let rq = parse_request(&m).unwrap();
        assert_eq!(
            (rq.netfn, rq.cmd, rq.rq_seq, rq.data),
            (0, 2, 5, &[1u8][..])
        );
        let mut bad = m.clone();
        bad[6] ^= 0xff;
        assert_eq!(parse_request(&bad), Err(Malformed::Checksum));
        let rsp = build_response(&rq, 0, &[7]);
        assert_eq!(rsp[1] >> 2, 1, "response netfn is request netfn + 1");
        assert_eq!(checksum(&rsp[..2]), rsp[2]);
        assert_eq!(checksum(&rsp[3..rsp.len() - 1]), *rsp.last().unwrap());
        assert_eq!(rsp[6], 0);
    }

    #[test]
    fn v20_trailer_is_padded_and_signed() {
        let k1 = [9u8; 20];
        for len in 0..8 {
            let payload = vec![0xab; len];
            let d = build_v20(0, 0x1234, 7, &payload, Some(&k1));
            let Frame::V20 {
                ptype,
                session_id,
                seq,
                payload: p,
                trailer,
                session_part,
            } = parse(&d).unwrap()
            else {
                panic!("not v2")
            };
            assert_eq!((ptype, session_id, seq, p), (0x40, 0x1234, 7, &payload[..]));
            assert_eq!((session_part.len() - 12) % 4, 0);
            let signed = &session_part[..session_part.len() - 12];
            assert_eq!(
                crypto::integrity_sha1_96(&k1, signed),
                trailer[trailer.len() - 12..]
            );
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        for d in [
            &[][..],
            &[6, 0, 0xff],
            &[6, 0, 0xff, 7],
            &[6, 0, 0xff, 7, 6, 0, 0, 0],
            &[1, 2, 3, 4, 5],
        ] {
            assert!(parse(d).is_err());
        }
        let mut d = build_v20(0, 1, 1, &[1, 2, 3], None);
        d.truncate(d.len() - 1);
        assert_eq!(parse(&d), Err(Malformed::Truncated));
        assert!(matches!(parse(&build_v15(&[1, 2])), Ok(Frame::V15 { .. })));
    }
}
