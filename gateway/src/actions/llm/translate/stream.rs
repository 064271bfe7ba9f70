//! Streamed answers: the provider's SSE bytes in, the client's SSE bytes out, as they come.
//! One translator per stream; each of the four directions (`passthrough` for the two where the
//! formats match, `from_anthropic`, `from_openai`) reads the provider's events and writes the
//! client's, through `openai_out` and `anthropic_out`, which know how each format's stream is
//! put together and closed.

mod anthropic_out;
mod from_anthropic;
mod from_openai;
mod openai_out;
mod passthrough;

use super::fields::{invalid, unix_now};
use super::sse::{write_event, SseEvent, SseParser};
use super::tokens::TokenCounts;
use super::{Format, TranslateError, Usage};
use bytes::Bytes;
use serde_json::Value;

/// A streamed answer on its way: fed the provider's SSE bytes as they come (chunks may split
/// events, lines, even UTF-8 sequences anywhere), it returns the bytes to send the client, in
/// the client's format, at once (nothing held back beyond an incomplete event).
///
/// After [`StreamTranslator::error_event`] the client's stream is over: send it instead of
/// [`StreamTranslator::finish`], not before it.
pub struct StreamTranslator {
    parser: SseParser,
    client: Client,
    progress: Progress,
    direction: Direction,
}

/// What the client asked for, fixed for the whole stream.
struct Client {
    format: Format,
    /// The model name the client used, written in place of the provider's.
    alias: String,
    /// An OpenAI client asked for the usage chunk.
    wants_usage: bool,
    /// OpenAI's `created` when the provider's stream has none.
    created: u64,
}

/// What the provider's stream has shown so far.
#[derive(Debug, Default)]
struct Progress {
    tokens: Option<TokenCounts>,
    /// The provider ended its answer properly.
    complete: bool,
    /// Text or a tool call reached the client.
    started: bool,
}

/// How far the client's stream got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientStream {
    Open,
    /// The provider's error was passed on; OpenAI's `[DONE]` has yet to follow it.
    ErrorSent,
    /// Closed, by the answer's end or by an error that ends it.
    Ended,
}

enum Direction {
    OpenAiToOpenAi(passthrough::OpenAiPassthrough),
    AnthropicToAnthropic(passthrough::AnthropicPassthrough),
    AnthropicToOpenAi(from_anthropic::AnthropicToOpenAi),
    OpenAiToAnthropic(from_openai::OpenAiToAnthropic),
}

/// The events, in `format`, that end a stream still open with the error `message` (OpenAI:
/// an `error` chunk, then `[DONE]`; Anthropic: an `error` event).
pub fn failure_event(format: Format, message: &str) -> Bytes {
    let mut out = Vec::new();
    match format {
        Format::OpenAi => openai_out::write_error(&mut out, "upstream_error", message),
        Format::Anthropic => anthropic_out::write_error(&mut out, "api_error", message),
    }
    Bytes::from(out)
}

impl StreamTranslator {
    /// `from`: the provider's format; `to`: the client's; `alias`: the model name the client
    /// used; `client_wants_usage`: for an OpenAI client, whether it asked for the usage chunk (if
    /// not, the provider's usage-only chunk — `choices: []` with `usage` — is removed and `usage`
    /// is kept out of the other chunks, but still read).
    pub fn new(from: Format, to: Format, alias: &str, client_wants_usage: bool) -> Self {
        Self::created_at(from, to, alias, client_wants_usage, unix_now())
    }

    fn created_at(
        from: Format,
        to: Format,
        alias: &str,
        client_wants_usage: bool,
        created: u64,
    ) -> Self {
        let direction = match (from, to) {
            (Format::OpenAi, Format::OpenAi) => Direction::OpenAiToOpenAi(Default::default()),
            (Format::Anthropic, Format::Anthropic) => {
                Direction::AnthropicToAnthropic(Default::default())
            }
            (Format::Anthropic, Format::OpenAi) => Direction::AnthropicToOpenAi(Default::default()),
            (Format::OpenAi, Format::Anthropic) => Direction::OpenAiToAnthropic(Default::default()),
        };
        Self {
            parser: SseParser::default(),
            client: Client {
                format: to,
                alias: alias.to_owned(),
                wants_usage: client_wants_usage,
                created,
            },
            progress: Progress::default(),
            direction,
        }
    }

