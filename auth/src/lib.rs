//! Holdfast's bearer-token verification: JWTs (HS/RS/PS/ES/EdDSA via jsonwebtoken; keys from a
//! secret, a PEM file, an inline JWK or a JWKS URL), static API keys, required scopes and roles,
//! and the claims a verified credential yields for upstream headers and the mapping engine.
//!
//! The verbs follow the gateway's pipeline:
//! - [`compile`] turns the `auth` section and routes' `auth:` of a [`conf::Config`] into an
//!   [`AuthSet`] once per (re)load — the only step that reads files (PEM, JWK, keys files);
//! - [`RouteRequirement::authenticate`] runs per request on plain data (a `HeaderMap`, the raw
//!   query, `now`) and yields an [`Identity`] or an [`AuthError`] that knows its status,
//!   `WWW-Authenticate` challenge, problem+json text and metric [`Reason`];
//! - [`Jwks`] holds a JWKS provider's keys; the gateway fetches the document in a background
//!   task and hands it over with [`Jwks::apply_jwks`].
//!
//! Supported algorithms: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256,
//! ES384, EdDSA (Ed25519). ES512 is not: jsonwebtoken 11 has no P-521. `none` never is.
//!
//! This crate does no network I/O, knows nothing of Pingora or tokio, and never panics on
//! anything a client or the config controls. Read `route.rs` first, then `jwt.rs`.

mod api_keys;
mod cache;
mod claims;
mod compile;
mod error;
mod identity;
mod jwks;
mod jwt;
mod keys;
mod provider;
mod route;
mod set;
mod strip;
mod token;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use api_keys::hash_key;
pub use claims::Claims;
pub use compile::{compile, compile_reusing, DEFAULT_API_KEY_HEADER, DEFAULT_REALM};
pub use error::{AuthError, Reason};
pub use identity::{CredentialKind, Identity};
pub use jwks::{parse_max_age, FetchCause, Jwks, JwksError, MAX_JWKS_BYTES};
pub use keys::MIN_RSA_BITS;
pub use provider::Provider;
pub use route::RouteRequirement;
pub use set::AuthSet;
pub use strip::{redact_query, strip_cookie_headers, strip_cookies, strip_query, Strip};
pub use token::{Location, MAX_TOKEN_BYTES};
