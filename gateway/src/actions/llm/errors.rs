//! The answers an `llm` route gives when it cannot serve a request: problem+json (RFC 9457),
//! like every refusal of the gateway, with the door's own error member beside it
//! (`error: { type, message }`) so the OpenAI and Anthropic SDKs show the message.

use super::attempt::Tried;
use super::translate::{Format, TranslateError};
use crate::core::spec::llm::LlmSpec;
use crate::exchange::Reply;
use crate::problem::Problem;
use serde_json::{json, Value};
use std::time::Duration;

/// The door's error type for an HTTP status.
fn error_type(format: Format, status: u16) -> &'static str {
    match (format, status) {
        (Format::OpenAi, 400..=499) => "invalid_request_error",
        (Format::OpenAi, _) => "server_error",
        (Format::Anthropic, 429) => "rate_limit_error",
        (Format::Anthropic, 400..=499) => "invalid_request_error",
        (Format::Anthropic, 529) => "overloaded_error",
        (Format::Anthropic, _) => "api_error",
    }
}

/// `problem` with the door's error member.
fn with_error(format: Format, problem: Problem, param: Option<&str>) -> Reply {
    let mut error = json!({
        "type": error_type(format, problem.status),
        "message": problem.detail,
    });
    if let (Format::OpenAi, Some(param)) = (format, param) {
        error["param"] = Value::String(param.to_owned());
        error["code"] = Value::String(problem.kind.to_owned());
    }
    Reply::problem(&problem.with_member("error", error))
}

/// A request body that is not what the door expects.
pub fn bad_request(format: Format, field: &str, reason: &str) -> Reply {
    let problem = Problem::new(
        400,
        "bad-request",
        "Bad Request",
        format!("{field}: {reason}"),
    )
    .with_member("field", Value::String(field.to_owned()));
    with_error(format, problem, Some(field))
}

/// A request that fails the door's format, or cannot be translated to the provider's.
pub fn translation(format: Format, error: &TranslateError) -> Reply {
    let (kind, field) = match error {
        TranslateError::Invalid { field, .. } => ("bad-request", field),
        TranslateError::Untranslatable { field, .. } => ("untranslatable", field),
    };
    let problem = Problem::new(400, kind, "Bad Request", error.to_string())
        .with_member("field", Value::String(field.clone()));
    with_error(format, problem, Some(field))
}

/// A `model` that names no alias of the route: the known ones listed.
pub fn unknown_model(format: Format, asked: &str, spec: &LlmSpec) -> Reply {
    let known: Vec<&str> = spec.names().collect();
    let problem = Problem::new(
        400,
        "unknown-model",
        "Bad Request",
        format!(
            "model `{asked}` is not served here; the models are: {}",
            known.join(", ")
        ),
    )
    .with_member("models", json!(known));
    with_error(format, problem, Some("model"))
}

/// Every target failed: 502 with each one's outcome (`provider/model=status`), or 503 with the
/// soonest `Retry-After` when every key of every target was resting.
pub fn all_failed(format: Format, tried: &Tried) -> Reply {
    let map: serde_json::Map<String, Value> = tried
        .failures
        .iter()
        .map(|(target, outcome)| (target.clone(), Value::String(outcome.clone())))
        .collect();
    let header = tried
        .failures
        .iter()
        .map(|(target, outcome)| format!("{target}={outcome}"))
        .collect::<Vec<_>>()
        .join(", ");
    let problem = match tried.resting_only() {
        Some(wait) => Problem::new(
            503,
            "keys-resting",
            "Service Unavailable",
            "every API key of the model's providers was refused and rests; retry later",
        )
        .with_header("retry-after", retry_after(wait)),
        None => Problem::new(
            502,
            "providers-failed",
            "Bad Gateway",
            "every provider of the model failed",
        ),
    };
    let problem = problem
        .with_member("upstreams", Value::Object(map))
        .with_header("holdfast-upstreams", header);
    with_error(format, problem, None)
}

/// A provider answered with a body that is not its format (or not JSON).
pub fn bad_answer(format: Format, provider: &str, why: &str) -> Reply {
    let problem = Problem::new(
        502,
        "provider-bad-answer",
        "Bad Gateway",
        format!("provider `{provider}` answered with a body that cannot be read: {why}"),
    );
    with_error(format, problem, None)
}

/// A provider's own refusal of the request (a 4xx other than 429 and 401), passed on with its
/// status and message in the door's format.
pub fn refused(format: Format, status: u16, provider: &str, body: &[u8]) -> Reply {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|body| {
            body.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("provider `{provider}` refused the request"));
    let body = match format {
        Format::OpenAi => json!({"error": {
            "message": message,
            "type": error_type(format, status),
            "param": null,
            "code": null,
        }}),
        Format::Anthropic => json!({"type": "error", "error": {
            "type": error_type(format, status),
            "message": message,
        }}),
    };
    Reply::json(status, &body)
}

/// Whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> String {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
        .to_string()
}
