//! TLS for cairn's servers and clients: PEM files in, rustls configurations out,
//! and a server certificate that follows its files on disk.
//!
//! This room sits beside [`server`](crate::server) at the network edge: the
//! serving loop takes a [`TlsServer`] and does the handshakes; the binary reads
//! `--tls-cert`/`--tls-key` and calls [`TlsServer::load`] once at start; the
//! `cairn` client builds a [`client_config`] from `--ca-cert`. It uses rustls with
//! the `ring` provider only, and knows nothing of HTTP beyond the ALPN names.
//!
//! Certificates are reloaded without a restart: [`TlsServer::watch`] looks at the
//! two files' modification time, size and inode every [`RELOAD_POLL`] and, when
//! either changed, loads the pair again. New connections get the new certificate;
//! connections already open keep the one they shook hands with. A replacement that
//! does not load (half written, bad PEM, a key that does not match the
//! certificate) is logged, counted in [`TLS_CERT_RELOAD_FAILURES`], and the
//! certificate in use stays; the next change to either file is tried again. Write
//! the key before the certificate, or rename both into place: a certificate that
//! arrives before its key fails once and loads when the key lands.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use metrics::Counter;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::filestamp::FileStamp;
use crate::telemetry::Scope;

/// The ALPN names a server offers, in its order of preference: HTTP/2, then
/// HTTP/1.1. A client that offers neither is refused in the handshake (RFC 7301);
/// one that offers no ALPN at all gets HTTP/1.1.
pub const ALPN_H2: &[u8] = b"h2";
/// See [`ALPN_H2`].
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// How often a server looks at its certificate files for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Counter: certificate pairs reloaded after a change on disk.
pub const TLS_CERT_RELOADS: &str = "cairn_tls_cert_reloads_total";
/// Counter: changed certificate pairs that did not load (the old pair stays in use).
pub const TLS_CERT_RELOAD_FAILURES: &str = "cairn_tls_cert_reload_failures_total";
/// Counter: connections to a TLS port that ended before a finished handshake
/// (plain HTTP, a silent client past the header timeout, a bad ClientHello).
pub const TLS_HANDSHAKE_FAILURES: &str = "cairn_tls_handshake_failures_total";

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM).
    #[error("{path} holds no PEM private key")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with, or does not belong to the
    /// certificate.
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("{path}: not a usable CA certificate: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls refused the configuration (no protocol version in common with the
    /// provider: not expected with ring's defaults).
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Where a server's certificate chain and private key live (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf.
    pub key: PathBuf,
}

/// The crypto provider of every TLS configuration here: ring's.
// rustls 0.23.48 deprecates ring's provider because it has no post-quantum key
// exchange (X25519MLKEM768); key exchange here is classical X25519/P-256. The
// alternative, aws-lc-rs, is a far heavier C build on a 2-core CI.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and its private key into what rustls serves,
/// checking that the key belongs to the leaf. `files` only names them in errors.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &CertFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: files.cert.clone(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    }
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoKey { path: files.key.clone() }),
        Err(source) => return Err(TlsError::Pem { path: files.key.clone(), source }),
    };
    let mismatch = |source| TlsError::KeyMismatch { cert: files.cert.clone(), key: files.key.clone(), source };
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(mismatch)?;
    // from_der lets a key whose public half it cannot compute pass; nothing signs
    // with a key that does not belong to the certificate here.
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

/// A client configuration that trusts exactly the CA certificates in `ca_pem`
/// (for `cairn` client commands against a server with a private CA or a
/// self-signed certificate), speaking HTTP/1.1. `path` only names the file in
/// errors.
pub fn client_config(ca_pem: &[u8], path: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let certs = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::BadCa { path: path.to_path_buf(), source })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// A file's [`FileStamp`]; `None` while the file cannot be looked at. The `stat`
/// runs off the async threads.
type Stamp = Option<FileStamp>;

async fn stamp(path: &Path) -> Stamp {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || FileStamp::of(&path).ok()).await.ok().flatten()
}

/// The certificate a server presents, reloaded from its files when they change:
/// rustls asks it for the certificate at every handshake.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last loaded or tried, so that one bad replacement
    /// is reported once, not at every poll.
    seen: Mutex<(Stamp, Stamp)>,
}

/// What one look at the files found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// Neither file changed since the last look.
    Unchanged,
    /// A file changed and the new pair is in use.
    Reloaded,
}

