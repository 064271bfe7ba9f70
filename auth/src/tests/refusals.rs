//! Every bad token and malformed request the issue lists is refused, with the right status,
//! challenge and metric reason — and with one uniform description for forgeries.

use super::*;
use crate::testkit::*;
use crate::Reason;
use jsonwebtoken::Algorithm;
use serde_json::json;

fn rsa_set() -> AuthSet {
    single(
        "public_key_file: rsa.pub, algorithms: [RS256], issuer: https://id, audiences: holdfast",
        "",
    )
}

fn invalid(reason: Reason) -> Result<Identity, AuthError> {
    Err(AuthError::InvalidToken(reason))
}

fn reason(result: Result<Identity, AuthError>) -> Option<Reason> {
    result.err().map(|e| e.reason())
}

#[test]
fn alg_none() {
    let set = rsa_set();
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(&json!({ "alg": alg, "typ": "JWT" }), &claims(), "");
        assert_eq!(
            reason(check_token(&set, &token)),
            Some(Reason::BadAlgorithm),
            "{alg}"
        );
    }
    let error = check_token(&set, &raw_token(&json!({ "alg": "none" }), &claims(), ""))
        .expect_err("refused");
    assert_eq!(error.status(), 401);
    assert_eq!(
        error.www_authenticate("holdfast").as_deref(),
        Some("Bearer realm=\"holdfast\", error=\"invalid_token\", error_description=\"the access token is invalid\"")
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_algorithm_confusion() {
    // The classic attack: the server's public key, used as an HMAC secret.
    let token = hmac_signed(
        &json!({ "alg": "HS256", "typ": "JWT" }),
        &claims(),
        crate::keys::testdata::RSA_PUB,
    );
    assert_eq!(
        reason(check_token(&rsa_set(), &token)),
        Some(Reason::BadAlgorithm)
    );
    // Also against a JWKS provider holding that RSA key.
    let set = single("jwks_url: https://id/jwks", "");
    let jwks = set.jwks().next().expect("jwks").clone();
    let _ = jwks.apply_jwks(
        jwks_json(&[("k1", Signer::rs256())]).as_bytes(),
        None,
        now(),
    );
    let token = hmac_signed(
        &json!({ "alg": "HS256", "kid": "k1" }),
        &claims(),
        crate::keys::testdata::RSA_PUB,
    );
    assert_eq!(
        reason(check_token(&set, &token)),
        Some(Reason::BadAlgorithm)
    );
}

#[test]
fn an_algorithm_the_provider_does_not_allow() {
    // Same RSA key, but PS256 is not in the provider's list.
    let token = Signer::new(Algorithm::PS256).sign(&claims(), None);
    assert_eq!(
        reason(check_token(&rsa_set(), &token)),
        Some(Reason::BadAlgorithm)
    );
    // An algorithm jsonwebtoken does not know at all.
    let token = raw_token(&json!({ "alg": "ES512" }), &claims(), "c2ln");
    assert_eq!(
        reason(check_token(&rsa_set(), &token)),
        Some(Reason::BadAlgorithm)
    );
}

#[test]
fn a_bad_signature() {
    let set = rsa_set();
    // Signed by another RSA key.
    assert_eq!(
        check_token(&set, &Signer::other_rs256().sign(&claims(), None)),
        invalid(Reason::BadSignature)
    );
    // A genuine token whose payload was changed.
    let token = Signer::rs256().sign(&claims(), None);
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = b64(claims_with(json!({ "sub": "mallory" }))
        .to_string()
        .as_bytes());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(check_token(&set, &forged), invalid(Reason::BadSignature));
    // An empty signature.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(
        reason(check_token(&set, &stripped)),
        Some(Reason::BadSignature)
    );
}

#[test]
fn expired() {
    let token = Signer::rs256().sign(&claims_with(json!({ "exp": NOW - 31 })), None);
    let error = check_token(&rsa_set(), &token).expect_err("expired");
    assert_eq!(error, AuthError::InvalidToken(Reason::Expired));
    assert_eq!(
        error.www_authenticate("holdfast").as_deref(),
        Some("Bearer realm=\"holdfast\", error=\"invalid_token\", error_description=\"the access token expired\"")
    );
    // Without `exp` at all (required by default).
    let token = Signer::rs256().sign(&claims_with(json!({ "exp": null })), None);
    assert_eq!(check_token(&rsa_set(), &token), invalid(Reason::Malformed));
}

