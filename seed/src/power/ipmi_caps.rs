//! Which IPMI LAN versions a BMC offers, asked before any session is opened: one session-less
//! Get Channel Authentication Capabilities (IPMI v2.0 §22.13, with the "IPMI v2.0 extended data"
//! bit), carrying neither user name nor password.
//!
//! Why here and not in `ipmi-rs`: its `activate` asks the same question and, when the answer
//! does not announce IPMI 2.0, silently opens an IPMI 1.5 session — where the password goes out
//! in clear (authentication type "straight password") or as an MD5 hash an eavesdropper can
//! attack offline, and nothing is encrypted. It has no switch to refuse that, so the driver asks
//! first and does not call it unless the node's BMC entry allows IPMI 1.5. Hand-written: it is
//! one fixed 23-byte datagram and four bytes of the answer.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

/// The LAN session versions a BMC says it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanVersions {
    pub ipmi15: bool,
    pub ipmi20: bool,
}

/// RMCP (version 6, no ack, class IPMI), IPMI 1.5 session header without authentication
/// (session 0, sequence 0), and the message: BMC address 0x20, netfn App, software id 0x81,
/// command 0x38, channel "this one" with the v2.0 extended data bit (0x8e), administrator.
pub const REQUEST: [u8; 23] = [
    0x06, 0x00, 0xff, 0x07, // RMCP
    0x00, 0, 0, 0, 0, 0, 0, 0, 0, 9, // auth type none, sequence, session id, length
    0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5, // message and checksums
];

/// Why the answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    #[error("the answer to Get Channel Authentication Capabilities is malformed")]
    Malformed,
    #[error("Get Channel Authentication Capabilities failed with completion code {0:#04x}")]
    Completion(u8),
}

/// Read the answer to [`REQUEST`].
pub fn parse(answer: &[u8]) -> Result<LanVersions, CapsError> {
    // RMCP header, then the IPMI 1.5 session header: 10 bytes, or 26 with an auth code.
    let auth_type = *answer.get(4).ok_or(CapsError::Malformed)?;
    let msg_at = if auth_type == 0 { 14 } else { 30 };
    let msg = answer.get(msg_at..).ok_or(CapsError::Malformed)?;
    // rqAddr, netFn, checksum, rsAddr, rqSeq, cmd, completion code, data…
    if msg.len() < 7 || msg[5] != 0x38 {
        return Err(CapsError::Malformed);
    }
    if msg[6] != 0 {
        return Err(CapsError::Completion(msg[6]));
    }
    let data = msg.get(7..11).ok_or(CapsError::Malformed)?;
    let extended = data[1] & 0x80 != 0;
    Ok(LanVersions {
        // Without the extended data a BMC speaks only IPMI 1.5.
        ipmi15: !extended || data[3] & 0x01 != 0,
        ipmi20: extended && data[3] & 0x02 != 0,
    })
}

/// Ask the BMC at `addr` (one datagram, one answer within `timeout`).
pub fn ask(addr: (&str, u16), timeout: Duration) -> io::Result<Result<LanVersions, CapsError>> {
    let sock = UdpSocket::bind(if addr.0.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(&REQUEST)?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf)?;
    Ok(parse(&buf[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_checksums_are_right() {
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!(sum(&REQUEST[14..17]), 0);
        assert_eq!(sum(&REQUEST[17..23]), 0);
        assert_eq!(REQUEST[13] as usize, REQUEST.len() - 14);
    }

    fn answer(data: &[u8]) -> Vec<u8> {
        let mut a = vec![0x06, 0, 0xff, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a.extend_from_slice(&[0x81, 0x1c, 0x63, 0x20, 0x00, 0x38, 0x00]);
        a.extend_from_slice(data);
        a.push(0);
        a
    }

    #[test]
    fn versions_are_read_from_the_extended_data() {
        let v = |ext0: u8, ext3: u8| parse(&answer(&[0x01, ext0, 0x04, ext3, 0, 0, 0, 0]));
        assert_eq!(
            v(0x80, 0x02),
            Ok(LanVersions {
                ipmi15: false,
                ipmi20: true
            })
        );
        assert_eq!(
            v(0x80, 0x03),
            Ok(LanVersions {
                ipmi15: true,
                ipmi20: true
            })
        );
        // No extended data: a 1.5-only BMC, whatever the last byte says.
        assert_eq!(
            v(0x14, 0x02),
            Ok(LanVersions {
                ipmi15: true,
                ipmi20: false
            })
        );
        assert_eq!(parse(&answer(&[])), Err(CapsError::Malformed));
        assert_eq!(parse(&[0x06, 0]), Err(CapsError::Malformed));
        let mut failed = answer(&[]);
        failed[20] = 0xcc;
        assert_eq!(parse(&failed), Err(CapsError::Completion(0xcc)));
    }
}
