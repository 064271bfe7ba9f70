//! The schema of auth providers (`auth:` at the top of the config) and of a route's `auth:`, and
//! the checks of both that need nothing but the config itself.
//!
//! A provider is declared once and named; routes refer to it by name:
//!
//! ```yaml
//! auth:
//!   main:
//!     jwt:
//!       issuer: https://id.example.com          # one or a list
//!       audiences: [holdfast]                   # the token must name one of them
//!       algorithms: [RS256]                     # default: from the key (HS256 for a secret, RS256 for JWKS)
//!       jwks_url: https://id.example.com/.well-known/jwks.json
//!       jwks: { refresh: 5m, min_refresh: 30s, refetch_cooldown: 30s }
//!       leeway: 30s
//!       max_lifetime: 1h
//!       roles_claim: realm_access.roles
//!   partners:
//!     api_keys: { file: keys.yaml }             # SHA-256 hashes, see `holdfast hash-key`
//!     token: { header: x-api-key, query: api_key }
//! routes:
//!   - name: ai
//!     auth: { providers: [main, partners], scopes: [ai:read], claims_to_headers: { sub: x-user-id } }
//!   - name: health
//!     auth: { public: true }
//! ```
//!
//! This module never reads key files or talks to the identity provider: the auth crate does that
//! when it compiles the providers. It must not depend on jsonwebtoken.

use crate::config::one_or_many;
use crate::suggest::nearest;
use crate::{Config, Duration, EnvString, FieldError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// Every JWS algorithm Holdfast verifies (what jsonwebtoken 11 supports; it has no ES512).
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The shortest HMAC secret accepted, in bytes (RFC 7518 §3.2 asks for the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The largest leeway accepted for clock skew.
const MAX_LEEWAY: std::time::Duration = std::time::Duration::from_secs(300);

/// One named auth provider: how a credential is checked, and where it is read from.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// JSON Web Tokens (signed JWS).
    #[serde(default)]
    pub jwt: Option<Jwt>,
    /// Static API keys, stored as SHA-256 hashes in a YAML file.
    #[serde(default)]
    pub api_keys: Option<ApiKeys>,
    /// Where the credential is found. Default: `Authorization: Bearer` for `jwt`, the
    /// `x-api-key` header for `api_keys`.
    #[serde(default)]
    pub token: Option<TokenLocation>,
    /// The `realm` of `WWW-Authenticate` challenges. Default: `holdfast`.
    #[serde(default)]
    pub realm: Option<String>,
}

/// `jwt:` — how a JSON Web Token is verified.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Accepted `iss` values; empty accepts any issuer.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values (the token must carry one of them); empty skips the check.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub audiences: Vec<String>,
    /// Allowed `alg` values. Default: HS256 for `secret`, RS256 for `jwks_url`, and the key's
    /// own algorithm for `public_key_file` and `jwk`. The token's `alg` never picks the key type.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// An HMAC secret (`${JWT_SECRET}`), at least 32 bytes.
    #[serde(default)]
    pub secret: Option<EnvString>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519), relative to the config file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// One inline JWK (a YAML map or a JSON string).
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
    /// A JWKS document, fetched at start and refreshed in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How the JWKS is refreshed; only with `jwks_url`.
    #[serde(default)]
    pub jwks: Option<JwksSettings>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// The longest lifetime accepted (`exp - iat`, or `exp - now` without `iat`).
    #[serde(default)]
    pub max_lifetime: Option<Duration>,
    /// Refuse tokens without `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// The claim that names the subject (the identity used for rate limits and jobs); a token
    /// without it is refused.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Where a route's `roles:` are looked up; dots walk into objects (`realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Verified tokens remembered so a repeated token skips the signature check; 0 turns it off.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
}

