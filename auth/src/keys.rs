//! Verification keys and key sets: built from an HMAC secret, a PEM public key, one JWK or a
//! JWKS document, each key knowing its family (and curve), so that a token's `alg` can only
//! ever be checked against a key of the matching type.
//!
//! Keys are validated when they are loaded: RSA keys shorter than 2048 bits, private keys given
//! as public ones, EC points of the wrong size and encryption keys are refused (from a JWKS:
//! skipped), never discovered at the first request.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// The shortest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// One verification key.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    /// For EC keys: P-256 or P-384.
    pub curve: Option<EllipticCurve>,
    pub decoding: DecodingKey,
}

impl Key {
    /// An HMAC secret.
    pub fn secret(secret: &[u8]) -> Self {
        Self {
            kid: None,
            alg: None,
            family: AlgorithmFamily::Hmac,
            curve: None,
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A PEM public key of any supported type (RSA, EC P-256/P-384, Ed25519).
    pub fn pem(pem: &[u8]) -> Result<Self, String> {
        let attempts = [
            DecodingKey::from_rsa_pem(pem),
            DecodingKey::from_ec_pem(pem),
            DecodingKey::from_ed_pem(pem),
        ];
        let mut last = "not a PEM public key".to_owned();
        for attempt in attempts {
            match attempt
                .map_err(|e| e.to_string())
                .and_then(|key| Self::checked(key, None, None))
            {
                Ok(key) => return Ok(key),
                Err(error) => last = error,
            }
        }
        Err(format!("not a usable PEM public key (RSA ≥ {MIN_RSA_BITS} bits, EC P-256/P-384 or Ed25519): {last}"))
    }

    /// One JWK. `allow_secret` admits `kty: oct` (only for inline keys: a JWKS URL publishing
    /// a shared secret is a mistake, and its keys are skipped).
    pub fn jwk(jwk: &Jwk, allow_secret: bool) -> Result<Self, String> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err("an encryption key (`use: enc`)".to_owned());
        }
        let alg = match jwk.common.key_algorithm {
            Some(alg) => {
                Some(signing_algorithm(alg).ok_or_else(|| format!("unsupported `alg` {alg:?}"))?)
            }
            None => None,
        };
        let kid = jwk.common.key_id.clone();
        if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
            if !allow_secret {
                return Err("a shared secret (`kty: oct`)".to_owned());
            }
            let decoding = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
            let key = Self {
                kid,
                alg,
                family: AlgorithmFamily::Hmac,
                curve: None,
                decoding,
            };
            return Ok(key);
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        Self::checked(decoding, kid, alg)
    }

    /// Validates a public key by re-deriving its public parameters.
    fn checked(
        decoding: DecodingKey,
        kid: Option<String>,
        alg: Option<Algorithm>,
    ) -> Result<Self, String> {
        let family = decoding.family();
        let canonical = Jwk::from_decoding_key(&decoding, None)
            .map_err(|e| format!("invalid public key: {e}"))?;
        let curve = match &canonical.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let bits = base64_len(&rsa.n) * 8;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
                    ));
                }
                None
            }
            AlgorithmParameters::EllipticCurve(ec) => Some(ec.curve.clone()),
            _ => None,
        };
        if let Some(alg) = alg {
            if alg.family() != family {
                return Err(format!("the key's `alg` {alg:?} does not fit its type"));
            }
        }
        Ok(Self {
            kid,
            alg,
            family,
            curve,
            decoding,
        })
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family || self.alg.is_some_and(|pinned| pinned != alg) {
            return false;
        }
        match (alg, &self.curve) {
            (Algorithm::ES256, Some(curve)) => *curve == EllipticCurve::P256,
            (Algorithm::ES384, Some(curve)) => *curve == EllipticCurve::P384,
            _ => true,
        }
    }

    /// The algorithms this key verifies, for a provider that lists none.
    pub fn default_algorithms(&self) -> Vec<Algorithm> {
        if let Some(alg) = self.alg {
            return vec![alg];
        }
        vec![match (self.family, &self.curve) {
            (AlgorithmFamily::Hmac, _) => Algorithm::HS256,
            (AlgorithmFamily::Rsa, _) => Algorithm::RS256,
            (AlgorithmFamily::Ec, Some(EllipticCurve::P384)) => Algorithm::ES384,
            (AlgorithmFamily::Ec, _) => Algorithm::ES256,
            (AlgorithmFamily::Ed, _) => Algorithm::EdDSA,
        }]
    }
}

