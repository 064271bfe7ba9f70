//! The two directions where provider and client speak one format: events pass through as they
//! are, but for the model's name (the client's alias) and, for an OpenAI client that did not ask
//! for it, the usage the gateway asked the provider for. Usage and completion are still read.

use super::super::sse::{write_event, SseEvent};
use super::super::tokens::TokenCounts;
use super::super::TranslateError;
use super::anthropic_out::AnthropicOut;
use super::{
    anthropic_kind, is_done_marker, openai_delta_has_content, parse_json, Client, ClientStream,
    Progress,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Debug, Default)]
pub(super) struct OpenAiPassthrough {
    done: bool,
    /// The provider's error event was passed on.
    error_sent: bool,
}

impl OpenAiPassthrough {
    pub fn event(
        &mut self,
        event: &SseEvent,
        client: &Client,
        progress: &mut Progress,
        out: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        if is_done_marker(event) {
            self.done = true;
            progress.complete = true;
            write_event(out, event.name.as_deref(), &event.data);
            return Ok(());
        }
        if plain_chunk(event, client, progress, out).is_some() {
            return Ok(());
        }
        let mut chunk = parse_json(event)?;
        if let Some(fields) = chunk.as_object_mut() {
            if fields.get("error").is_some_and(|error| !error.is_null()) {
                self.error_sent = true;
                write_event(out, event.name.as_deref(), &event.data);
                return Ok(());
            }
            if let Some(tokens) = fields.get("usage").and_then(TokenCounts::from_openai) {
                progress.tokens = Some(tokens);
            }
            let choices = fields.get("choices").and_then(Value::as_array);
            for choice in choices.into_iter().flatten() {
                if choice
                    .get("finish_reason")
                    .is_some_and(|reason| !reason.is_null())
                {
                    progress.complete = true;
                }
                if choice.get("delta").is_some_and(openai_delta_has_content) {
                    progress.started = true;
                }
            }
            if !client.wants_usage {
                let usage_only = choices.is_some_and(|choices| choices.is_empty())
                    && fields.get("usage").is_some_and(|usage| !usage.is_null());
                if usage_only {
                    return Ok(());
                }
                fields.remove("usage");
            }
            if fields.contains_key("model") {
                fields.insert("model".into(), Value::String(client.alias.clone()));
            }
        }
        write_event(out, event.name.as_deref(), &chunk.to_string());
        Ok(())
    }

    pub fn client_stream(&self) -> ClientStream {
        match (self.done, self.error_sent) {
            (true, _) => ClientStream::Ended,
            (false, true) => ClientStream::ErrorSent,
            (false, false) => ClientStream::Open,
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.done = true;
            write_event(out, None, "[DONE]");
        }
    }
}

/// The members of an OpenAI chunk the passthrough reads, borrowed from the event's text.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    /// `null` included: a client that did not ask for usage must not see `"usage": null`.
    #[serde(borrow, default, deserialize_with = "present")]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
}

/// A member that is there, even as `null` (which `Option` alone reads as absent).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

fn given(value: Option<&RawValue>) -> bool {
    value.is_some_and(|value| value.get() != "null")
}

/// A string of at least one character, or an array of at least one element.
fn filled(value: Option<&RawValue>) -> bool {
    value.is_some_and(|value| {
        let text = value.get();
        (text.starts_with('"') && text.len() > 2)
            || (text.starts_with('[') && !text[1..text.len() - 1].trim().is_empty())
    })
}

