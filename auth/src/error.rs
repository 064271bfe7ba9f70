//! Why a request was refused: [`AuthError`], which knows its HTTP status, its RFC 6750
//! `WWW-Authenticate` challenge, the problem+json title and detail, and a metric [`Reason`].
//!
//! What a client may learn is what RFC 6750 allows: that its token is missing, malformed in the
//! request, invalid (one uniform description for every forgery), expired (said only after the
//! signature was verified), or lacking a scope. Key material, the failed check of a forged
//! token, and provider names never appear in a response; [`AuthError::reason`] tells operators
//! the rest through metrics.

use std::sync::Arc;

/// The metric label of a refusal: a small fixed set (`holdfast_auth_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No credential where the route's providers look for one.
    Missing,
    /// The credential is given in a malformed way (two `Authorization` headers, `Bearer` alone,
    /// several places at once).
    InvalidRequest,
    /// Longer than [`crate::MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not a JWS compact token: bad base64, JSON, structure, claim types, or a `crit` header.
    Malformed,
    /// `alg` is `none`, unknown, or not allowed by the provider.
    BadAlgorithm,
    BadSignature,
    Expired,
    /// `nbf` or `iat` lies in the future.
    NotYetValid,
    /// `exp` lies further from `iat` than the provider's `max_lifetime`.
    LifetimeTooLong,
    WrongIssuer,
    WrongAudience,
    /// The `kid` is not in the key set, or no `kid` and several keys could match.
    UnknownKey,
    /// The token is valid but lacks a required scope or role.
    InsufficientScope,
    /// A JWKS provider that has never loaded keys.
    KeysUnavailable,
    BadApiKey,
}

impl Reason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: &'static [Reason] = &[
        Reason::Missing,
        Reason::InvalidRequest,
        Reason::TooLarge,
        Reason::Malformed,
        Reason::BadAlgorithm,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::LifetimeTooLong,
        Reason::WrongIssuer,
        Reason::WrongAudience,
        Reason::UnknownKey,
        Reason::InsufficientScope,
        Reason::KeysUnavailable,
        Reason::BadApiKey,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::InvalidRequest => "invalid_request",
            Reason::TooLarge => "too_large",
            Reason::Malformed => "malformed",
            Reason::BadAlgorithm => "bad_algorithm",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::UnknownKey => "unknown_key",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::BadApiKey => "bad_api_key",
        }
    }
}

