//! The gateway side of parameter mapping: adapts Pingora's request and response to the `mapping`
//! crate's model, reads bodies only when a rule needs them, and writes the rewrite back. See
//! "Mapping in the proxy path" in docs/architecture.md.

use crate::core::routes::Action;
use crate::exchange::Reply;
use crate::observe::metrics::METRICS;
use crate::pipeline::ctx::RequestCtx;
use crate::problem::Problem;
use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, TRANSFER_ENCODING,
};
use http::{HeaderName, HeaderValue, Method, Uri};
use mapping::{Body, MappingError, Request, Response, Sources};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// Pingora's retry buffer (`BODY_BUF_LIMIT` in pingora-core): the most a request body may have
/// left to read when buffering starts, for Pingora to hand the buffered body to
/// `request_body_filter`.
const RETRY_BUFFER: u64 = 64 * 1024;

/// The least a mapped response may be buffered up to (the route's `max_body` when larger).
const RESPONSE_LIMIT: u64 = 16 << 20;

/// Per-request mapping state, kept in the request context.
#[derive(Default)]
pub struct MappedState {
    /// The method to send upstream, when a rule changed it.
    method: Option<Method>,
    /// The path and query to send upstream, when a rule changed either.
    uri: Option<Uri>,
    /// Headers to replace upstream: every value of each name (none removes it).
    headers: Vec<(HeaderName, Vec<HeaderValue>)>,
    /// The body to send upstream in place of the one the gateway read.
    body: Option<Bytes>,
    /// The route has response rules that read or write the body: ask for an unencoded one.
    response_body_rules: bool,
    /// The request is a HEAD: its response has no body to map.
    head: bool,
    response: ResponseState,
}

impl MappedState {
    /// The request headers the mapping sets or removes upstream.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(name, _)| name)
    }

    /// The body the request rules made, which replaces the client's upstream.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// Whether the response is held back until its end for the body rules: its status is
    /// known for sure only then (a body that fails them may turn it into a 502).
    pub fn buffers_response(&self) -> bool {
        matches!(self.response, ResponseState::Buffer { .. })
    }
}

/// What happens to the upstream's response body.
#[derive(Default)]
enum ResponseState {
    /// Streamed through untouched.
    #[default]
    Pass,
    /// Buffered, rewritten at the end.
    Buffer {
        status: u16,
        /// The headers as the upstream sent them: what the rules see.
        headers: Vec<(String, String)>,
        body: BytesMut,
        limit: u64,
    },
    /// Replaced by this answer (its header is already in place of the upstream's).
    Replace(Bytes),
}

/// Records the mapping step's span: how many request rules the route has, and the failure
/// that refused the request.
pub fn record_span(
    span: crate::observe::trace::ChildSpan,
    mapping: &mapping::RouteMapping,
    refused: Option<&Problem>,
) {
    use crate::observe::trace::{KeyValue, SpanKind};
    let error = refused.map(|problem| std::borrow::Cow::Borrowed(problem.kind));
    span.end(
        SpanKind::Internal,
        "mapping".into(),
        || {
            let mut attributes = vec![KeyValue::new(
                "holdfast.mapping.rules",
                mapping.request.len() as i64,
            )];
            if let Some(problem) = refused {
                attributes.push(KeyValue::new("holdfast.mapping.failure", problem.kind));
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(problem.status),
                ));
            }
            attributes
        },
        error,
    );
}

