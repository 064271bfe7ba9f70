//! An OpenAI provider's stream for an Anthropic client: the first chunk opens the message
//! (`message_start`), text opens a text block and streams `text_delta`s, each tool call closes
//! the open block and opens a tool_use block streaming `input_json_delta`s, `finish_reason`
//! closes the open block. `message_delta` carries the output tokens, which OpenAI reports in a
//! chunk after the one with `finish_reason`: it waits for that chunk, or for `[DONE]`, which
//! sends `message_stop`.

use super::super::fields::{prefixed_id, untranslatable};
use super::super::reasons::stop_reason_of;
use super::super::sse::SseEvent;
use super::super::tokens::TokenCounts;
use super::super::TranslateError;
use super::anthropic_out::AnthropicOut;
use super::{error_message, is_done_marker, parse_json, Client, ClientStream, Progress};
use serde_json::{json, Value};
use std::collections::HashSet;

#[derive(Debug, Default)]
pub(super) struct OpenAiToAnthropic {
    out: AnthropicOut,
    message_id: String,
    /// The index the next content block takes.
    next_block: u64,
    open: Option<OpenBlock>,
    /// OpenAI tool call indices whose block was closed: Anthropic cannot reopen a block.
    closed_calls: HashSet<u64>,
    /// The assistant refused (OpenAI's `delta.refusal`).
    refused: bool,
    stop_reason: Option<&'static str>,
}

#[derive(Debug)]
enum OpenBlock {
    Text {
        block: u64,
    },
    ToolUse {
        block: u64,
        call_index: u64,
        id: String,
    },
}

impl OpenAiToAnthropic {
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
        if is_done_marker(event) {
            progress.complete = true;
            let stop_reason = self.stop_reason.unwrap_or("end_turn");
            self.out.close(
                out,
                &self.message_id,
                &client.alias,
                Some(stop_reason),
                progress.tokens,
            );
            return Ok(());
        }
        let chunk = parse_json(event)?;
        if let Some(error) = chunk.get("error").filter(|error| !error.is_null()) {
            self.out.error(out, "api_error", &error_message(error));
            return Ok(());
        }
        if let Some(tokens) = chunk.get("usage").and_then(TokenCounts::from_openai) {
            progress.tokens = Some(tokens);
        }
        if !self.out.message_started() {
            let id = chunk.get("id").and_then(Value::as_str).unwrap_or_default();
            self.message_id = prefixed_id("msg_", id);
            self.out
                .message_start(out, &self.message_id, &client.alias, progress.tokens);
        }
        // Requests asking for several choices are refused: the first is the answer.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first());
        if let Some(choice) = choice {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            for key in ["content", "refusal"] {
                let text = delta.get(key).and_then(Value::as_str).unwrap_or_default();
                if !text.is_empty() {
                    self.refused |= key == "refusal";
                    self.text(out, text);
                    progress.started = true;
                }
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for (position, call) in calls.into_iter().flatten().enumerate() {
                self.tool_call(out, call, position)?;
                progress.started = true;
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                let stop_reason = match reason {
                    "stop" if self.refused => "refusal",
                    _ => stop_reason_of(reason).ok_or_else(|| {
                        untranslatable(
                            "choices[0].finish_reason",
                            format!("`{reason}` has no Anthropic equivalent"),
                        )
                    })?,
                };
                self.stop_reason = Some(stop_reason);
                self.close_open_block(out);
                progress.complete = true;
            }
        }
        if self.stop_reason.is_some() && progress.tokens.is_some() && !self.out.message_delta_sent()
        {
            self.out
                .message_delta(out, self.stop_reason, progress.tokens);
        }
        Ok(())
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        let block = match self.open {
            Some(OpenBlock::Text { block }) => block,
            _ => {
                self.close_open_block(out);
                let block = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Some(OpenBlock::Text { block });
                block
            }
        };
        self.out
            .block_delta(out, block, json!({"type": "text_delta", "text": text}));
    }