/// An ordinary chunk passed on as its own bytes, but for the model's name, with no JSON tree
/// built: what the passthrough does to most events, cheaply. `None` (nothing written, nothing
/// noted) for what it must rewrite or look into: an error, usage the client did not ask for
/// beside content, text that is not one JSON object.
fn plain_chunk(
    event: &SseEvent,
    client: &Client,
    progress: &mut Progress,
    out: &mut Vec<u8>,
) -> Option<()> {
    let chunk: Chunk = super::super::splice::object(event.data.as_bytes())?;
    if given(chunk.error) {
        return None;
    }
    let usage = chunk.usage.filter(|usage| usage.get() != "null");
    let usage_only = usage.is_some() && chunk.choices.is_empty();
    if usage.is_some() && !usage_only && !client.wants_usage {
        return None;
    }
    if let Some(usage) = usage {
        let usage: Value = serde_json::from_str(usage.get()).ok()?;
        if let Some(tokens) = TokenCounts::from_openai(&usage) {
            progress.tokens = Some(tokens);
        }
    }
    for choice in &chunk.choices {
        if given(choice.finish_reason) {
            progress.complete = true;
        }
        if let Some(delta) = &choice.delta {
            if filled(delta.content) || filled(delta.refusal) || filled(delta.tool_calls) {
                progress.started = true;
            }
        }
    }
    if usage_only && !client.wants_usage {
        return Some(());
    }
    // The edits, as byte ranges of the text and what replaces them; made from the last one back
    // so the earlier ranges stay where they are.
    let mut edits = Vec::with_capacity(2);
    if let Some(model) = chunk.model {
        if !model.get().starts_with('"') {
            return None;
        }
        let alias = serde_json::to_string(&client.alias).ok()?;
        edits.push((span(&event.data, model)?, alias));
    }
    if let (Some(usage), false) = (chunk.usage, client.wants_usage) {
        // `"usage": null`, which a provider asked for usage sends in every chunk.
        edits.push((member(&event.data, "usage", usage)?, String::new()));
    }
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    let mut data = std::borrow::Cow::Borrowed(event.data.as_str());
    for (range, with) in edits {
        data.to_mut().replace_range(range, &with);
    }
    write_event(out, event.name.as_deref(), &data);
    Some(())
}