/// `jwks:` — refresh timing of a JWKS provider.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JwksSettings {
    /// Refresh interval when the answer has no `Cache-Control: max-age`.
    pub refresh: Duration,
    /// Never refresh sooner than this, whatever `max-age` says; also the longest retry back-off.
    pub min_refresh: Duration,
    /// Never keep a key set longer than this, whatever `max-age` says.
    pub max_refresh: Duration,
    /// Least time between two refetches caused by tokens naming an unknown `kid`.
    pub refetch_cooldown: Duration,
    /// How long one fetch may take.
    pub timeout: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(86_400),
            refetch_cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// `api_keys:` — static keys.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// A YAML list of `{ name, sha256, scopes, roles }`, relative to the config file.
    pub file: PathBuf,
}

/// `token:` — where a provider reads the credential. Several places may be given; a request
/// that uses more than one of them at once is refused.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenLocation {
    /// A header. `authorization` means `Authorization: Bearer <token>`; any other header holds
    /// the bare token.
    #[serde(default)]
    pub header: Option<String>,
    /// A query parameter.
    #[serde(default)]
    pub query: Option<String>,
    /// A cookie.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// How a list of required scopes or roles is matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Every listed value is required.
    #[default]
    All,
    /// One listed value is enough.
    Any,
}

/// A route's `auth:` — which providers may vouch for the request, and what it must carry.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// The one provider that may vouch for the request.
    #[serde(default)]
    pub provider: Option<String>,
    /// Several providers; any of them may vouch (tried in order).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Explicitly open: no credential is needed (and none is read).
    #[serde(default)]
    pub public: bool,
    /// Required scopes (`scope` claim, space-separated, or `scp` array; an API key's scopes).
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub scopes_mode: MatchMode,
    /// Required roles (the provider's `roles_claim`; an API key's roles).
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub roles_mode: MatchMode,
    /// Pass the credential on to the upstream (default: removed before proxying).
    #[serde(default)]
    pub forward_token: bool,
    /// Claims copied into upstream request headers: `{ sub: x-user-id, org.id: x-org }`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
}

impl RouteAuth {
    /// The providers named by `provider` and `providers`, in order.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.provider
            .iter()
            .chain(self.providers.iter())
            .map(String::as_str)
    }
}

fn yes() -> bool {
    true
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_cache_size() -> usize {
    10_000
}

/// Headers a claim may not be copied into: they frame the message or carry credentials.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "cookie",
    "authorization",
];

/// Checks of the `auth` section and of routes' `auth:` that need only the config.
pub(crate) fn check(config: &Config, errors: &mut Vec<FieldError>) {
    for (name, provider) in &config.auth {
        check_provider(name, provider, errors);
    }
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(auth) = &route.auth {
            check_route(config, auth, &format!("routes[{i}].auth"), errors);
        }
    }
}

