//! Listeners: the addresses the gateway serves on. Each is plain HTTP (HTTP/1.1, plus HTTP/2 by
//! prior knowledge when `h2c` is on) or TLS, with certificates chosen by SNI and HTTP/2 offered by
//! ALPN. Written as a bare address or as a map.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;

/// One listening address and how it speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// `host:port`, e.g. `0.0.0.0:8443`.
    pub address: String,
    /// Terminate TLS here (TLS 1.2 and 1.3 only).
    pub tls: Option<ListenerTls>,
    /// Plain listeners: accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1.
    pub h2c: bool,
    /// TLS listeners: offer HTTP/2 by ALPN (on by default).
    pub http2: bool,
}

impl Listener {
    pub fn plain(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            tls: None,
            h2c: false,
            http2: true,
        }
    }
}

/// The map form of a listener; also its JSON schema.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerMap {
    /// `host:port`, e.g. `0.0.0.0:8443`.
    address: String,
    /// Terminate TLS on this listener (TLS 1.2 and 1.3 only).
    #[serde(default)]
    tls: Option<ListenerTls>,
    /// Plain listeners: accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1.
    #[serde(default)]
    h2c: bool,
    /// TLS listeners: offer HTTP/2 by ALPN (`h2`, then `http/1.1`).
    #[serde(default = "on")]
    http2: bool,
}

fn on() -> bool {
    true
}

/// The certificates of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Each certificate is served to the names it covers (SNI); the first is the default, served
    /// when a client names none of them or sends no name. Reloaded on SIGHUP and when the files
    /// change: new handshakes get the new certificate, open connections keep theirs.
    pub certificates: Vec<Certificate>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The SNI names this certificate answers (`api.example.com`, `*.example.com`); by default
    /// the DNS names of the certificate itself.
    #[serde(default)]
    pub names: Vec<String>,
}

impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(address) => Ok(Listener::plain(address)),
            value @ serde_yaml::Value::Mapping(_) => {
                crate::suggest::from_map::<ListenerMap, _>(value).map(|map| Listener {
                    address: map.address,
                    tls: map.tls,
                    h2c: map.h2c,
                    http2: map.http2,
                })
            }
            _ => Err(D::Error::custom(
                "a listener is an address (`0.0.0.0:8080`) or a map `{ address, tls, h2c }`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use std::path::Path;

    #[test]
    fn listener_forms() {
        let config = load_str(
            Path::new("c"),
            "listen:\n  - 127.0.0.1:8080\n  - { address: 127.0.0.1:8081, h2c: true }\n  - address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - { cert: a.pem, key: a.key, names: [a.example] }\n",
        )
        .expect("loads");
        assert_eq!(config.listen.len(), 3);
        assert!(config.listen[0].tls.is_none() && !config.listen[0].h2c);
        assert!(config.listen[1].h2c);
        let tls = config.listen[2].tls.as_ref().expect("tls");
        assert_eq!(tls.certificates[0].names, ["a.example"]);
        assert!(config.listen[2].http2);
        let one = load_str(Path::new("c"), "listen: 127.0.0.1:8080").expect("loads");
        assert_eq!(one.listen[0].address, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_tls_settings_are_refused_with_a_suggestion() {
        let wrong = load_str(
            Path::new("c"),
            "listen:\n  - address: 127.0.0.1:8443\n    tls: { certificate: [] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(wrong.contains("did you mean `certificates`"), "{wrong}");
    }
}