/// In `request_filter`, after auth: applies the route's request rules (reading the body first
/// when a body rule needs it). `Ok(Some(problem))` refuses the request with that answer; the
/// upstream is not contacted then.
pub async fn map_request(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mapping: &mapping::RouteMapping,
    claims: Option<&serde_json::Value>,
) -> Result<Option<Problem>> {
    // Only a request that goes upstream (proxied, or called by the gateway) has something to
    // rewrite; channel routes refuse `map:` at load.
    let goes_upstream = |action: &Action| {
        matches!(
            action,
            Action::Proxy(_) | Action::Call(_) | Action::Fanin(_) | Action::Job(_) | Action::Llm(_)
        )
    };
    if !ctx
        .route
        .as_ref()
        .is_some_and(|route| goes_upstream(&route.action))
    {
        return Ok(None);
    }
    ctx.mapped.head = session.req_header().method == Method::HEAD;
    ctx.mapped.response_body_rules = mapping.response.needs_body();
    if mapping.request.is_empty() {
        return Ok(None);
    }
    let limit = ctx.route.as_ref().map_or(1 << 20, |route| route.max_body);
    let timeout = ctx.body_timeout();
    let outcome =
        rewrite_request(session, mapping, &ctx.captures, claims, (limit, timeout)).await?;
    match outcome {
        Ok(rewrite) => {
            ctx.mapped.method = rewrite.method;
            ctx.mapped.uri = rewrite.uri;
            ctx.mapped.headers = rewrite.headers;
            ctx.mapped.body = rewrite.body;
            Ok(None)
        }
        Err(problem) => {
            count_failure(ctx);
            Ok(Some(problem))
        }
    }
}

/// What the request rules decided for the upstream request.
struct Rewrite {
    method: Option<Method>,
    uri: Option<Uri>,
    headers: Vec<(HeaderName, Vec<HeaderValue>)>,
    body: Option<Bytes>,
}

async fn rewrite_request(
    session: &mut Session,
    mapping: &mapping::RouteMapping,
    captures: &[(String, String)],
    claims: Option<&serde_json::Value>,
    (limit, timeout): (u64, std::time::Duration),
) -> Result<std::result::Result<Rewrite, Problem>> {
    let header = session.req_header();
    let raw_query = header.uri.query().map(str::to_owned);
    let target = header
        .uri
        .path_and_query()
        .map_or_else(|| header.uri.path(), |pq| pq.as_str());
    let headers = header
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), lossy(value)));
    let mut request = match Request::new(header.method.as_str(), target, headers) {
        Ok(request) => request,
        Err(error) => return Ok(Err(refusal(&error))),
    };
    let has_body = !session.is_body_empty();
    if let Err(error) = mapping
        .request
        .admits(request.header("content-type"), has_body)
    {
        return Ok(Err(refusal(&error)));
    }
    let mut read = None;
    if mapping.request.needs_body() && has_body {
        match read_body(session, limit, timeout).await? {
            Ok(bytes) => {
                request.body = Body::Bytes(bytes.clone());
                read = Some(bytes);
            }
            Err(problem) => return Ok(Err(problem)),
        }
    }
    let before = request.headers.clone();
    let sources = Sources { captures, claims };
    let changed = match mapping.request.apply_lazily(&mut request, &sources) {
        Ok(changed) => changed,
        Err(error) => return Ok(Err(refusal(&error))),
    };
    let mut rewrite = Rewrite {
        method: None,
        uri: None,
        headers: Vec::new(),
        body: None,
    };
    if changed.method {
        match Method::from_bytes(request.method.as_bytes()) {
            Ok(method) => rewrite.method = Some(method),
            Err(_) => return Ok(Err(misconfigured("the rewritten method is not valid"))),
        }
    }
    if changed.path || changed.query {
        let query = if changed.query {
            Some(mapping::encode_query(&request.query)).filter(|query| !query.is_empty())
        } else {
            raw_query
        };
        let target = match query {
            Some(query) => format!("{}?{query}", request.path),
            None => request.path.clone(),
        };
        match Uri::try_from(target) {
            Ok(uri) => rewrite.uri = Some(uri),
            Err(_) => return Ok(Err(misconfigured("the rewritten path is not a valid URI"))),
        }
    }
    if changed.headers {
        for (name, values) in mapping::headers::diff(&before, &request.headers).set {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return Ok(Err(misconfigured("a rewritten header name is not valid")));
            };
            let mut parsed = Vec::with_capacity(values.len());
            for value in values {
                match HeaderValue::from_bytes(value.as_bytes()) {
                    Ok(value) => parsed.push(value),
                    Err(_) => {
                        let detail =
                            format!("the value for `header.{name}` cannot go into a header");
                        return Ok(Err(Problem::new(
                            400,
                            "mapping-failed",
                            "Request mapping failed",
                            detail,
                        )));
                    }
                }
            }
            rewrite.headers.push((name, parsed));
        }
    }
    rewrite.body = match (changed.body, request.body) {
        (true, Body::Json(value)) => Some(mapping::to_bytes(&value)),
        (true, Body::Shallow(body)) => Some(body.to_bytes()),
        (true, Body::Bytes(bytes)) => Some(bytes),
        // Read but left as it was: the bytes are consumed and must be sent again.
        _ => read,
    };
    Ok(Ok(rewrite))
}