    /// The client's bytes for this piece of the provider's stream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, TranslateError> {
        let mut out = Vec::new();
        for event in self.parser.feed(chunk)? {
            self.translate(&event, &mut out)?;
        }
        Ok(Bytes::from(out))
    }

    /// The provider's stream ended: whatever the client's format needs to close properly (e.g.
    /// `data: [DONE]\n\n` for OpenAI if not already sent, `message_stop` for Anthropic if not
    /// sent). Empty if already complete.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        for event in self.parser.finish() {
            // The stream is over: an event it cut short is dropped, the rest still closes.
            let mut translated = Vec::new();
            if self.translate(&event, &mut translated).is_ok() {
                out.extend(translated);
            }
        }
        let (client, progress) = (&self.client, &mut self.progress);
        match &mut self.direction {
            Direction::OpenAiToOpenAi(direction) => direction.finish(&mut out),
            Direction::AnthropicToAnthropic(direction) => {
                direction.finish(client, progress, &mut out)
            }
            Direction::AnthropicToOpenAi(direction) => direction.finish(client, progress, &mut out),
            Direction::OpenAiToAnthropic(direction) => direction.finish(client, progress, &mut out),
        }
        Bytes::from(out)
    }

    /// The format the client gets.
    pub fn client_format(&self) -> Format {
        self.client.format
    }

    /// Whether the provider's stream ended properly (OpenAI `[DONE]` or a finish_reason;
    /// Anthropic `message_stop`).
    pub fn complete(&self) -> bool {
        self.progress.complete
    }

    /// The usage read from the stream so far (OpenAI's usage chunk; Anthropic's `message_start`
    /// input_tokens and `message_delta` output_tokens).
    pub fn usage(&self) -> Option<Usage> {
        self.progress.tokens.map(|tokens| tokens.usage())
    }

    /// Whether any content (text or tool call) has been emitted to the client yet (the first
    /// token).
    pub fn started(&self) -> bool {
        self.progress.started
    }

    /// An SSE event, in the client's format, telling the client the stream failed mid-way with
    /// `message` (OpenAI: a `data: {"error":{"message":...,"type":"upstream_error"}}` event then
    /// `data: [DONE]`; Anthropic: `event: error` with
    /// `{"type":"error","error":{"type":"api_error","message":...}}`).
    ///
    /// The client is told once: when the provider's own error event was already passed on, only
    /// what still ends the stream (OpenAI's `[DONE]`) is returned, or nothing.
    pub fn error_event(&self, message: &str) -> Bytes {
        match self.client_stream() {
            ClientStream::Open => failure_event(self.client.format, message),
            ClientStream::ErrorSent => {
                let mut out = Vec::new();
                write_event(&mut out, None, "[DONE]");
                Bytes::from(out)
            }
            ClientStream::Ended => Bytes::new(),
        }
    }

    fn client_stream(&self) -> ClientStream {
        match &self.direction {
            Direction::OpenAiToOpenAi(direction) => direction.client_stream(),
            Direction::AnthropicToAnthropic(direction) => direction.client_stream(),
            Direction::AnthropicToOpenAi(direction) => direction.client_stream(),
            Direction::OpenAiToAnthropic(direction) => direction.client_stream(),
        }
    }

    fn translate(&mut self, event: &SseEvent, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let (client, progress) = (&self.client, &mut self.progress);
        match &mut self.direction {
            Direction::OpenAiToOpenAi(direction) => direction.event(event, client, progress, out),
            Direction::AnthropicToAnthropic(direction) => {
                direction.event(event, client, progress, out)
            }
            Direction::AnthropicToOpenAi(direction) => {
                direction.event(event, client, progress, out)
            }
            Direction::OpenAiToAnthropic(direction) => {
                direction.event(event, client, progress, out)
            }
        }
    }
}

