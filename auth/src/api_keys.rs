//! Static API keys ([`ApiKeyStore`]): a YAML file of SHA-256 hashes, each with a name, scopes
//! and roles. A presented key is hashed and compared with every stored hash in constant time
//! (no early exit), so timing tells nothing about which stored hash came close.
//!
//! The keys file:
//!
//! ```yaml
//! - name: acme                 # the identity's subject
//!   sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08   # holdfast hash-key
//!   scopes: [ai:read]
//!   roles: [partner]
//! ```

use crate::identity::{CredentialKind, Verified};
use crate::{AuthError, Claims, Reason};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The hex SHA-256 of an API key, as stored in a keys file (`holdfast hash-key`).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// A parse error that never quotes the file (it may not be a keys file, but a secret).
fn yaml_error(error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    let what = if message.starts_with("unknown field") || message.starts_with("missing field") {
        message
            .split(" at line")
            .next()
            .unwrap_or_default()
            .to_owned()
    } else {
        "expected a list of `{ name, sha256, scopes, roles }`".to_owned()
    };
    match error.location() {
        Some(at) => format!("line {}: {what}", at.line()),
        None => what,
    }
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    verified: Arc<Verified>,
}

/// The keys of one `api_keys` provider.
#[derive(Debug, Default)]
pub(crate) struct ApiKeyStore {
    entries: Vec<Entry>,
}

impl ApiKeyStore {
    /// Parses a keys file's text; every problem is reported, one line each.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let file: Vec<FileEntry> = if text.trim().is_empty() {
            Vec::new()
        } else {
            serde_yaml::from_str(text).map_err(|e| vec![yaml_error(&e)])?
        };
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut entries = Vec::new();
        for (i, entry) in file.into_iter().enumerate() {
            if entry.name.is_empty() || entry.name.chars().any(|c| c.is_control()) {
                errors.push(format!(
                    "[{i}].name: must be non-empty, without control characters"
                ));
            } else if !names.insert(entry.name.clone()) {
                errors.push(format!("[{i}].name: `{}` appears twice", entry.name));
            }
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(entry.sha256.trim(), &mut hash).is_err() {
                errors.push(format!(
                    "[{i}].sha256: must be 64 hex digits (the output of `holdfast hash-key`)"
                ));
                continue;
            }
            if !hashes.insert(hash) {
                errors.push(format!("[{i}].sha256: the same key is listed twice"));
            }
            let mut claims = serde_json::Map::new();
            claims.insert("sub".to_owned(), entry.name.clone().into());
            claims.insert("scope".to_owned(), entry.scopes.join(" ").into());
            claims.insert("roles".to_owned(), entry.roles.clone().into());
            entries.push(Entry {
                hash,
                verified: Arc::new(Verified {
                    kind: CredentialKind::ApiKey,
                    subject: entry.name,
                    claims: Claims::new(claims),
                    scopes: entry.scopes,
                    roles: entry.roles,
                    exp: None,
                    nbf: None,
                    iat: None,
                }),
            });
        }
        if errors.is_empty() {
            Ok(Self { entries })
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The key's record, comparing its hash with every stored one in constant time.
    pub fn verify(&self, key: &str) -> Result<Arc<Verified>, AuthError> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry.verified.clone());
            }
        }
        found.ok_or(AuthError::InvalidToken(Reason::BadApiKey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn known_keys_pass_and_unknown_keys_fail() {
        let text = format!(
            "- name: acme\n  sha256: {}\n  scopes: [ai:read]\n- name: other\n  sha256: {}\n",
            hash_key("k-acme"),
            hash_key("k-other")
        );
        let store = ApiKeyStore::parse(&text).expect("parses");
        let acme = store.verify("k-acme").expect("known");
        assert_eq!(acme.subject, "acme");
        assert_eq!(acme.scopes, vec!["ai:read"]);
        assert_eq!(acme.claims.text("scope").as_deref(), Some("ai:read"));
        let unknown = store.verify("k-nobody").expect_err("unknown");
        assert_eq!(unknown, AuthError::InvalidToken(Reason::BadApiKey));
        assert_eq!(unknown.status(), 401);
        assert_eq!(unknown.detail(), "The API key is invalid.");
    }

    #[test]
    fn file_errors_are_all_reported() {
        let text = format!(
            "- name: a\n  sha256: nothex\n- name: b\n  sha256: {h}\n- name: b\n  sha256: {h}\n",
            h = hash_key("x")
        );
        let errors = ApiKeyStore::parse(&text).expect_err("invalid");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            ApiKeyStore::parse("- name: a\n  sha256: x\n  scope: [a]\n").is_err(),
            "unknown keys are refused"
        );
    }
}
