//! Readers over JSON objects shared by the translations, and the constructors of their errors.

use super::TranslateError;
use serde_json::{Map, Value};

/// A JSON object, as both formats' bodies are.
pub(super) type Object = Map<String, Value>;

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(super) fn untranslatable(
    field: impl Into<String>,
    reason: impl Into<String>,
) -> TranslateError {
    TranslateError::Untranslatable {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A field's value, `null` read as absent: OpenAI clients send `null` for options they leave unset.
pub(super) fn get<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

pub(super) fn get_str<'a>(object: &'a Object, key: &str) -> Option<&'a str> {
    get(object, key).and_then(Value::as_str)
}

pub(super) fn get_object<'a>(object: &'a Object, key: &str) -> Option<&'a Object> {
    get(object, key).and_then(Value::as_object)
}

pub(super) fn get_array<'a>(object: &'a Object, key: &str) -> Option<&'a [Value]> {
    get(object, key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
}

/// `path.key`, or `key` at the top of the body.
pub(super) fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The body as an object, the first thing every translation needs.
pub(super) fn body_object(body: &Value) -> Result<&Object, TranslateError> {
    body.as_object()
        .ok_or_else(|| invalid("body", "must be a JSON object"))
}

/// `id` with the prefix clients of the other format check for (`chatcmpl-`, `msg_`), keeping
/// the provider's id after it so the two can be matched in logs.
pub(super) fn prefixed_id(prefix: &str, id: &str) -> String {
    if id.starts_with(prefix) {
        id.to_owned()
    } else {
        format!("{prefix}{id}")
    }
}

/// The seconds since the Unix epoch, for OpenAI's `created`: Anthropic answers carry no time.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
