//! Compiling the `auth` section and routes' `auth:` of a [`conf::Config`] into an [`AuthSet`]:
//! reading PEM, JWK and keys files (relative to the config file that names them), checking each
//! key against the provider's algorithms, and building every route's requirement.
//!
//! Run it after [`conf::validate`]: what `validate` already reports (unknown names, bad
//! algorithm names, missing keys) is skipped here without a second message; every error this
//! step finds itself is collected, each with its field path.

use crate::api_keys::ApiKeyStore;
use crate::cache::TokenCache;
use crate::jwks::{Jwks, Timing};
use crate::jwt::{JwtVerifier, KeySource};
use crate::keys::{Key, KeySet};
use crate::provider::{Check, Provider};
use crate::{AuthSet, Location, RouteRequirement, Strip};
use conf::auth::{JwksSettings, Jwt, TokenLocation};
use conf::{Config, FieldError};
use http::HeaderName;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::Algorithm;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The realm of challenges when a provider names none.
pub const DEFAULT_REALM: &str = "holdfast";
/// The header API keys are read from by default.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// Compiles the auth of `config`; every error found, with field paths
/// ([`Config::place`] turns them into file and line).
pub fn compile(config: &Config) -> Result<AuthSet, Vec<FieldError>> {
    compile_reusing(config, None)
}

/// Like [`compile`], but JWKS providers whose URL and timing did not change keep the key set
/// and schedule of `previous` (a reload does not refetch every key set, and a provider that is
/// down keeps its last good keys across the reload).
pub fn compile_reusing(
    config: &Config,
    previous: Option<&AuthSet>,
) -> Result<AuthSet, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut set = AuthSet::default();
    for (name, provider) in &config.auth {
        let reuse = previous
            .and_then(|p| p.provider(name))
            .and_then(|p| p.jwks());
        if let Some(compiled) = compile_provider(config, name, provider, reuse, &mut errors) {
            set.providers.insert(name.clone(), Arc::new(compiled));
        }
    }
    for route in &config.routes {
        let requirement = route
            .auth
            .as_ref()
            .filter(|auth| !auth.public)
            .map(|auth| Arc::new(compile_route(&set, auth)));
        set.routes.push(requirement);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

fn compile_route(set: &AuthSet, auth: &conf::auth::RouteAuth) -> RouteRequirement {
    let providers: Vec<_> = auth
        .provider_names()
        .filter_map(|name| set.provider(name).cloned())
        .collect();
    let mut strip = Strip::default();
    if !auth.forward_token {
        for provider in &providers {
            strip.add(&provider.location);
        }
    }
    let mut credential_params: Vec<String> = Vec::new();
    for name in providers.iter().filter_map(|p| p.location.query.as_ref()) {
        if !credential_params.contains(name) {
            credential_params.push(name.clone());
        }
    }
    RouteRequirement {
        providers,
        scopes: auth.scopes.clone(),
        scopes_mode: auth.scopes_mode,
        roles: auth.roles.clone(),
        roles_mode: auth.roles_mode,
        forward_token: auth.forward_token,
        claims_to_headers: auth
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| Some((claim.clone(), header_name(header)?)))
            .collect(),
        strip,
        credential_params,
    }
}

fn compile_provider(
    config: &Config,
    name: &str,
    provider: &conf::auth::Provider,
    reuse: Option<&Arc<Jwks>>,
    errors: &mut Vec<FieldError>,
) -> Option<Provider> {
    let at = format!("auth.{name}");
    let name: Arc<str> = name.into();
    let check = match (&provider.jwt, &provider.api_keys) {
        (Some(jwt), None) => Check::Jwt(compile_jwt(
            config,
            &format!("{at}.jwt"),
            &name,
            jwt,
            reuse,
            errors,
        )?),
        (None, Some(keys)) => {
            let field = format!("{at}.api_keys.file");
            let text = read(config, &field, &keys.file, errors)?;
            match ApiKeyStore::parse(&text) {
                Ok(store) => {
                    if store.len() == 0 {
                        tracing::warn!(provider = %name, "the API keys file holds no keys");
                    }
                    Check::ApiKeys(store)
                }
                Err(problems) => {
                    for problem in problems {
                        errors.push(FieldError::new(
                            &field,
                            format!("{}: {problem}", keys.file.display()),
                        ));
                    }
                    return None;
                }
            }
        }
        _ => return None,
    };
    let default_location = match check {
        Check::Jwt(_) => Location::bearer(),
        Check::ApiKeys(_) => Location {
            header: Some(HeaderName::from_static(DEFAULT_API_KEY_HEADER)),
            query: None,
            cookie: None,
        },
    };
    let location = provider.token.as_ref().map_or(default_location, location);
    Some(Provider {
        name,
        realm: provider
            .realm
            .clone()
            .unwrap_or_else(|| DEFAULT_REALM.to_owned()),
        location,
        check,
    })
}

fn location(token: &TokenLocation) -> Location {
    Location {
        header: token.header.as_deref().and_then(header_name),
        query: token.query.clone(),
        cookie: token.cookie.clone(),
    }
}

fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()
}

