//! Writing poll answers: `200` with the message as published (or a batch envelope), `204` (or an
//! empty batch) when the hold ran out, always with `Cache-Control: no-store`, the cursor in
//! `ETag` and `Poll-Cursor`, CORS headers where the route allows browsers, and `Connection:
//! close` when the answer is given because the gateway is shutting down.

use crate::ctx::RequestCtx;
use crate::longpoll::{Cursor, Message};
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// What shapes every answer of one poll.
pub struct Ending<'a> {
    pub settings: &'a conf::LongPoll,
    pub cors: Option<&'a conf::Cors>,
    pub origin: Option<String>,
}

fn header(status: u16, ending: &Ending<'_>, cursor: Option<&Cursor>) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(8))?;
    header.insert_header("cache-control", "no-store")?;
    if let Some(cursor) = cursor {
        let cursor = cursor.to_string();
        header.insert_header("etag", format!("\"{cursor}\""))?;
        header.insert_header("poll-cursor", cursor)?;
    }
    if let (Some(cors), Some(origin)) = (ending.cors, ending.origin.as_deref()) {
        if let Some(allowed) = crate::cors::allowed_origin(cors, origin) {
            header.insert_header("access-control-allow-origin", allowed)?;
            header.insert_header("access-control-expose-headers", "ETag, Poll-Cursor")?;
            if cors.credentials {
                header.insert_header("access-control-allow-credentials", "true")?;
            }
            header.insert_header("vary", "Origin")?;
        }
    }
    Ok(header)
}

/// Writes the answer, counting the request first (see `counting`).
async fn send(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut header: ResponseHeader,
    body: Bytes,
    close: bool,
) -> Result<()> {
    header.set_content_length(body.len())?;
    if close {
        header.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    crate::counting::answered(session, ctx, header.status.as_u16());
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// 200 with the messages.
pub async fn send_messages(
    session: &mut Session,
    ctx: &mut RequestCtx,
    ending: &Ending<'_>,
    messages: &[Message],
    cursor: &Cursor,
) -> Result<u16> {
    match (ending.settings.format, messages) {
        (conf::PollFormat::Raw, [message, ..]) => {
            let mut header = header(200, ending, Some(&message.id))?;
            if let Some(content_type) = &message.content_type {
                header.insert_header("content-type", &**content_type)?;
            }
            // The body is the published `Bytes`: shared, never copied per subscriber.
            send(session, ctx, header, message.body.clone(), false).await?;
        }
        _ => {
            let mut header = header(200, ending, Some(cursor))?;
            header.insert_header("content-type", "application/json")?;
            send(session, ctx, header, batch(messages, Some(cursor)), false).await?;
        }
    }
    Ok(200)
}

/// The answer when nothing came: 204 (or an empty batch with `on_timeout: 200`).
pub async fn send_timeout(
    session: &mut Session,
    ctx: &mut RequestCtx,
    ending: &Ending<'_>,
    cursor: Option<&Cursor>,
    close: bool,
) -> Result<u16> {
    if ending.settings.on_timeout == conf::OnTimeout::EmptyBatch {
        let mut header = header(200, ending, cursor)?;
        header.insert_header("content-type", "application/json")?;
        send(session, ctx, header, batch(&[], cursor), close).await?;
        return Ok(200);
    }
    send(
        session,
        ctx,
        header(204, ending, cursor)?,
        Bytes::new(),
        close,
    )
    .await?;
    Ok(204)
}

/// `{"messages":[{"id","content_type","data"}…],"cursor":"…"}`; JSON bodies are embedded as
/// JSON, anything else as a string (lossy for non-UTF-8 bytes).
fn batch(messages: &[Message], cursor: Option<&Cursor>) -> Bytes {
    let messages: Vec<serde_json::Value> = messages
        .iter()
        .map(|message| {
            let is_json = message.content_type.as_deref().is_some_and(|t| {
                let essence = t.split(';').next().unwrap_or("").trim();
                essence == "application/json" || essence.ends_with("+json")
            });
            let data: serde_json::Value = is_json
                .then(|| serde_json::from_slice(&message.body).ok())
                .flatten()
                .unwrap_or_else(|| String::from_utf8_lossy(&message.body).into_owned().into());
            serde_json::json!({"id": message.id.to_string(), "content_type": message.content_type.as_deref(), "data": data})
        })
        .collect();
    let envelope =
        serde_json::json!({"messages": messages, "cursor": cursor.map(ToString::to_string)});
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// A JSON answer with Content-Length.
pub async fn send_json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: &serde_json::Value,
    headers: &[(&'static str, &str)],
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in headers {
        header.insert_header(*name, *value)?;
    }
    send(
        session,
        ctx,
        header,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        false,
    )
    .await
}
