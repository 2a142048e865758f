//! An HTTP GET from a chosen source address: what a machine's firmware does after DHCP gave it
//! an address. The fake farm's machines share one network namespace, so each fetches its iPXE
//! script from its own address (added to the namespace's interface by the test) and the seed's
//! token handout rule (script asked from the MAC's address) is exercised as with real nodes.
//!
//! Written by hand because ureq does not bind a client socket to a source address; HTTP/1.0
//! with `Connection: close` keeps the answer a plain body up to EOF (no chunking).

use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

/// `GET url` from `src` (port chosen by the kernel): the status and the body.
pub fn get(src: Ipv4Addr, url: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid(format!("{url}: not http://")))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let to: SocketAddr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("{authority}: no address")))?;
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    sock.connect_timeout(&to.into(), timeout)?;
    let mut stream: std::net::TcpStream = sock.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(1 << 20).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid(format!("{url}: answer without a header end")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("{url}: no status in {head:?}")))?;
    Ok((status, body.to_string()))
}