    /// One entry of `delta.tool_calls`: the start of a call (it has an `id`) or more of the
    /// arguments of the call with its `index`.
    fn tool_call(
        &mut self,
        out: &mut Vec<u8>,
        call: &Value,
        position: usize,
    ) -> Result<(), TranslateError> {
        let call_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        let id = call.get("id").and_then(Value::as_str);
        let continues_open_call = match &self.open {
            Some(OpenBlock::ToolUse {
                call_index: open_index,
                id: open_id,
                ..
            }) => *open_index == call_index && id.is_none_or(|id| id == open_id),
            _ => false,
        };
        let block = match (&self.open, continues_open_call) {
            (Some(OpenBlock::ToolUse { block, .. }), true) => *block,
            _ => {
                if id.is_none() && self.closed_calls.contains(&call_index) {
                    return Err(untranslatable(
                        format!("choices[0].delta.tool_calls[{position}].index"),
                        "arguments for a tool call after another began cannot be streamed to Anthropic",
                    ));
                }
                self.close_open_block(out);
                let id = id.map_or_else(|| format!("toolu_{call_index}"), str::to_owned);
                let name = call
                    .get("function")
                    .and_then(|function| function.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let block = self.open_block(
                    out,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.open = Some(OpenBlock::ToolUse {
                    block,
                    call_index,
                    id,
                });
                block
            }
        };
        let arguments = call
            .get("function")
            .and_then(|function| function.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !arguments.is_empty() {
            self.out.block_delta(
                out,
                block,
                json!({"type": "input_json_delta", "partial_json": arguments}),
            );
        }
        Ok(())
    }

    fn open_block(&mut self, out: &mut Vec<u8>, content_block: Value) -> u64 {
        let block = self.next_block;
        self.next_block += 1;
        self.out.block_start(out, block, content_block);
        block
    }

    fn close_open_block(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            Some(OpenBlock::Text { block }) => self.out.block_stop(out, block),
            Some(OpenBlock::ToolUse {
                block, call_index, ..
            }) => {
                self.closed_calls.insert(call_index);
                self.out.block_stop(out, block);
            }
            None => {}
        }
    }

    pub fn client_stream(&self) -> ClientStream {
        self.out.client_stream()
    }

    pub fn finish(&mut self, client: &Client, progress: &mut Progress, out: &mut Vec<u8>) {
        self.out.close(
            out,
            &self.message_id,
            &client.alias,
            self.stop_reason,
            progress.tokens,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::fixtures;
    use super::super::super::{Format, TranslateError, Usage};
    use super::super::tests::{events, run, translator};
    use serde_json::{json, Value};

    fn event(data: Value) -> (Option<String>, Value) {
        let name = data["type"].as_str().map(str::to_owned);
        (name, data)
    }

    fn message_start(id: &str) -> (Option<String>, Value) {
        event(
            json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "model": "my-alias", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        )
    }

    fn block_start(index: u64, block: Value) -> (Option<String>, Value) {
        event(json!({"type": "content_block_start", "index": index, "content_block": block}))
    }

    fn block_delta(index: u64, delta: Value) -> (Option<String>, Value) {
        event(json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    fn block_stop(index: u64) -> (Option<String>, Value) {
        event(json!({"type": "content_block_stop", "index": index}))
    }

    fn message_delta(stop_reason: Value, usage: Value) -> (Option<String>, Value) {
        event(json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": usage}))
    }

    fn message_stop() -> (Option<String>, Value) {
        event(json!({"type": "message_stop"}))
    }

    fn translate(stream: &str) -> Vec<(Option<String>, Value)> {
        events(&run(
            &mut translator(Format::OpenAi, Format::Anthropic, false),
            stream,
            false,
        ))
    }

    #[test]
    fn content_becomes_a_text_block() {
        let mut translator = translator(Format::OpenAi, Format::Anthropic, false);
        let out = run(&mut translator, fixtures::OPENAI_TEXT_STREAM, false);
        assert_eq!(
            events(&out),
            vec![
                message_start("msg_chatcmpl-123"),
                block_start(0, json!({"type": "text", "text": ""})),
                block_delta(0, json!({"type": "text_delta", "text": "Hello"})),
                block_delta(0, json!({"type": "text_delta", "text": "! ¿Qué tal? 😀"})),
                block_stop(0),
                message_delta(
                    json!("end_turn"),
                    json!({"input_tokens": 9, "output_tokens": 12})
                ),
                message_stop(),
            ]
        );
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
    fn tool_calls_become_tool_use_blocks() {
        assert_eq!(
            translate(fixtures::OPENAI_TOOL_STREAM),
            vec![
                message_start("msg_chatcmpl-9"),
                block_start(
                    0,
                    json!({"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                        "name": "get_weather", "input": {}})
                ),
                block_delta(
                    0,
                    json!({"type": "input_json_delta", "partial_json": "{\"location\":"})
                ),
                block_delta(
                    0,
                    json!({"type": "input_json_delta", "partial_json": " \"Paris\"}"})
                ),
                block_stop(0),
                block_start(
                    1,
                    json!({"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}})
                ),
                block_delta(
                    1,
                    json!({"type": "input_json_delta", "partial_json": "{\"location\": \"Rome\"}"})
                ),
                block_stop(1),
                message_delta(
                    json!("tool_use"),
                    json!({"input_tokens": 16, "cache_read_input_tokens": 64, "output_tokens": 30})
                ),
                message_stop(),
            ]
        );
    }

    #[test]
    fn text_then_a_call_closes_the_text_block_first() {
        let stream = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me look.\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"search\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}\n\n\
            data: [DONE]\n\n";
        assert_eq!(
            translate(stream),
            vec![
                message_start("msg_c1"),
                block_start(0, json!({"type": "text", "text": ""})),
                block_delta(0, json!({"type": "text_delta", "text": "Let me look."})),
                block_stop(0),
                block_start(
                    1,
                    json!({"type": "tool_use", "id": "call_1", "name": "search", "input": {}})
                ),
                block_delta(1, json!({"type": "input_json_delta", "partial_json": "{}"})),
                block_stop(1),
                message_delta(
                    json!("tool_use"),
                    json!({"input_tokens": 5, "output_tokens": 6})
                ),
                message_stop(),
            ]
        );
    }

    #[test]
    fn without_usage_message_delta_waits_for_done() {
        let stream = "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n";
        let mut translator = translator(Format::OpenAi, Format::Anthropic, false);
        let out = translator.feed(stream.as_bytes()).unwrap();
        let out = events(std::str::from_utf8(&out).unwrap());
        assert_eq!(out.last(), Some(&block_stop(0)));
        assert!(translator.complete());
        let rest = translator.feed(b"data: [DONE]\n\n").unwrap();
        assert_eq!(
            events(std::str::from_utf8(&rest).unwrap()),
            vec![
                message_delta(json!("max_tokens"), json!({"output_tokens": 0})),
                message_stop()
            ]
        );
        assert_eq!(translator.usage(), None);
        assert!(translator.finish().is_empty());
    }

    #[test]
    fn a_refusal_streams_as_text_with_a_refusal_stop() {
        let stream = "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"I can't help with that.\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
            data: [DONE]\n\n";
        let out = translate(stream);
        assert_eq!(
            out[2],
            block_delta(
                0,
                json!({"type": "text_delta", "text": "I can't help with that."})
            )
        );
        assert_eq!(
            out[4],
            message_delta(json!("refusal"), json!({"output_tokens": 0}))
        );
    }

    #[test]
    fn an_openai_error_becomes_an_anthropic_error_that_ends_the_stream() {
        let mut translator = translator(Format::OpenAi, Format::Anthropic, false);
        let first = fixtures::OPENAI_TEXT_STREAM.split_once("\n\n").unwrap().0;
        translator.feed(format!("{first}\n\n").as_bytes()).unwrap();
        let error = "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
        let out = translator.feed(error.as_bytes()).unwrap();
        assert_eq!(
            events(std::str::from_utf8(&out).unwrap()),
            vec![(
                Some("error".to_owned()),
                json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error"}})
            )]
        );
        assert!(translator.finish().is_empty());
        assert!(!translator.complete());
    }

    #[test]
    fn a_cut_stream_is_closed_without_a_stop_reason() {
        let (start, _) = fixtures::OPENAI_TEXT_STREAM
            .split_once("data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{},")
            .unwrap();
        let mut translator = translator(Format::OpenAi, Format::Anthropic, false);
        translator.feed(start.as_bytes()).unwrap();
        assert!(translator.started() && !translator.complete());
        let closing = translator.finish();
        assert_eq!(
            events(std::str::from_utf8(&closing).unwrap()),
            vec![
                block_stop(0),
                message_delta(Value::Null, json!({"output_tokens": 0})),
                message_stop(),
            ]
        );
    }

    #[test]
    fn an_empty_stream_is_still_a_whole_message() {
        assert_eq!(
            translate("data: [DONE]\n\n"),
            vec![
                message_start("msg_"),
                message_delta(json!("end_turn"), json!({"output_tokens": 0})),
                message_stop(),
            ]
        );
    }

    #[test]
    fn arguments_for_a_closed_call_are_refused() {
        let stream = "data: {\"id\":\"c4\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c4\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n";
        let mut translator = translator(Format::OpenAi, Format::Anthropic, false);
        translator.feed(stream.as_bytes()).unwrap();
        let late = "data: {\"id\":\"c4\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n";
        assert!(matches!(
            translator.feed(late.as_bytes()),
            Err(TranslateError::Untranslatable { field, .. })
                if field == "choices[0].delta.tool_calls[0].index"
        ));
    }

    #[test]
    fn an_unknown_finish_reason_is_refused() {
        let stream = "data: {\"id\":\"c5\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"mystery\"}]}\n\n";
        let mut translator = translator(Format::OpenAi, Format::Anthropic, false);
        assert!(matches!(
            translator.feed(stream.as_bytes()),
            Err(TranslateError::Untranslatable { field, .. }) if field == "choices[0].finish_reason"
        ));
    }
}