/// Reads the whole request body, up to `limit` bytes: refused at once when `Content-Length`
/// says more, and as soon as the streamed bytes pass the limit. Turns on Pingora's retry buffer
/// for the last ≤ 64 KiB, which is what makes Pingora call `request_body_filter` for a body
/// read here (see the module's doc).
async fn read_body(
    session: &mut Session,
    limit: u64,
    timeout: std::time::Duration,
) -> Result<std::result::Result<Bytes, Problem>> {
    let header = session.req_header();
    let chunked = header.headers.contains_key(TRANSFER_ENCODING);
    let declared = header
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|_| !chunked);
    if declared.is_some_and(|length| length > limit) {
        return Ok(Err(refusal(&too_large(limit))));
    }
    let expects_continue = header
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // The client waits for a go-ahead before it sends the body: the upstream would give
        // it, but the body is read here.
        session.write_continue_response().await?;
    }
    let capacity = declared.unwrap_or(RETRY_BUFFER).min(limit);
    let mut body = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let deadline = crate::exchange::body::deadline(timeout);
    loop {
        let remaining = declared.map(|length| length.saturating_sub(body.len() as u64));
        if remaining.is_none_or(|remaining| remaining <= RETRY_BUFFER) {
            session.enable_retry_buffering();
        }
        let chunk = match crate::exchange::body::next_chunk(session, deadline).await? {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(problem) => return Ok(Err(problem)),
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(Err(refusal(&too_large(limit))));
        }
        body.extend_from_slice(&chunk);
    }
    if !session.is_body_empty() && session.get_retry_buffer().is_none() {
        return Ok(Err(Problem::new(
            411,
            "length-required",
            "Length Required",
            format!(
                "this route rewrites JSON bodies: a body over {} KiB must be sent with a Content-Length, not chunked",
                RETRY_BUFFER / 1024
            ),
        )));
    }
    Ok(Ok(body.freeze()))
}

/// In `upstream_request_filter`: writes the mapped method, path, query, headers and the framing
/// of a replaced body.
pub fn upstream_request(upstream: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
    let state = &ctx.mapped;
    if let Some(method) = &state.method {
        upstream.set_method(method.clone());
    }
    if let Some(uri) = &state.uri {
        upstream.set_uri(uri.clone());
    }
    for (name, values) in &state.headers {
        upstream.remove_header(name);
        for value in values {
            upstream.append_header(name.clone(), value.clone())?;
        }
    }
    if let Some(body) = &state.body {
        upstream.remove_header(&TRANSFER_ENCODING);
        upstream.remove_header(&EXPECT);
        upstream.insert_header(CONTENT_LENGTH, body.len())?;
    }
    if state.response_body_rules {
        // The rules read the response as JSON text, not gzip.
        upstream.remove_header(&ACCEPT_ENCODING);
    }
    Ok(())
}

/// In `request_body_filter`: swaps in the mapped body. Pingora calls this once with the end of
/// a body read in `request_filter` (on every attempt, retries included).
pub fn request_body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if let Some(mapped) = &ctx.mapped.body {
        *body = (end_of_stream && !mapped.is_empty()).then(|| mapped.clone());
    }
    Ok(())
}

