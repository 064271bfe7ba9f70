//! TLS: the listeners' certificates (loaded at config compile, chosen by SNI, swapped on
//! reload), the rustls server configuration each TLS listener accepts with, and the CA bundles
//! and client certificates upstream pools present.

pub mod failure;
pub mod pem;
pub mod sni;

use conf::{FieldError, ListenerTls};
use pingora_core::utils::tls::{CertKey, WrappedX509};
use rustls::server::ServerConfig;
use rustls::version::{TLS12, TLS13};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A certificate is announced at load when it expires within this time.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Loads a TLS listener's certificates (the compile step's file I/O). Every unreadable file,
/// key that does not match its certificate and unparsable certificate is an error; an expired
/// or soon-expiring certificate is a warning, since a renewal may be on its way.
pub fn load_certificates(
    at: &str,
    tls: &ListenerTls,
    warnings: &mut Vec<FieldError>,
) -> Result<sni::CertSet, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut loaded = Vec::new();
    for (index, certificate) in tls.certificates.iter().enumerate() {
        let here = format!("{at}.tls.certificates[{index}]");
        match pem::certified_key(&certificate.cert, &certificate.key) {
            Ok(pair) => {
                if let Some(warning) = expiry_warning(&pair) {
                    warnings.push(FieldError::new(format!("{here}.cert"), warning));
                }
                let names = if certificate.names.is_empty() {
                    pair.names
                } else {
                    certificate.names.clone()
                };
                loaded.push((pair.certified, names));
            }
            Err(pem::PairError::Cert(message)) => {
                errors.push(FieldError::new(format!("{here}.cert"), message))
            }
            Err(pem::PairError::Key(message)) => {
                errors.push(FieldError::new(format!("{here}.key"), message))
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    sni::CertSet::new(loaded).ok_or_else(|| {
        vec![FieldError::new(
            format!("{at}.tls.certificates"),
            "at least one certificate is required",
        )]
    })
}

/// What to say of a certificate that expired or expires soon.
fn expiry_warning(pair: &pem::Loaded) -> Option<String> {
    let days = |time: Duration| time.as_secs() / 86_400;
    match pair.expiry() {
        Err(ago) => Some(format!(
            "the certificate (serial {}) EXPIRED {} days ago: clients will refuse it",
            pair.serial,
            days(ago)
        )),
        Ok(left) if left < EXPIRY_WARNING => Some(format!(
            "the certificate (serial {}) expires in {} days",
            pair.serial,
            days(left)
        )),
        Ok(_) => None,
    }
}

/// The rustls configuration of one TLS listener: TLS 1.2 and 1.3 only, the certificate chosen
/// per handshake by `resolver`, and ALPN offering `h2` first when HTTP/2 is on.
pub fn server_config(resolver: Arc<sni::SniResolver>, http2: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        // The ring provider supports both versions: the builder cannot refuse them.
        .unwrap_or_else(|error| unreachable!("ring supports TLS 1.2 and 1.3: {error}"))
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(config)
}

/// A CA bundle for Pingora's per-peer trust (`PeerOptions::ca`).
pub fn ca_bundle(path: &Path) -> Result<Arc<[WrappedX509]>, String> {
    let certificates = pem::certificates(path)?;
    // Each certificate parsed in `pem::certificates`, so Pingora's parser cannot panic on it.
    Ok(certificates
        .into_iter()
        .map(|der| WrappedX509::new(der.to_vec(), pingora_core::utils::tls::parse_x509))
        .collect())
}

/// A client certificate and key for mutual TLS to an upstream.
pub fn client_cert_key(cert: &Path, key: &Path) -> Result<Arc<CertKey>, String> {
    let pair = pem::certified_key(cert, key).map_err(|error| error.to_string())?;
    if let Some(warning) = expiry_warning(&pair) {
        tracing::warn!(certificate = %cert.display(), "client certificate: {warning}");
    }
    Ok(Arc::new(CertKey::new(pair.chain_der, pair.key_der)))
}