/// The JWS algorithm a JWK's `alg` names, if it is a signing algorithm Holdfast supports.
fn signing_algorithm(alg: jsonwebtoken::jwk::KeyAlgorithm) -> Option<Algorithm> {
    match serde_json::to_value(alg).ok()? {
        serde_json::Value::String(name) => name.parse().ok(),
        _ => None,
    }
}

/// Decoded length of unpadded base64url text.
fn base64_len(text: &str) -> usize {
    text.trim_end_matches('=').len() * 3 / 4
}

/// What a key lookup found.
pub(crate) enum Selection<'a> {
    Found(&'a Key),
    /// The token's `kid` is not in the set.
    UnknownKid,
    /// No `kid`, and none or several keys fit the algorithm.
    Ambiguous,
}

/// A set of keys, swapped as a whole when a JWKS is refreshed.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// The key to check a token with. `by_kid` is false for configured keys (a secret, a PEM
    /// file, one JWK), whose `kid` is not compared.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm, by_kid: bool) -> Selection<'_> {
        let mut fitting = self.keys.iter().filter(|key| key.fits(alg));
        match kid {
            Some(kid) if by_kid => {
                let mut named = fitting.filter(|key| key.kid.as_deref() == Some(kid));
                named.next().map_or(Selection::UnknownKid, Selection::Found)
            }
            _ => match (fitting.next(), fitting.next()) {
                (Some(key), None) => Selection::Found(key),
                _ => Selection::Ambiguous,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    //! The throw-away keys of `src/testdata/`.
    pub const RSA_KEY: &[u8] = include_bytes!("testdata/rsa.key");
    pub const RSA_PUB: &[u8] = include_bytes!("testdata/rsa.pub");
    pub const RSA2_KEY: &[u8] = include_bytes!("testdata/rsa2.key");
    pub const P256_KEY: &[u8] = include_bytes!("testdata/p256.key");
    pub const P256_PUB: &[u8] = include_bytes!("testdata/p256.pub");
    pub const P384_KEY: &[u8] = include_bytes!("testdata/p384.key");
    pub const P384_PUB: &[u8] = include_bytes!("testdata/p384.pub");
    pub const ED_KEY: &[u8] = include_bytes!("testdata/ed25519.key");
    pub const ED_PUB: &[u8] = include_bytes!("testdata/ed25519.pub");
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn pem_keys_know_their_type() {
        let cases = [
            (RSA_PUB, AlgorithmFamily::Rsa, Algorithm::RS256),
            (P256_PUB, AlgorithmFamily::Ec, Algorithm::ES256),
            (P384_PUB, AlgorithmFamily::Ec, Algorithm::ES384),
            (ED_PUB, AlgorithmFamily::Ed, Algorithm::EdDSA),
        ];
        for (pem, family, alg) in cases {
            let key = Key::pem(pem).expect("loads");
            assert_eq!(key.family, family);
            assert_eq!(key.default_algorithms(), vec![alg]);
        }
        let p256 = Key::pem(P256_PUB).expect("loads");
        assert!(
            p256.fits(Algorithm::ES256)
                && !p256.fits(Algorithm::ES384)
                && !p256.fits(Algorithm::HS256)
        );
    }

    #[test]
    fn private_keys_and_garbage_are_refused() {
        assert!(Key::pem(RSA_KEY).is_err());
        assert!(Key::pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(Key::pem(b"hello").is_err());
    }
}
