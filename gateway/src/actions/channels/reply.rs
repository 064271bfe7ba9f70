//! The replies of a poll: `200` with the message as published (or a batch envelope), `204` (or
//! an empty batch) when the hold ran out, always with `Cache-Control: no-store`, the cursor in
//! `ETag` and `Poll-Cursor`, CORS headers where the route allows browsers, and `Connection:
//! close` when the answer is given because the gateway is shutting down.

use crate::core::spec::channel::allowed_origin;
use crate::exchange::reply::SharedHeaders;
use crate::exchange::Reply;
use crate::hub::{Cursor, Message};
use bytes::Bytes;
use http::header::{HeaderName, CACHE_CONTROL, CONTENT_TYPE, ETAG};
use http::HeaderValue;

/// What shapes every answer of one poll.
pub struct Ending<'a> {
    pub settings: &'a conf::LongPoll,
    pub cors: Option<&'a conf::Cors>,
    /// The request's `Origin`.
    pub origin: Option<&'a str>,
}

fn reply(status: u16, ending: &Ending<'_>, cursor: Option<&Cursor>) -> Reply {
    let mut reply = Reply::fresh(status);
    if let Some(cursor) = cursor {
        let cursor = cursor.to_string();
        reply = reply
            .header("etag", &format!("\"{cursor}\""))
            .header("poll-cursor", &cursor);
    }
    with_cors(reply, ending)
}

/// The CORS headers of a route that allows browsers, for the request's `Origin`.
pub fn with_cors(mut reply: Reply, ending: &Ending<'_>) -> Reply {
    if let (Some(cors), Some(origin)) = (ending.cors, ending.origin) {
        if let Some(allowed) = allowed_origin(cors, origin) {
            reply = reply
                .header("access-control-allow-origin", allowed)
                .header("access-control-expose-headers", "ETag, Poll-Cursor");
            if cors.credentials {
                reply = reply.header("access-control-allow-credentials", "true");
            }
            reply = reply.header("vary", "Origin");
        }
    }
    reply
}

/// 200 with the messages.
pub fn messages_reply(ending: &Ending<'_>, messages: &[Message], cursor: &Cursor) -> Reply {
    match (ending.settings.format, messages) {
        (conf::PollFormat::Raw, [message, ..]) => {
            // Built once per message, whatever the number of polls it answers: the headers all
            // of them carry, and the body as published (`Bytes`, never copied).
            let mut reply = Reply::new(200);
            reply.shared = message.derived.get_or_init(|| raw_headers(message));
            reply.body = message.body.clone();
            with_cors(reply, ending)
        }
        _ => reply(200, ending, Some(cursor)).with_body(
            Some(HeaderValue::from_static("application/json")),
            batch(messages, Some(cursor)),
        ),
    }
}

/// The headers of every raw poll answer with `message`.
fn raw_headers(message: &Message) -> SharedHeaders {
    let cursor = message.id.to_string();
    let mut headers = vec![(CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{cursor}\"")) {
        headers.push((ETAG, etag));
    }
    if let Ok(cursor) = HeaderValue::from_str(&cursor) {
        headers.push((HeaderName::from_static("poll-cursor"), cursor));
    }
    let content_type = message.content_type.as_deref();
    if let Some(content_type) = content_type.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.push((CONTENT_TYPE, content_type));
    }
    SharedHeaders::new(headers)
}

/// The answer when nothing came: 204 (or an empty batch with `on_timeout: 200`).
pub fn timeout_reply(ending: &Ending<'_>, cursor: Option<&Cursor>, shutdown: bool) -> Reply {
    let reply = if ending.settings.on_timeout == conf::OnTimeout::EmptyBatch {
        reply(200, ending, cursor).with_body(
            Some(HeaderValue::from_static("application/json")),
            batch(&[], cursor),
        )
    } else {
        reply(204, ending, cursor)
    };
    if shutdown {
        reply.closing()
    } else {
        reply
    }
}

/// `{"id","content_type","data"}` for one message: a JSON body is embedded as JSON, anything else
/// as a string (lossy for non-UTF-8 bytes).
pub fn message_json(message: &Message) -> serde_json::Value {
    let is_json = message.content_type.as_deref().is_some_and(|t| {
        let essence = t.split(';').next().unwrap_or("").trim();
        essence == "application/json" || essence.ends_with("+json")
    });
    let data: serde_json::Value = is_json
        .then(|| serde_json::from_slice(&message.body).ok())
        .flatten()
        .unwrap_or_else(|| String::from_utf8_lossy(&message.body).into_owned().into());
    serde_json::json!({"id": message.id.to_string(), "content_type": message.content_type.as_deref(), "data": data})
}

/// `{"messages":[{"id","content_type","data"}…],"cursor":"…"}` ([`message_json`]).
fn batch(messages: &[Message], cursor: Option<&Cursor>) -> Bytes {
    let messages: Vec<serde_json::Value> = messages.iter().map(message_json).collect();
    let envelope =
        serde_json::json!({"messages": messages, "cursor": cursor.map(ToString::to_string)});
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}
