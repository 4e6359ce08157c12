//! TLS to PostgreSQL, with libpq's `sslmode` meanings, so a managed
//! database's documented URL works as written.
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` only; the
//! two verifying modes, `verify-ca` and `verify-full`, and `sslrootcert` are
//! taken out of the URL here and become the certificate verifier:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | always | no (as `verify-ca` when `sslrootcert` is given, as in libpq) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain, and the host name |
//!
//! Trusted roots are the file `sslrootcert` names, else the system's plus
//! `SSL_CERT_FILE`'s ([`TrustedRoots::system`]); `sslrootcert=system` names
//! the latter explicitly, as libpq 16 does.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use steadfast_protocol::tls::{TrustedRoots, provider, rustls};
use tokio_postgres::config::SslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// `sslrootcert`: a PEM file of trusted roots, or `system`.
    pub root_cert: Option<String>,
}

/// Splits `url` into what tokio-postgres parses and the TLS settings it
/// does not. Both URL (`postgres://…?sslmode=…`) and key/value
/// (`host=… sslmode=…`) forms are accepted.
pub fn split(url: &str) -> Result<(String, Settings), String> {
    let mut settings = Settings {
        mode: Mode::Prefer,
        root_cert: None,
    };
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => {
                settings.mode = match value.as_str() {
                    "disable" => Mode::Disable,
                    // libpq's `allow` tries plain first; TLS when offered is the safer reading.
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ));
                    }
                };
                Ok(true)
            }
            "sslrootcert" => {
                settings.root_cert = Some(value);
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("{key} is not UTF-8"))?;
            if !take(key, value.into_owned())? {
                kept.push(pair);
            }
        }
        match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        }
    } else {
        // Only the words taken out are removed; everything else (quoted
        // values, their spacing) is kept byte for byte. `sslmode` and
        // `sslrootcert` themselves are taken unquoted, without spaces
        // around `=`.
        let mut rest = String::with_capacity(url.len());
        let mut from = 0;
        for (start, word) in words(url) {
            let taken = match word.split_once('=') {
                Some((key, value)) => take(key, value.to_owned())?,
                None => false,
            };
            // `sslmode = require` would reach tokio-postgres unseen here,
            // and be overridden: refuse it rather than lose the mode.
            if !taken && (word.starts_with("sslmode") || word.starts_with("sslrootcert")) {
                return Err(format!("write {word:?} as key=value without spaces around `=`"));
            }
            if taken {
                rest.push_str(&url[from..start]);
                from = start + word.len();
            }
        }
        rest.push_str(&url[from..]);
        rest.trim().to_owned()
    };
    Ok((rest, settings))
}

/// The whitespace-separated words of `text` with their byte offsets; a
/// single-quoted value (with `\` escapes, as libpq reads it) is part of
/// its word, spaces and all.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let (mut start, mut quoted, mut escaped) = (None, false, false);
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '\'') => quoted = false,
                _ => {}
            }
            continue;
        }
        match (start, c.is_whitespace()) {
            (None, false) => start = Some(at),
            (Some(from), true) => {
                words.push((from, &text[from..at]));
                start = None;
            }
            _ => {}
        }
        if c == '\'' {
            quoted = true;
        }
    }
    words
}

impl Settings {
    /// What tokio-postgres is told: whether to try TLS, and whether to insist.
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector for these settings (unused with `disable`).
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let check = match (self.mode, &self.root_cert) {
            (Mode::Disable | Mode::Prefer, _) | (Mode::Require, None) => Check::Nothing,
            (Mode::Require | Mode::VerifyCa, Some(_)) | (Mode::VerifyCa, None) => Check::Chain,
            (Mode::VerifyFull, _) => Check::ChainAndName,
        };
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(Verifier {
                chain: None,
                check_name: false,
                provider: provider.clone(),
            }),
            Check::Chain | Check::ChainAndName => {
                let roots = match self.root_cert.as_deref() {
                    None | Some("system") => TrustedRoots::system(),
                    Some(path) => TrustedRoots::from_pem_file(Path::new(path)),
                }
                .map_err(|error| error.to_string())?;
                let chain = WebPkiServerVerifier::builder_with_provider(roots.store(), provider.clone())
                    .build()
                    .map_err(|error| format!("no usable trusted roots for PostgreSQL: {error}"))?;
                Arc::new(Verifier {
                    chain: Some(chain),
                    check_name: check == Check::ChainAndName,
                    provider: provider.clone(),
                })
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// Checks as much of the server's certificate as the mode asks. The
/// handshake's signatures are always verified: even unchecked, the
/// session is bound to the certificate presented.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The chain is checked before the name, so this error means the chain held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_out_of_both_url_forms() {
        let (rest, settings) = split(
            "postgres://app@db:5432/steadfast?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://app@db:5432/steadfast?application_name=x");
        assert_eq!(settings.mode, Mode::VerifyFull);
        assert_eq!(settings.root_cert.as_deref(), Some("/etc/ca.pem"));

        let (rest, settings) = split("host=db user=app sslmode=verify-ca dbname=s").unwrap();
        assert_eq!(rest, "host=db user=app  dbname=s");
        assert_eq!(settings.mode, Mode::VerifyCa);
        let (rest, _) = split("password='a  b' sslmode=require host=db").unwrap();
        assert_eq!(rest, "password='a  b'  host=db", "quoted values keep their spacing");
        let (rest, settings) = split("password='x sslmode=disable' host=db").unwrap();
        assert_eq!(
            rest, "password='x sslmode=disable' host=db",
            "a quoted value is not a setting"
        );
        assert_eq!(settings.mode, Mode::Prefer);
        assert!(
            split("host=db sslmode = require")
                .unwrap_err()
                .contains("without spaces")
        );

        let (rest, settings) = split("postgres://app@db/s").unwrap();
        assert_eq!((rest.as_str(), settings.mode), ("postgres://app@db/s", Mode::Prefer));

        assert!(
            split("postgres://app@db/s?sslmode=verify")
                .unwrap_err()
                .contains("sslmode=verify")
        );
    }
}
