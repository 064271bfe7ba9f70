//! Fake model providers for the tests: local servers (axum on a free loopback port, recorded by
//! [`Origin`]) that speak the **OpenAI Chat Completions** and the **Anthropic Messages** wire
//! formats as the providers' published examples show them, so a test can point the gateway's
//! model providers at them and check what reached the provider and what came back.
//!
//! - OpenAI ([`Kind::OpenAi`]): `POST /v1/chat/completions`, and any `POST` path ending in
//!   `/chat/completions` (Azure OpenAI's `/openai/deployments/{deployment}/chat/completions`);
//!   `GET /v1/models` (any `GET` path ending in `/models`). The key comes from
//!   `Authorization: Bearer KEY` or Azure's `api-key: KEY`; without one: 401 `invalid_api_key`.
//! - Anthropic ([`Kind::Anthropic`]): `POST /v1/messages` (needs a key, else 401
//!   `authentication_error` "x-api-key header is required"; `anthropic-version`, else 400; and
//!   `max_tokens` and `messages` in the body, else 400 `invalid_request_error`);
//!   `GET /v1/models`. The key comes from `x-api-key: KEY`, or else from `Authorization: Bearer
//!   KEY`, which the official Python SDK (anthropic 2.x) sends for an API key and the API
//!   accepts; a test that needs the `x-api-key` header itself checks [`Received::header`].
//!
//! Every request is checked as above first, then answered as the fake's [`Behaviour`] says (or
//! the behaviour set for its key with [`Provider::set_for_key`]). The model listings and the
//! checks' own errors do not depend on the behaviour.
//!
//! Token counts are deterministic (see [`usage`]); ids are numbered per fake (`chatcmpl-1`,
//! `call_1`, `msg_1`, `toolu_1`, … — one number per answered request); streamed text comes in
//! pieces of [`PIECE_CHARS`] characters (see [`pieces`]), one event every [`EVENT_GAP`], each
//! flushed as it is produced.

use crate::origin::Origin;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which provider's wire format a fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
}

/// How a fake answers; set per fake, changeable while it runs.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// A normal answer: the text `reply` (streamed in pieces of a few characters when the
    /// request asks to stream), with usage.
    Answer { reply: String },
    /// A tool call: the assistant calls tool `name` with `arguments` (a JSON object),
    /// finish/stop reason `tool_calls` / `tool_use`. Streamed, the arguments' compact JSON text
    /// comes in pieces.
    ToolCall {
        name: String,
        arguments: serde_json::Value,
    },
    /// An HTTP error with the provider's error body: 429 (rate limit), 500, 503, Anthropic's
    /// 529 `overloaded_error` (also 400, 401, 403, 404, 413 with the provider's error type).
    /// `Retry-After: <retry_after_secs>` is sent when it is set, whatever the status.
    Error {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    /// A streamed request gets the events that open the stream (OpenAI: the role chunk;
    /// Anthropic: `message_start`, `content_block_start`, `ping`), then the first `after_chunks`
    /// content pieces of a normal answer, then the connection is dropped: no finish chunk, no
    /// `[DONE]` / `message_stop`, no terminating chunk of the chunked body. A request that does
    /// not stream gets the 200 head and the first half of the JSON answer, then the drop.
    DisconnectMidStream { reply: String, after_chunks: usize },
    /// Waits `millis` before sending anything (not even the head), then answers normally with
    /// the text [`STALL_REPLY`] (for time-to-first-byte timeouts).
    Stall { millis: u64 },
    /// A 200 whose body is not JSON (`<html>oops</html>`, `content-type: text/html`), streamed
    /// request or not.
    NotJson,
}

/// The text a [`Behaviour::Stall`] answers with once its wait is over.
pub const STALL_REPLY: &str = "Sorry for the wait.";
/// The body of a [`Behaviour::NotJson`] answer.
pub const NOT_JSON_BODY: &str = "<html>oops</html>";
/// Streamed text (and tool-call arguments) comes in pieces of this many characters.
pub const PIECE_CHARS: usize = 4;
/// The pause before each streamed event (and before a deliberate drop), so every event is
/// flushed on its own and a test can see chunk-by-chunk delivery.
pub const EVENT_GAP: Duration = Duration::from_millis(5);
/// The model an OpenAI answer names when the request names none (and no Azure deployment does),
/// and the one `GET /v1/models` lists.
pub const OPENAI_MODEL: &str = "gpt-4o-mini";
/// The model an Anthropic answer names when the request names none, and the one
/// `GET /v1/models` lists.
pub const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";

