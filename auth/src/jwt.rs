//! Verifying one JWT for one provider ([`JwtVerifier`]): structure, header, the provider's
//! allowed algorithms, issuer, key selection, signature (jsonwebtoken's crypto), then the time
//! and audience claims — in that order, so that only a correctly signed token can learn that it
//! expired.
//!
//! The token's `alg` never chooses the key type: it must be one of the provider's algorithms,
//! and the key picked for it must be of that algorithm's family (and curve). An HS256 token
//! "signed" with an RSA public key therefore fails at the algorithm check, and would fail at the
//! key check if a provider ever listed both.
//!
//! Claim checks are done here, against the `now` the caller passes, not by jsonwebtoken
//! (which reads the system clock): that keeps them testable and lets a cache hit re-run them.

use crate::cache::TokenCache;
use crate::claims::strings;
use crate::identity::{CredentialKind, Verified};
use crate::jwks::Jwks;
use crate::keys::{KeySet, Selection};
use crate::{AuthError, Claims, Reason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::Arc;

/// Where a provider's keys come from.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// A secret, a PEM file or one inline JWK: fixed at load; the token's `kid` is not compared.
    Static(Arc<KeySet>),
    /// A JWKS URL: refreshed in the background; the `kid` selects the key.
    Jwks(Arc<Jwks>),
}

/// Everything needed to verify one provider's tokens, compiled from `auth.<name>.jwt`.
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    pub provider: Arc<str>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    /// Seconds.
    pub leeway: i64,
    /// Seconds.
    pub max_lifetime: Option<i64>,
    pub require_exp: bool,
    pub subject_claim: String,
    pub roles_claim: String,
    pub cache: Option<TokenCache>,
    /// Signature checks made, to show that cache hits skip them.
    #[cfg(test)]
    pub signature_checks: std::sync::atomic::AtomicUsize,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn malformed() -> AuthError {
    AuthError::InvalidToken(Reason::Malformed)
}