impl ReloadingCert {
    /// Loads the pair from `files`.
    pub async fn load(files: CertFiles, provider: Arc<CryptoProvider>) -> Result<ReloadingCert, TlsError> {
        // Stamped before reading: a change while we read shows at the next look.
        let seen = (stamp(&files.cert).await, stamp(&files.key).await);
        let key = load_pair(&files, &provider).await?;
        Ok(ReloadingCert { files, provider, current: RwLock::new(Arc::new(key)), seen: Mutex::new(seen) })
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Looks at the files once and, if either changed since the last look, loads
    /// the pair. On an error the certificate in use stays.
    pub async fn check(&self) -> Result<Reload, TlsError> {
        let now = (stamp(&self.files.cert).await, stamp(&self.files.key).await);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return Ok(Reload::Unchanged);
            }
            *seen = now;
        }
        let key = load_pair(&self.files, &self.provider).await?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(Reload::Reloaded)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

async fn load_pair(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: PathBuf| async move {
        tokio::fs::read(&path).await.map_err(|source| TlsError::Read { path: path.clone(), source })
    };
    let cert = read(files.cert.clone()).await?;
    let key = read(files.key.clone()).await?;
    certified_key(&cert, &key, files, provider)
}

/// The counters a TLS server records into.
#[derive(Clone, Debug)]
struct TlsMetrics {
    reloads: Counter,
    reload_failures: Counter,
    handshake_failures: Counter,
}

/// A server's TLS: a rustls configuration (TLS 1.2 and 1.3, ALPN `h2` then
/// `http/1.1`, no client certificates) over a [`ReloadingCert`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
    cert: Arc<ReloadingCert>,
    metrics: TlsMetrics,
}

impl TlsServer {
    /// Loads `files` and builds the configuration. Its metrics go nowhere until
    /// [`counted`](TlsServer::counted).
    pub async fn load(files: CertFiles) -> Result<TlsServer, TlsError> {
        let provider = provider();
        let cert = Arc::new(ReloadingCert::load(files, provider.clone()).await?);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        let metrics = TlsMetrics {
            reloads: Counter::noop(),
            reload_failures: Counter::noop(),
            handshake_failures: Counter::noop(),
        };
        Ok(TlsServer { config: Arc::new(config), cert, metrics })
    }

    /// This server, recording into `scope`'s [`TLS_CERT_RELOADS`],
    /// [`TLS_CERT_RELOAD_FAILURES`] and [`TLS_HANDSHAKE_FAILURES`].
    pub fn counted(mut self, scope: &Scope) -> TlsServer {
        self.metrics = TlsMetrics {
            reloads: scope.counter(TLS_CERT_RELOADS),
            reload_failures: scope.counter(TLS_CERT_RELOAD_FAILURES),
            handshake_failures: scope.counter(TLS_HANDSHAKE_FAILURES),
        };
        self
    }

    /// The handshake side, for the serving loop.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The certificate that follows the files.
    pub fn cert(&self) -> &Arc<ReloadingCert> {
        &self.cert
    }

    /// Counts a connection that never finished its handshake.
    pub fn handshake_failed(&self) {
        self.metrics.handshake_failures.increment(1);
    }

    /// Looks at the certificate files every [`RELOAD_POLL`] until `shutdown`,
    /// reloading them when they change (module docs).
    pub async fn watch(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_POLL) => {}
            }
            match self.cert.check().await {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Reloaded) => {
                    tracing::info!(cert = %self.cert.files.cert.display(), "TLS certificate reloaded");
                    self.metrics.reloads.increment(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but does not load; still serving the previous one");
                    self.metrics.reload_failures.increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> CertFiles {
        CertFiles { cert: "cert.pem".into(), key: "key.pem".into() }
    }

    #[test]
    fn empty_or_foreign_pem_is_refused_with_the_file_named() {
        let p = provider();
        let err = certified_key(b"", b"", &files(), &p).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(certified_key(garbage, b"", &files(), &p), Err(TlsError::Pem { .. })));
    }

    fn self_signed(name: &str) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_key_must_belong_to_its_certificate() {
        let p = provider();
        let (cert_a, key_a) = self_signed("a.test");
        let (_, key_b) = self_signed("b.test");
        assert!(certified_key(cert_a.as_bytes(), key_a.as_bytes(), &files(), &p).is_ok());
        let err = certified_key(cert_a.as_bytes(), key_b.as_bytes(), &files(), &p).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let err = certified_key(cert_a.as_bytes(), cert_a.as_bytes(), &files(), &p).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }

    #[tokio::test]
    async fn check_reloads_a_changed_pair_and_keeps_the_old_one_when_the_new_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        let (cert_a, key_a) = self_signed("a.test");
        std::fs::write(&files.cert, &cert_a).unwrap();
        std::fs::write(&files.key, &key_a).unwrap();
        let reloading = ReloadingCert::load(files.clone(), provider()).await.unwrap();
        let a = reloading.current().cert[0].clone();
        assert_eq!(reloading.check().await.unwrap(), Reload::Unchanged);

        let (cert_b, key_b) = self_signed("b.test");
        std::fs::write(&files.key, &key_b).unwrap();
        std::fs::write(&files.cert, &cert_b).unwrap();
        assert_eq!(reloading.check().await.unwrap(), Reload::Reloaded);
        let b = reloading.current().cert[0].clone();
        assert_ne!(a, b);

        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
        assert!(reloading.check().await.is_err());
        assert_eq!(reloading.current().cert[0], b, "a broken replacement keeps the pair in use");
        // Reported once: the same broken file is not tried again.
        assert_eq!(reloading.check().await.unwrap(), Reload::Unchanged);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let err = client_config(b"nothing here\n", Path::new("ca.pem")).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }
}
