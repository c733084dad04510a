//! TLS for both listeners, from a certificate and key in PEM files (a mounted
//! `kubernetes.io/tls` Secret, a cert-manager certificate), re-read while the agent runs: a
//! renewed certificate is served to new connections without a restart. The files are polled,
//! not watched, because a Secret volume is updated by swapping a symlink over the directory's
//! contents, which a watch on the files misses; they are parsed again only when their bytes
//! changed. The crypto provider is ring, the one the Kubernetes client already brings.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use prometheus::{IntCounterVec, Opts};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// Where the certificate (chain first) and its key are.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// PEM certificates, the server's first (`tls.crt`).
    pub cert: PathBuf,
    /// The PEM private key (`tls.key`).
    pub key: PathBuf,
    /// How often the files are read again.
    pub reload_every: Duration,
}

/// Why a certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM the agent can use.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the key or the certificate.
    #[error("the key {key} and certificate {cert} cannot serve")]
    Rustls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// The certificate being served, swapped by the reload task.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        Some(current)
    }
}

/// The files' bytes as last read, to tell whether they changed.
#[derive(PartialEq, Eq)]
struct Read {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_both(files: &CertFiles) -> Result<Read, TlsError> {
    Ok(Read {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
    })
}

fn certified(
    files: &CertFiles,
    read: &Read,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path, what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let chain = CertificateDer::pem_slice_iter(&read.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(pem(&files.cert, "no CERTIFICATE block".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read.key)
        .map_err(|e| pem(&files.key, format!("no PEM private key: {e}")))?;
    let rustls = |source| TlsError::Rustls {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(rustls)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(rustls)?;
    Ok(certified)
}

/// The metrics of the reloads.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    reloads: IntCounterVec,
}

impl TlsMetrics {
    /// The metrics, registered in `self_metrics` so that `/metrics` carries them.
    pub fn new(self_metrics: &crate::metrics::SelfMetrics) -> Result<Self, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "swoll_tls_certificate_reloads_total",
                "Changes of --tls-cert-file or --tls-key-file seen, by result: served (new connections get the new certificate) or failed (the previous one is still served; the log says why).",
            ),
            &["result"],
        )?;
        for result in ["served", "failed"] {
            reloads.with_label_values(&[result]);
        }
        self_metrics.register(Box::new(reloads.clone()))?;
        Ok(Self { reloads })
    }
}

/// What reloads the certificate an acceptor serves ([`Reloader::run`]).
pub struct Reloader {
    files: CertFiles,
    last: Read,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Reloading>,
}

/// An acceptor serving the certificate of `files` (TLS 1.2 and 1.3, HTTP/1.1), and what reloads
/// it. Fails when the files cannot serve at start, before anything else is done.
pub fn acceptor(files: CertFiles) -> Result<(tokio_rustls::TlsAcceptor, Reloader), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let last = read_both(&files)?;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(certified(&files, &last, &provider)?)),
    });
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok((
        acceptor,
        Reloader {
            files,
            last,
            provider,
            resolver,
        },
    ))
}

impl Reloader {
    /// Reads the files every `reload_every` for as long as the listeners serve; a change that
    /// can serve is served to new connections, one that cannot is logged and counted, and the
    /// previous certificate served on.
    pub async fn run(self, metrics: TlsMetrics) {
        let Reloader {
            files,
            mut last,
            provider,
            resolver,
        } = self;
        loop {
            tokio::time::sleep(files.reload_every).await;
            let now = match read_both(&files) {
                Ok(now) => now,
                Err(err) => {
                    // Mid-swap, or the Secret is gone: the next poll tries again.
                    tracing::debug!(
                        error = crate::error_chain(&err),
                        "re-reading the certificate"
                    );
                    continue;
                }
            };
            if now == last {
                continue;
            }
            match certified(&files, &now, &provider) {
                Ok(key) => {
                    match resolver.current.write() {
                        Ok(mut guard) => *guard = Arc::new(key),
                        Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
                    }
                    metrics.reloads.with_label_values(&["served"]).inc();
                    tracing::info!(cert = %files.cert.display(), "serving the changed certificate");
                }
                Err(err) => {
                    metrics.reloads.with_label_values(&["failed"]).inc();
                    tracing::warn!(
                        error = crate::error_chain(&err),
                        "the changed certificate cannot serve; serving the previous one"
                    );
                }
            }
            last = now;
        }
    }
}
