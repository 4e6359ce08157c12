//! Which servers Steadfast trusts when it connects out over TLS: the SDK and
//! the CLI reaching a Steadfast server, the server delivering notifications,
//! storage reaching PostgreSQL. One answer for all of them, so an operator
//! configures trust once.
//!
//! Trusted: the system's roots (on Linux, the directories OpenSSL would
//! read, e.g. `/etc/ssl/certs`) plus the PEM bundle named by `SSL_CERT_FILE` (and the
//! directory `SSL_CERT_DIR`), the convention OpenSSL, curl and Python share.
//! Unlike OpenSSL, the variable adds to the system's roots instead of
//! replacing them: a private CA for one internal service must not cut the
//! server off from every public receiver. The variables are read by
//! `rustls-native-certs`, not by Steadfast's code.

use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A set of trusted root certificates.
#[derive(Debug, Clone)]
pub struct TrustedRoots(Arc<RootCertStore>);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {detail}")]
    Certificates { path: String, detail: String },
    #[error("{0}")]
    Config(String),
}

impl TrustedRoots {
    /// The system's roots plus `SSL_CERT_FILE`'s, loaded once per process.
    pub fn system() -> Result<TrustedRoots, TlsError> {
        static SYSTEM: OnceLock<Result<TrustedRoots, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| load_system().map_err(|error| error.to_string()))
            .clone()
            .map_err(TlsError::Config)
    }

    /// No roots at all: every server is refused.
    pub fn none() -> TrustedRoots {
        TrustedRoots(Arc::new(RootCertStore::empty()))
    }

    /// Only the certificates in `pem` (a bundle of one or more).
    pub fn from_pem(pem: &[u8]) -> Result<TrustedRoots, TlsError> {
        let mut store = RootCertStore::empty();
        add_pem(&mut store, pem, "the given PEM")?;
        Ok(TrustedRoots(Arc::new(store)))
    }

    /// Only the certificates in the PEM file at `path`.
    pub fn from_pem_file(path: &Path) -> Result<TrustedRoots, TlsError> {
        let pem = std::fs::read(path).map_err(|error| TlsError::Certificates {
            path: path.display().to_string(),
            detail: error.to_string(),
        })?;
        let mut store = RootCertStore::empty();
        add_pem(&mut store, &pem, &path.display().to_string())?;
        Ok(TrustedRoots(Arc::new(store)))
    }

    pub fn store(&self) -> Arc<RootCertStore> {
        self.0.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A client configuration that verifies servers against these roots
    /// (certificate chain and host name), TLS 1.2 and 1.3.
    pub fn client_config(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_root_certificates(self.0.clone())
            .with_no_client_auth()
    }
}

/// The one cryptography provider every TLS connection uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_system() -> Result<TrustedRoots, TlsError> {
    let mut store = RootCertStore::empty();
    // With `SSL_CERT_FILE` or `SSL_CERT_DIR` set this loads only those; the
    // system's directories are added below either way.
    let configured = rustls_native_certs::load_native_certs();
    // A store that yielded nothing at all is misconfigured (an unreadable
    // SSL_CERT_FILE); one unreadable file among many is not worth refusing
    // to start over.
    if let (Some(error), true) = (configured.errors.first(), configured.certs.is_empty()) {
        return Err(TlsError::Config(format!("cannot load trusted certificates: {error}")));
    }
    for error in &configured.errors {
        tracing::warn!(%error, "a trusted certificate could not be loaded");
    }
    store.add_parsable_certificates(configured.certs);
    for dir in openssl_probe::candidate_cert_dirs() {
        // A system directory holds files of every kind (keys, CRLs, links);
        // what does not parse as a certificate is skipped, as OpenSSL does.
        store.add_parsable_certificates(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
    }
    Ok(TrustedRoots(Arc::new(store)))
}

fn add_pem(store: &mut RootCertStore, pem: &[u8], origin: &str) -> Result<(), TlsError> {
    let invalid = |detail: String| TlsError::Certificates {
        path: origin.to_owned(),
        detail,
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|error| invalid(error.to_string()))?;
        store.add(cert).map_err(|error| invalid(error.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(invalid("no certificate in it".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused() {
        assert!(TrustedRoots::from_pem(b"not a certificate").is_err());
    }
}

/// Certificates made in a test: a private CA and server identities it
/// signs, written as PEM files, for tests of every TLS path against real
/// handshakes.
#[cfg(feature = "test-support")]
pub mod test_ca {
    use std::path::{Path, PathBuf};

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    /// A private certificate authority.
    #[derive(Debug)]
    pub struct TestCa {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A server's certificate (signed by a [`TestCa`]) and private key.
    #[derive(Debug, Clone)]
    pub struct Identity {
        pub cert_pem: String,
        pub key_pem: String,
    }

    /// Where [`Identity::write`] put the files.
    #[derive(Debug, Clone)]
    pub struct IdentityFiles {
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    impl TestCa {
        pub fn new(name: &str) -> TestCa {
            let mut params = CertificateParams::new(Vec::new()).expect("no names to check");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("a key pair");
            let cert = params.self_signed(&key).expect("a self-signed CA");
            TestCa {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A server certificate for `names` (DNS names or IP addresses).
        pub fn issue(&self, names: &[&str]) -> Identity {
            let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
            let mut params = CertificateParams::new(names.clone()).expect("valid names");
            params.distinguished_name.push(DnType::CommonName, names[0].as_str());
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("a key pair");
            let cert = params.signed_by(&key, &self.issuer).expect("signed by the CA");
            Identity {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }

        /// Writes the CA's certificate to `dir/name`.
        pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, &self.pem).expect("can write the CA certificate");
            path
        }
    }

    impl Identity {
        /// Writes `{stem}.crt` and `{stem}.key` into `dir`.
        pub fn write(&self, dir: &Path, stem: &str) -> IdentityFiles {
            let files = IdentityFiles {
                cert: dir.join(format!("{stem}.crt")),
                key: dir.join(format!("{stem}.key")),
            };
            std::fs::write(&files.cert, &self.cert_pem).expect("can write the certificate");
            std::fs::write(&files.key, &self.key_pem).expect("can write the key");
            files
        }
    }
}
