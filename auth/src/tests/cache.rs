//! The verified-token cache through the request path: a repeated token pays the signature check
//! once, time claims are re-checked on every hit, and a key-set change re-verifies.

use super::*;
use crate::jwt::JwtVerifier;
use crate::provider::Check;
use crate::testkit::*;
use crate::Reason;
use std::sync::atomic::Ordering;

fn verifier(set: &AuthSet) -> &JwtVerifier {
    match &set.provider("main").expect("main").check {
        Check::Jwt(jwt) => jwt,
        Check::ApiKeys(_) => panic!("main is a JWT provider"),
    }
}

fn signature_checks(set: &AuthSet) -> usize {
    verifier(set).signature_checks.load(Ordering::Relaxed)
}

#[test]
fn a_hit_skips_the_signature_check() {
    let set = single("public_key_file: rsa.pub", "");
    let token = Signer::rs256().sign(&claims(), None);
    for _ in 0..5 {
        assert_eq!(check_token(&set, &token).expect("valid").subject(), "alice");
    }
    assert_eq!(signature_checks(&set), 1);
    // A different token is verified on its own.
    let other = Signer::rs256().sign(&claims_with(serde_json::json!({ "sub": "bob" })), None);
    assert_eq!(check_token(&set, &other).expect("valid").subject(), "bob");
    assert_eq!(signature_checks(&set), 2);
}

#[test]
fn an_expired_entry_is_not_served() {
    let set = single("public_key_file: rsa.pub, leeway: 0s", "");
    let token = Signer::rs256().sign(&claims_with(serde_json::json!({ "exp": NOW + 60 })), None);
    let route = set.route(0).expect("route");
    assert!(route.authenticate(&bearer(&token), None, now()).is_ok());
    assert!(route.authenticate(&bearer(&token), None, at(59)).is_ok());
    let error = route
        .authenticate(&bearer(&token), None, at(60))
        .expect_err("expired");
    assert_eq!(error, AuthError::InvalidToken(Reason::Expired));
    assert_eq!(
        signature_checks(&set),
        1,
        "the expiry came from the cached entry"
    );
    assert_eq!(
        verifier(&set).cache.as_ref().map(|c| c.len()),
        Some(0),
        "and the entry is gone"
    );
}

#[test]
fn a_failed_token_is_not_cached() {
    let set = single("public_key_file: rsa.pub", "");
    let forged = Signer::other_rs256().sign(&claims(), None);
    for _ in 0..3 {
        assert!(check_token(&set, &forged).is_err());
    }
    assert_eq!(signature_checks(&set), 3);
}

#[test]
fn the_cache_can_be_turned_off() {
    let set = single("public_key_file: rsa.pub, cache_size: 0", "");
    let token = Signer::rs256().sign(&claims(), None);
    for _ in 0..3 {
        assert!(check_token(&set, &token).is_ok());
    }
    assert_eq!(signature_checks(&set), 3);
}

#[test]
fn a_key_set_change_re_verifies() {
    let set = single("jwks_url: https://id/jwks", "");
    let jwks = set.jwks().next().expect("jwks").clone();
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    let token = Signer::rs256().sign(&claims(), Some("k1"));
    assert!(check_token(&set, &token).is_ok());
    assert!(check_token(&set, &token).is_ok());
    assert_eq!(signature_checks(&set), 1);
    // The same document again: no change, still cached.
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    assert!(check_token(&set, &token).is_ok());
    assert_eq!(signature_checks(&set), 1);
    // k1 withdrawn: the cached verification no longer counts.
    let _ = jwks.apply_jwks(
        jwks_json(&[("k2", Signer::other_rs256())]).as_bytes(),
        None,
        now(),
    );
    assert_eq!(
        check_token(&set, &token).map_err(|e| e.reason()).err(),
        Some(Reason::UnknownKey)
    );
}
