//! A fake HTTP peer that serves exactly one request on a listener the test bound to
//! 127.0.0.1: what a guest's agent or first-boot service sent, answered with a fixed JSON body
//! and `Connection: close`. Run it on a thread and wait on a channel with a bound, so a stuck
//! guest cannot hang the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// One HTTP request as the peer saw it.
#[derive(Debug)]
pub struct Request {
    /// `POST /v1/node/booted HTTP/1.1`.
    pub line: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// The method and the path of the request line.
    pub fn method_path(&self) -> (&str, &str) {
        let mut parts = self.line.split_whitespace();
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
    }

    /// A header's value (`name` lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Accept one connection, read one HTTP/1.1 request (30 s read timeout), answer 200 with
/// `reply` as `application/json`.
pub fn serve(listener: &TcpListener, reply: &str) -> Request {
    let (mut s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )
    .unwrap();
    Request {
        line: line.trim().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}