/// What a fake received of one request.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query (after `?`), if any (Azure's `api-version=…`).
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Value::Null` if it is empty or not JSON.
    pub body: serde_json::Value,
}

impl Received {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// The API key the request carried, as the fake of `kind` reads it (see [`Provider::keys`]).
    pub fn key(&self, kind: Kind) -> Option<String> {
        api_key(kind, &self.headers)
    }
}

/// What the server task shares with the [`Provider`] handle.
struct Shared {
    kind: Kind,
    behaviour: Mutex<Behaviour>,
    per_key: Mutex<HashMap<String, Behaviour>>,
    next_id: AtomicU64,
}

impl Shared {
    fn behaviour_for(&self, key: &str) -> Behaviour {
        let per_key = self.per_key.lock().unwrap_or_else(PoisonError::into_inner);
        match per_key.get(key) {
            Some(behaviour) => behaviour.clone(),
            None => self
                .behaviour
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A running fake provider; stops when dropped.
pub struct Provider {
    pub addr: SocketAddr,
    pub kind: Kind,
    shared: Arc<Shared>,
    origin: Origin,
}

impl Provider {
    /// Starts a fake of `kind` on a free loopback port, answering with `behaviour`.
    pub async fn start(kind: Kind, behaviour: Behaviour) -> Provider {
        let shared = Arc::new(Shared {
            kind,
            behaviour: Mutex::new(behaviour),
            per_key: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let origin = Origin::start(router).await;
        Provider {
            addr: origin.addr,
            kind,
            shared,
            origin,
        }
    }

    /// Answer differently from now on.
    pub fn set(&self, behaviour: Behaviour) {
        *self
            .shared
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Answer a request whose API key is `key` with `behaviour` (e.g. 429 for one key of a
    /// pool), others as set.
    pub fn set_for_key(&self, key: &str, behaviour: Behaviour) {
        self.shared
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), behaviour);
    }

    /// Answer requests with `key` as set for everyone again.
    pub fn clear_for_key(&self, key: &str) {
        self.shared
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, in order: method, path, headers, body parsed as JSON
    /// (`Value::Null` if not JSON).
    pub fn requests(&self) -> Vec<Received> {
        self.origin
            .seen()
            .into_iter()
            .map(|seen| {
                let (path, query) = match seen.uri.split_once('?') {
                    Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
                    None => (seen.uri.clone(), None),
                };
                Received {
                    method: seen.method,
                    path,
                    query,
                    headers: seen.headers,
                    body: serde_json::from_slice(&seen.body).unwrap_or(Value::Null),
                }
            })
            .collect()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.origin.count()
    }

    /// The API keys of the requests received, in order, skipping requests without one (OpenAI:
    /// `Authorization: Bearer KEY`, or Azure's `api-key: KEY` header; Anthropic: `x-api-key: KEY`,
    /// or else `Authorization: Bearer KEY`).
    pub fn keys(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|received| received.key(self.kind))
            .collect()
    }
}

/// The token counts a fake reports, `(prompt, completion)` — OpenAI's `prompt_tokens` and
/// `completion_tokens` (`total_tokens` is their sum), Anthropic's `input_tokens` and
/// `output_tokens`:
///
/// - prompt = the number of characters (Unicode scalar values) of the request's text, divided by
///   4 (rounded down), at least 1. The text is the top-level `system` and every message's
///   `content`: a string, or an array of parts/blocks whose `text` strings count, and whose
///   `content` (Anthropic's `tool_result`) counts the same way. Nothing else (roles, tool
///   definitions, tool-call arguments) counts.
/// - completion = the number of whitespace-separated words of `reply`. For a tool call the reply
///   is the arguments' compact JSON text (`serde_json::Value::to_string`); see
///   [`tool_call_usage`].
pub fn usage(request: &Value, reply: &str) -> (u64, u64) {
    (prompt_tokens(request), completion_tokens(reply))
}

/// [`usage`] for an OpenAI answer: `(prompt_tokens, completion_tokens)`.
pub fn openai_usage(request: &Value, reply: &str) -> (u64, u64) {
    usage(request, reply)
}

/// [`usage`] for an Anthropic answer: `(input_tokens, output_tokens)`.
pub fn anthropic_usage(request: &Value, reply: &str) -> (u64, u64) {
    usage(request, reply)
}

/// [`usage`] for a [`Behaviour::ToolCall`] answer with these `arguments`.
pub fn tool_call_usage(request: &Value, arguments: &Value) -> (u64, u64) {
    usage(request, &arguments.to_string())
}

/// The prompt count of [`usage`].
pub fn prompt_tokens(request: &Value) -> u64 {
    let mut chars = request.get("system").map_or(0, text_chars);
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        chars += messages
            .iter()
            .filter_map(|message| message.get("content"))
            .map(text_chars)
            .sum::<u64>();
    }
    (chars / 4).max(1)
}

/// The completion count of [`usage`].
pub fn completion_tokens(reply: &str) -> u64 {
    reply.split_whitespace().count() as u64
}

fn text_chars(content: &Value) -> u64 {
    match content {
        Value::String(text) => text.chars().count() as u64,
        Value::Array(parts) => parts
            .iter()
            .map(|part| {
                part.get("text").map_or(0, text_chars) + part.get("content").map_or(0, text_chars)
            })
            .sum(),
        _ => 0,
    }
}

/// How streamed text is cut: pieces of [`PIECE_CHARS`] characters (the last may be shorter);
/// none for an empty text. Each piece is one content event.
pub fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(PIECE_CHARS)
        .map(|piece| piece.iter().collect())
        .collect()
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The API key as the fake of `kind` reads it; an empty one counts as none.
fn api_key(kind: Kind, headers: &[(String, String)]) -> Option<String> {
    let key = match kind {
        Kind::OpenAi => bearer(headers).or_else(|| header_of(headers, "api-key")),
        Kind::Anthropic => header_of(headers, "x-api-key").or_else(|| bearer(headers)),
    };
    key.map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
}

/// The `KEY` of `Authorization: Bearer KEY`.
fn bearer(headers: &[(String, String)]) -> Option<&str> {
    header_of(headers, "authorization").and_then(|value| {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Everything a fake answers for one request.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let kind = shared.kind;
    let key = api_key(kind, &headers);
    match kind {
        Kind::OpenAi => {
            let completions = path.ends_with("/chat/completions");
            let models = path.ends_with("/models");
            if !(method == "POST" && completions || method == "GET" && models) {
                return openai_error(
                    404,
                    &format!("Invalid URL ({method} {path})"),
                    "invalid_request_error",
                    None,
                );
            }
            let Some(key) = key else {
                return openai_error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an \
                     Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), \
                     or as the password field (with blank username) if you're accessing the API \
                     from your browser and are prompted for a username and password. You can \
                     obtain an API key from https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    Some("invalid_api_key"),
                );
            };
            if models {
                return json_response(
                    StatusCode::OK,
                    &json!({"object": "list", "data": [{
                        "id": OPENAI_MODEL, "object": "model", "created": 1_721_172_741u64,
                        "owned_by": "openai",
                    }]}),
                );
            }
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return openai_error(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means \
                     you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
                     payload, but what was sent was not valid JSON. If you have trouble figuring \
                     out how to fix this, please contact us through our help center at \
                     help.openai.com.)",
                    "invalid_request_error",
                    None,
                );
            };
            // Azure names the deployment in the path and may leave `model` out of the body.
            let deployment = path
                .strip_prefix("/openai/deployments/")
                .and_then(|rest| rest.split('/').next());
            let model = request
                .get("model")
                .and_then(Value::as_str)
                .or(deployment)
                .unwrap_or(OPENAI_MODEL);
            let call = Call::new(&shared, &request, model);
            respond(&call, shared.behaviour_for(&key)).await
        }
        Kind::Anthropic => {
            let messages = method == "POST" && path == "/v1/messages";
            let models = method == "GET" && path == "/v1/models";
            if !(messages || models) {
                return anthropic_error(404, "not_found_error", "Not Found", None);
            }
            let Some(key) = key else {
                return anthropic_error(
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                    None,
                );
            };
            if header_of(&headers, "anthropic-version").is_none() {
                return anthropic_error(
                    400,
                    "invalid_request_error",
                    "anthropic-version: header is required",
                    None,
                );
            }
            if models {
                return json_response(
                    StatusCode::OK,
                    &json!({
                        "data": [{
                            "type": "model", "id": ANTHROPIC_MODEL,
                            "display_name": "Claude Sonnet 4.5",
                            "created_at": "2025-09-29T00:00:00Z",
                        }],
                        "has_more": false, "first_id": ANTHROPIC_MODEL, "last_id": ANTHROPIC_MODEL,
                    }),
                );
            }
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return anthropic_error(
                    400,
                    "invalid_request_error",
                    "The request body is not valid JSON.",
                    None,
                );
            };
            for field in ["max_tokens", "messages"] {
                if request.get(field).is_none() {
                    return anthropic_error(
                        400,
                        "invalid_request_error",
                        &format!("{field}: Field required"),
                        None,
                    );
                }
            }
            let model = request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(ANTHROPIC_MODEL);
            let call = Call::new(&shared, &request, model);
            respond(&call, shared.behaviour_for(&key)).await
        }
    }
}

/// One request being answered.
struct Call {
    kind: Kind,
    model: String,
    stream: bool,
    /// OpenAI's `stream_options.include_usage`.
    include_usage: bool,
    /// The number in this answer's ids.
    n: u64,
    prompt_tokens: u64,
    created: u64,
}

impl Call {
    fn new(shared: &Shared, request: &Value, model: &str) -> Call {
        Call {
            kind: shared.kind,
            model: model.to_owned(),
            stream: request.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            n: shared.next_id.fetch_add(1, Ordering::Relaxed),
            prompt_tokens: prompt_tokens(request),
            created: unix_now(),
        }
    }
}

/// What the assistant says.
enum Content {
    Text(String),
    Tool { name: String, arguments: Value },
}

impl Content {
    /// The text that is streamed in pieces and counted for usage.
    fn text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Tool { arguments, .. } => arguments.to_string(),
        }
    }
}

async fn respond(call: &Call, behaviour: Behaviour) -> Response {
    match behaviour {
        Behaviour::Answer { reply } => answer(call, &Content::Text(reply), None),
        Behaviour::ToolCall { name, arguments } => {
            answer(call, &Content::Tool { name, arguments }, None)
        }
        Behaviour::Error {
            status,
            retry_after_secs,
        } => error(call.kind, status, retry_after_secs, &call.model),
        Behaviour::DisconnectMidStream {
            reply,
            after_chunks,
        } => answer(call, &Content::Text(reply), Some(after_chunks)),
        Behaviour::Stall { millis } => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            answer(call, &Content::Text(STALL_REPLY.to_owned()), None)
        }
        Behaviour::NotJson => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(NOT_JSON_BODY))
            .unwrap_or_default(),
    }
}

/// A 200 answer: JSON, or an event stream when the request asked for one; cut short (and the
/// connection dropped) after `cut` content pieces when that is set.
fn answer(call: &Call, content: &Content, cut: Option<usize>) -> Response {
    let request_id = format!("req_{}", call.n);
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(
            match call.kind {
                Kind::OpenAi => "x-request-id",
                Kind::Anthropic => "request-id",
            },
            request_id,
        )
        .header(header::CACHE_CONTROL, "no-cache");
    if call.stream {
        let events = match call.kind {
            Kind::OpenAi => openai_events(call, content),
            Kind::Anthropic => anthropic_events(call, content),
        };
        let chunks: Vec<Bytes> = match cut {
            Some(after) => events
                .head
                .into_iter()
                .chain(events.pieces.into_iter().take(after))
                .collect(),
            None => events
                .head
                .into_iter()
                .chain(events.pieces)
                .chain(events.tail)
                .collect(),
        };
        builder
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(streamed(chunks, cut.is_some()))
            .unwrap_or_default()
    } else {
        let body = match call.kind {
            Kind::OpenAi => openai_json(call, content),
            Kind::Anthropic => anthropic_json(call, content),
        }
        .to_string();
        let builder = builder.header(header::CONTENT_TYPE, "application/json");
        match cut {
            Some(_) => {
                let half = Bytes::from(body.into_bytes());
                let half = half.slice(..half.len() / 2);
                builder.body(streamed(vec![half], true))
            }
            None => builder.body(Body::from(body)),
        }
        .unwrap_or_default()
    }
}

/// A body sent one chunk at a time, each after [`EVENT_GAP`] (so each is flushed on its own);
/// with `drop_after`, the body then fails, and hyper aborts the connection without ending the
/// body.
fn streamed(chunks: Vec<Bytes>, drop_after: bool) -> Body {
    let drop = drop_after.then(|| {
        Err(std::io::Error::other(
            "the fake provider drops the connection mid-stream",
        ))
    });
    let items = chunks.into_iter().map(Ok).chain(drop);
    Body::from_stream(futures_util::stream::iter(items).then(|item| async move {
        tokio::time::sleep(EVENT_GAP).await;
        item
    }))
}

/// A stream's events: those that open it, one per content piece, those that close it.
struct Events {
    head: Vec<Bytes>,
    pieces: Vec<Bytes>,
    tail: Vec<Bytes>,
}

// --- OpenAI -------------------------------------------------------------------------------

fn openai_json(call: &Call, content: &Content) -> Value {
    let completion_tokens = completion_tokens(&content.text());
    let (message, finish_reason) = match content {
        Content::Text(text) => (
            json!({"role": "assistant", "content": text, "refusal": null}),
            "stop",
        ),
        Content::Tool { name, arguments } => (
            json!({
                "role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{
                    "id": format!("call_{}", call.n), "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()},
                }],
            }),
            "tool_calls",
        ),
    };
    json!({
        "id": format!("chatcmpl-{}", call.n),
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [{
            "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason,
        }],
        "usage": openai_usage_json(call.prompt_tokens, completion_tokens),
        "system_fingerprint": "fp_test",
    })
}

fn openai_usage_json(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn openai_chunk(call: &Call, choices: Value) -> Bytes {
    let mut chunk = json!({
        "id": format!("chatcmpl-{}", call.n),
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": "fp_test",
        "choices": choices,
    });
    if call.include_usage {
        // With `include_usage`, OpenAI sends `"usage": null` on every chunk but the last.
        chunk["usage"] = Value::Null;
    }
    Bytes::from(format!("data: {chunk}\n\n"))
}

fn openai_delta(call: &Call, delta: Value, finish_reason: Option<&str>) -> Bytes {
    openai_chunk(
        call,
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
    )
}

fn openai_events(call: &Call, content: &Content) -> Events {
    let text = content.text();
    let (first, pieces, finish_reason) = match content {
        Content::Text(_) => (
            json!({"role": "assistant", "content": "", "refusal": null}),
            pieces(&text)
                .into_iter()
                .map(|piece| openai_delta(call, json!({"content": piece}), None))
                .collect(),
            "stop",
        ),
        Content::Tool { name, .. } => (
            json!({
                "role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{
                    "index": 0, "id": format!("call_{}", call.n), "type": "function",
                    "function": {"name": name, "arguments": ""},
                }],
            }),
            pieces(&text)
                .into_iter()
                .map(|piece| {
                    openai_delta(
                        call,
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        None,
                    )
                })
                .collect(),
            "tool_calls",
        ),
    };
    let mut tail = vec![openai_delta(call, json!({}), Some(finish_reason))];
    if call.include_usage {
        let last = json!({
            "id": format!("chatcmpl-{}", call.n),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": "fp_test",
            "choices": [],
            "usage": openai_usage_json(call.prompt_tokens, completion_tokens(&text)),
        });
        tail.push(Bytes::from(format!("data: {last}\n\n")));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Events {
        head: vec![openai_delta(call, first, None)],
        pieces,
        tail,
    }
}

/// An OpenAI error answer: `{"error":{"message","type","param":null,"code"}}`.
fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

// --- Anthropic ----------------------------------------------------------------------------

fn anthropic_json(call: &Call, content: &Content) -> Value {
    let (block, stop_reason) = match content {
        Content::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Content::Tool { name, arguments } => (
            json!({
                "type": "tool_use", "id": format!("toolu_{}", call.n),
                "name": name, "input": arguments,
            }),
            "tool_use",
        ),
    };
    json!({
        "id": format!("msg_{}", call.n),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": call.prompt_tokens,
            "output_tokens": completion_tokens(&content.text()),
        },
    })
}

fn anthropic_event(data: &Value) -> Bytes {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("error");
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn anthropic_events(call: &Call, content: &Content) -> Events {
    let text = content.text();
    let (block, stop_reason) = match content {
        Content::Text(_) => (json!({"type": "text", "text": ""}), "end_turn"),
        Content::Tool { name, .. } => (
            json!({
                "type": "tool_use", "id": format!("toolu_{}", call.n),
                "name": name, "input": {},
            }),
            "tool_use",
        ),
    };
    let head = vec![
        anthropic_event(&json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_{}", call.n), "type": "message", "role": "assistant",
                "model": call.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": call.prompt_tokens, "output_tokens": 1},
            },
        })),
        anthropic_event(&json!({
            "type": "content_block_start", "index": 0, "content_block": block,
        })),
        anthropic_event(&json!({"type": "ping"})),
    ];
    let pieces = pieces(&text)
        .into_iter()
        .map(|piece| {
            let delta = match content {
                Content::Text(_) => json!({"type": "text_delta", "text": piece}),
                Content::Tool { .. } => json!({"type": "input_json_delta", "partial_json": piece}),
            };
            anthropic_event(&json!({"type": "content_block_delta", "index": 0, "delta": delta}))
        })
        .collect();
    let tail = vec![
        anthropic_event(&json!({"type": "content_block_stop", "index": 0})),
        anthropic_event(&json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": completion_tokens(&text)},
        })),
        anthropic_event(&json!({"type": "message_stop"})),
    ];
    Events { head, pieces, tail }
}

/// An Anthropic error answer: `{"type":"error","error":{"type","message"}}`.
fn anthropic_error(
    status: u16,
    kind: &str,
    message: &str,
    retry_after_secs: Option<u64>,
) -> Response {
    let mut response = json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    );
    if let Some(secs) = retry_after_secs {
        add_header(&mut response, "retry-after", &secs.to_string());
    }
    response
}

// --- Errors -------------------------------------------------------------------------------

/// The answer of a [`Behaviour::Error`].
fn error(kind: Kind, status: u16, retry_after_secs: Option<u64>, model: &str) -> Response {
    match kind {
        Kind::OpenAi => {
            let wait = retry_after_secs.unwrap_or(20);
            let (message, error_type, code) = match status {
                400 => ("Invalid request.".to_owned(), "invalid_request_error", None),
                401 => (
                    "Incorrect API key provided. You can find your API key at \
                     https://platform.openai.com/account/api-keys."
                        .to_owned(),
                    "invalid_request_error",
                    Some("invalid_api_key"),
                ),
                403 => (
                    "You are not allowed to sample from this model".to_owned(),
                    "invalid_request_error",
                    None,
                ),
                404 => (
                    format!("The model `{model}` does not exist or you do not have access to it."),
                    "invalid_request_error",
                    Some("model_not_found"),
                ),
                429 => (
                    format!(
                        "Rate limit reached for {model} in organization org-test on requests per \
                         min (RPM): Limit 3, Used 3, Requested 1. Please try again in {wait}s. \
                         Visit https://platform.openai.com/account/rate-limits to learn more."
                    ),
                    "requests",
                    Some("rate_limit_exceeded"),
                ),
                _ => (
                    "The server had an error while processing your request. Sorry about that!"
                        .to_owned(),
                    "server_error",
                    None,
                ),
            };
            let mut response = openai_error(status, &message, error_type, code);
            if status == 429 {
                add_header(&mut response, "x-ratelimit-limit-requests", "3");
                add_header(&mut response, "x-ratelimit-remaining-requests", "0");
                add_header(
                    &mut response,
                    "x-ratelimit-reset-requests",
                    &format!("{wait}s"),
                );
            }
            if let Some(secs) = retry_after_secs {
                add_header(&mut response, "retry-after", &secs.to_string());
            }
            response
        }
        Kind::Anthropic => {
            let (error_type, message) = match status {
                400 => ("invalid_request_error", "Invalid request."),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => (
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                404 => (
                    "not_found_error",
                    "The requested resource could not be found.",
                ),
                413 => (
                    "request_too_large",
                    "Request exceeds the maximum allowed size.",
                ),
                429 => (
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization of 50 \
                     requests per minute. For details, refer to: \
                     https://docs.claude.com/en/api/rate-limits.",
                ),
                529 => ("overloaded_error", "Overloaded"),
                _ => ("api_error", "Internal server error"),
            };
            let mut response = anthropic_error(status, error_type, message, retry_after_secs);
            if status == 429 {
                add_header(&mut response, "anthropic-ratelimit-requests-limit", "50");
                add_header(&mut response, "anthropic-ratelimit-requests-remaining", "0");
            }
            response
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn add_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}
