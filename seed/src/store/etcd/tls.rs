//! etcd's TLS, with a CA the seed generates: members authenticate each other (peer TLS) and
//! their clients (client TLS with client certificates), both against that CA.
//!
//! [`Pki::create`] writes into a directory: `ca.pem` + `ca-key.pem`, and per name `NAME.pem` +
//! `NAME-key.pem`, every key file mode 0600. Member certificates are for server and client
//! use (a member is a client of its peers) with the member's addresses as subject alternative
//! names; client certificates (the daemons) are for client use only. Keys are ECDSA P-256.

use super::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A CA in a directory, and the certificates it issued there.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn write(path: &Path, data: &str, secret: bool) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    f.write_all(data.as_bytes()).map_err(err)
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

impl Pki {
    /// A new CA (`seed etcd CA`) written into `dir` (created).
    pub fn create(dir: &Path) -> Result<Pki, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.into(),
            source,
        })?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = named("seed etcd CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        write(&dir.join("ca.pem"), &cert.pem(), false)?;
        write(&dir.join("ca-key.pem"), &key.serialize_pem(), true)?;
        Ok(Pki {
            dir: dir.into(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(&self, name: &str, sans: &[String], server: bool) -> Result<TlsFiles, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = named(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = TlsFiles {
            ca: self.ca(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
        };
        write(&files.cert, &cert.pem(), false)?;
        write(&files.key, &key.serialize_pem(), true)?;
        Ok(files)
    }

    /// A member's certificate for the addresses (IPs or DNS names) it answers on.
    pub fn member(&self, name: &str, addresses: &[String]) -> Result<TlsFiles, TlsError> {
        self.issue(name, addresses, true)
    }

    /// A client's certificate (a daemon's, an operator's).
    pub fn client(&self, name: &str) -> Result<TlsFiles, TlsError> {
        self.issue(name, &[], false)
    }
}
