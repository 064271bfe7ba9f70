//! Choosing a listener's certificate by the name a client sends (SNI): an exact name first, then
//! a wildcard over its first label, then the listener's default (its first certificate).
//!
//! The certificate sets live in the running `State`, so a reload that re-reads the files swaps
//! them with everything else: new handshakes see the new certificates, open connections keep
//! the one they were made with.

use crate::core::runtime::Runtime;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// One listener's certificates, compiled for lookup.
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertSet {
    /// `certificates` in configured order, each with the names it answers; the first is the
    /// default. An earlier certificate wins a name two of them claim.
    pub fn new(certificates: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Option<Self> {
        let default = certificates.first()?.0.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (key, names) in certificates {
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    pub fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        // rustls hands over the name lowercased already.
        if let Some(key) = self.exact.get(name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// The certificate resolver of one TLS listener.
pub struct SniResolver {
    pub runtime: Arc<Runtime>,
    pub address: String,
    /// What the listener started with, in case a reload dropped its TLS settings (listeners
    /// change only on restart).
    pub initial: Arc<CertSet>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("address", &self.address)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let state = self.runtime.state.load();
        let set = state
            .certificates
            .get(&self.address)
            .unwrap_or(&self.initial);
        Some(set.choose(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        struct Nothing;
        impl std::fmt::Debug for Nothing {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Nothing")
            }
        }
        impl rustls::sign::SigningKey for Nothing {
            fn choose_scheme(
                &self,
                _: &[rustls::SignatureScheme],
            ) -> Option<Box<dyn rustls::sign::Signer>> {
                None
            }
            fn algorithm(&self) -> rustls::SignatureAlgorithm {
                rustls::SignatureAlgorithm::ED25519
            }
        }
        Arc::new(CertifiedKey::new(Vec::new(), Arc::new(Nothing)))
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let (a, b, c) = (key(), key(), key());
        let set = CertSet::new(vec![
            (a.clone(), vec!["a.example".into()]),
            (b.clone(), vec!["*.b.example".into(), "B.example".into()]),
            (c.clone(), vec!["a.example".into()]),
        ])
        .expect("a set");
        assert!(Arc::ptr_eq(&set.choose(Some("a.example")), &a));
        assert!(Arc::ptr_eq(&set.choose(Some("x.b.example")), &b));
        assert!(Arc::ptr_eq(&set.choose(Some("b.example")), &b));
        assert!(Arc::ptr_eq(&set.choose(Some("y.x.b.example")), &a));
        assert!(Arc::ptr_eq(&set.choose(Some("other")), &a));
        assert!(Arc::ptr_eq(&set.choose(None), &a));
        assert!(CertSet::new(Vec::new()).is_none());
    }
}
