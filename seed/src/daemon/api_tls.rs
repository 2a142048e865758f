//! The operators' API over HTTPS (`[api] tls`): the CA and server certificate the seed makes
//! for itself, or the operator's own, and the rustls server configuration from them.
//!
//! With `tls = "auto"` the daemon keeps, in `<state_dir>/api-tls/` (0700): `ca.pem` +
//! `ca-key.pem` (made once, then kept: clients pin it, `seed ca export` prints it), and
//! `server.pem` + `server-key.pem` signed by it for [`server_names`], re-issued whenever those
//! names change (`server.names` records the names of the current one); with the agents' HTTPS
//! (`[agent] tls`), `agent.pem` + `agent-key.pem` the same way for the provisioning address,
//! its file carrying the CA after it. Key files are 0600,
//! written durably ([`fsutil::AtomicFile`]). Keys are ECDSA P-256, on ring (rcgen and rustls
//! share it; no aws-lc).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory under the daemon's state directory.
pub const DIR: &str = "api-tls";
/// The CA certificate (public: clients pin it).
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
/// The CA's subject. The CA is rebuilt from its key and this name to sign a new server
/// certificate (rcgen parses no certificates without x509-parser); the key identifiers follow
/// from the key, so the issued certificates chain to the stored `ca.pem`.
const CA_NAME: &str = "seed API CA";

/// Why the API's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error("generating a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the TLS server configuration")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ApiTlsError + '_ {
    move |source| ApiTlsError::Io {
        path: path.into(),
        source,
    }
}

/// The files the API serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub files: CertFiles,
    /// The CA certificate (to pin).
    pub ca: PathBuf,
    /// A new CA was made (first start).
    pub new_ca: bool,
    /// A new server certificate was issued (first start, or the names changed).
    pub new_server: bool,
}

/// The names the server certificate is for: `localhost`, 127.0.0.1, the listen address's IP
/// (unless unspecified, `0.0.0.0`) and `extra` (`[api] tls_names`), each once, in that order.
pub fn server_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().map(|n| n.trim().to_string()));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// The CA certificate of an auto-TLS state directory.
pub fn ca_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR).join(CA_CERT)
}

/// Make (first start) or keep the CA in `<state_dir>/api-tls`, and a server certificate for
/// `names` signed by it: re-issued when `names` differ from the current one's, the CA kept.
pub fn ensure(state_dir: &Path, names: &[String]) -> Result<Ensured, ApiTlsError> {
    ensure_leaf(state_dir, "server", names, false)
}

/// [`ensure`] for the agents' HTTPS port on the provisioning network: `agent.pem` for
/// `server_ip`, under the same CA, with the CA in its chain (the agents are given only the
/// CA's fingerprint, [`ca_sha256`], and take the CA from the handshake).
pub fn ensure_agent(
    state_dir: &Path,
    server_ip: std::net::Ipv4Addr,
) -> Result<Ensured, ApiTlsError> {
    ensure_leaf(state_dir, "agent", &[server_ip.to_string()], true)
}

/// The SHA-256 (hex) of the CA certificate at `path`: what the agents pin.
pub fn ca_sha256(path: &Path) -> Result<String, ApiTlsError> {
    use sha2::Digest;
    let der = CertificateDer::from_pem_file(path).map_err(|e| ApiTlsError::Pem {
        path: path.into(),
        reason: e.to_string(),
    })?;
    Ok(hex::encode(sha2::Sha256::digest(der.as_ref())))
}

/// The CA (made at first) and the certificate `<leaf>.pem` + `<leaf>-key.pem` for `names`,
/// re-issued when the names (`<leaf>.names`) change; `chain`: the CA follows it in its file.
fn ensure_leaf(
    state_dir: &Path,
    leaf: &str,
    names: &[String],
    chain: bool,
) -> Result<Ensured, ApiTlsError> {
    let dir = state_dir.join(DIR);
    private_dir(&dir)?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let files = CertFiles {
        cert: dir.join(format!("{leaf}.pem")),
        key: dir.join(format!("{leaf}-key.pem")),
    };
    let names_file = dir.join(format!("{leaf}.names"));
    let new_ca = !(ca_cert.exists() && ca_key.exists());
    let issuer = if new_ca {
        let key = KeyPair::generate()?;
        let params = ca_params();
        let cert = params.self_signed(&key)?;
        // The key first: a CA certificate without its key would be kept and sign nothing.
        write(&ca_key, &key.serialize_pem(), 0o600)?;
        write(&ca_cert, &cert.pem(), 0o644)?;
        Issuer::new(params, key)
    } else {
        let pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| ApiTlsError::Pem {
            path: ca_key.clone(),
            reason: e.to_string(),
        })?;
        Issuer::new(ca_params(), key)
    };
    let want = names.join("\n") + "\n";
    let current = std::fs::read_to_string(&names_file).ok();
    let new_server = new_ca
        || current.as_deref() != Some(want.as_str())
        || !files.cert.exists()
        || !files.key.exists();
    if new_server {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = named(names.first().map_or("seed", String::as_str));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut pem = params.signed_by(&key, &issuer)?.pem();
        if chain {
            pem += &std::fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
        }
        write(&files.key, &key.serialize_pem(), 0o600)?;
        write(&files.cert, &pem, 0o644)?;
        write(&names_file, &want, 0o644)?;
    }
    Ok(Ensured {
        files,
        ca: ca_cert,
        new_ca,
        new_server,
    })
}