fn check_provider(name: &str, provider: &Provider, errors: &mut Vec<FieldError>) {
    let at = format!("auth.{name}");
    crate::validate::check_name(name, &at, errors);
    match (&provider.jwt, &provider.api_keys) {
        (Some(jwt), None) => check_jwt(&format!("{at}.jwt"), jwt, errors),
        (None, Some(keys)) => {
            if keys.file.as_os_str().is_empty() {
                errors.push(FieldError::new(
                    format!("{at}.api_keys.file"),
                    "must name a file",
                ));
            }
        }
        (Some(_), Some(_)) => errors.push(FieldError::new(
            &at,
            "give `jwt` or `api_keys`, not both (declare two providers and list both on the route)",
        )),
        (None, None) => errors.push(FieldError::new(&at, "a provider needs `jwt` or `api_keys`")),
    }
    if let Some(token) = &provider.token {
        check_location(&format!("{at}.token"), token, errors);
    }
    if let Some(realm) = &provider.realm {
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            errors.push(FieldError::new(
                format!("{at}.realm"),
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }
    }
}

fn check_jwt(at: &str, jwt: &Jwt, errors: &mut Vec<FieldError>) {
    let sources = [
        jwt.secret.is_some(),
        jwt.public_key_file.is_some(),
        jwt.jwk.is_some(),
        jwt.jwks_url.is_some(),
    ];
    match sources.iter().filter(|given| **given).count() {
        0 => errors.push(FieldError::new(
            at,
            "give the key: one of `secret`, `public_key_file`, `jwk` or `jwks_url`",
        )),
        1 => {}
        _ => errors.push(FieldError::new(
            at,
            "give only one of `secret`, `public_key_file`, `jwk` and `jwks_url`",
        )),
    }
    let mut seen = HashSet::new();
    for (i, alg) in jwt.algorithms.iter().enumerate() {
        let path = format!("{at}.algorithms[{i}]");
        if !ALGORITHMS.contains(&alg.as_str()) {
            let message = match alg.to_ascii_lowercase().as_str() {
                "none" => "`none` is never accepted: tokens must be signed".to_owned(),
                "es512" => "ES512 is not supported (jsonwebtoken has no P-521); use ES256 or ES384"
                    .to_owned(),
                _ => match nearest(alg, ALGORITHMS.iter().copied()) {
                    Some(best) => format!("unknown algorithm `{alg}` (did you mean `{best}`?)"),
                    None => format!(
                        "unknown algorithm `{alg}`; valid: {}",
                        ALGORITHMS.join(", ")
                    ),
                },
            };
            errors.push(FieldError::new(path, message));
            continue;
        }
        if !seen.insert(alg.as_str()) {
            errors.push(FieldError::new(
                path.clone(),
                format!("`{alg}` is listed twice"),
            ));
        }
        let hmac = alg.starts_with("HS");
        if jwt.secret.is_some() && !hmac {
            errors.push(FieldError::new(path, format!("`{alg}` needs a public key, but this provider has a `secret`: list only HS256, HS384 or HS512")));
        } else if jwt.secret.is_none() && hmac && sources.iter().any(|given| *given) {
            errors.push(FieldError::new(path, format!("`{alg}` is an HMAC algorithm and needs a `secret`; allowing it beside public keys invites algorithm confusion")));
        }
    }
    if let Some(secret) = &jwt.secret {
        if secret.as_str().len() < MIN_SECRET_BYTES {
            errors.push(FieldError::new(format!("{at}.secret"), format!("an HMAC secret needs at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`)")));
        }
    }
    if let Some(file) = &jwt.public_key_file {
        if file.as_os_str().is_empty() {
            errors.push(FieldError::new(
                format!("{at}.public_key_file"),
                "must name a file",
            ));
        }
    }
    if let Some(jwk) = &jwt.jwk {
        let object = match jwk {
            serde_json::Value::String(text) => {
                serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
            }
            value => value.is_object(),
        };
        if !object {
            errors.push(FieldError::new(
                format!("{at}.jwk"),
                "must be a JWK object (a map, or a JSON string)",
            ));
        }
    }
    if let Some(url) = &jwt.jwks_url {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if !rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')) {
            errors.push(FieldError::new(
                format!("{at}.jwks_url"),
                format!("`{url}` must be an http:// or https:// URL"),
            ));
        }
    }
    match (&jwt.jwks, &jwt.jwks_url) {
        (Some(_), None) => errors.push(FieldError::new(
            format!("{at}.jwks"),
            "`jwks` settings need a `jwks_url`",
        )),
        (Some(settings), Some(_)) => check_jwks_settings(&format!("{at}.jwks"), settings, errors),
        (None, _) => {}
    }
    if jwt.leeway.get() > MAX_LEEWAY {
        errors.push(FieldError::new(
            format!("{at}.leeway"),
            "must be at most 5m",
        ));
    }
    if jwt.max_lifetime.is_some_and(|d| d.get().is_zero()) {
        errors.push(FieldError::new(
            format!("{at}.max_lifetime"),
            "must be more than 0s",
        ));
    }
    for (i, issuer) in jwt.issuer.iter().enumerate() {
        if issuer.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.issuer[{i}]"),
                "must not be empty",
            ));
        }
    }
    for (i, audience) in jwt.audiences.iter().enumerate() {
        if audience.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.audiences[{i}]"),
                "must not be empty",
            ));
        }
    }
    for (field, path) in [
        ("subject_claim", &jwt.subject_claim),
        ("roles_claim", &jwt.roles_claim),
    ] {
        if let Err(message) = check_claim_path(path) {
            errors.push(FieldError::new(format!("{at}.{field}"), message));
        }
    }
    if jwt.cache_size > 10_000_000 {
        errors.push(FieldError::new(
            format!("{at}.cache_size"),
            "must be at most 10000000",
        ));
    }
}

