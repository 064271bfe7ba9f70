//! Test helpers: signers for every algorithm family (from the keys in `src/testdata/`), JWKS
//! documents, hand-made tokens, and a fixed clock.

use crate::keys::testdata::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The tests' "now" in Unix seconds.
pub const NOW: i64 = 1_700_000_000;

pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64)
}

pub fn at(offset: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs((NOW + offset) as u64)
}

/// A 32-byte HMAC secret.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A private key and the algorithm it signs with.
pub struct Signer {
    pub alg: Algorithm,
    key: EncodingKey,
}

fn load(result: jsonwebtoken::errors::Result<EncodingKey>) -> EncodingKey {
    result.expect("test key loads")
}

impl Signer {
    pub fn new(alg: Algorithm) -> Self {
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                EncodingKey::from_secret(SECRET.as_bytes())
            }
            Algorithm::ES256 => load(EncodingKey::from_ec_pem(P256_KEY)),
            Algorithm::ES384 => load(EncodingKey::from_ec_pem(P384_KEY)),
            Algorithm::EdDSA => load(EncodingKey::from_ed_pem(ED_KEY)),
            _ => load(EncodingKey::from_rsa_pem(RSA_KEY)),
        };
        Self { alg, key }
    }

    pub fn rs256() -> Self {
        Self::new(Algorithm::RS256)
    }

    /// RS256 with the second RSA key.
    pub fn other_rs256() -> Self {
        Self {
            alg: Algorithm::RS256,
            key: load(EncodingKey::from_rsa_pem(RSA2_KEY)),
        }
    }

    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key).expect("signs")
    }

    /// The public JWK, with `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).expect("json")
    }
}

/// A JWKS document of `keys`.
pub fn jwks_json(keys: &[(&str, Signer)]) -> String {
    let keys: Vec<Value> = keys.iter().map(|(kid, signer)| signer.jwk(kid)).collect();
    json!({ "keys": keys }).to_string()
}

/// The claims of a good token: `sub` alice, issuer `https://id`, audience `holdfast`, valid
/// for ten minutes around [`NOW`], scope `ai:read`.
pub fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "https://id",
        "aud": "holdfast",
        "iat": NOW - 60,
        "exp": NOW + 600,
        "scope": "ai:read",
    })
}

/// `claims()` with some fields replaced (a `null` removes one).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    if let (Some(map), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (key, value) in changes {
            if value.is_null() {
                map.remove(key);
            } else {
                map.insert(key.clone(), value.clone());
            }
        }
    }
    claims
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token from raw parts: `header` and `claims` as JSON, and the signature as given.
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HMAC-SHA256 signature of `header.claims` with `secret` as the key.
pub fn hmac_signed(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let unsigned = raw_token(header, claims, "");
    let message = unsigned.trim_end_matches('.');
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("signs");
    format!("{message}.{signature}")
}