/// Where `value`, borrowed from `text`, stands in it.
fn span(text: &str, value: &RawValue) -> Option<std::ops::Range<usize>> {
    let start = (value.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    Some(start..start + value.get().len())
}

/// The whole member `"key": value` of an object in `text`, with the comma that joins it to
/// the others: what removing it takes. `None` when its key is not written plainly.
fn member(text: &str, key: &str, value: &RawValue) -> Option<std::ops::Range<usize>> {
    let value = span(text, value)?;
    let before = text.get(..value.start)?.trim_end();
    let before = before.strip_suffix(':')?.trim_end();
    let quoted = format!("\"{key}\"");
    let key_start = before.strip_suffix(quoted.as_str())?.len();
    let ahead = text.get(..key_start)?.trim_end();
    if let Some(comma) = ahead.strip_suffix(',') {
        // Not the first member: from the comma before it.
        return Some(comma.len()..value.end);
    }
    // The first member: through the comma after it (or alone in its object).
    let after = text.get(value.end..)?;
    let rest = after.trim_start();
    let end = match rest.strip_prefix(',') {
        Some(_) => text.len() - rest.len() + 1,
        None => value.end,
    };
    Some(key_start..end)
}

#[derive(Debug, Default)]
pub(super) struct AnthropicPassthrough {
    out: AnthropicOut,
    message_id: String,
}

impl AnthropicPassthrough {
    pub fn event(
        &mut self,
        event: &SseEvent,
        client: &Client,
        progress: &mut Progress,
        out: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        if self.out.ended() {
            return Ok(());
        }
        let mut value = parse_json(event)?;
        let kind = anthropic_kind(event, &value);
        let mut rewritten = false;
        match kind.as_str() {
            "message_start" => {
                if let Some(message) = value.get_mut("message").and_then(Value::as_object_mut) {
                    if let Some(usage) = message.get("usage") {
                        progress.tokens = TokenCounts::from_anthropic(usage);
                    }
                    if let Some(id) = message.get("id").and_then(Value::as_str) {
                        self.message_id = id.to_owned();
                    }
                    message.insert("model".into(), Value::String(client.alias.clone()));
                    rewritten = true;
                }
            }
            "content_block_start" if carries_content(value.get("content_block"), "tool_use") => {
                progress.started = true;
            }
            "content_block_delta" if carries_content(value.get("delta"), "input_json_delta") => {
                progress.started = true;
            }
            "message_delta" => {
                if let Some(usage) = value.get("usage") {
                    progress
                        .tokens
                        .get_or_insert_with(TokenCounts::default)
                        .merge_anthropic(usage);
                }
            }
            "message_stop" => progress.complete = true,
            _ => {}
        }
        self.out.saw(&kind, &value);
        let data = if rewritten {
            value.to_string()
        } else {
            event.data.clone()
        };
        write_event(out, event.name.as_deref(), &data);
        Ok(())
    }

    pub fn client_stream(&self) -> ClientStream {
        self.out.client_stream()
    }

    pub fn finish(&mut self, client: &Client, progress: &mut Progress, out: &mut Vec<u8>) {
        self.out
            .close(out, &self.message_id, &client.alias, None, progress.tokens);
    }
}

/// Whether an Anthropic block or delta brings content: a tool call (`tool_kind`), or text
/// that is not empty.
fn carries_content(part: Option<&Value>, tool_kind: &str) -> bool {
    let field = |name: &str| part.and_then(|part| part.get(name)).and_then(Value::as_str);
    field("type") == Some(tool_kind) || field("text").is_some_and(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::super::fixtures;
    use super::super::super::{Format, Usage};
    use super::super::tests::{events, run, translator};
    use super::{member, Chunk};
    use serde_json::{json, Value};

    /// The provider's events with the alias for a model.
    fn with_alias(stream: &str) -> Vec<(Option<String>, Value)> {
        events(stream)
            .into_iter()
            .map(|(name, mut data)| {
                if let Some(chunk) = data.as_object_mut() {
                    if chunk.contains_key("model") {
                        chunk.insert("model".into(), json!("my-alias"));
                    }
                }
                if let Some(message) = data.get_mut("message").and_then(Value::as_object_mut) {
                    message.insert("model".into(), json!("my-alias"));
                }
                (name, data)
            })
            .collect()
    }

    #[test]
    fn a_member_is_removed_with_its_comma_wherever_it_stands() {
        let remove = |text: &str| {
            let chunk: Chunk = serde_json::from_str(text).expect("a chunk");
            let range = member(text, "usage", chunk.usage.expect("usage"))?;
            let mut text = text.to_owned();
            text.replace_range(range, "");
            Some(text)
        };
        assert_eq!(
            remove(r#"{"a":1, "usage" : null,"b":2}"#).as_deref(),
            Some(r#"{"a":1,"b":2}"#)
        );
        assert_eq!(
            remove(r#"{"a":1,"usage":null}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(
            remove(r#"{ "usage":null , "a":1}"#).as_deref(),
            Some(r#"{  "a":1}"#)
        );
        assert_eq!(remove(r#"{"usage":null}"#).as_deref(), Some(r#"{}"#));
        // A key written with an escape is left to the slow way.
        assert_eq!(remove(r#"{"a":1,"\u0075sage":null}"#), None);
    }

    #[test]
    fn openai_events_pass_with_the_alias_and_the_usage_asked_for() {
        let mut translator = translator(Format::OpenAi, Format::OpenAi, true);
        let out = run(&mut translator, fixtures::OPENAI_TEXT_STREAM, false);
        assert_eq!(events(&out), with_alias(fixtures::OPENAI_TEXT_STREAM));
        assert!(translator.complete() && translator.started());
        assert_eq!(
            translator.usage(),
            Some(Usage {
                input: 9,
                output: 12
            })
        );
    }

    #[test]
    fn openai_usage_not_asked_for_is_read_and_kept_from_the_client() {
        let mut translator = translator(Format::OpenAi, Format::OpenAi, false);
        let out = run(&mut translator, fixtures::OPENAI_TEXT_STREAM, false);
        let expected: Vec<_> = with_alias(fixtures::OPENAI_TEXT_STREAM)
            .into_iter()
            .filter(|(_, data)| data["choices"] != json!([]))
            .map(|(name, mut data)| {
                if let Some(chunk) = data.as_object_mut() {
                    chunk.remove("usage");
                }
                (name, data)
            })
            .collect();
        assert_eq!(events(&out), expected);
        assert!(!out.contains("usage"));
        assert_eq!(
            translator.usage(),
            Some(Usage {
                input: 9,
                output: 12
            })
        );
    }

    #[test]
    fn an_openai_finish_reason_completes_the_stream_and_done_closes_it() {
        let truncated = fixtures::OPENAI_TEXT_STREAM
            .split_once("data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[]")
            .unwrap()
            .0;
        let mut translator = translator(Format::OpenAi, Format::OpenAi, true);
        let out = run(&mut translator, truncated, false);
        assert!(translator.complete());
        assert_eq!(translator.usage(), None);
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_whole_stream_needs_no_closing() {
        for (from, stream) in [
            (Format::OpenAi, fixtures::OPENAI_TEXT_STREAM),
            (Format::Anthropic, fixtures::ANTHROPIC_TEXT_STREAM),
        ] {
            let mut translator = translator(from, from, true);
            translator.feed(stream.as_bytes()).unwrap();
            assert!(translator.finish().is_empty());
        }
    }

    #[test]
    fn an_openai_error_passes_as_it_is() {
        let mut translator = translator(Format::OpenAi, Format::OpenAi, false);
        let error = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert_eq!(
            &translator.feed(error.as_bytes()).unwrap()[..],
            error.as_bytes()
        );
        assert!(!translator.complete());
    }

    #[test]
    fn anthropic_events_pass_as_they_are_but_the_model() {
        let mut translator = translator(Format::Anthropic, Format::Anthropic, false);
        let out = run(&mut translator, fixtures::ANTHROPIC_TEXT_STREAM, false);
        assert_eq!(events(&out), with_alias(fixtures::ANTHROPIC_TEXT_STREAM));
        // Only message_start is rewritten; the rest keeps its bytes, ping included.
        let (_, rest) = out.split_once("event: content_block_start").unwrap();
        assert!(
            fixtures::ANTHROPIC_TEXT_STREAM.ends_with(&format!("event: content_block_start{rest}"))
        );
        assert!(translator.complete() && translator.started());
        assert_eq!(
            translator.usage(),
            Some(Usage {
                input: 25,
                output: 15
            })
        );
    }

    #[test]
    fn a_cut_anthropic_stream_is_closed_with_what_it_lacks() {
        let cut = fixtures::ANTHROPIC_TOOL_STREAM
            .split_once(
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}",
            )
            .unwrap()
            .0;
        let mut translator = translator(Format::Anthropic, Format::Anthropic, false);
        translator.feed(cut.as_bytes()).unwrap();
        assert!(translator.started() && !translator.complete());
        let closing = translator.finish();
        assert_eq!(
            events(std::str::from_utf8(&closing).unwrap()),
            vec![
                (
                    Some("content_block_stop".to_owned()),
                    json!({"type": "content_block_stop", "index": 1})
                ),
                (
                    Some("message_delta".to_owned()),
                    json!({"type": "message_delta",
                        "delta": {"stop_reason": null, "stop_sequence": null},
                        "usage": {"input_tokens": 472, "output_tokens": 2}})
                ),
                (
                    Some("message_stop".to_owned()),
                    json!({"type": "message_stop"})
                ),
            ]
        );
        assert!(!translator.complete());
        assert!(translator.finish().is_empty());
    }
}
