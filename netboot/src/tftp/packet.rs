//! TFTP wire format (RFC 1350 packets, RFC 2347 options): parsing requests and the peer's
//! ACK/ERROR packets, and encoding DATA, OACK and ERROR in place into a reusable buffer.
//!
//! Hand-written: the format is five opcodes of NUL-terminated strings, and the crates that parse
//! it either allocate per packet or lack the option extensions we negotiate.

/// Opcodes of RFC 1350 and RFC 2347.
pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// TFTP error codes (RFC 1350, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTid = 5,
    OptionNegotiation = 8,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `true` for WRQ (which we refuse), `false` for RRQ.
    pub write: bool,
    pub filename: String,
    /// Lower-cased transfer mode (`octet`, `netascii`, `mail`).
    pub mode: String,
    /// Options in the order sent, names lower-cased, values verbatim.
    pub options: Vec<(String, String)>,
}

/// A packet the peer sends during a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPacket<'a> {
    Ack(u16),
    Error {
        code: u16,
        message: &'a str,
    },
    /// A well-formed packet that has no place in a read transfer (RRQ, DATA, …).
    Other(u16),
}

/// Why a packet did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet shorter than its opcode requires")]
    Truncated,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("string field not NUL-terminated")]
    Unterminated,
    #[error("string field is not UTF-8")]
    NotUtf8,
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("empty file name")]
    EmptyFilename,
}

fn opcode(buf: &[u8]) -> Result<u16, ParseError> {
    match buf {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(ParseError::Truncated),
    }
}

/// Splits NUL-terminated strings; every field must be terminated.
fn strings(mut body: &[u8]) -> Result<Vec<&str>, ParseError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let end = body
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::Unterminated)?;
        out.push(std::str::from_utf8(&body[..end]).map_err(|_| ParseError::NotUtf8)?);
        body = &body[end + 1..];
    }
    Ok(out)
}

/// Parse a packet arriving on the server port: only RRQ and WRQ are requests.
/// Returns `Ok(None)` for a well-formed packet of another kind (it is dropped by the caller).
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, ParseError> {
    let op = opcode(buf)?;
    match op {
        RRQ | WRQ => {}
        DATA | ACK | ERROR | OACK => return Ok(None),
        other => return Err(ParseError::UnknownOpcode(other)),
    }
    let fields = strings(&buf[2..])?;
    let (filename, mode) = match fields.as_slice() {
        [f, m, ..] => (*f, *m),
        _ => return Err(ParseError::Truncated),
    };
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let rest = &fields[2..];
    let mut options = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        match pair {
            [name, value] => options.push((name.to_ascii_lowercase(), (*value).to_string())),
            [name] => return Err(ParseError::OptionWithoutValue((*name).to_string())),
            _ => unreachable!("chunks(2)"),
        }
    }
    Ok(Some(Request {
        write: op == WRQ,
        filename: filename.to_string(),
        mode: mode.to_ascii_lowercase(),
        options,
    }))
}

/// Parse a packet arriving on a transfer's socket.
pub fn parse_peer(buf: &[u8]) -> Result<PeerPacket<'_>, ParseError> {
    let op = opcode(buf)?;
    match op {
        ACK => {
            let b: [u8; 2] = buf
                .get(2..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(ParseError::Truncated)?;
            Ok(PeerPacket::Ack(u16::from_be_bytes(b)))
        }
        ERROR => {
            let b: [u8; 2] = buf
                .get(2..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(ParseError::Truncated)?;
            // Be lenient with the message: some clients omit the NUL or send Latin-1.
            let msg = &buf[4..];
            let msg = msg.split(|&c| c == 0).next().unwrap_or_default();
            Ok(PeerPacket::Error {
                code: u16::from_be_bytes(b),
                message: std::str::from_utf8(msg).unwrap_or("(not UTF-8)"),
            })
        }
        RRQ | WRQ | DATA | OACK => Ok(PeerPacket::Other(op)),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

/// Write an ERROR packet into `out` (cleared first).
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.clear();
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
}

/// Write an OACK packet into `out` (cleared first).
pub fn encode_oack(out: &mut Vec<u8>, options: &[(&str, String)]) {
    out.clear();
    out.extend_from_slice(&OACK.to_be_bytes());
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

/// Write a DATA header into `out` (cleared first) and size it for `payload` bytes, which the
/// caller then fills at `out[4..]`.
pub fn encode_data_header(out: &mut Vec<u8>, block: u16, payload: usize) {
    out.clear();
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.resize(4 + payload, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rrq_with_options() {
        let pkt = b"\x00\x01dir/file.bin\x00OCTET\x00BlkSize\x001428\x00tsize\x000\x00";
        let req = parse_request(pkt).unwrap().unwrap();
        assert!(!req.write);
        assert_eq!(req.filename, "dir/file.bin");
        assert_eq!(req.mode, "octet");
        assert_eq!(
            req.options,
            vec![
                ("blksize".to_string(), "1428".to_string()),
                ("tsize".to_string(), "0".to_string())
            ]
        );
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(parse_request(b"\x00"), Err(ParseError::Truncated));
        assert_eq!(
            parse_request(b"\x00\x09abc\0octet\0"),
            Err(ParseError::UnknownOpcode(9))
        );
        assert_eq!(
            parse_request(b"\x00\x01abc\0octet"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(parse_request(b"\x00\x01abc\0"), Err(ParseError::Truncated));
        assert_eq!(
            parse_request(b"\x00\x01\0octet\0"),
            Err(ParseError::EmptyFilename)
        );
        assert_eq!(
            parse_request(b"\x00\x01f\0octet\0blksize\0"),
            Err(ParseError::OptionWithoutValue("blksize".into()))
        );
        assert_eq!(parse_request(b"\x00\x04\x00\x01"), Ok(None));
    }

    #[test]
    fn parses_peer_packets() {
        assert_eq!(parse_peer(b"\x00\x04\x12\x34"), Ok(PeerPacket::Ack(0x1234)));
        assert_eq!(parse_peer(b"\x00\x04\x12"), Err(ParseError::Truncated));
        assert_eq!(
            parse_peer(b"\x00\x05\x00\x08no\0"),
            Ok(PeerPacket::Error {
                code: 8,
                message: "no"
            })
        );
        assert_eq!(parse_peer(b"\x00\x03\x00\x01"), Ok(PeerPacket::Other(DATA)));
        assert_eq!(parse_peer(b"\x00\x07"), Err(ParseError::UnknownOpcode(7)));
    }

    #[test]
    fn encodes() {
        let mut out = Vec::new();
        encode_error(&mut out, ErrorCode::FileNotFound, "nope");
        assert_eq!(out, b"\x00\x05\x00\x01nope\0");
        encode_oack(&mut out, &[("blksize", "1428".into())]);
        assert_eq!(out, b"\x00\x06blksize\x001428\0");
        encode_data_header(&mut out, 0x0102, 3);
        assert_eq!(out, b"\x00\x03\x01\x02\0\0\0");
    }
}
