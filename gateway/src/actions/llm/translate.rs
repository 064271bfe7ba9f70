//! Translation between the OpenAI Chat Completions (`POST /v1/chat/completions`) and Anthropic
//! Messages (`POST /v1/messages`) wire formats: requests, whole answers and streamed answers,
//! both ways, and the token usage they report.
//!
//! Pure functions over JSON values and bytes: the route that calls them owns all I/O. Nothing
//! that would change the answer is dropped silently: what has no equivalent in the other format
//! is refused with [`TranslateError::Untranslatable`], naming the field. The parts:
//! `validate` (what a client request must look like), `request` with `messages` and `tools`
//! (client request → provider request), `response` (whole answers), `stream` with `sse`
//! (streamed answers), `tokens` (usage in both formats), `reasons` (stop reasons), `fields`
//! (JSON readers and error constructors).

mod fields;
#[cfg(test)]
mod fixtures;
mod messages;
mod reasons;
mod request;
mod response;
pub mod splice;
mod sse;
mod stream;
mod tokens;
mod tools;
mod validate;

pub use sse::read_events;
pub use stream::{failure_event, StreamTranslator};

use serde_json::Value;

/// A wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
}

/// Input and output tokens of one answer.
///
/// `input` counts every prompt token, cached or not: OpenAI's `prompt_tokens`, and Anthropic's
/// `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` (Anthropic reports
/// cached tokens apart from `input_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TranslateError {
    /// The body is not what the format requires: `field` is a JSON path such as `messages[2].role`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Well formed, but cannot be expressed in the other format (never dropped silently).
    #[error("{field} cannot be translated: {reason}")]
    Untranslatable { field: String, reason: String },
}

/// Checks that `body` is a request of `format` (JSON object; `model` a string; `messages` a
/// non-empty array of objects with a valid `role` and `content`; for Anthropic `max_tokens` a
/// positive integer; `stream` a bool if present; ...). The first problem found, naming its field.
pub fn validate(body: &Value, format: Format) -> Result<(), TranslateError> {
    validate::validate(body, format)
}

/// The request body for a provider of format `to`, from a client request in format `from`, with
/// `model` replaced by `model` (the provider's real model name). When from == to, the body is
/// kept as is except `model`. When to == OpenAi and the request streams,
/// `stream_options.include_usage` is set to true (the caller strips the extra usage chunk if the
/// client did not ask for it: see [`StreamTranslator`]).
pub fn request(
    body: &Value,
    from: Format,
    to: Format,
    model: &str,
) -> Result<Value, TranslateError> {
    request::request(body, from, to, model)
}

/// Whether a client request (in its own format) asked for a streamed answer.
pub fn streams(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
}

/// Whether an OpenAI-format client request asked for usage in its stream
/// (`stream_options.include_usage: true`).
pub fn wants_stream_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// A provider's whole (non-streamed) answer in format `from`, as the client's format `to`; the
/// answer's `model` becomes `alias` (the name the client asked for).
pub fn response(
    body: &Value,
    from: Format,
    to: Format,
    alias: &str,
) -> Result<Value, TranslateError> {
    response::response(body, from, to, alias)
}

/// The usage of a whole answer in `format`.
pub fn usage(body: &Value, format: Format) -> Option<Usage> {
    let usage = body.get("usage")?;
    let counts = match format {
        Format::OpenAi => tokens::TokenCounts::from_openai(usage),
        Format::Anthropic => tokens::TokenCounts::from_anthropic(usage),
    }?;
    Some(counts.usage())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn streams_reads_a_true_stream_flag_only() {
        assert!(streams(&json!({"stream": true})));
        assert!(!streams(&json!({"stream": false})));
        assert!(!streams(&json!({"stream": "true"})));
        assert!(!streams(&json!({})));
    }

    #[test]
    fn wants_stream_usage_reads_include_usage() {
        assert!(wants_stream_usage(
            &json!({"stream": true, "stream_options": {"include_usage": true}})
        ));
        assert!(!wants_stream_usage(
            &json!({"stream": true, "stream_options": {"include_usage": false}})
        ));
        assert!(!wants_stream_usage(&json!({"stream": true})));
    }

    #[test]
    fn usage_of_whole_answers_in_both_formats() {
        assert_eq!(
            usage(&fixtures::openai_text_answer(), Format::OpenAi),
            Some(Usage {
                input: 19,
                output: 10
            })
        );
        assert_eq!(
            usage(&fixtures::anthropic_text_answer(), Format::Anthropic),
            Some(Usage {
                input: 2095,
                output: 503
            })
        );
        let cached = json!({"usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100, "output_tokens": 7}});
        assert_eq!(
            usage(&cached, Format::Anthropic),
            Some(Usage {
                input: 115,
                output: 7
            })
        );
        assert_eq!(usage(&json!({"id": "x"}), Format::OpenAi), None);
        assert_eq!(
            usage(&json!({"usage": {"prompt_tokens": "many"}}), Format::OpenAi),
            None
        );
    }

    #[test]
    fn errors_name_their_field() {
        let error = TranslateError::Invalid {
            field: "messages[2].role".into(),
            reason: "must be a string".into(),
        };
        assert_eq!(error.to_string(), "messages[2].role: must be a string");
        let error = TranslateError::Untranslatable {
            field: "n".into(),
            reason: "Anthropic returns one choice".into(),
        };
        assert_eq!(
            error.to_string(),
            "n cannot be translated: Anthropic returns one choice"
        );
    }
}