/// In `upstream_response_filter`: applies the response rules to the header, and decides whether
/// the body is buffered and rewritten (response rules that touch the body, a JSON response).
pub fn upstream_response(response: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    ctx.mapped.response = ResponseState::Pass;
    let Some(mapping) = ctx.route.as_ref().and_then(|route| route.mapping.clone()) else {
        return Ok(());
    };
    let rules = &mapping.response;
    if rules.is_empty() || response.status.is_informational() {
        return Ok(());
    }
    let status = response.status.as_u16();
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), lossy(value)))
        .collect();
    let claims = ctx
        .identity
        .as_ref()
        .map(|identity| identity.claims().as_value());
    let sources = Sources {
        captures: &ctx.captures,
        claims,
    };
    let declared = header_str(response, &CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = !(ctx.mapped.head || status == 204 || status == 304 || declared == Some(0));
    let json = header_str(response, &CONTENT_TYPE).is_some_and(mapping::is_json);
    let buffer = rules.needs_body() && has_body && json;

    // The header pass: rules that touch the body see none here (they run again on the body).
    let mut model = Response::new(status, headers.clone(), Body::Empty);
    let applied = rules.apply_response(&mut model, &sources);
    match applied {
        Ok(changed) if changed.headers => write_headers(response, &headers, &model.headers)?,
        Ok(_) => {}
        // A failure that the body might settle is decided by the body pass.
        Err(_) if buffer => {}
        Err(error) => return replace(response, ctx, &error, has_body),
    }
    if !buffer {
        return Ok(());
    }
    let encoded = header_str(response, &CONTENT_ENCODING)
        .is_some_and(|encoding| !encoding.trim().eq_ignore_ascii_case("identity"));
    if encoded {
        let error = MappingError::Upstream(Box::new(MappingError::InvalidJson(
            "the body is compressed (Content-Encoding)".to_owned(),
        )));
        return replace(response, ctx, &error, has_body);
    }
    let limit = ctx
        .route
        .as_ref()
        .map_or(RESPONSE_LIMIT, |route| route.max_body.max(RESPONSE_LIMIT));
    if declared.is_some_and(|length| length > limit) {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let error = MappingError::Upstream(Box::new(MappingError::TooLarge { limit }));
        return replace(response, ctx, &error, has_body);
    }
    // The rewritten body's length is known only at its end, after the header went out.
    response.remove_header(&CONTENT_LENGTH);
    response.insert_header(TRANSFER_ENCODING, "chunked")?;
    ctx.mapped.response = ResponseState::Buffer {
        status,
        headers,
        body: BytesMut::with_capacity(
            usize::try_from(declared.unwrap_or(8192).min(limit)).unwrap_or(0),
        ),
        limit,
    };
    Ok(())
}

/// In `response_body_filter`: buffers and rewrites the response body when it is mapped, or
/// sends the problem that replaced the upstream's answer.
pub fn response_body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    match std::mem::take(&mut ctx.mapped.response) {
        ResponseState::Pass => Ok(()),
        ResponseState::Replace(problem) => {
            *body = end_of_stream.then(|| problem.clone());
            ctx.mapped.response = ResponseState::Replace(problem);
            Ok(())
        }
        ResponseState::Buffer {
            status,
            headers,
            body: mut buffered,
            limit,
        } => {
            if let Some(chunk) = body.take() {
                if (buffered.len() + chunk.len()) as u64 > limit {
                    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                    let error = MappingError::Upstream(Box::new(MappingError::TooLarge { limit }));
                    return abort(ctx, &error);
                }
                buffered.extend_from_slice(&chunk);
            }
            if !end_of_stream {
                ctx.mapped.response = ResponseState::Buffer {
                    status,
                    headers,
                    body: buffered,
                    limit,
                };
                return Ok(());
            }
            let bytes = buffered.freeze();
            let Some(mapping) = ctx.route.as_ref().and_then(|route| route.mapping.clone()) else {
                *body = Some(bytes);
                return Ok(());
            };
            let mut model = Response::new(status, headers, Body::Bytes(bytes.clone()));
            let claims = ctx
                .identity
                .as_ref()
                .map(|identity| identity.claims().as_value());
            let sources = Sources {
                captures: &ctx.captures,
                claims,
            };
            match mapping.response.apply_response(&mut model, &sources) {
                Ok(changed) => {
                    *body = Some(match (changed.body, model.body) {
                        (true, Body::Json(value)) => mapping::to_bytes(&value),
                        (true, Body::Bytes(changed)) => changed,
                        _ => bytes,
                    });
                    Ok(())
                }
                Err(error) => abort(ctx, &error),
            }
        }
    }
}

