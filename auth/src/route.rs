//! A route's compiled requirement ([`RouteRequirement`]): which providers may vouch, which scopes or
//! roles the identity must hold, which claims become upstream headers, and what to strip from
//! the request before proxying. [`RouteRequirement::authenticate`] is the request-path entry point.

use crate::provider::Provider;
use crate::{AuthError, Identity, Reason, Strip};
use conf::auth::MatchMode;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a route requires, compiled from its `auth:`.
#[derive(Debug)]
pub struct RouteRequirement {
    pub(crate) providers: Vec<Arc<Provider>>,
    pub(crate) scopes: Vec<String>,
    pub(crate) scopes_mode: MatchMode,
    pub(crate) roles: Vec<String>,
    pub(crate) roles_mode: MatchMode,
    pub(crate) forward_token: bool,
    pub(crate) claims_to_headers: Vec<(String, HeaderName)>,
    pub(crate) strip: Strip,
    /// The query parameters the route's providers read a credential from, forwarded or not.
    pub(crate) credential_params: Vec<String>,
}

impl RouteRequirement {
    /// Authenticates a request from its headers and raw query string (without `?`), at `now`.
    ///
    /// Each provider whose credential is present is tried in order; the first that vouches for
    /// an identity meeting the route's scopes and roles wins. If none does, the error of the
    /// provider that got furthest is returned ([`AuthError::Missing`] when no credential was
    /// there at all). A malformed request (two `Authorization` headers, …) is refused at once.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: SystemTime,
    ) -> Result<Identity, AuthError> {
        let now = unix_seconds(now);
        let mut best: Option<AuthError> = None;
        for provider in &self.providers {
            let outcome = match provider.location.find(headers, query) {
                Ok(None) => continue,
                Ok(Some(credential)) => provider
                    .verify(&credential, now)
                    .map(|verified| Identity::new(provider.name.clone(), verified))
                    .and_then(|identity| self.check_grants(&identity).map(|()| identity)),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(identity) => return Ok(identity),
                Err(error @ AuthError::InvalidRequest(_)) => return Err(error),
                Err(error) => {
                    if best.as_ref().is_none_or(|best| error.rank() > best.rank()) {
                        best = Some(error);
                    }
                }
            }
        }
        Err(best.unwrap_or(AuthError::Missing))
    }

    /// The required scopes and roles.
    fn check_grants(&self, identity: &Identity) -> Result<(), AuthError> {
        if !holds(identity.scopes(), &self.scopes, self.scopes_mode) {
            return Err(AuthError::InsufficientScope {
                scope: self.scopes.join(" "),
            });
        }
        if !holds(identity.roles(), &self.roles, self.roles_mode) {
            return Err(AuthError::InsufficientScope {
                scope: String::new(),
            });
        }
        Ok(())
    }

    /// The `realm` of this route's challenges (its first provider's).
    pub fn realm(&self) -> &str {
        self.providers.first().map_or("holdfast", |p| p.realm())
    }

    /// The names of the providers that may vouch, in order.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| p.name())
    }

    /// Whether the credential is passed on to the upstream (`forward_token: true`).
    pub fn forward_token(&self) -> bool {
        self.forward_token
    }

    /// The credential's places to remove before proxying: every header, query parameter and
    /// cookie the route's providers read. Empty with `forward_token: true`. See
    /// [`crate::strip_query`] and [`crate::strip_cookie_headers`].
    pub fn strip(&self) -> &Strip {
        &self.strip
    }

    /// The query parameters the route's providers read a credential from (forwarded or not):
    /// what a log that records queries must redact.
    pub fn credential_params(&self) -> &[String] {
        &self.credential_params
    }

    /// The headers the route's providers read a credential from, stripped or forwarded alike:
    /// a look-alike of one must not reach an origin that may read it as the credential.
    pub fn credential_header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.providers
            .iter()
            .filter_map(|provider| provider.location.header.as_ref())
    }

    /// The headers claims are copied into: remove any the client sent before adding them.
    pub fn claim_header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims_to_headers.iter().map(|(_, name)| name)
    }

    /// The upstream headers from the identity's claims (`claims_to_headers`): arrays joined
    /// with commas, absent claims skipped. A claim value with CR, LF, NUL or another character
    /// a header cannot hold refuses the request (401 `invalid_token`) rather than dropping a
    /// header the upstream may rely on.
    pub fn claim_headers(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let mut headers = Vec::with_capacity(self.claims_to_headers.len());
        for (path, name) in &self.claims_to_headers {
            let Some(text) = identity.claims().text(path) else {
                continue;
            };
            if text.contains(['\r', '\n', '\0']) {
                return Err(AuthError::InvalidToken(Reason::Malformed));
            }
            let value = HeaderValue::from_str(&text)
                .map_err(|_| AuthError::InvalidToken(Reason::Malformed))?;
            headers.push((name.clone(), value));
        }
        Ok(headers)
    }
}

fn holds(granted: &[String], required: &[String], mode: MatchMode) -> bool {
    if required.is_empty() {
        return true;
    }
    let has = |wanted: &String| granted.iter().any(|g| g == wanted);
    match mode {
        MatchMode::All => required.iter().all(has),
        MatchMode::Any => required.iter().any(has),
    }
}

/// Unix seconds; a clock before 1970 reads as 0.
pub(crate) fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
