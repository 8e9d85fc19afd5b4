//! Hummel's TLS, both ends, in one place: rustls with the ring crypto provider.
//!
//! # Layout
//! - [`ClientTls`] (this file): whom outgoing HTTPS trusts, the system's roots plus the CA
//!   certificates of one PEM file (`--ca-cert`), and [`ClientTls::client_builder`], where every
//!   reqwest client Hummel builds starts (the client's, the slave's, the admin commands'). The
//!   certificates are checked by the platform's verifier (`rustls-platform-verifier`: on
//!   Linux WebPKI over the system bundle, on Windows and macOS the OS itself).
//! - [`ServerTls`] (this file): a certificate chain and its private key from PEM files
//!   (`--tls-cert`, `--tls-key`), checked to belong together.
//! - [`TlsListener`] (`listener`): an `axum::serve` listener that speaks HTTPS only.
//! - [`install_provider`]: ring as the process's default provider, which reqwest needs before
//!   it builds any client (the workspace enables no other provider). Everything here calls it;
//!   a test that wants a bare reqwest client starts from [`ClientTls::client_builder`] too.
//!
//! Errors are [`TlsError`]s: one line naming the file and what is wrong with it. A refused
//! server certificate, deep in a reqwest error, is put in words by [`certificate_problem`].

mod listener;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use listener::TlsListener;

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        /// Which file it is ("CA certificate file", "TLS certificate file", "TLS key file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file was read but does not hold what it should; `detail` says so, starting with a
    /// verb ("holds no PEM certificate ...").
    #[error("the {what} {} {detail}", path.display())]
    Invalid {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The certificate and the key do not belong together, or rustls refused them.
    #[error("the TLS certificate {} and key {}: {detail}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

const CA_FILE: &str = "CA certificate file";
const CERT_FILE: &str = "TLS certificate file";
const KEY_FILE: &str = "TLS key file";

/// Installs ring as the process's default crypto provider, once; a no-op when a default is
/// already installed. reqwest (built without a provider of its own) panics when it builds a
/// client without one.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when another default is installed already: that one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The process's crypto provider (ring, unless something else was installed first).
fn provider() -> Arc<CryptoProvider> {
    install_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Whom outgoing HTTPS trusts: the system's roots, plus the CA certificates of `--ca-cert`.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct ClientTls {
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl ClientTls {
    /// The system's roots only.
    pub fn system() -> ClientTls {
        ClientTls::default()
    }

    /// The system's roots plus every certificate in the PEM file `path` (one or several
    /// `BEGIN CERTIFICATE` blocks; anything else in the file is ignored). A file that cannot
    /// be read, holds no certificate or one that cannot be a trust anchor is an error.
    pub fn with_ca_file(path: &Path) -> Result<ClientTls, TlsError> {
        let pem = read(CA_FILE, path)?;
        let roots = certificates(CA_FILE, path, &pem)?;
        // The same check the verifier makes later, so a bad file fails now, naming itself.
        let mut store = rustls::RootCertStore::empty();
        for (i, cert) in roots.iter().enumerate() {
            store.add(cert.clone()).map_err(|e| TlsError::Invalid {
                what: CA_FILE,
                path: path.to_path_buf(),
                detail: format!(
                    "holds a certificate (number {}) that cannot be a CA: {e}",
                    i + 1
                ),
            })?;
        }
        Ok(ClientTls {
            extra_roots: Arc::new(roots),
        })
    }

    /// Certificates added to the system's roots.
    pub fn extra_roots(&self) -> usize {
        self.extra_roots.len()
    }

    /// A reqwest client builder that verifies servers against these roots; the caller adds
    /// its timeouts and builds it. HTTP/1.1 over TLS, as over plain TCP. The system's roots
    /// are read on each call (a client is built once per command or slave).
    ///
    /// The rustls configuration is handed to reqwest ready-made, so it must be the rustls
    /// version reqwest uses (the lock holds one); another would make every `build()` fail
    /// ("unknown TLS backend"), which any test that connects shows at once.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> =
            match rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.extra_roots.iter().cloned(),
                provider.clone(),
            ) {
                Ok(v) => Arc::new(v),
                // No system roots (a container without a CA bundle) and no --ca-cert: plain
                // HTTP still works, and HTTPS fails naming why.
                Err(e) => {
                    tracing::debug!("no system CA certificates: {e}");
                    Arc::new(NoRoots {
                        reason: "this machine trusts no CA (it has no CA certificates, and no \
                                 --ca-cert was given)"
                            .into(),
                        provider: provider.clone(),
                    })
                }
            };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
    }
}

/// How long a client keeps an idle connection for its next request: less than a Hummel
/// server's default `--header-timeout` (30 s), so the client, not the server, closes it, and
/// no request is sent on a connection the server is closing.
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The verifier when there is nothing to trust: every certificate is refused, with the reason.
#[derive(Debug)]
struct NoRoots {
    reason: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(self.reason.clone()))
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

/// A server's certificate chain and private key. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain (PEM, the server's own certificate first, then any
    /// intermediates) and its private key (PEM: PKCS#8, PKCS#1 or SEC1), and checks that they
    /// belong together.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = certificates(CERT_FILE, cert, &read(CERT_FILE, cert)?)?;
        let key_pem = read(KEY_FILE, key)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
            what: KEY_FILE,
            path: key.to_path_buf(),
            detail: match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()
                }
                e => format!("is not readable as a PEM private key ({e})"),
            },
        })?;
        let pair = |e: rustls::Error| {
            TlsError::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            detail: match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key is not the certificate's (the first certificate must be the server's own)"
                        .into()
                }
                e => e.to_string(),
            },
        }
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(pair)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(pair)?;
        // axum serves HTTP/1.1; a client asking for h2 gets HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |detail: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("is not readable as PEM ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// When `err` (or one of its causes) is a server certificate that was refused: what is wrong,
/// in words, with rustls's own text in brackets; one line. `None` for any other error.
pub fn certificate_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as C;
    const GIVE_CA: &str = "; give its CA with --ca-cert or HUMMEL_CA_CERT";
    let found = tls_error_in(err)?;
    let (words, hint) = match found {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => (
                "the server's certificate is not signed by a CA this machine trusts",
                GIVE_CA,
            ),
            C::BadSignature => (
                "the server's certificate does not verify against the trusted CA of that name",
                "; is it signed by another CA with the same name?",
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => (
                "the server's certificate is not valid for the host name in the URL",
                "",
            ),
            C::Expired | C::ExpiredContext { .. } => ("the server's certificate has expired", ""),
            C::NotValidYet | C::NotValidYetContext { .. } => (
                "the server's certificate is not valid yet",
                "; is this machine's clock right?",
            ),
            _ => ("the server's certificate was refused", ""),
        },
        // `NoRoots`: its text says it all.
        rustls::Error::General(reason) => {
            return Some(format!(
                "the server's certificate cannot be checked: {reason}"
            ));
        }
        _ => return None,
    };
    Some(format!("{words} ({found}){hint}"))
}

/// The rustls error among `err` and its causes, looking inside `io::Error`s too (whose
/// `source()` skips the error they wrap).
fn tls_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| tls_error_in(inner))
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests;
