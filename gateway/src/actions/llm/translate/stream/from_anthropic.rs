//! An Anthropic provider's stream for an OpenAI client: `message_start` opens the chunks with
//! the assistant's role, text deltas become `delta.content`, each tool_use block a
//! `delta.tool_calls` entry (indexed by counting tool blocks) whose `arguments` grow from
//! `partial_json`, `message_delta` the chunk with `finish_reason`, and `message_stop` the usage
//! chunk (if asked for) and `[DONE]`. `ping`, thinking and signature deltas, and event types
//! Anthropic may add are left out.

use super::super::fields::{prefixed_id, untranslatable};
use super::super::reasons::finish_reason_of;
use super::super::sse::SseEvent;
use super::super::tokens::TokenCounts;
use super::super::TranslateError;
use super::openai_out::OpenAiOut;
use super::{anthropic_kind, error_message, parse_json, Client, ClientStream, Progress};
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub(super) struct AnthropicToOpenAi {
    out: OpenAiOut,
    /// OpenAI's tool call index of each tool_use block, by the block's index.
    tool_calls: HashMap<u64, u64>,
}

impl AnthropicToOpenAi {
    pub fn event(
        &mut self,
        event: &SseEvent,
        client: &Client,
        progress: &mut Progress,
        out: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        if self.out.done() {
            return Ok(());
        }
        let value = parse_json(event)?;
        let block_index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match anthropic_kind(event, &value).as_str() {
            "message_start" => {
                let message = value.get("message");
                let id = message
                    .and_then(|message| message.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.out.id = prefixed_id("chatcmpl-", id);
                if let Some(usage) = message.and_then(|message| message.get("usage")) {
                    progress.tokens = TokenCounts::from_anthropic(usage);
                }
                self.out.role(out, client);
            }
            "content_block_start" => {
                let block = value.get("content_block").unwrap_or(&Value::Null);
                match block
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "text" => {
                        let text = block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        self.text(out, client, progress, text);
                    }
                    "tool_use" => {
                        let call_index = self.tool_calls.len() as u64;
                        self.tool_calls.insert(block_index, call_index);
                        // The input arrives in deltas; one given whole at the start is sent whole.
                        let arguments = match block.get("input") {
                            Some(Value::Object(input)) if !input.is_empty() => {
                                Value::Object(input.clone()).to_string()
                            }
                            _ => String::new(),
                        };
                        let call = json!({
                            "index": call_index,
                            "id": block.get("id").cloned().unwrap_or_default(),
                            "type": "function",
                            "function": {
                                "name": block.get("name").cloned().unwrap_or_default(),
                                "arguments": arguments,
                            },
                        });
                        self.out
                            .chunk(out, client, json!({"tool_calls": [call]}), Value::Null);
                        progress.started = true;
                    }
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(untranslatable(
                            "content_block.type",
                            format!("`{other}` blocks have no OpenAI equivalent"),
                        ))
                    }
                }
            }
            "content_block_delta" => {
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match delta
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "text_delta" => {
                        let text = delta
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        self.text(out, client, progress, text);
                    }
                    "input_json_delta" => {
                        let piece = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if let (Some(call_index), false) =
                            (self.tool_calls.get(&block_index), piece.is_empty())
                        {
                            let call =
                                json!({"index": call_index, "function": {"arguments": piece}});
                            self.out
                                .chunk(out, client, json!({"tool_calls": [call]}), Value::Null);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = value.get("usage") {
                    progress
                        .tokens
                        .get_or_insert_with(TokenCounts::default)
                        .merge_anthropic(usage);
                }
                let stop_reason = value
                    .get("delta")
                    .and_then(|delta| delta.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(stop_reason) = stop_reason {
                    let finish_reason = finish_reason_of(stop_reason).ok_or_else(|| {
                        untranslatable(
                            "delta.stop_reason",
                            format!("`{stop_reason}` has no OpenAI equivalent"),
                        )
                    })?;
                    self.out.chunk(out, client, json!({}), json!(finish_reason));
                }
            }
            "message_stop" => {
                progress.complete = true;
                self.finish(client, progress, out);
            }
            "error" => {
                let error = value.get("error").unwrap_or(&Value::Null);
                let kind = error
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                self.out.error(out, kind, &error_message(error));
            }
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, out: &mut Vec<u8>, client: &Client, progress: &mut Progress, text: &str) {
        if !text.is_empty() {
            self.out
                .chunk(out, client, json!({"content": text}), Value::Null);
            progress.started = true;
        }
    }

    pub fn client_stream(&self) -> ClientStream {
        if self.out.done() {
            ClientStream::Ended
        } else {
            ClientStream::Open
        }
    }

    pub fn finish(&mut self, client: &Client, progress: &mut Progress, out: &mut Vec<u8>) {
        if self.out.done() {
            return;
        }
        if let Some(tokens) = progress.tokens {
            self.out.usage(out, client, tokens);
        }
        self.out.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::fixtures;
    use super::super::super::{Format, TranslateError, Usage};
    use super::super::tests::{events, run, translator};
    use serde_json::{json, Value};

    fn chunk(delta: Value, finish_reason: Value, id: &str) -> (Option<String>, Value) {
        (
            None,
            json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "my-alias", "choices": [{"index": 0, "delta": delta, "logprobs": null,
                "finish_reason": finish_reason}]}),
        )
    }

    fn done() -> (Option<String>, Value) {
        (None, json!("[DONE]"))
    }

    const TEXT_ID: &str = "chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY";

    #[test]
    fn text_becomes_content_chunks() {
        let mut translator = translator(Format::Anthropic, Format::OpenAi, true);
        let out = run(&mut translator, fixtures::ANTHROPIC_TEXT_STREAM, false);
        assert_eq!(
            events(&out),
            vec![
                chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                    TEXT_ID
                ),
                chunk(json!({"content": "Hello"}), Value::Null, TEXT_ID),
                chunk(json!({"content": "! ¿Qué tal? 😀"}), Value::Null, TEXT_ID),
                chunk(json!({}), json!("stop"), TEXT_ID),
                (
                    None,
                    json!({"id": TEXT_ID, "object": "chat.completion.chunk",
                        "created": 1_700_000_000, "model": "my-alias", "choices": [],
                        "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}})
                ),
                done(),
            ]
        );
        assert!(translator.complete());
        assert_eq!(
            translator.usage(),
            Some(Usage {
                input: 25,
                output: 15
            })
        );
    }

    #[test]
    fn the_usage_chunk_comes_only_when_asked_for() {
        let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
        let out = run(&mut translator, fixtures::ANTHROPIC_TEXT_STREAM, false);
        let out = events(&out);
        assert_eq!(out.len(), 5);
        assert_eq!(out[4], done());
        assert!(out.iter().all(|(_, data)| data.get("usage").is_none()));
        assert_eq!(
            translator.usage(),
            Some(Usage {
                input: 25,
                output: 15
            })
        );
    }

    #[test]
    fn a_tool_use_block_becomes_a_tool_call() {
        let id = "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U";
        let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
        let out = run(&mut translator, fixtures::ANTHROPIC_TOOL_STREAM, false);
        assert_eq!(
            events(&out),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null, id),
                chunk(
                    json!({"content": "Okay, let's check the weather."}),
                    Value::Null,
                    id
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null,
                    id
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
                    Value::Null,
                    id
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}),
                    Value::Null,
                    id
                ),
                chunk(json!({}), json!("tool_calls"), id),
                done(),
            ]
        );
    }

    #[test]
    fn the_role_comes_first_and_is_not_content() {
        let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
        let (start, _) = fixtures::ANTHROPIC_TEXT_STREAM
            .split_once("event: content_block_delta")
            .unwrap();
        let out = translator.feed(start.as_bytes()).unwrap();
        assert_eq!(events(std::str::from_utf8(&out).unwrap()).len(), 1);
        assert!(!translator.started());
        assert_eq!(
            translator.usage(),
            Some(Usage {
                input: 25,
                output: 1
            })
        );
    }

    #[test]
    fn an_anthropic_error_becomes_an_openai_error_and_done() {
        let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
        let error = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let out = translator.feed(error.as_bytes()).unwrap();
        assert_eq!(
            events(std::str::from_utf8(&out).unwrap()),
            vec![
                (
                    None,
                    json!({"error": {"message": "Overloaded", "type": "overloaded_error"}})
                ),
                done(),
            ]
        );
        assert!(!translator.complete());
        assert!(translator.finish().is_empty());
    }

    #[test]
    fn a_cut_stream_still_ends_with_done() {
        let (start, _) = fixtures::ANTHROPIC_TEXT_STREAM
            .split_once("event: message_delta")
            .unwrap();
        let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
        translator.feed(start.as_bytes()).unwrap();
        assert!(!translator.complete());
        assert_eq!(&translator.finish()[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn blocks_and_reasons_without_an_openai_equivalent_are_refused() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n";
        let server_tool = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_1\",\"name\":\"web_search\",\"input\":{}}}\n\n";
        let paused = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n";
        for (event, field) in [
            (server_tool, "content_block.type"),
            (paused, "delta.stop_reason"),
        ] {
            let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
            translator.feed(start.as_bytes()).unwrap();
            assert!(matches!(
                translator.feed(event.as_bytes()),
                Err(TranslateError::Untranslatable { field: named, .. }) if named == field
            ));
        }
    }

    #[test]
    fn thinking_is_left_out() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me see\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n";
        let mut translator = translator(Format::Anthropic, Format::OpenAi, false);
        let out = translator.feed(stream.as_bytes()).unwrap();
        assert_eq!(events(std::str::from_utf8(&out).unwrap()).len(), 1);
        assert!(!translator.started());
    }
}
