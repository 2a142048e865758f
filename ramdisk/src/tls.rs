//! The agents' HTTPS to the seed, pinned to the seed's CA by its fingerprint.
//!
//! The ramdisk's kernel command line (`seed.ca=`) and the deployed node's identity file
//! (`seed_ca`) carry the SHA-256 of the seed's CA certificate, not the certificate: a kernel
//! command line is short. The seed's HTTPS port sends its chain with that CA in it; [`fetch_ca`]
//! takes the CA from one handshake — only a certificate whose SHA-256 is the pin, and only when
//! the server's certificate verifies under it — and [`agent`] makes the ureq agent that trusts
//! that CA alone. Hand-written: neither ureq nor rustls pins a CA by its fingerprint.
//!
//! With no pin (an `http://` seed URL: a seed with `[agent] tls = "off"`) the agent speaks plain
//! HTTP and refuses `https://` (no roots).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the seed's CA could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA pin {0:?} is not a SHA-256 in hex (64 hex digits)")]
    BadPin(String),
    #[error("{0}: not an https:// URL with a host")]
    BadUrl(String),
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS handshake with {addr} (the seed's CA must have SHA-256 {pin})")]
    Handshake {
        addr: String,
        pin: String,
        #[source]
        source: std::io::Error,
    },
}

impl TlsError {
    /// The error and its causes on one line (`a: b: c`), for a console.
    pub fn describe(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s += &format!(": {c}");
            cause = c.source();
        }
        s
    }
}

/// The SHA-256 of the one CA certificate trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin([u8; 32]);

impl Pin {
    /// From 64 hex digits (either case).
    pub fn parse(hex_digits: &str) -> Result<Self, TlsError> {
        let bad = || TlsError::BadPin(hex_digits.to_string());
        let bytes = hex::decode(hex_digits.trim()).map_err(|_| bad())?;
        Ok(Pin(bytes.try_into().map_err(|_| bad())?))
    }

    /// The pin of a certificate (DER).
    pub fn of(der: &[u8]) -> Self {
        Pin(Sha256::digest(der).into())
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// ring, as the seed's own TLS (`seed::daemon::api_tls::provider`, which says why not
/// aws-lc); deprecated by rustls only for lacking post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One TLS handshake with the server of `url` (`https://host[:port]…`): the CA certificate of
/// its chain whose SHA-256 is `pin`, once the server's certificate (for `url`'s host) verified
/// under it.
pub fn fetch_ca(
    url: &str,
    pin: &Pin,
    timeout: Duration,
) -> Result<CertificateDer<'static>, TlsError> {
    let uri: ureq::http::Uri = url.parse().map_err(|_| TlsError::BadUrl(url.into()))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(h)) => h.trim_start_matches('[').trim_end_matches(']'),
        _ => return Err(TlsError::BadUrl(url.into())),
    };
    let addr = format!("{host}:{}", uri.port_u16().unwrap_or(443));
    let connect = |source| TlsError::Connect {
        addr: addr.clone(),
        source,
    };
    let sock_addr = addr
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(std::io::ErrorKind::NotFound.into()))?;
    let mut sock = TcpStream::connect_timeout(&sock_addr, timeout).map_err(connect)?;
    let handshake = |source| TlsError::Handshake {
        addr: addr.clone(),
        pin: pin.to_string(),
        source,
    };
    sock.set_read_timeout(Some(timeout)).map_err(handshake)?;
    sock.set_write_timeout(Some(timeout)).map_err(handshake)?;
    let capture = Arc::new(Capture {
        pin: *pin,
        provider: provider(),
        found: Mutex::new(None),
    });
    let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadUrl(url.into()))?;
    let invalid = |e: rustls::Error| handshake(std::io::Error::other(e));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(invalid)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(handshake)?;
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let found = capture
        .found
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    found.ok_or_else(|| handshake(std::io::Error::other("the server's chain was not verified")))
}

/// A ureq agent from `config` that speaks HTTPS only to servers whose certificate chains to
/// `ca` (none: no HTTPS at all), with ring.
pub fn agent(
    config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ca: Option<&CertificateDer<'_>>,
) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let roots: Vec<Certificate<'static>> = ca
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .into_iter()
        .collect();
    config
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .unversioned_rustls_crypto_provider(provider())
                .build(),
        )
        .build()
        .new_agent()
}

/// The verifier of [`fetch_ca`]: finds the pinned CA among the certificates the server sent,
/// verifies the server's own certificate under it (name, dates, key usage: webpki), keeps it.
#[derive(Debug)]
struct Capture {
    pin: Pin,
    provider: Arc<CryptoProvider>,
    found: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| Pin::of(c) == self.pin) else {
            return Err(rustls::Error::General(format!(
                "the server sent no CA certificate with SHA-256 {}",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(roots.into(), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(ca.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The agents' HTTP client to the seed: plain for an `http://` URL; for an `https://` one, the
/// CA fetched once by its pin (retried on the next call while the seed is unreachable).
pub struct SeedClient {
    config: Box<dyn Fn() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> + Send + Sync>,
    url: String,
    pin: Option<Pin>,
    agent: std::sync::OnceLock<ureq::Agent>,
}

impl std::fmt::Debug for SeedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedClient")
            .field("url", &self.url)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl SeedClient {
    /// A client of the seed at `url`, pinning `ca` (hex SHA-256) when `url` is `https://`;
    /// `config` makes the agent's settings (timeouts, proxy…). An `https://` URL without a pin
    /// is refused: the agent would trust nothing.
    pub fn new(
        url: &str,
        ca: Option<&str>,
        config: impl Fn() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope>
            + Send
            + Sync
            + 'static,
    ) -> Result<Self, TlsError> {
        let pin = ca.map(Pin::parse).transpose()?;
        if url.starts_with("https://") && pin.is_none() {
            return Err(TlsError::BadPin(format!("(none given for {url})")));
        }
        Ok(SeedClient {
            config: Box::new(config),
            url: url.to_string(),
            pin,
            agent: std::sync::OnceLock::new(),
        })
    }

    /// The agent: at the first call with a pin, after fetching the CA (an error leaves it to
    /// the next call).
    pub fn http(&self) -> Result<&ureq::Agent, TlsError> {
        if let Some(a) = self.agent.get() {
            return Ok(a);
        }
        let ca = match &self.pin {
            Some(pin) if self.url.starts_with("https://") => {
                Some(fetch_ca(&self.url, pin, Duration::from_secs(10))?)
            }
            _ => None,
        };
        Ok(self
            .agent
            .get_or_init(|| agent((self.config)(), ca.as_ref())))
    }
}
