//! One target of a model alias tried: the request in the provider's format, sent with the
//! provider's keys in turn (a key refused with 429 or 401 rests, the next one is tried), and
//! what the answer means — served, or on to the next target when `fallback_on` says so.

use super::errors;
use super::stream::{Labels, Stream};
use super::translate::{self, Format};
use super::Served;
use crate::core::spec::llm::{AliasSpec, ProviderSpec, Target};
use crate::core::upstream::exchange::{self, OutboundRequest, UpstreamError, MAX_BUFFERED};
use crate::exchange::Reply;
use crate::observe::metrics::METRICS;
use crate::observe::trace::SpanParent;
use bytes::Bytes;
use conf::{FallbackOn, ProviderKind};
use pingora_http::RequestHeader;
use std::time::Duration;
use tokio::time::Instant;

/// The default `anthropic-version` sent to Anthropic providers when the client sent none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What one target is tried with.
pub struct Call<'a> {
    pub route: &'a str,
    pub alias: &'a AliasSpec,
    pub target: &'a Target,
    /// The client's request, in the door's format.
    pub request: &'a serde_json::Value,
    /// Its bytes.
    pub raw: &'a [u8],
    pub door: Format,
    /// The client's `anthropic-version`, passed on to Anthropic providers.
    pub client_version: Option<&'a http::HeaderValue>,
    pub trace: Option<SpanParent>,
}

/// How trying one target ended.
pub enum Outcome {
    Served(Served),
    /// It failed in a way the alias falls back on: the next target.
    Next,
}

/// What the targets tried so far did, for the answer when all fail.
#[derive(Default)]
pub struct Tried {
    /// `provider/model` and what it answered (a status, or connect, first_byte_timeout,
    /// keys_resting).
    pub failures: Vec<(String, String)>,
    /// The soonest a resting key is back, when a target's keys were all resting.
    soonest_key: Option<Duration>,
    /// A whole answer's usage.
    pub usage: Option<translate::Usage>,
}

impl Tried {
    fn note(&mut self, target: &Target, outcome: &str) {
        let name = format!("{}/{}", target.provider.name, target.model);
        self.failures.push((name, outcome.to_owned()));
    }

    /// How long until a key is back, when every target failed for its keys: all resting, or
    /// refused with 429 until none was left.
    pub fn resting_only(&self) -> Option<Duration> {
        let all_resting = !self.failures.is_empty()
            && self
                .failures
                .iter()
                .all(|(_, outcome)| outcome == "keys_resting" || outcome == "429");
        self.soonest_key.filter(|_| all_resting)
    }
}

fn kind_format(kind: ProviderKind) -> Format {
    match kind {
        ProviderKind::Openai => Format::OpenAi,
        ProviderKind::Anthropic => Format::Anthropic,
    }
}