#[test]
fn an_expired_forgery_does_not_learn_that_it_expired() {
    let token = Signer::other_rs256().sign(&claims_with(json!({ "exp": NOW - 3600 })), None);
    assert_eq!(
        check_token(&rsa_set(), &token),
        invalid(Reason::BadSignature)
    );
}

#[test]
fn not_yet_valid() {
    let token = Signer::rs256().sign(&claims_with(json!({ "nbf": NOW + 60 })), None);
    assert_eq!(
        check_token(&rsa_set(), &token),
        invalid(Reason::NotYetValid)
    );
    let token = Signer::rs256().sign(&claims_with(json!({ "iat": NOW + 3600 })), None);
    assert_eq!(
        check_token(&rsa_set(), &token),
        invalid(Reason::NotYetValid),
        "issued in the future"
    );
}

#[test]
fn too_long_a_lifetime() {
    let set = single("public_key_file: rsa.pub, max_lifetime: 1h", "");
    let token = Signer::rs256().sign(&claims_with(json!({ "iat": NOW, "exp": NOW + 7200 })), None);
    assert_eq!(check_token(&set, &token), invalid(Reason::LifetimeTooLong));
    let token = Signer::rs256().sign(
        &claims_with(json!({ "iat": null, "exp": NOW + 86_400 })),
        None,
    );
    assert_eq!(
        check_token(&set, &token),
        invalid(Reason::LifetimeTooLong),
        "without iat: from now"
    );
}

#[test]
fn wrong_issuer() {
    for iss in [json!("https://evil"), json!(["https://id"]), json!(null)] {
        let token = Signer::rs256().sign(&claims_with(json!({ "iss": iss })), None);
        let expected = if iss.is_null() { "missing" } else { "wrong" };
        assert_eq!(
            check_token(&rsa_set(), &token),
            invalid(Reason::WrongIssuer),
            "{expected}: {iss}"
        );
    }
}

#[test]
fn wrong_audience() {
    for aud in [
        json!("other"),
        json!(["a", "b"]),
        json!([]),
        json!(null),
        json!(42),
    ] {
        let token = Signer::rs256().sign(&claims_with(json!({ "aud": aud })), None);
        assert_eq!(
            check_token(&rsa_set(), &token),
            invalid(Reason::WrongAudience),
            "{aud}"
        );
    }
}

#[test]
fn malformed_base64_or_json_in_any_part() {
    let set = rsa_set();
    let good = Signer::rs256().sign(&claims(), None);
    let parts: Vec<&str> = good.split('.').collect();
    let header_json = b64(br#"{"alg":"RS256""#);
    let payload_json = b64(b"{not json");
    let payload_array = b64(b"[1,2]");
    let cases = [
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.%%%.{}", parts[0], parts[2]),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{header_json}.{}.{}", parts[1], parts[2]),
        format!("{}.{payload_json}.{}", parts[0], parts[2]),
        format!("{}.{payload_array}.{}", parts[0], parts[2]),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        "notatoken".to_owned(),
    ];
    for token in &cases {
        let found = check(
            &set,
            &headers(&[("authorization", &format!("Bearer {token}"))]),
        );
        assert_eq!(reason(found), Some(Reason::Malformed), "{token}");
    }
    // Bad base64 in the signature.
    let token = format!("{}.{}.{}", parts[0], parts[1], "***");
    assert!(matches!(
        reason(check(&set, &bearer(&token))),
        Some(Reason::Malformed | Reason::BadSignature)
    ));
    // A claim of the wrong type.
    let token = Signer::rs256().sign(&claims_with(json!({ "exp": "tomorrow" })), None);
    assert_eq!(check_token(&set, &token), invalid(Reason::Malformed));
}

