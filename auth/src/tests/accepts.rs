//! Good tokens of every algorithm family pass, from every kind of key source.

use super::*;
use crate::testkit::*;
use crate::CredentialKind;
use jsonwebtoken::Algorithm;

#[test]
fn every_hmac_algorithm_with_a_secret() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let set = single(&format!("secret: {SECRET}, algorithms: [{alg:?}]"), "");
        let token = Signer::new(alg).sign(&claims(), None);
        let identity = check_token(&set, &token).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(identity.subject(), "alice");
        assert_eq!(identity.provider(), "main");
        assert_eq!(identity.key(), "main:alice");
        assert_eq!(identity.kind(), CredentialKind::Jwt);
    }
}

#[test]
fn every_rsa_algorithm_with_a_pem_file() {
    let algorithms = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
    for alg in algorithms {
        let set = single(
            &format!("public_key_file: rsa.pub, algorithms: [{alg:?}]"),
            "",
        );
        let token = Signer::new(alg).sign(&claims(), None);
        assert!(check_token(&set, &token).is_ok(), "{alg:?}");
    }
}

#[test]
fn ec_and_eddsa_with_pem_files_and_default_algorithms() {
    for (file, alg) in [
        ("p256.pub", Algorithm::ES256),
        ("p384.pub", Algorithm::ES384),
        ("ed25519.pub", Algorithm::EdDSA),
    ] {
        // No `algorithms:`: the key's own algorithm is the only one allowed.
        let set = single(&format!("public_key_file: {file}"), "");
        let token = Signer::new(alg).sign(&claims(), None);
        assert!(check_token(&set, &token).is_ok(), "{alg:?}");
    }
}

#[test]
fn an_inline_jwk() {
    let jwk = Signer::new(Algorithm::ES256).jwk("k1").to_string();
    let set = single(&format!("jwk: '{jwk}'"), "");
    assert!(check_token(
        &set,
        &Signer::new(Algorithm::ES256).sign(&claims(), Some("anything"))
    )
    .is_ok());
}

#[test]
fn every_family_from_a_jwks() {
    let set = single(
        "jwks_url: https://id/jwks, algorithms: [RS256, PS256, ES256, ES384, EdDSA]",
        "",
    );
    let jwks = set.jwks().next().expect("jwks provider").clone();
    let document = jwks_json(&[
        ("rsa", Signer::rs256()),
        ("p256", Signer::new(Algorithm::ES256)),
        ("p384", Signer::new(Algorithm::ES384)),
        ("ed", Signer::new(Algorithm::EdDSA)),
    ]);
    assert_eq!(jwks.apply_jwks(document.as_bytes(), None, now()), Ok(4));
    for (kid, alg) in [
        ("rsa", Algorithm::RS256),
        ("p256", Algorithm::ES256),
        ("p384", Algorithm::ES384),
        ("ed", Algorithm::EdDSA),
    ] {
        let token = Signer::new(alg).sign(&claims(), Some(kid));
        assert!(check_token(&set, &token).is_ok(), "{alg:?}");
    }
    // The RSA key's JWK pins RS256 (`alg` in the JWK), so a PS256 token does not fit it.
    let token = Signer::new(Algorithm::PS256).sign(&claims(), Some("rsa"));
    assert!(check_token(&set, &token).is_err());
}

#[test]
fn issuers_audiences_and_leeway() {
    let set = single(&format!("secret: {SECRET}, issuer: [https://a, https://id], audiences: [x, holdfast], leeway: 30s"), "");
    let hs = Signer::new(Algorithm::HS256);
    let array_aud = claims_with(serde_json::json!({ "aud": ["other", "holdfast"] }));
    assert!(check_token(&set, &hs.sign(&array_aud, None)).is_ok());
    let just_expired = claims_with(serde_json::json!({ "exp": NOW - 10 }));
    assert!(
        check_token(&set, &hs.sign(&just_expired, None)).is_ok(),
        "within the leeway"
    );
    let float_exp = claims_with(serde_json::json!({ "exp": (NOW + 60) as f64 + 0.5 }));
    assert!(check_token(&set, &hs.sign(&float_exp, None)).is_ok());
}

#[test]
fn scopes_and_roles_claims() {
    let set = single(
        &format!("secret: {SECRET}, roles_claim: realm_access.roles"),
        ", scopes: [a, b], roles: [admin, ops], roles_mode: any",
    );
    let hs = Signer::new(Algorithm::HS256);
    let token = hs.sign(
        &claims_with(
            serde_json::json!({ "scope": "a", "scp": ["b"], "realm_access": { "roles": ["ops"] } }),
        ),
        None,
    );
    let identity = check_token(&set, &token).expect("scope a from `scope`, b from `scp`, role ops");
    assert_eq!(identity.scopes(), ["a", "b"]);
    assert_eq!(identity.roles(), ["ops"]);
}
