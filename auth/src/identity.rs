//! Who a request is: the [`Identity`] a provider vouched for — the provider's name, the subject
//! (a token's `sub`, an API key's name), the claims, scopes and roles — and the verified record
//! ([`Verified`]) the token cache keeps.

use crate::Claims;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What kind of credential vouched for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    Jwt,
    ApiKey,
}

/// One verified credential, shared by every request that presents it.
#[derive(Debug)]
pub(crate) struct Verified {
    pub kind: CredentialKind,
    pub subject: String,
    pub claims: Claims,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// `exp`, `nbf` and `iat` in Unix seconds, re-checked on every cache hit.
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// The identity a request carries once a provider vouched for it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Identity {
    provider: Arc<str>,
    verified: Arc<Verified>,
}

impl Identity {
    pub(crate) fn new(provider: Arc<str>, verified: Arc<Verified>) -> Self {
        Self { provider, verified }
    }

    /// The name of the provider that vouched (`main`).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn kind(&self) -> CredentialKind {
        self.verified.kind
    }

    /// The token's subject claim, or the API key's name.
    pub fn subject(&self) -> &str {
        &self.verified.subject
    }

    /// `provider:subject` — the key to bind jobs, private channels and rate limits to.
    pub fn key(&self) -> String {
        format!("{}:{}", self.provider, self.verified.subject)
    }

    /// The claims (for an API key: `sub`, `scope` and `roles`).
    pub fn claims(&self) -> &Claims {
        &self.verified.claims
    }

    /// Granted scopes (`scope` and `scp` together, or the API key's).
    pub fn scopes(&self) -> &[String] {
        &self.verified.scopes
    }

    /// Granted roles (the provider's `roles_claim`, or the API key's).
    pub fn roles(&self) -> &[String] {
        &self.verified.roles
    }

    /// When the token expires, if it says.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let exp = u64::try_from(self.verified.exp?).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_secs(exp))
    }
}

#[cfg(test)]
impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
