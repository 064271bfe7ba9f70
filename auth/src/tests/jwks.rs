//! JWKS providers through the request path: key selection by `kid`, unknown `kid`s asking for a
//! rate-limited refetch, garbage keeping the last good keys, and no keys at all giving 503.

use super::*;
use crate::testkit::*;
use crate::{FetchCause, Jwks, Reason};
use std::sync::Arc;

fn jwks_set() -> (AuthSet, Arc<Jwks>) {
    let set = single(
        "jwks_url: https://id/jwks, jwks: { refetch_cooldown: 10s }",
        "",
    );
    let jwks = set.jwks().next().expect("a JWKS provider").clone();
    (set, jwks)
}

#[test]
fn no_keys_ever_loaded_is_503() {
    let (set, jwks) = jwks_set();
    assert!(!set.keys_ready());
    let error =
        check_token(&set, &Signer::rs256().sign(&claims(), Some("k1"))).expect_err("no keys");
    assert_eq!(error, AuthError::KeysUnavailable);
    assert_eq!(error.status(), 503);
    assert_eq!(error.reason(), Reason::KeysUnavailable);
    assert_eq!(error.www_authenticate("holdfast"), None);
    assert_eq!(error.title(), "Service Unavailable");
    assert_eq!(error.retry_after_secs(), Some(5));
    // The first fetch is due at once.
    assert_eq!(jwks.begin_fetch(now()), Some(FetchCause::Scheduled));
    jwks.record_fetch_failure(now());
    assert_eq!(
        check_token(&set, &Signer::rs256().sign(&claims(), Some("k1"))),
        Err(AuthError::KeysUnavailable)
    );
}

#[test]
fn the_kid_selects_the_key() {
    let (set, jwks) = jwks_set();
    let document = jwks_json(&[("k1", Signer::rs256()), ("k2", Signer::other_rs256())]);
    assert_eq!(jwks.apply_jwks(document.as_bytes(), None, now()), Ok(2));
    assert!(set.keys_ready());
    assert!(check_token(&set, &Signer::rs256().sign(&claims(), Some("k1"))).is_ok());
    assert!(check_token(&set, &Signer::other_rs256().sign(&claims(), Some("k2"))).is_ok());
    // The right key under the wrong name.
    let swapped = Signer::rs256().sign(&claims(), Some("k2"));
    assert_eq!(
        check_token(&set, &swapped),
        Err(AuthError::InvalidToken(Reason::BadSignature))
    );
}

#[test]
fn a_missing_kid_with_several_keys_is_refused() {
    let (set, jwks) = jwks_set();
    let document = jwks_json(&[("k1", Signer::rs256()), ("k2", Signer::other_rs256())]);
    let _ = jwks.apply_jwks(document.as_bytes(), None, now());
    let error = check_token(&set, &Signer::rs256().sign(&claims(), None)).expect_err("which key?");
    assert_eq!(error, AuthError::InvalidToken(Reason::UnknownKey));
    assert_eq!(error.refetch_provider(), None, "refetching cannot help");
    assert!(!jwks.wants_refetch(at(3600)));
    // With a single key, no kid is needed.
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    assert!(check_token(&set, &Signer::rs256().sign(&claims(), None)).is_ok());
}

#[test]
fn an_unknown_kid_asks_for_a_refetch_then_is_refused() {
    let (set, jwks) = jwks_set();
    assert!(jwks.begin_fetch(now()).is_some());
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    let rotated = Signer::other_rs256().sign(&claims(), Some("k2"));

    let error = check_token(&set, &rotated).expect_err("k2 unknown");
    assert_eq!(error.reason(), Reason::UnknownKey);
    assert_eq!(error.status(), 401);
    assert_eq!(error.refetch_provider(), Some("main"));
    // Cooldown: the last fetch was at `now`, so not before now + 10 s.
    assert!(!jwks.wants_refetch(at(5)));
    assert!(jwks.wants_refetch(at(10)));
    assert_eq!(jwks.begin_fetch(at(10)), Some(FetchCause::UnknownKid));

    // The identity provider still does not publish k2: the token stays refused.
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        at(10),
    );
    assert_eq!(
        check_token(&set, &rotated).map_err(|e| e.reason()).err(),
        Some(Reason::UnknownKey)
    );
    // A flood of bad kids within the cooldown claims no fetch.
    for _ in 0..100 {
        let _ = check_token(&set, &Signer::rs256().sign(&claims(), Some("bogus")));
    }
    assert_eq!(jwks.begin_fetch(at(15)), None);

    // Now it does (after the cooldown): the rotated key works.
    assert_eq!(jwks.begin_fetch(at(20)), Some(FetchCause::UnknownKid));
    let document = jwks_json(&[("k1", Signer::rs256()), ("k2", Signer::other_rs256())]);
    assert_eq!(jwks.apply_jwks(document.as_bytes(), None, at(20)), Ok(2));
    assert!(check_token(&set, &rotated).is_ok());
}

#[test]
fn garbage_keeps_the_last_good_keys() {
    let (set, jwks) = jwks_set();
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    let token = Signer::rs256().sign(&claims(), Some("k1"));
    assert!(check_token(&set, &token).is_ok());
    for garbage in [
        &b"<html>502 Bad Gateway</html>"[..],
        b"{}",
        b"{\"keys\":[]}",
        b"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
        b"",
    ] {
        assert!(jwks.apply_jwks(garbage, None, now()).is_err());
        assert!(
            check_token(&set, &token).is_ok(),
            "after {:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    // An identity provider that is down: the keys stay too.
    jwks.record_fetch_failure(now());
    assert!(check_token(&set, &token).is_ok());
}

#[test]
fn a_reload_keeps_the_loaded_keys() {
    let (old, jwks) = jwks_set();
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata/config.yaml");
    let yaml = "auth:\n  main:\n    jwt: { jwks_url: https://id/jwks, jwks: { refetch_cooldown: 10s }, audiences: [x] }\nroutes:\n  - name: r\n    auth: { provider: main }\n";
    let config = conf::load_str(&file, yaml).expect("loads");
    let new = crate::compile_reusing(&config, Some(&old)).expect("compiles");
    assert!(new.keys_ready());
    let changed = yaml.replace("https://id/jwks", "https://id/other");
    let config = conf::load_str(&file, &changed).expect("loads");
    assert!(!crate::compile_reusing(&config, Some(&old))
        .expect("compiles")
        .keys_ready());
}