#[test]
fn a_token_over_8_kib() {
    let padding = "x".repeat(9000);
    let token = Signer::rs256().sign(&claims_with(json!({ "padding": padding })), None);
    let error = check_token(&rsa_set(), &token).expect_err("too large");
    assert_eq!(error.reason(), Reason::TooLarge);
    assert_eq!(error.status(), 401);
}

#[test]
fn two_authorization_headers() {
    let token = Signer::rs256().sign(&claims(), None);
    let both = headers(&[
        ("authorization", &format!("Bearer {token}")),
        ("authorization", &format!("Bearer {token}")),
    ]);
    let error = check(&rsa_set(), &both).expect_err("refused");
    assert_eq!(error.reason(), Reason::InvalidRequest);
    assert_eq!(error.status(), 401);
    assert!(error
        .www_authenticate("holdfast")
        .unwrap_or_default()
        .contains("error=\"invalid_request\""));
}

#[test]
fn bearer_with_no_token() {
    let error = check(&rsa_set(), &headers(&[("authorization", "Bearer ")])).expect_err("refused");
    assert_eq!(error, AuthError::InvalidRequest("Bearer without a token"));
}

#[test]
fn no_credential_at_all() {
    let error = check(&rsa_set(), &HeaderMap::new()).expect_err("refused");
    assert_eq!(error, AuthError::Missing);
    assert_eq!(error.status(), 401);
    assert_eq!(
        error.www_authenticate("holdfast").as_deref(),
        Some("Bearer realm=\"holdfast\"")
    );
}

#[test]
fn a_valid_token_lacking_a_scope_is_403() {
    let set = single("public_key_file: rsa.pub", ", scopes: [ai:read, ai:write]");
    let error =
        check_token(&set, &Signer::rs256().sign(&claims(), None)).expect_err("lacks ai:write");
    assert_eq!(error.status(), 403);
    assert_eq!(error.reason(), Reason::InsufficientScope);
    assert_eq!(
        error.www_authenticate("holdfast").as_deref(),
        Some("Bearer realm=\"holdfast\", error=\"insufficient_scope\", error_description=\"the access token lacks the required scope\", scope=\"ai:read ai:write\"")
    );
    let any = single(
        "public_key_file: rsa.pub",
        ", scopes: [ai:read, ai:write], scopes_mode: any",
    );
    assert!(check_token(&any, &Signer::rs256().sign(&claims(), None)).is_ok());
}

#[test]
fn a_missing_role_is_403() {
    let set = single("public_key_file: rsa.pub", ", roles: [admin]");
    let token = Signer::rs256().sign(&claims_with(json!({ "roles": ["user"] })), None);
    let error = check_token(&set, &token).expect_err("not admin");
    assert_eq!(error.status(), 403);
    assert_eq!(error.www_authenticate("r").as_deref(), Some("Bearer realm=\"r\", error=\"insufficient_scope\", error_description=\"the access token lacks the required scope\""));
}

#[test]
fn an_unknown_api_key() {
    let set = set("auth:\n  keys:\n    api_keys: { file: keys.yaml }\nroutes:\n  - name: r\n    auth: { provider: keys }\n");
    let error = check(&set, &headers(&[("x-api-key", "k-nobody")])).expect_err("unknown");
    assert_eq!(error.reason(), Reason::BadApiKey);
    assert_eq!(error.status(), 401);
    let identity = check(&set, &headers(&[("x-api-key", "k-acme")])).expect("known");
    assert_eq!(identity.subject(), "acme");
    assert_eq!(identity.kind(), crate::CredentialKind::ApiKey);
}

#[test]
fn a_token_without_a_subject() {
    let token = Signer::rs256().sign(&claims_with(json!({ "sub": null })), None);
    assert_eq!(check_token(&rsa_set(), &token), invalid(Reason::Malformed));
}

#[test]
fn a_critical_header_extension() {
    let header = json!({ "alg": "HS256", "crit": ["exp"], "exp": 1 });
    let token = hmac_signed(&header, &claims(), SECRET.as_bytes());
    let set = single(&format!("secret: {SECRET}"), "");
    assert_eq!(check_token(&set, &token), invalid(Reason::Malformed));
}
