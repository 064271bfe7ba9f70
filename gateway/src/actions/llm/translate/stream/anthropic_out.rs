//! An Anthropic stream written for a client, and what it still lacks to be whole: Anthropic
//! clients rebuild the message from `message_start`, the content blocks opened and closed in
//! order, `message_delta` and `message_stop`, so a stream cut short is closed with exactly what
//! is missing.

use super::super::fields::prefixed_id;
use super::super::sse::write_event;
use super::super::tokens::TokenCounts;
use super::ClientStream;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub(super) struct AnthropicOut {
    message_started: bool,
    /// Blocks opened and not yet closed, by index.
    open_blocks: Vec<u64>,
    message_delta_sent: bool,
    /// `message_stop` or an error was sent: the client's stream is over.
    ended: bool,
}

impl AnthropicOut {
    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn client_stream(&self) -> ClientStream {
        if self.ended {
            ClientStream::Ended
        } else {
            ClientStream::Open
        }
    }

    pub fn message_started(&self) -> bool {
        self.message_started
    }

    pub fn message_delta_sent(&self) -> bool {
        self.message_delta_sent
    }

    /// Records an event sent to the client, whoever wrote it.
    pub fn saw(&mut self, kind: &str, event: &Value) {
        let index = || event.get("index").and_then(Value::as_u64);
        match kind {
            "message_start" => self.message_started = true,
            "content_block_start" => {
                if let Some(index) = index() {
                    self.open_blocks.push(index);
                }
            }
            "content_block_stop" => {
                if let Some(index) = index() {
                    self.open_blocks.retain(|open| *open != index);
                }
            }
            "message_delta" => self.message_delta_sent = true,
            "message_stop" | "error" => self.ended = true,
            _ => {}
        }
    }

    fn send(&mut self, out: &mut Vec<u8>, kind: &str, event: Value) {
        self.saw(kind, &event);
        write_event(out, Some(kind), &event.to_string());
    }

    pub fn message_start(
        &mut self,
        out: &mut Vec<u8>,
        id: &str,
        model: &str,
        tokens: Option<TokenCounts>,
    ) {
        let usage = tokens.unwrap_or_default().to_anthropic();
        self.send(
            out,
            "message_start",
            json!({"type": "message_start", "message": {
                "id": prefixed_id("msg_", id),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage,
            }}),
        );
    }

    pub fn block_start(&mut self, out: &mut Vec<u8>, index: u64, block: Value) {
        self.send(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
    }

    pub fn block_delta(&mut self, out: &mut Vec<u8>, index: u64, delta: Value) {
        self.send(
            out,
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    pub fn block_stop(&mut self, out: &mut Vec<u8>, index: u64) {
        self.send(
            out,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }

    pub fn message_delta(
        &mut self,
        out: &mut Vec<u8>,
        stop_reason: Option<&str>,
        tokens: Option<TokenCounts>,
    ) {
        let usage = match tokens {
            Some(tokens) => tokens.to_anthropic(),
            None => json!({"output_tokens": 0}),
        };
        self.send(
            out,
            "message_delta",
            json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": usage}),
        );
    }

    /// The provider's error: the client's stream ends with it, as Anthropic's own does.
    pub fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        if !self.ended {
            self.ended = true;
            write_error(out, kind, message);
        }
    }

    /// Whatever the client has not seen of a whole message: its start, the end of its open
    /// blocks, its `message_delta` (with `stop_reason`), its `message_stop`.
    pub fn close(
        &mut self,
        out: &mut Vec<u8>,
        id: &str,
        model: &str,
        stop_reason: Option<&str>,
        tokens: Option<TokenCounts>,
    ) {
        if self.ended {
            return;
        }
        if !self.message_started {
            self.message_start(out, id, model, tokens);
        }
        for index in std::mem::take(&mut self.open_blocks) {
            self.block_stop(out, index);
        }
        if !self.message_delta_sent {
            self.message_delta(out, stop_reason, tokens);
        }
        self.send(out, "message_stop", json!({"type": "message_stop"}));
    }
}

/// An Anthropic `error` event.
pub(super) fn write_error(out: &mut Vec<u8>, kind: &str, message: &str) {
    let error = json!({"type": "error", "error": {"type": kind, "message": message}});
    write_event(out, Some("error"), &error.to_string());
}
