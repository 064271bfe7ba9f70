//! Compile-time errors: files that cannot be read or hold no usable key, and algorithms that do
//! not fit the configured key — each with its field path.

use super::*;

fn errors(yaml: &str) -> Vec<String> {
    compile_yaml(yaml).err().unwrap_or_default()
}

#[test]
fn unreadable_and_unusable_key_files() {
    let found = errors("auth:\n  a:\n    jwt: { public_key_file: nowhere.pem }\n  b:\n    jwt: { public_key_file: rsa.key }\n  c:\n    api_keys: { file: rsa.pub }\n");
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("auth.a.jwt.public_key_file: cannot read "),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("auth.b.jwt.public_key_file: rsa.key: not a usable PEM public key"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("auth.c.api_keys.file: rsa.pub: line 1: expected a list of"),
        "{found:?}"
    );
    assert!(
        !found[2].contains("MII"),
        "the file's content is never quoted: {found:?}"
    );
}

#[test]
fn algorithms_must_fit_the_key() {
    let found = errors("auth:\n  main:\n    jwt: { public_key_file: p256.pub, algorithms: [ES256, ES384, RS256] }\n");
    assert_eq!(
        found,
        [
            "auth.main.jwt.algorithms[1]: `ES384` does not fit the key in `public_key_file` (an EC P256 key)",
            "auth.main.jwt.algorithms[2]: `RS256` does not fit the key in `public_key_file` (an EC P256 key)",
        ]
    );
}

#[test]
fn a_bad_inline_jwk() {
    let found = errors("auth:\n  main:\n    jwt: { jwk: { kty: RSA, n: AQAB, e: AQAB } }\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("auth.main.jwt.jwk: an RSA key of 24 bits"),
        "{found:?}"
    );
}