/// The TLS crypto of the API's server and of the CLI: ring, which rcgen already builds on.
/// rustls 0.23.48 deprecates it only for lacking post-quantum key exchange; aws-lc-rs (its
/// default) would add a second, C/CMake-built crypto library to the appliance's binary for it.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration of a certificate chain and key (PEM files), on ring.
pub fn server_config(files: &CertFiles) -> Result<Arc<rustls::ServerConfig>, ApiTlsError> {
    let pem = |path: &Path, e: rustls::pki_types::pem::Error| ApiTlsError::Pem {
        path: path.into(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, e))?;
    if certs.is_empty() {
        return Err(ApiTlsError::Pem {
            path: files.cert.clone(),
            reason: "no certificate in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem(&files.key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = named(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// `dir` created 0700, or made 0700: it is the seed's own (it holds the CA's key).
fn private_dir(dir: &Path) -> Result<(), ApiTlsError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Replace `path` durably, created with `mode` (0600 for keys: never readable by others, even
/// for a moment).
fn write(path: &Path, data: &str, mode: u32) -> Result<(), ApiTlsError> {
    let mut f = fsutil::AtomicFile::with_mode(path, mode).map_err(io(path))?;
    f.write_all(data.as_bytes()).map_err(io(path))?;
    f.commit().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    /// Whether `server.pem` is valid for `name` under `ca.pem` (rustls' own verifier).
    fn verifies(e: &Ensured, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&e.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let cert = CertificateDer::from_pem_file(&e.files.cert).unwrap();
        v.verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn names_are_loopback_the_listen_ip_and_the_configured_ones() {
        let l = "10.0.1.5:6385".parse().unwrap();
        assert_eq!(
            server_names(l, &["seed.example".into(), "localhost".into(), " ".into()]),
            ["localhost", "127.0.0.1", "10.0.1.5", "seed.example"]
        );
        let any = "0.0.0.0:6385".parse().unwrap();
        assert_eq!(server_names(any, &[]), ["localhost", "127.0.0.1"]);
    }

    #[test]
    fn the_server_certificate_is_for_its_names_and_chains_to_the_ca() {
        let t = tempfile::tempdir().unwrap();
        let names = server_names("10.0.1.5:6385".parse().unwrap(), &["seed.example".into()]);
        let e = ensure(t.path(), &names).unwrap();
        assert!(e.new_ca && e.new_server);
        for n in ["localhost", "127.0.0.1", "10.0.1.5", "seed.example"] {
            assert!(verifies(&e, n), "{n}");
        }
        for n in ["10.0.1.6", "other.example"] {
            assert!(!verifies(&e, n), "{n} is not a SAN");
        }
        assert_eq!(mode(&t.path().join(DIR)), 0o700);
        assert_eq!(mode(&t.path().join(DIR).join(CA_KEY)), 0o600);
        assert_eq!(mode(&e.files.key), 0o600);
        assert!(server_config(&e.files).is_ok());
    }

    #[test]
    fn new_names_reissue_the_server_certificate_and_keep_the_ca() {
        let t = tempfile::tempdir().unwrap();
        let l = "127.0.0.1:6385".parse().unwrap();
        let first = ensure(t.path(), &server_names(l, &[])).unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        let cert = std::fs::read(&first.files.cert).unwrap();

        // The same names: nothing new.
        let same = ensure(t.path(), &server_names(l, &[])).unwrap();
        assert!(!same.new_ca && !same.new_server);
        assert_eq!(std::fs::read(&same.files.cert).unwrap(), cert);
        assert!(!verifies(&same, "seed.example"));

        // A new name: a new server certificate under the same CA.
        let more = ensure(t.path(), &server_names(l, &["seed.example".into()])).unwrap();
        assert!(!more.new_ca && more.new_server);
        assert_eq!(std::fs::read(&more.ca).unwrap(), ca, "the CA changed");
        assert_ne!(std::fs::read(&more.files.cert).unwrap(), cert);
        assert!(verifies(&more, "seed.example") && verifies(&more, "localhost"));
    }

    #[test]
    fn a_broken_key_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let e = ensure(t.path(), &["localhost".into()]).unwrap();
        std::fs::write(&e.files.key, "not a key").unwrap();
        let err = server_config(&e.files).unwrap_err();
        assert!(err.to_string().contains("server-key.pem"), "{err}");
    }
}