/// Replaces the upstream's answer, whose header is still unsent, by a 502 problem — without
/// its body when the upstream's answer has none (Pingora then calls no body filter).
fn replace(
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
    error: &MappingError,
    has_body: bool,
) -> Result<()> {
    count_failure(ctx);
    let trace = crate::pipeline::logging::trace_ids(ctx);
    tracing::warn!(route = ctx.route_name(), %error, %trace, "cannot map the upstream's response");
    let mut reply = Reply::problem(&refusal(error));
    if !has_body {
        reply.body = Bytes::new();
    }
    *response = reply.response_header()?;
    ctx.mapped.response = ResponseState::Replace(reply.body);
    Ok(())
}

/// Ends a response whose body failed the rules: never delivered unmapped.
fn abort(ctx: &mut RequestCtx, error: &MappingError) -> Result<()> {
    count_failure(ctx);
    ctx.mapped.response = ResponseState::Pass;
    let trace = crate::pipeline::logging::trace_ids(ctx);
    tracing::warn!(route = ctx.route_name(), %error, %trace, "cannot map the upstream's response body");
    // A 502 when Pingora has not flushed the upstream's header yet (it filters the header and
    // the first body chunks together); a cut-short answer otherwise.
    Error::e_explain(
        ErrorType::HTTPStatus(502),
        format!("mapping the upstream's response: {error}"),
    )
}

/// Brings the response's headers from `before` to `after`.
fn write_headers(
    response: &mut ResponseHeader,
    before: &[(String, String)],
    after: &[(String, String)],
) -> Result<()> {
    for (name, values) in mapping::headers::diff(before, after).set {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        response.remove_header(&name);
        for value in values {
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                response.append_header(name.clone(), value)?;
            }
        }
    }
    Ok(())
}

fn header_str<'a>(response: &'a ResponseHeader, name: &HeaderName) -> Option<&'a str> {
    response.headers.get(name).and_then(|v| v.to_str().ok())
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn too_large(limit: u64) -> MappingError {
    MappingError::TooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

/// The problem+json answer for a mapping error: its status, title and detail.
fn refusal(error: &MappingError) -> Problem {
    let kind = match error {
        MappingError::Rule { .. } if error.status() == 500 => "mapping-misconfigured",
        MappingError::Rule { .. } => "mapping-failed",
        MappingError::InvalidJson(_) => "invalid-json",
        MappingError::TooLarge { .. } => "body-too-large",
        MappingError::InvalidQuery(_) => "invalid-query",
        MappingError::UnsupportedMediaType(_) => "unsupported-media-type",
        MappingError::Upstream(_) => "upstream-mapping-failed",
    };
    Problem::new(error.status(), kind, error.title(), error.detail())
}

fn misconfigured(detail: &str) -> Problem {
    Problem::new(
        500,
        "mapping-misconfigured",
        "Mapping misconfigured",
        detail,
    )
}

fn count_failure(ctx: &RequestCtx) {
    METRICS
        .mapping_failures
        .with_label_values(&[ctx.route_name()])
        .inc();
}