fn check_jwks_settings(at: &str, settings: &JwksSettings, errors: &mut Vec<FieldError>) {
    let one_second = std::time::Duration::from_secs(1);
    for (field, value) in [
        ("refresh", settings.refresh),
        ("min_refresh", settings.min_refresh),
        ("max_refresh", settings.max_refresh),
        ("refetch_cooldown", settings.refetch_cooldown),
        ("timeout", settings.timeout),
    ] {
        if value.get() < one_second {
            errors.push(FieldError::new(
                format!("{at}.{field}"),
                "must be at least 1s",
            ));
        }
    }
    if settings.min_refresh > settings.refresh || settings.refresh > settings.max_refresh {
        errors.push(FieldError::new(
            format!("{at}.refresh"),
            format!(
                "must lie between min_refresh ({}) and max_refresh ({})",
                settings.min_refresh, settings.max_refresh
            ),
        ));
    }
}

fn check_location(at: &str, token: &TokenLocation, errors: &mut Vec<FieldError>) {
    if token.header.is_none() && token.query.is_none() && token.cookie.is_none() {
        errors.push(FieldError::new(
            at,
            "give at least one of `header`, `query` and `cookie`",
        ));
    }
    if let Some(header) = &token.header {
        if !is_header_name(header) {
            errors.push(FieldError::new(
                format!("{at}.header"),
                format!("`{header}` is not a header name"),
            ));
        }
    }
    for (field, value) in [("query", &token.query), ("cookie", &token.cookie)] {
        if let Some(value) = value {
            let fine = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !"=;,&\"".contains(c));
            if !fine {
                errors.push(FieldError::new(
                    format!("{at}.{field}"),
                    format!("`{value}` is not a plain {field} name"),
                ));
            }
        }
    }
}

fn check_route(config: &Config, auth: &RouteAuth, at: &str, errors: &mut Vec<FieldError>) {
    if auth.provider.is_some() && !auth.providers.is_empty() {
        errors.push(FieldError::new(
            at,
            "give `provider` or `providers`, not both",
        ));
    }
    let named = auth.provider_names().count() > 0;
    if auth.public {
        let extras = named
            || !auth.scopes.is_empty()
            || !auth.roles.is_empty()
            || auth.forward_token
            || !auth.claims_to_headers.is_empty();
        if extras {
            errors.push(FieldError::new(format!("{at}.public"), "a public route takes no providers, scopes, roles, forward_token or claims_to_headers"));
        }
        return;
    }
    if !named {
        errors.push(FieldError::new(
            at,
            "name a `provider` (or `providers: [a, b]`), or say `public: true`",
        ));
    }
    if let Some(provider) = &auth.provider {
        check_reference(config, provider, &format!("{at}.provider"), errors);
    }
    let mut seen = HashSet::new();
    for (i, provider) in auth.providers.iter().enumerate() {
        let path = format!("{at}.providers[{i}]");
        if !seen.insert(provider.as_str()) {
            errors.push(FieldError::new(
                path.clone(),
                format!("`{provider}` is listed twice"),
            ));
        }
        check_reference(config, provider, &path, errors);
    }
    for (field, values) in [("scopes", &auth.scopes), ("roles", &auth.roles)] {
        for (i, value) in values.iter().enumerate() {
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
            {
                errors.push(FieldError::new(
                    format!("{at}.{field}[{i}]"),
                    format!("`{value}` must be non-empty, without spaces, quotes or backslashes"),
                ));
            }
        }
    }
    let mut targets = HashSet::new();
    for (claim, header) in &auth.claims_to_headers {
        let path = format!("{at}.claims_to_headers.{claim}");
        if let Err(message) = check_claim_path(claim) {
            errors.push(FieldError::new(path.clone(), message));
        }
        let lower = header.to_ascii_lowercase();
        if !is_header_name(header) {
            errors.push(FieldError::new(
                path,
                format!("`{header}` is not a header name"),
            ));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            errors.push(FieldError::new(
                path,
                format!("a claim may not be copied into `{header}`"),
            ));
        } else if !targets.insert(lower) {
            errors.push(FieldError::new(
                path,
                format!("two claims are copied into `{header}`"),
            ));
        }
    }
}

