//! An OpenAI stream written for a client: `chat.completion.chunk` events under one id, the
//! usage chunk, and `data: [DONE]`, each written once.

use super::super::sse::write_event;
use super::super::tokens::TokenCounts;
use super::Client;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub(super) struct OpenAiOut {
    /// The chunks' id, the provider's with OpenAI's prefix.
    pub id: String,
    role_sent: bool,
    usage_sent: bool,
    done: bool,
}

impl OpenAiOut {
    pub fn done(&self) -> bool {
        self.done
    }

    /// The first chunk, with the role, as OpenAI opens its streams; once.
    pub fn role(&mut self, out: &mut Vec<u8>, client: &Client) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(
                out,
                client,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            );
        }
    }

    pub fn chunk(
        &mut self,
        out: &mut Vec<u8>,
        client: &Client,
        delta: Value,
        finish_reason: Value,
    ) {
        self.role(out, client);
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": client.created,
            "model": client.alias,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        write_event(out, None, &chunk.to_string());
    }

    /// The last chunk before `[DONE]` when the client asked for usage: no choices, the usage.
    pub fn usage(&mut self, out: &mut Vec<u8>, client: &Client, tokens: TokenCounts) {
        if self.usage_sent || !client.wants_usage {
            return;
        }
        self.usage_sent = true;
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": client.created,
            "model": client.alias,
            "choices": [],
            "usage": tokens.to_openai(),
        });
        write_event(out, None, &chunk.to_string());
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.done = true;
            write_event(out, None, "[DONE]");
        }
    }

    /// The provider's error, then the end of the stream.
    pub fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        if !self.done {
            self.done = true;
            write_error(out, kind, message);
        }
    }
}

/// An OpenAI error event and `[DONE]`, as OpenAI ends a stream that failed.
pub(super) fn write_error(out: &mut Vec<u8>, kind: &str, message: &str) {
    let error = json!({"error": {"message": message, "type": kind}});
    write_event(out, None, &error.to_string());
    write_event(out, None, "[DONE]");
}