/// A refused request. Render it with [`status`](Self::status),
/// [`www_authenticate`](Self::www_authenticate), [`title`](Self::title) and
/// [`detail`](Self::detail); count it with [`reason`](Self::reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential at all: 401 with a bare challenge (RFC 6750 §3.1).
    #[error("no credential")]
    Missing,
    /// The credential is sent in a malformed way. 401 with `error="invalid_request"`: RFC 6750
    /// suggests 400, but Holdfast answers every credential problem with 401 so clients have one
    /// rule ("get a token and send it once, in one place").
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The token (or API key) is refused: 401 with `error="invalid_token"`.
    #[error("invalid token ({})", .0.as_str())]
    InvalidToken(Reason),
    /// The token names a `kid` the provider's JWKS does not hold: 401 like any invalid token,
    /// and the gateway may ask that provider for a (rate-limited) refetch.
    #[error("unknown key id")]
    UnknownKey {
        /// The JWKS provider that would need to refetch.
        provider: Arc<str>,
    },
    /// The credential is valid but lacks what the route requires: 403 with
    /// `error="insufficient_scope"`.
    #[error("insufficient scope")]
    InsufficientScope {
        /// The scopes the route requires, space-separated (empty for a roles requirement).
        scope: String,
    },
    /// A JWKS provider has no keys yet (the identity provider never answered): 503.
    #[error("keys unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// The HTTP status code: 401, 403 or 503.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::InsufficientScope { .. } => 403,
            AuthError::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// The metric reason.
    pub fn reason(&self) -> Reason {
        match self {
            AuthError::Missing => Reason::Missing,
            AuthError::InvalidRequest(_) => Reason::InvalidRequest,
            AuthError::InvalidToken(reason) => *reason,
            AuthError::UnknownKey { .. } => Reason::UnknownKey,
            AuthError::InsufficientScope { .. } => Reason::InsufficientScope,
            AuthError::KeysUnavailable => Reason::KeysUnavailable,
        }
    }

    /// The JWKS provider that should refetch its keys because of this error, if any.
    pub fn refetch_provider(&self) -> Option<&str> {
        match self {
            AuthError::UnknownKey { provider } => Some(provider),
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`), for a 503.
    pub fn retry_after_secs(&self) -> Option<u64> {
        matches!(self, AuthError::KeysUnavailable).then_some(5)
    }

    /// The RFC 6750 error code, if the challenge carries one.
    fn code(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing | AuthError::KeysUnavailable => None,
            AuthError::InvalidRequest(_) => Some("invalid_request"),
            AuthError::InvalidToken(_) | AuthError::UnknownKey { .. } => Some("invalid_token"),
            AuthError::InsufficientScope { .. } => Some("insufficient_scope"),
        }
    }

    /// The `error_description`: one of a few fixed sentences (no quotes or backslashes, as
    /// RFC 6750 §3 requires). An expired token says so only after its signature was verified.
    fn description(&self) -> &'static str {
        match self {
            AuthError::Missing => "an access token is required",
            AuthError::InvalidRequest(what) => what,
            AuthError::InvalidToken(Reason::Expired) => "the access token expired",
            AuthError::InvalidToken(Reason::TooLarge) => "the access token is too large",
            AuthError::InvalidToken(Reason::BadApiKey) => "the API key is invalid",
            AuthError::InvalidToken(_) | AuthError::UnknownKey { .. } => {
                "the access token is invalid"
            }
            AuthError::InsufficientScope { .. } => "the access token lacks the required scope",
            AuthError::KeysUnavailable => "the signing keys are not available yet",
        }
    }

    /// The `WWW-Authenticate` value for `realm`, or `None` for a 503. `realm` comes from the
    /// config, which refuses quotes and backslashes in it.
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        if matches!(self, AuthError::KeysUnavailable) {
            return None;
        }
        let mut value = format!("Bearer realm=\"{realm}\"");
        if let Some(code) = self.code() {
            value.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                self.description()
            ));
        }
        if let AuthError::InsufficientScope { scope } = self {
            if !scope.is_empty() {
                value.push_str(&format!(", scope=\"{scope}\""));
            }
        }
        Some(value)
    }

    /// The problem+json `title`.
    pub fn title(&self) -> &'static str {
        match self.status() {
            403 => "Forbidden",
            503 => "Service Unavailable",
            _ => "Unauthorized",
        }
    }

    /// The problem+json `detail`: the same fixed sentence as the challenge's description.
    pub fn detail(&self) -> String {
        let mut detail = self.description().to_owned();
        if let AuthError::InsufficientScope { scope } = self {
            if !scope.is_empty() {
                detail.push_str(&format!(" ({scope})"));
            }
        }
        if let Some(first) = detail.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        detail.push('.');
        detail
    }

    /// How far a provider got before refusing: when a route accepts several providers, the
    /// error of the one that got furthest is reported.
    pub(crate) fn rank(&self) -> u8 {
        match self.reason() {
            Reason::InsufficientScope => 9,
            Reason::Expired
            | Reason::NotYetValid
            | Reason::LifetimeTooLong
            | Reason::WrongAudience => 8,
            Reason::KeysUnavailable => 7,
            Reason::BadSignature | Reason::UnknownKey => 6,
            Reason::BadApiKey => 5,
            Reason::WrongIssuer | Reason::BadAlgorithm => 4,
            Reason::Malformed | Reason::TooLarge => 3,
            Reason::InvalidRequest => 2,
            Reason::Missing => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            AuthError::Missing.www_authenticate("api").as_deref(),
            Some("Bearer realm=\"api\"")
        );
        assert_eq!(
            AuthError::InvalidToken(Reason::Expired).www_authenticate("api").as_deref(),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the access token expired\"")
        );
        let scope = AuthError::InsufficientScope {
            scope: "ai:read ai:write".to_owned(),
        };
        assert_eq!(scope.status(), 403);
        assert_eq!(
            scope.www_authenticate("api").as_deref(),
            Some("Bearer realm=\"api\", error=\"insufficient_scope\", error_description=\"the access token lacks the required scope\", scope=\"ai:read ai:write\"")
        );
        assert_eq!(
            scope.detail(),
            "The access token lacks the required scope (ai:read ai:write)."
        );
        assert_eq!(AuthError::KeysUnavailable.status(), 503);
        assert_eq!(AuthError::KeysUnavailable.www_authenticate("api"), None);
    }

    #[test]
    fn forgeries_all_read_the_same() {
        let forged = [
            Reason::BadSignature,
            Reason::WrongIssuer,
            Reason::BadAlgorithm,
            Reason::Malformed,
        ];
        let details: Vec<String> = forged
            .iter()
            .map(|r| AuthError::InvalidToken(*r).detail())
            .collect();
        assert!(
            details.iter().all(|d| d == "The access token is invalid."),
            "{details:?}"
        );
        let unknown = AuthError::UnknownKey {
            provider: "main".into(),
        };
        assert_eq!(unknown.detail(), "The access token is invalid.");
        assert!(!unknown
            .www_authenticate("r")
            .unwrap_or_default()
            .contains("main"));
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let labels: std::collections::HashSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }
}