fn check_reference(config: &Config, name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if config.auth.contains_key(name) {
        return;
    }
    let hint = match nearest(name, config.auth.keys().map(String::as_str)) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None if config.auth.is_empty() => "; no auth providers are defined".to_owned(),
        None => format!(
            "; defined: {}",
            config.auth.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    errors.push(FieldError::new(
        path,
        format!("unknown auth provider `{name}`{hint}"),
    ));
}

/// A claim path: dot-separated, no empty segment.
fn check_claim_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!(
            "`{path}` is not a claim path such as `sub` or `org.id`"
        ));
    }
    Ok(())
}

/// An HTTP header name (RFC 9110 token characters).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use std::path::Path;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn errors(text: &str) -> Vec<String> {
        let config = match load_str(Path::new("c.yaml"), text) {
            Ok(config) => config,
            Err(errors) => return errors.iter().map(ToString::to_string).collect(),
        };
        let mut errors = Vec::new();
        super::check(&config, &mut errors);
        errors
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn a_full_example_is_accepted() {
        let text = format!(
            "auth:\n  main:\n    jwt:\n      issuer: https://id.example.com\n      audiences: [holdfast]\n      algorithms: [RS256, ES256]\n      jwks_url: https://id.example.com/jwks.json\n      jwks: {{ refresh: 5m, refetch_cooldown: 10s }}\n      max_lifetime: 1h\n      roles_claim: realm_access.roles\n  hs:\n    jwt: {{ secret: {SECRET} }}\n    token: {{ cookie: session }}\n  partners:\n    api_keys: {{ file: keys.yaml }}\n    token: {{ header: x-api-key, query: api_key }}\nroutes:\n  - name: a\n    auth: {{ providers: [main, partners], scopes: [ai:read], scopes_mode: any, claims_to_headers: {{ sub: x-user-id, org.id: x-org }} }}\n  - name: b\n    auth: {{ public: true }}\n  - name: c\n    auth: {{ provider: hs, roles: [admin] }}\n"
        );
        assert_eq!(errors(&text), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let found = errors("auth:\n  main:\n    jwt:\n      secert: x\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("unknown key `secert` (did you mean `secret`?)"),
            "{found:?}"
        );
        let found = errors("routes:\n  - name: a\n    auth: { provider: main, scope: [x] }\n");
        assert!(found[0].contains("unknown key `scope`"), "{found:?}");
    }

    #[test]
    fn algorithms_are_checked_one_by_one() {
        let found = errors(&format!("auth:\n  main:\n    jwt: {{ secret: {SECRET}, algorithms: [HS256, none, RS256, ES512, HS256, HS265] }}\n"));
        assert_eq!(
            found,
            vec![
                "auth.main.jwt.algorithms[1]: `none` is never accepted: tokens must be signed",
                "auth.main.jwt.algorithms[2]: `RS256` needs a public key, but this provider has a `secret`: list only HS256, HS384 or HS512",
                "auth.main.jwt.algorithms[3]: ES512 is not supported (jsonwebtoken has no P-521); use ES256 or ES384",
                "auth.main.jwt.algorithms[4]: `HS256` is listed twice",
                "auth.main.jwt.algorithms[5]: unknown algorithm `HS265` (did you mean `HS256`?)",
            ]
        );
    }

    #[test]
    fn hmac_beside_a_public_key_is_refused() {
        let found = errors(
            "auth:\n  main:\n    jwt: { jwks_url: https://x/jwks, algorithms: [RS256, HS256] }\n",
        );
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("auth.main.jwt.algorithms[1]: `HS256` is an HMAC algorithm"),
            "{found:?}"
        );
    }

    #[test]
    fn key_sources_secrets_and_settings() {
        let found = errors("auth:\n  a:\n    jwt: { issuer: x }\n  b:\n    jwt: { secret: short, jwks_url: ftp://x }\n  c:\n    jwt: { secret: 0123456789abcdef0123456789abcdef, jwks: { refresh: 1s }, leeway: 1h }\n  d: {}\n");
        assert_eq!(
            found,
            vec![
                "auth.a.jwt: give the key: one of `secret`, `public_key_file`, `jwk` or `jwks_url`",
                "auth.b.jwt: give only one of `secret`, `public_key_file`, `jwk` and `jwks_url`",
                "auth.b.jwt.secret: an HMAC secret needs at least 32 bytes (e.g. `openssl rand -base64 48`)",
                "auth.b.jwt.jwks_url: `ftp://x` must be an http:// or https:// URL",
                "auth.c.jwt.jwks: `jwks` settings need a `jwks_url`",
                "auth.c.jwt.leeway: must be at most 5m",
                "auth.d: a provider needs `jwt` or `api_keys`",
            ]
        );
    }

    #[test]
    fn route_references_and_options() {
        let text = format!(
            "auth:\n  main:\n    jwt: {{ secret: {SECRET} }}\nroutes:\n  - name: a\n    auth: {{ provider: mian }}\n  - name: b\n    auth: {{ providers: [main, main, other] }}\n  - name: c\n    auth: {{ public: true, scopes: [x] }}\n  - name: d\n    auth: {{ scopes: [x] }}\n  - name: e\n    auth: {{ provider: main, scopes: ['a b'], claims_to_headers: {{ sub: host, org..id: x-org, a: x-a, b: X-A }} }}\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                "routes[0].auth.provider: unknown auth provider `mian` (did you mean `main`?)",
                "routes[1].auth.providers[1]: `main` is listed twice",
                "routes[1].auth.providers[2]: unknown auth provider `other`; defined: main",
                "routes[2].auth.public: a public route takes no providers, scopes, roles, forward_token or claims_to_headers",
                "routes[3].auth: name a `provider` (or `providers: [a, b]`), or say `public: true`",
                "routes[4].auth.scopes[0]: `a b` must be non-empty, without spaces, quotes or backslashes",
                "routes[4].auth.claims_to_headers.b: two claims are copied into `X-A`",
                "routes[4].auth.claims_to_headers.org..id: `org..id` is not a claim path such as `sub` or `org.id`",
                "routes[4].auth.claims_to_headers.sub: a claim may not be copied into `host`",
            ]
        );
    }

    #[test]
    fn token_locations_are_checked() {
        let found = errors(&format!("auth:\n  main:\n    jwt: {{ secret: {SECRET} }}\n    token: {{ header: 'x y', query: 'a=b' }}\n  other:\n    api_keys: {{ file: k.yaml }}\n    token: {{}}\n"));
        assert_eq!(
            found,
            vec![
                "auth.main.token.header: `x y` is not a header name",
                "auth.main.token.query: `a=b` is not a plain query name",
                "auth.other.token: give at least one of `header`, `query` and `cookie`",
            ]
        );
    }
}
