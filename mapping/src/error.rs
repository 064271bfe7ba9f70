//! The one error type of applying rules and of the body and query helpers. Each error knows its
//! HTTP status and a `detail` for the problem+json answer; the gateway renders it in one place.
//! Details name the rule and the place, never the value (a value may be a claim or a secret).

use std::sync::Arc;

/// Why a request (or an upstream's response) could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A rule failed; `rule` reads `map.request[1] (rename body.inputText → body.user_input)`.
    #[error("{rule}: {reason}")]
    Rule { rule: Arc<str>, reason: Reason },
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the query string is invalid: {0}")]
    InvalidQuery(String),
    /// The route maps JSON bodies and refuses others (`non_json_body: refuse`).
    #[error(
        "this route accepts only JSON bodies (application/json or application/…+json), not `{0}`"
    )]
    UnsupportedMediaType(String),
    /// Mapping the upstream's response failed: the upstream answered something the rules
    /// cannot map, which is the gateway's 502, not the client's fault.
    #[error("the upstream's response: {0}")]
    Upstream(Box<MappingError>),
}

/// Why one rule failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("`{0}` is missing")]
    Missing(String),
    #[error("cannot cast `{place}` to {to}: {why}")]
    Cast {
        place: String,
        to: &'static str,
        why: String,
    },
    /// CR, LF, NUL or another control character headed for a header: never written.
    #[error("the value for `{0}` holds a control character (CR, LF, NUL, …) and cannot go into a header")]
    UnsafeHeader(String),
    #[error("`{place}`: {why}")]
    Conflict { place: String, why: String },
    /// A path rewrite produced a `.` or `..` segment; refused rather than normalised.
    #[error("the rewritten path holds a `.` or `..` segment")]
    DotSegment,
    #[error("`{0}` is not a valid method")]
    InvalidMethod(String),
    /// A combination of rules the compiler could not rule out; a configuration mistake.
    #[error("{0}")]
    Internal(String),
}

impl MappingError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            MappingError::Rule {
                reason: Reason::Internal(_),
                ..
            } => 500,
            MappingError::Rule { .. }
            | MappingError::InvalidJson(_)
            | MappingError::InvalidQuery(_) => 400,
            MappingError::TooLarge { .. } => 413,
            MappingError::UnsupportedMediaType(_) => 415,
            MappingError::Upstream(_) => 502,
        }
    }

    /// A short title for problem+json.
    pub fn title(&self) -> &'static str {
        match self {
            MappingError::Rule {
                reason: Reason::Internal(_),
                ..
            } => "Mapping misconfigured",
            MappingError::Rule { .. } => "Request mapping failed",
            MappingError::InvalidJson(_) => "Invalid JSON body",
            MappingError::TooLarge { .. } => "Payload too large",
            MappingError::InvalidQuery(_) => "Invalid query string",
            MappingError::UnsupportedMediaType(_) => "Unsupported media type",
            MappingError::Upstream(_) => "Bad gateway",
        }
    }

    /// The problem+json `detail`: the message, naming the rule where one failed.
    pub fn detail(&self) -> String {
        self.to_string()
    }

    pub(crate) fn upstream(self) -> MappingError {
        match self {
            MappingError::Upstream(_) => self,
            other => MappingError::Upstream(Box::new(other)),
        }
    }
}