fn compile_jwt(
    config: &Config,
    at: &str,
    name: &Arc<str>,
    jwt: &Jwt,
    reuse: Option<&Arc<Jwks>>,
    errors: &mut Vec<FieldError>,
) -> Option<JwtVerifier> {
    let algorithms: Vec<Algorithm> = jwt
        .algorithms
        .iter()
        .filter_map(|alg| Algorithm::from_str(alg).ok())
        .collect();
    if algorithms.len() != jwt.algorithms.len() {
        return None; // `validate` names the bad algorithm
    }
    let (keys, algorithms) = if let Some(url) = &jwt.jwks_url {
        let timing = Timing::from(jwt.jwks.as_ref().unwrap_or(&JwksSettings::default()));
        let jwks = match reuse {
            Some(previous) if previous.same_source(url, timing) => previous.clone(),
            _ => Arc::new(Jwks::new(name.clone(), url.clone(), timing)),
        };
        let algorithms = if algorithms.is_empty() {
            vec![Algorithm::RS256]
        } else {
            algorithms
        };
        (KeySource::Jwks(jwks), algorithms)
    } else {
        let (field, key) = static_key(config, at, jwt, errors)?;
        let algorithms = if algorithms.is_empty() {
            key.default_algorithms()
        } else {
            algorithms
        };
        let mut fits = true;
        for (i, alg) in algorithms.iter().enumerate() {
            if !key.fits(*alg) {
                fits = false;
                errors.push(FieldError::new(
                    format!("{at}.algorithms[{i}]"),
                    format!(
                        "`{alg:?}` does not fit the key in `{field}` ({})",
                        describe(&key)
                    ),
                ));
            }
        }
        if !fits {
            return None;
        }
        (
            KeySource::Static(Arc::new(KeySet { keys: vec![key] })),
            algorithms,
        )
    };
    Some(JwtVerifier {
        provider: name.clone(),
        algorithms,
        keys,
        issuers: jwt.issuer.clone(),
        audiences: jwt.audiences.clone(),
        leeway: seconds(jwt.leeway.get()),
        max_lifetime: jwt.max_lifetime.map(|d| seconds(d.get())),
        require_exp: jwt.require_exp,
        subject_claim: jwt.subject_claim.clone(),
        roles_claim: jwt.roles_claim.clone(),
        cache: TokenCache::new(jwt.cache_size),
        #[cfg(test)]
        signature_checks: Default::default(),
    })
}

/// The configured key of a provider without JWKS, and the field it came from.
fn static_key(
    config: &Config,
    at: &str,
    jwt: &Jwt,
    errors: &mut Vec<FieldError>,
) -> Option<(&'static str, Key)> {
    if let Some(secret) = &jwt.secret {
        return Some(("secret", Key::secret(secret.as_str().as_bytes())));
    }
    if let Some(file) = &jwt.public_key_file {
        let field = format!("{at}.public_key_file");
        let text = read(config, &field, file, errors)?;
        return match Key::pem(text.as_bytes()) {
            Ok(key) => Some(("public_key_file", key)),
            Err(message) => {
                errors.push(FieldError::new(
                    field,
                    format!("{}: {message}", file.display()),
                ));
                None
            }
        };
    }
    if let Some(value) = &jwt.jwk {
        let field = format!("{at}.jwk");
        let parsed = match value {
            serde_json::Value::String(text) => serde_json::from_str::<Jwk>(text),
            value => serde_json::from_value::<Jwk>(value.clone()),
        };
        let key = parsed
            .map_err(|e| format!("not a JWK: {e}"))
            .and_then(|jwk| Key::jwk(&jwk, true));
        return match key {
            Ok(key) => Some(("jwk", key)),
            Err(message) => {
                errors.push(FieldError::new(field, message));
                None
            }
        };
    }
    None // `validate` says a key is missing
}

fn describe(key: &Key) -> String {
    match (&key.family, &key.curve) {
        (jsonwebtoken::AlgorithmFamily::Hmac, _) => "an HMAC secret".to_owned(),
        (jsonwebtoken::AlgorithmFamily::Rsa, _) => "an RSA key".to_owned(),
        (jsonwebtoken::AlgorithmFamily::Ec, Some(curve)) => format!("an EC {curve:?} key"),
        (jsonwebtoken::AlgorithmFamily::Ec, None) => "an EC key".to_owned(),
        (jsonwebtoken::AlgorithmFamily::Ed, _) => "an Ed25519 key".to_owned(),
    }
}

fn seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Reads a file named in the config, relative to the config file that names it.
fn read(config: &Config, field: &str, file: &Path, errors: &mut Vec<FieldError>) -> Option<String> {
    let path = resolve(config, field, file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) => {
            errors.push(FieldError::new(
                field,
                format!("cannot read {}: {error}", path.display()),
            ));
            None
        }
    }
}

fn resolve(config: &Config, field: &str, file: &Path) -> PathBuf {
    if file.is_absolute() {
        return file.to_owned();
    }
    let (origin, _) = config.locate(field);
    match origin.parent() {
        Some(dir) => dir.join(file),
        None => file.to_owned(),
    }
}
