//! Reading PEM files for TLS: certificate chains, private keys and CA bundles, each checked here
//! (a certificate that does not parse, a key that does not belong to its certificate) so that
//! nothing later — rustls, or Pingora's `CertKey`, which panics on bad DER — meets bad input.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate chain with its key, ready to serve, and what its leaf says.
pub struct Loaded {
    pub certified: Arc<CertifiedKey>,
    /// The leaf's DNS names (subject alternative names, else its common name).
    pub names: Vec<String>,
    pub not_after: SystemTime,
    /// The leaf's serial number in hex, for logs.
    pub serial: String,
    /// The chain and key as DER, for Pingora's client-certificate type.
    pub chain_der: Vec<Vec<u8>>,
    pub key_der: Vec<u8>,
}

impl Loaded {
    /// Whether the leaf has expired, or the time left when it has not.
    pub fn expiry(&self) -> Result<Duration, Duration> {
        match self.not_after.duration_since(SystemTime::now()) {
            Ok(left) => Ok(left),
            Err(past) => Err(past.duration()),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, each checked to parse as X.509.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|error| format!("cannot read `{shown}`: {error}"))?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("`{shown}` is not valid PEM: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("`{shown}` holds no PEM certificate"));
    }
    for (index, certificate) in certificates.iter().enumerate() {
        x509_parser::parse_x509_certificate(certificate)
            .map_err(|error| format!("certificate {index} in `{shown}` does not parse: {error}"))?;
    }
    Ok(certificates)
}

/// The first private key in a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|error| format!("cannot read `{shown}`: {error}"))?;
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|error| format!("`{shown}` holds no PEM private key: {error}"))
}

/// Which of the two files of a pair is at fault, and why.
#[derive(Debug)]
pub enum PairError {
    Cert(String),
    Key(String),
}

impl std::fmt::Display for PairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairError::Cert(message) | PairError::Key(message) => f.write_str(message),
        }
    }
}

/// Loads a chain and its key, refusing a key that does not belong to the leaf.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Loaded, PairError> {
    let chain = certificates(cert).map_err(PairError::Cert)?;
    let private = private_key(key).map_err(PairError::Key)?;
    let key_der = private.secret_der().to_vec();
    let certified =
        CertifiedKey::from_der(chain.clone(), private, &provider()).map_err(|error| {
            PairError::Key(match error {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the key `{}` does not belong to the certificate `{}`",
                    key.display(),
                    cert.display()
                ),
                other => format!("cannot use the key `{}`: {other}", key.display()),
            })
        })?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|error| {
        PairError::Cert(format!("`{}` does not parse: {error}", cert.display()))
    })?;
    let mut names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            leaf.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let not_after = u64::try_from(leaf.validity().not_after.timestamp())
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
        .unwrap_or(UNIX_EPOCH);
    Ok(Loaded {
        certified: Arc::new(certified),
        names,
        not_after,
        serial: leaf.raw_serial_as_string(),
        chain_der: chain.iter().map(|c| c.to_vec()).collect(),
        key_der,
    })
}
