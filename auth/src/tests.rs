//! Tests of the crate as the gateway uses it: a config written as YAML, compiled, then requests
//! given as header maps at a fixed clock. One file per theme under `tests/`.

use crate::testkit::now;
use crate::{compile, AuthError, AuthSet, Identity};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::path::Path;

mod accepts;
mod cache;
mod compile_errors;
mod jwks;
mod refusals;
mod routes;

/// Compiles `yaml` as if read from `src/testdata/config.yaml` (so files resolve there).
pub fn compile_yaml(yaml: &str) -> Result<AuthSet, Vec<String>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata/config.yaml");
    let config = conf::load_str(&file, yaml)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    compile(&config).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    })
}

pub fn set(yaml: &str) -> AuthSet {
    match compile_yaml(yaml) {
        Ok(set) => set,
        Err(errors) => panic!("config does not compile: {errors:#?}"),
    }
}

/// Provider `main` with `jwt: { <jwt> }` and route 0 with `auth: { provider: main<route> }`.
pub fn single(jwt: &str, route: &str) -> AuthSet {
    set(&format!(
        "auth:\n  main:\n    jwt: {{ {jwt} }}\nroutes:\n  - name: r\n    auth: {{ provider: main{route} }}\n"
    ))
}

pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

pub fn bearer(token: &str) -> HeaderMap {
    headers(&[("authorization", &format!("Bearer {token}"))])
}

/// Route 0 of `set`, for `headers`, at the tests' now.
pub fn check(set: &AuthSet, headers: &HeaderMap) -> Result<Identity, AuthError> {
    let route = set.route(0).expect("route 0 has auth");
    set.authenticate(route, headers, None, now())
}

/// Route 0 of `set` with a bearer `token`.
pub fn check_token(set: &AuthSet, token: &str) -> Result<Identity, AuthError> {
    check(set, &bearer(token))
}
