//! `SSL_CERT_FILE` adds to the system's roots instead of replacing them.
//! The variable is read when the roots are first loaded, once per
//! process, so the check runs in a child process of this test binary.

use std::process::Command;

use steadfast_protocol::tls::TrustedRoots;
use steadfast_protocol::tls::rustls::RootCertStore;
use steadfast_protocol::tls::rustls::pki_types::CertificateDer;
use steadfast_protocol::tls::rustls::pki_types::pem::PemObject;
use steadfast_protocol::tls::test_ca::TestCa;

const TEST: &str = "the_system_roots_and_ssl_cert_file_are_trusted_together";
/// Set in the child: the CA file it must find among the roots.
const CHILD: &str = "STEADFAST_ROOTS_TEST_CA";

/// The subject a certificate has as a trust anchor.
fn subject(cert: CertificateDer<'static>) -> Vec<u8> {
    let mut store = RootCertStore::empty();
    store.add(cert).unwrap();
    store.roots[0].subject.as_ref().to_vec()
}

#[test]
fn the_system_roots_and_ssl_cert_file_are_trusted_together() {
    if let Some(ca_file) = std::env::var_os(CHILD) {
        let roots = TrustedRoots::system().unwrap().store();
        let trusted = |cert| {
            let subject = subject(cert);
            roots.roots.iter().any(|anchor| anchor.subject.as_ref() == subject)
        };

        let ca = CertificateDer::from_pem_file(&ca_file).unwrap();
        assert!(trusted(ca), "SSL_CERT_FILE's CA is not trusted");

        let system_dir = openssl_probe_dir();
        let system = rustls_native_certs::load_certs_from_paths(None, Some(&system_dir)).certs;
        assert!(!system.is_empty(), "no system roots in {}", system_dir.display());
        assert!(
            system.into_iter().all(trusted),
            "SSL_CERT_FILE replaced the system's roots"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = TestCa::new("roots test CA").write(dir.path(), "ca.pem");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture"])
        // Only the file: a directory in SSL_CERT_DIR would add its roots too.
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", &ca_file)
        .env(CHILD, &ca_file)
        .status()
        .unwrap();
    assert!(status.success(), "the check in the child process failed");
}

/// The first system certificate directory that exists (e.g. /etc/ssl/certs).
fn openssl_probe_dir() -> std::path::PathBuf {
    [
        "/etc/ssl/certs",
        "/etc/pki/tls/certs",
        "/etc/pki/ca-trust/extracted/pem",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|dir| dir.is_dir())
    .expect("a system certificate directory (install ca-certificates)")
}
