//! The same format on both sides: when the client speaks the provider's format, the request and
//! the whole answer keep their bytes and only the `model` member's value is replaced (the real
//! model name going out, the alias coming back). No JSON tree is built and written again; the
//! one parse only finds `model` (and an answer's `usage`) and checks the rest is JSON.
//!
//! Each function answers `None` when its input is not that plain case — not a JSON object, no
//! top-level `model`, or one given twice — and the caller translates the slow way, which gives
//! the same result or the precise error.

use super::{Format, Usage};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
    /// Any `stream_options`, `null` included (`Option` alone reads `null` as absent).
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<IgnoredAny>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<IgnoredAny>, D::Error> {
    IgnoredAny::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
    usage: Option<Value>,
}

/// What OpenAI providers are asked to add to a stream, so its usage is known.
const STREAM_USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// The request for a provider of the client's own format: `json` with `model` as its model.
/// With `stream_usage`, the request also asks for the stream's usage — when it has no
/// `stream_options` of its own (with some, the caller merges them the slow way).
pub fn request(json: &[u8], model: &str, stream_usage: bool) -> Option<Vec<u8>> {
    let found: Request = object(json)?;
    let mut out = replaced(json, found.model, model)?;
    if stream_usage {
        if found.stream_options.is_some() {
            return None;
        }
        // The object's `{` is the first byte that is not white space.
        let open = out.iter().position(|byte| !byte.is_ascii_whitespace())? + 1;
        out.splice(open..open, STREAM_USAGE.iter().copied());
    }
    Some(out)
}

/// A whole answer in the client's own format, with `alias` as its model, and its usage.
pub fn answer(json: &[u8], alias: &str, format: Format) -> Option<(Vec<u8>, Option<Usage>)> {
    let found: Answer = object(json)?;
    let out = replaced(json, found.model, alias)?;
    let usage = found
        .usage
        .map(|usage| serde_json::json!({ "usage": usage }));
    Some((out, usage.and_then(|body| super::usage(&body, format))))
}

/// `json` read as `T` when it is a JSON object (serde would also read a struct from an array).
pub fn object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    if json.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// `json` with the bytes of `old` (a value borrowed from it) replaced by the string `new`.
fn replaced(json: &[u8], old: &RawValue, new: &str) -> Option<Vec<u8>> {
    if !old.get().starts_with('"') {
        return None; // `null` or a number: the translating way says what it makes of it
    }
    let start = (old.get().as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
    let end = start + old.get().len();
    let quoted = serde_json::to_vec(new).ok()?;
    let mut out = Vec::with_capacity(json.len() + quoted.len() + STREAM_USAGE.len());
    out.extend_from_slice(json.get(..start)?);
    out.extend_from_slice(&quoted);
    out.extend_from_slice(json.get(end..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("JSON")
    }

    #[test]
    fn a_request_keeps_its_bytes_but_the_model() {
        let raw = br#"{ "messages": [{"role":"user","content":"say \"model\": x"}],
            "model" : "fast", "temperature": 0.5 }"#;
        let out = request(raw, "gpt-4o-mini", false).expect("spliced");
        let expected = String::from_utf8_lossy(raw).replace(r#""fast""#, r#""gpt-4o-mini""#);
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }

    #[test]
    fn a_stream_asks_for_its_usage_unless_it_has_stream_options() {
        let raw = br#" {"model":"fast","stream":true,"messages":[]}"#;
        let out = parsed(&request(raw, "m\u{e9}", true).expect("spliced"));
        assert_eq!(
            out,
            json!({"model": "m\u{e9}", "stream": true, "messages": [],
                   "stream_options": {"include_usage": true}})
        );
        let raw = br#"{"model":"fast","stream":true,"stream_options":{}}"#;
        assert_eq!(request(raw, "m", true), None);
        let raw = br#"{"model":"fast","stream":true,"stream_options":null}"#;
        assert_eq!(request(raw, "m", true), None, "null is a member too");
    }

    #[test]
    fn what_is_not_the_plain_case_is_left_to_translation() {
        for raw in [
            &br#"{"model":"a","model":"b"}"#[..],
            br#"{"messages":[]}"#,
            br#"["model"]"#,
            br#"{"model":"a""#,
        ] {
            assert_eq!(
                request(raw, "m", false),
                None,
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(answer(raw, "m", Format::OpenAi), None);
        }
    }

    #[test]
    fn an_answer_gets_the_alias_and_gives_its_usage() {
        let raw = br#"{"id":"x","model":"gpt-4o-mini-2024","choices":[],
            "usage":{"prompt_tokens":9,"completion_tokens":4}}"#;
        let (out, usage) = answer(raw, "fast", Format::OpenAi).expect("spliced");
        let mut expected = parsed(raw);
        expected["model"] = json!("fast");
        assert_eq!(parsed(&out), expected);
        assert_eq!(
            usage,
            Some(Usage {
                input: 9,
                output: 4
            })
        );
        let raw = br#"{"model":"claude","usage":{"input_tokens":3,"output_tokens":2}}"#;
        let (_, usage) = answer(raw, "c", Format::Anthropic).expect("spliced");
        assert_eq!(
            usage,
            Some(Usage {
                input: 3,
                output: 2
            })
        );
        let (_, usage) = answer(br#"{"model":"x"}"#, "c", Format::OpenAi).expect("spliced");
        assert_eq!(usage, None);
    }
}
