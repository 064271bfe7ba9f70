//! One compiled auth provider ([`Provider`]): its name, realm, where it reads the credential,
//! and how it verifies it (a JWT verifier or an API-key store).

use crate::api_keys::ApiKeyStore;
use crate::identity::Verified;
use crate::jwks::Jwks;
use crate::jwt::{JwtVerifier, KeySource};
use crate::{AuthError, Location};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) enum Check {
    Jwt(JwtVerifier),
    ApiKeys(ApiKeyStore),
}

/// A provider from `auth.<name>`, compiled.
#[derive(Debug)]
pub struct Provider {
    pub(crate) name: Arc<str>,
    pub(crate) realm: String,
    pub(crate) location: Location,
    pub(crate) check: Check,
}

impl Provider {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `realm` of its challenges.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Where it reads the credential.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Its JWKS state, for a provider with `jwks_url`: the gateway's fetch task drives it.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.check {
            Check::Jwt(JwtVerifier {
                keys: KeySource::Jwks(jwks),
                ..
            }) => Some(jwks),
            _ => None,
        }
    }

    /// Verifies a credential found at its location; `now` in Unix seconds.
    pub(crate) fn verify(&self, credential: &str, now: i64) -> Result<Arc<Verified>, AuthError> {
        match &self.check {
            Check::Jwt(jwt) => jwt.verify(credential, now),
            Check::ApiKeys(keys) => keys.verify(credential),
        }
    }
}