impl JwtVerifier {
    /// Verifies `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Verified>, AuthError> {
        let generation = match &self.keys {
            KeySource::Static(_) => 0,
            KeySource::Jwks(jwks) => jwks.generation(),
        };
        let cache_key = self.cache.as_ref().map(|_| TokenCache::key(token));
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
            if let Some(verified) = cache.get(key, generation) {
                return match self.check_time(&verified, now) {
                    Ok(()) => Ok(verified),
                    Err(error) => {
                        cache.remove(key);
                        Err(error)
                    }
                };
            }
        }
        let verified = Arc::new(self.verify_uncached(token, now)?);
        if let (Some(cache), Some(key)) = (&self.cache, cache_key) {
            cache.insert(key, verified.clone(), generation, now);
        }
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str, now: i64) -> Result<Verified, AuthError> {
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let header: Header = decode_json(header_part)?;
        let payload: Map<String, Value> = decode_json(payload_part)?;
        // `none`, unknown names and ES512 (which jsonwebtoken lacks) fail here.
        let alg = Algorithm::from_str(&header.alg)
            .map_err(|_| AuthError::InvalidToken(Reason::BadAlgorithm))?;
        if !self.algorithms.contains(&alg) {
            return Err(AuthError::InvalidToken(Reason::BadAlgorithm));
        }
        if header.crit.is_some() {
            // No critical extension is understood (RFC 7515 §4.1.11).
            return Err(malformed());
        }
        self.check_issuer(&payload)?;

        let keys = match &self.keys {
            KeySource::Static(keys) => keys.clone(),
            KeySource::Jwks(jwks) => jwks.keys().ok_or(AuthError::KeysUnavailable)?,
        };
        let by_kid = matches!(self.keys, KeySource::Jwks(_));
        let key = match keys.select(header.kid.as_deref(), alg, by_kid) {
            Selection::Found(key) => key,
            Selection::UnknownKid => {
                if let KeySource::Jwks(jwks) = &self.keys {
                    jwks.note_unknown_kid();
                }
                return Err(AuthError::UnknownKey {
                    provider: self.provider.clone(),
                });
            }
            Selection::Ambiguous => return Err(AuthError::InvalidToken(Reason::UnknownKey)),
        };
        let message = &token[..header_part.len() + 1 + payload_part.len()];
        #[cfg(test)]
        self.signature_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.decoding, alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::InvalidToken(Reason::BadSignature)),
            Err(error) => {
                tracing::debug!(provider = %self.provider, %error, "signature check failed");
                return Err(AuthError::InvalidToken(Reason::BadSignature));
            }
        }

        // The signature holds: from here on the token is genuine.
        let verified = self.verified(payload)?;
        self.check_time(&verified, now)?;
        self.check_lifetime(&verified, now)?;
        self.check_audience(verified.claims.as_map())?;
        Ok(verified)
    }

    fn verified(&self, payload: Map<String, Value>) -> Result<Verified, AuthError> {
        let exp = numeric(&payload, "exp")?;
        let nbf = numeric(&payload, "nbf")?;
        let iat = numeric(&payload, "iat")?;
        if self.require_exp && exp.is_none() {
            return Err(malformed());
        }
        let claims = Claims::new(payload);
        let subject = claims
            .text(&self.subject_claim)
            .filter(|subject| !subject.is_empty())
            .ok_or_else(malformed)?
            .into_owned();
        let mut scopes = claims.strings("scope");
        for scope in claims.strings("scp") {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let roles = strings(claims.get(&self.roles_claim));
        Ok(Verified {
            kind: CredentialKind::Jwt,
            subject,
            claims,
            scopes,
            roles,
            exp,
            nbf,
            iat,
        })
    }

    /// `exp`, `nbf` and `iat` against `now`, with the leeway. Run on every cache hit too.
    pub fn check_time(&self, verified: &Verified, now: i64) -> Result<(), AuthError> {
        if verified
            .exp
            .is_some_and(|exp| now >= exp.saturating_add(self.leeway))
        {
            return Err(AuthError::InvalidToken(Reason::Expired));
        }
        let future = |at: Option<i64>| at.is_some_and(|at| at > now.saturating_add(self.leeway));
        if future(verified.nbf) || future(verified.iat) {
            return Err(AuthError::InvalidToken(Reason::NotYetValid));
        }
        Ok(())
    }

    fn check_lifetime(&self, verified: &Verified, now: i64) -> Result<(), AuthError> {
        let (Some(max), Some(exp)) = (self.max_lifetime, verified.exp) else {
            return Ok(());
        };
        let start = verified.iat.unwrap_or(now);
        if exp.saturating_sub(start) > max.saturating_add(self.leeway) {
            return Err(AuthError::InvalidToken(Reason::LifetimeTooLong));
        }
        Ok(())
    }

    fn check_issuer(&self, payload: &Map<String, Value>) -> Result<(), AuthError> {
        if self.issuers.is_empty() {
            return Ok(());
        }
        match payload.get("iss") {
            Some(Value::String(iss)) if self.issuers.iter().any(|accepted| accepted == iss) => {
                Ok(())
            }
            _ => Err(AuthError::InvalidToken(Reason::WrongIssuer)),
        }
    }

    fn check_audience(&self, payload: &Map<String, Value>) -> Result<(), AuthError> {
        if self.audiences.is_empty() {
            return Ok(());
        }
        let accepted = |aud: &Value| {
            aud.as_str()
                .is_some_and(|aud| self.audiences.iter().any(|a| a == aud))
        };
        let fits = match payload.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(accepted),
            Some(aud) => accepted(aud),
            None => false,
        };
        if fits {
            Ok(())
        } else {
            Err(AuthError::InvalidToken(Reason::WrongAudience))
        }
    }
}

/// Base64url (no padding, as RFC 7515 requires) then JSON.
fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// A NumericDate claim in whole seconds; anything but a number is malformed.
fn numeric(payload: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(malformed),
        Some(_) => Err(malformed()),
    }
}