/// Tries `call.target`.
pub async fn try_target(call: Call<'_>, tried: &mut Tried) -> Outcome {
    let Call {
        route,
        alias,
        target,
        request,
        door,
        ..
    } = &call;
    let provider = &target.provider;
    let labels = Labels::new(route, &provider.name, &target.model);
    let provider_format = kind_format(provider.kind);
    let streams = translate::streams(request);
    let same_format = provider_format == *door;
    let stream_usage = streams && provider_format == Format::OpenAi;
    let spliced = same_format
        .then(|| translate::splice::request(call.raw, &target.model, stream_usage))
        .flatten();
    let body = match spliced {
        Some(body) => Bytes::from(body),
        None => match translate::request(request, *door, provider_format, &target.model) {
            Ok(body) => Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            Err(error) => {
                return Outcome::Served(Served::Reply(errors::translation(*door, &error)))
            }
        },
    };
    let started = Instant::now();
    // The keys in turn: one refused (429, 401) rests and the next is tried.
    let mut refused_with = None;
    loop {
        let key = match provider.keys.take() {
            Ok(key) => key,
            Err(wait) => {
                tried.soonest_key =
                    Some(tried.soonest_key.map_or(wait, |soonest| soonest.min(wait)));
                let reason = match refused_with {
                    Some(429) => "429",
                    Some(_) => "refused",
                    None => "keys_resting",
                };
                tried.note(target, reason);
                let falls_back = match refused_with {
                    Some(429) => alias.falls_back_on(FallbackOn::RateLimited),
                    // A key refused (401) or all resting: another provider may serve.
                    _ => true,
                };
                if falls_back {
                    fallback(route, provider, reason);
                    return Outcome::Next;
                }
                let reply = errors::all_failed(*door, tried);
                return Outcome::Served(Served::Reply(reply));
            }
        };
        let Some(header) = head(&call, provider, key.value, body.len(), streams) else {
            let why = format!(
                "the path for model `{}` is not a valid request path",
                target.model
            );
            return Outcome::Served(Served::Reply(errors::bad_answer(
                *door,
                &provider.name,
                &why,
            )));
        };
        let outbound = OutboundRequest {
            header,
            body: body.clone(),
            trace: call.trace.clone(),
        };
        // Pingora's shared timer, as for the proxied requests: a Tokio timer would wake the
        // runtime's thread through its eventfd on every request.
        let opened = pingora::time::timeout(
            alias.first_byte_timeout,
            exchange::open(&provider.pool, &outbound),
        )
        .await;
        let mut opened = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                exchange::count(&provider.pool, 0);
                let (reason, failure) = match error {
                    UpstreamError::Timeout(_) => {
                        ("first_byte_timeout", FallbackOn::FirstByteTimeout)
                    }
                    _ => ("connect", FallbackOn::Connect),
                };
                labels.count("unavailable");
                tried.note(target, reason);
                if alias.falls_back_on(failure) {
                    fallback(route, provider, reason);
                    return Outcome::Next;
                }
                return Outcome::Served(Served::Reply(errors::all_failed(*door, tried)));
            }
            Err(_) => {
                exchange::count(&provider.pool, 0);
                labels.count("timeout");
                tried.note(target, "first_byte_timeout");
                if alias.falls_back_on(FallbackOn::FirstByteTimeout) {
                    fallback(route, provider, "first_byte_timeout");
                    return Outcome::Next;
                }
                return Outcome::Served(Served::Reply(errors::all_failed(*door, tried)));
            }
        };
        exchange::count(&provider.pool, opened.status);
        match opened.status {
            429 | 401 | 403 => {
                let pause = retry_after(&opened.headers).unwrap_or(provider.cooldown);
                provider.keys.rest(key.index, pause);
                labels.count(if opened.status == 429 {
                    "rate_limited"
                } else {
                    "refused"
                });
                refused_with = Some(opened.status);
                continue;
            }
            status if status >= 500 => {
                labels.count("error");
                tried.note(target, &status.to_string());
                if alias.falls_back_on(FallbackOn::ServerError) {
                    fallback(route, provider, "5xx");
                    return Outcome::Next;
                }
                return Outcome::Served(Served::Reply(errors::all_failed(*door, tried)));
            }
            status if !(200..300).contains(&status) => {
                labels.count("refused");
                let body = read_body(&mut opened).await;
                let reply = errors::refused(*door, status, &provider.name, &body);
                return Outcome::Served(Served::Reply(reply));
            }
            _ => {}
        }
        if streams {
            let translator = translate::StreamTranslator::new(
                provider_format,
                *door,
                &alias.name,
                translate::wants_stream_usage(request),
            );
            let head = Reply::new(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .header("x-accel-buffering", "no")
                .streaming();
            let stream = Stream::new(opened, translator, labels, started);
            return Outcome::Served(Served::Stream(head, Box::new(stream)));
        }
        let answer = match opened.read_whole(MAX_BUFFERED).await {
            Ok(answer) => answer,
            Err(error) => {
                labels.count("error");
                tried.note(target, error.label());
                return Outcome::Served(Served::Reply(errors::all_failed(*door, tried)));
            }
        };
        if same_format {
            if let Some((body, usage)) =
                translate::splice::answer(&answer.body, &alias.name, provider_format)
            {
                return Outcome::Served(Served::Reply(served(&labels, tried, body, usage)));
            }
        }
        let parsed: serde_json::Value = match serde_json::from_slice(&answer.body) {
            Ok(parsed) => parsed,
            Err(error) => {
                labels.count("error");
                let why = format!("not JSON ({error})");
                return Outcome::Served(Served::Reply(errors::bad_answer(
                    *door,
                    &provider.name,
                    &why,
                )));
            }
        };
        let translated = translate::response(&parsed, provider_format, *door, &alias.name);
        let translated = match translated {
            Ok(translated) => translated,
            Err(error) => {
                labels.count("error");
                let why = error.to_string();
                return Outcome::Served(Served::Reply(errors::bad_answer(
                    *door,
                    &provider.name,
                    &why,
                )));
            }
        };
        let usage = translate::usage(&parsed, provider_format);
        let body = serde_json::to_vec(&translated).unwrap_or_default();
        return Outcome::Served(Served::Reply(served(&labels, tried, body, usage)));
    }
}

/// The reply of a whole answer, counted with its tokens.
fn served(
    labels: &Labels,
    tried: &mut Tried,
    body: Vec<u8>,
    usage: Option<translate::Usage>,
) -> Reply {
    labels.count("ok");
    tried.usage = usage;
    if let Some(usage) = usage {
        labels.tokens(usage);
    }
    Reply::fresh(200).with_body(
        Some(http::HeaderValue::from_static("application/json")),
        Bytes::from(body),
    )
}

/// Counts a request moved on from `provider` for `reason`.
fn fallback(route: &str, provider: &ProviderSpec, reason: &str) {
    METRICS
        .llm_fallbacks
        .with_label_values(&[route, &provider.name, reason])
        .inc();
}

/// The head of the request to `provider`: its path, host and key; JSON in, JSON or events out.
fn head(
    call: &Call<'_>,
    provider: &ProviderSpec,
    key: &http::HeaderValue,
    length: usize,
    streams: bool,
) -> Option<RequestHeader> {
    let path = provider.path(&call.target.model);
    // The path was checked at load, but `{model}` in it may make it invalid.
    let mut head = RequestHeader::build("POST", path.as_bytes(), Some(8)).ok()?;
    let accept = if streams {
        "text/event-stream"
    } else {
        "application/json"
    };
    let _ = head.insert_header(http::header::HOST, provider.host.clone());
    let _ = head.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = head.insert_header(http::header::CONTENT_LENGTH, length.to_string());
    let _ = head.insert_header(http::header::ACCEPT, accept);
    let _ = head.insert_header(
        http::header::USER_AGENT,
        concat!("holdfast/", env!("CARGO_PKG_VERSION")),
    );
    let _ = head.insert_header(provider.key_header.clone(), provider.key_value(key));
    if provider.kind == ProviderKind::Anthropic {
        let version = call
            .client_version
            .cloned()
            .unwrap_or(http::HeaderValue::from_static(ANTHROPIC_VERSION));
        let _ = head.insert_header("anthropic-version", version);
    }
    Some(head)
}

/// `Retry-After` in seconds (the form providers send).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A refusal's body (at most 64 KiB), for its message.
async fn read_body(opened: &mut exchange::Opened) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = opened.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 << 10 {
            break;
        }
    }
    body
}