/// OpenAI's end-of-stream marker, which is not JSON.
fn is_done_marker(event: &SseEvent) -> bool {
    event.data.trim() == "[DONE]"
}

fn parse_json(event: &SseEvent) -> Result<Value, TranslateError> {
    serde_json::from_str(&event.data)
        .map_err(|error| invalid("stream", format!("an event's data is not JSON: {error}")))
}

/// An Anthropic event's type: its `type` field, which the `event:` line repeats.
fn anthropic_kind(event: &SseEvent, value: &Value) -> String {
    value
        .get("type")
        .and_then(Value::as_str)
        .or(event.name.as_deref())
        .unwrap_or_default()
        .to_owned()
}

/// Whether an OpenAI chunk's `delta` carries text or a tool call.
fn openai_delta_has_content(delta: &Value) -> bool {
    let text = |key: &str| {
        delta
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.is_empty())
    };
    let calls = delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty());
    text("content") || text("refusal") || calls
}

/// An error event's message, from either format's error object.
fn error_message(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use serde_json::json;

    /// A stream's translation, fed whole or one byte at a time, then finished.
    pub(super) fn run(
        translator: &mut StreamTranslator,
        stream: &str,
        byte_by_byte: bool,
    ) -> String {
        let mut out = Vec::new();
        if byte_by_byte {
            for byte in stream.as_bytes() {
                out.extend_from_slice(&translator.feed(std::slice::from_ref(byte)).unwrap());
            }
        } else {
            out.extend_from_slice(&translator.feed(stream.as_bytes()).unwrap());
        }
        out.extend_from_slice(&translator.finish());
        String::from_utf8(out).unwrap()
    }

    pub(super) fn translator(from: Format, to: Format, wants_usage: bool) -> StreamTranslator {
        StreamTranslator::created_at(from, to, "my-alias", wants_usage, 1_700_000_000)
    }

    /// The events of a client stream: `event:` name and JSON data (`[DONE]` as a string).
    pub(super) fn events(stream: &str) -> Vec<(Option<String>, Value)> {
        let mut parser = SseParser::default();
        let mut events = parser.feed(stream.as_bytes()).unwrap();
        assert!(
            parser.finish().is_empty(),
            "an unfinished event in {stream:?}"
        );
        events
            .drain(..)
            .map(|event| {
                let data = serde_json::from_str(&event.data)
                    .unwrap_or_else(|_| Value::String(event.data.clone()));
                (event.name, data)
            })
            .collect()
    }

    const STREAMS: [(Format, &str); 4] = [
        (Format::Anthropic, fixtures::ANTHROPIC_TEXT_STREAM),
        (Format::Anthropic, fixtures::ANTHROPIC_TOOL_STREAM),
        (Format::OpenAi, fixtures::OPENAI_TEXT_STREAM),
        (Format::OpenAi, fixtures::OPENAI_TOOL_STREAM),
    ];

    #[test]
    fn one_byte_at_a_time_gives_what_one_piece_gives() {
        for (from, stream) in STREAMS {
            for to in [Format::OpenAi, Format::Anthropic] {
                for wants_usage in [false, true] {
                    let mut whole = translator(from, to, wants_usage);
                    let mut bytes = translator(from, to, wants_usage);
                    let expected = run(&mut whole, stream, false);
                    assert_eq!(
                        run(&mut bytes, stream, true),
                        expected,
                        "{from:?} to {to:?}"
                    );
                    assert!(whole.complete() && bytes.complete());
                    assert_eq!(whole.usage(), bytes.usage());
                    assert!(whole.started() && bytes.started());
                    // A client stream is whole: it reads back event by event.
                    assert!(!events(&expected).is_empty());
                }
            }
        }
    }

    #[test]
    fn line_endings_and_comments_do_not_change_the_translation() {
        for (from, stream) in STREAMS {
            for to in [Format::OpenAi, Format::Anthropic] {
                let expected = run(&mut translator(from, to, true), stream, false);
                let crlf = format!(": keep-alive\r\n\r\n{}", stream.replace('\n', "\r\n"));
                assert_eq!(run(&mut translator(from, to, true), &crlf, true), expected);
                let cr = stream.replace('\n', "\r");
                assert_eq!(run(&mut translator(from, to, true), &cr, true), expected);
            }
        }
    }

    #[test]
    fn a_split_utf8_sequence_is_read_whole() {
        let stream = fixtures::OPENAI_TEXT_STREAM.as_bytes();
        let emoji = stream
            .windows(4)
            .position(|window| window == "😀".as_bytes())
            .unwrap();
        for split in emoji + 1..emoji + 4 {
            let mut split_translator = translator(Format::OpenAi, Format::Anthropic, false);
            let mut out = split_translator.feed(&stream[..split]).unwrap().to_vec();
            out.extend_from_slice(&split_translator.feed(&stream[split..]).unwrap());
            out.extend_from_slice(&split_translator.finish());
            let expected = run(
                &mut translator(Format::OpenAi, Format::Anthropic, false),
                fixtures::OPENAI_TEXT_STREAM,
                false,
            );
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn error_events_in_the_clients_format() {
        let openai = translator(Format::Anthropic, Format::OpenAi, false);
        assert_eq!(
            openai.error_event("upstream reset"),
            Bytes::from_static(
                b"data: {\"error\":{\"message\":\"upstream reset\",\"type\":\"upstream_error\"}}\n\ndata: [DONE]\n\n"
            )
        );
        let anthropic = translator(Format::OpenAi, Format::Anthropic, false);
        assert_eq!(
            events(std::str::from_utf8(&anthropic.error_event("upstream reset")).unwrap()),
            vec![(
                Some("error".to_owned()),
                json!({"type": "error", "error": {"type": "api_error", "message": "upstream reset"}})
            )]
        );
    }

    #[test]
    fn the_client_hears_of_an_error_once() {
        let anthropic_error = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let openai_error =
            "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        for (from, to, error, expected) in [
            (Format::Anthropic, Format::OpenAi, anthropic_error, ""),
            (Format::Anthropic, Format::Anthropic, anthropic_error, ""),
            (Format::OpenAi, Format::Anthropic, openai_error, ""),
            (
                Format::OpenAi,
                Format::OpenAi,
                openai_error,
                "data: [DONE]\n\n",
            ),
        ] {
            let mut translator = translator(from, to, false);
            assert!(!translator.feed(error.as_bytes()).unwrap().is_empty());
            assert!(!translator.complete());
            assert_eq!(
                &translator.error_event("cut")[..],
                expected.as_bytes(),
                "{from:?} to {to:?}"
            );
        }
    }

    #[test]
    fn data_that_is_not_json_is_invalid() {
        for (from, to) in [
            (Format::OpenAi, Format::OpenAi),
            (Format::OpenAi, Format::Anthropic),
            (Format::Anthropic, Format::OpenAi),
            (Format::Anthropic, Format::Anthropic),
        ] {
            let mut translator = translator(from, to, false);
            assert!(matches!(
                translator.feed(b"data: {\"id\": \n\n"),
                Err(TranslateError::Invalid { field, .. }) if field == "stream"
            ));
        }
    }

    #[test]
    fn nothing_is_started_or_complete_before_the_provider_says_so() {
        for (from, to) in [
            (Format::OpenAi, Format::OpenAi),
            (Format::OpenAi, Format::Anthropic),
            (Format::Anthropic, Format::OpenAi),
            (Format::Anthropic, Format::Anthropic),
        ] {
            let translator = translator(from, to, false);
            assert!(!translator.started() && !translator.complete());
            assert_eq!(translator.usage(), None);
        }
    }
}
