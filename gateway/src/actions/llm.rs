//! `llm` routes: one OpenAI- and Anthropic-compatible front door over many model providers.
//! The door is the request's path (`…/chat/completions`, `…/messages`, `…/models`); the
//! request's `model` names an alias, whose targets are tried in order — the one chosen by
//! weight, then the fallbacks — with the provider's keys in turn. A streamed answer goes to the
//! client piece by piece ([`Stream`]); a whole one is translated at once.

mod attempt;
pub mod errors;
pub mod kept;
pub mod stream;
pub mod translate;

use crate::actions::{resume, Admitted};
use crate::core::spec::llm::cache::{Cached, Lookup};
use crate::core::spec::llm::{AliasSpec, LlmSpec};
use crate::exchange::{body, Exchange, Reply};
use crate::limits;
use crate::observe::trace::SpanParent;
use crate::problem::Problem;
use attempt::Tried;
use pingora_error::Result;
use std::sync::Arc;
pub use stream::Stream;
use translate::Format;

/// How an `llm` request is answered.
pub enum Served {
    /// At once.
    Reply(Reply),
    /// By a stream: its head, then the provider's events as they come.
    Stream(Reply, Box<Stream>),
    /// By a stream of kept events (a resumable answer): its head, then the events.
    Follow(Reply, resume::Follower),
    /// Not at all: the client left while its request was held.
    Gone,
}

/// What the access log records of an `llm` request: the provider and model that served it
/// (or were tried last), its tokens, and how many targets failed before.
#[derive(Debug, Default)]
pub struct Record {
    pub provider: String,
    pub model: String,
    pub usage: Option<translate::Usage>,
    pub fallbacks: usize,
    /// The model's price, when `llm.prices` has it.
    pub price: Option<conf::Price>,
}

impl Record {
    /// What `usage` cost at this record's model.
    pub fn cost(&self, usage: translate::Usage) -> limits::Cost {
        cost(self.price, usage)
    }
}

/// What `usage` cost at `price`: tokens, and micro-dollars.
fn cost(price: Option<conf::Price>, usage: translate::Usage) -> limits::Cost {
    limits::Cost {
        tokens: usage.input + usage.output,
        spend: crate::core::spec::llm::cost(price, usage.input, usage.output),
    }
}

/// The door a request came in by.
enum Door {
    Chat(Format),
    Models,
}

fn door(head: &pingora_http::RequestHeader) -> Option<Door> {
    let path = head.uri.path().trim_end_matches('/');
    match (&head.method, path) {
        (&http::Method::POST, path) if path.ends_with("/chat/completions") => {
            Some(Door::Chat(Format::OpenAi))
        }
        (&http::Method::POST, path) if path.ends_with("/messages") => {
            Some(Door::Chat(Format::Anthropic))
        }
        (&http::Method::GET, path) if path.ends_with("/models") => Some(Door::Models),
        _ => None,
    }
}

/// The route's token quotas and whom a request is charged to.
pub struct Quota<'a> {
    pub limiter: &'a Arc<limits::Limiter>,
    pub trusted: &'a limits::TrustedProxies,
    pub limits: &'a Arc<limits::RouteLimits>,
    pub route: &'a Arc<str>,
    pub peer: Option<std::net::IpAddr>,
    pub identity: Option<&'a auth::Identity>,
}

/// How an `llm` request was served, what the access log records of it, and the token charge
/// to correct once its usage is known.
pub type Outcome = (Served, Option<Record>, Option<limits::TokenCharge>);

/// Serves an `llm` route's request.
pub async fn serve(
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LlmSpec,
    quota: Option<Quota<'_>>,
) -> Result<Outcome> {
    if spec.resumable.is_some() {
        if let Some(id) = kept::wanted(exchange.head()) {
            let id = id.to_owned();
            let owner = admitted.owner();
            let route = &admitted.route.name;
            let asked = resume::Asked::AtItsPath;
            let resumed = resume::resume(exchange, route, owner.as_deref(), &id, asked);
            let served = match resumed.await {
                resume::Resumed::Reply(reply) => Served::Reply(reply),
                resume::Resumed::Follow(head, follower) => Served::Follow(head, follower),
                resume::Resumed::Gone => Served::Gone,
            };
            return Ok((served, None, None));
        }
    }
    let settle_in = quota
        .as_ref()
        .map(|quota| (quota.limiter.clone(), quota.limits.clone()));
    let asked = match read(exchange, admitted, spec).await? {
        Ok(asked) => asked,
        Err(reply) => return Ok((Served::Reply(reply), None, None)),
    };
    let charge = match quota {
        Some(quota) => {
            let subject = limits::Subject {
                route: quota.route,
                peer: quota.peer,
                headers: &exchange.head().headers,
                identity: quota.identity,
            };
            let charged = limits::charge_tokens(
                quota.limiter,
                quota.trusted,
                quota.limits,
                &subject,
                asked.estimate(),
            );
            match charged.await {
                Ok(charge) => Some(charge),
                Err(problem) => return Ok((Served::Reply(Reply::problem(&problem)), None, None)),
            }
        }
        None => None,
    };
    let (served, record) = answer(exchange, admitted, spec, &asked).await;
    let (served, charge) = match (served, spec.resumable) {
        (Served::Stream(head, stream), Some(ttl)) => {
            // The answer outlives the client's request: its charge is settled when it ends.
            let price = record.as_ref().and_then(|record| record.price);
            let on_end = charge
                .zip(settle_in)
                .map(|(charge, (limiter, limits))| settle_later(limiter, limits, charge, price));
            let (id, follower) = kept::detach(stream, ttl, admitted.owner(), on_end);
            let head = kept::head(head, exchange.head(), &id, asked.format);
            (Served::Follow(head, follower), None)
        }
        (served, _) => (served, charge),
    };
    Ok((served, record, charge))
}

/// Settles `charge` once a kept answer's usage is known (without usage, at the estimate).
fn settle_later(
    limiter: Arc<limits::Limiter>,
    limits: Arc<limits::RouteLimits>,
    charge: limits::TokenCharge,
    price: Option<conf::Price>,
) -> resume::OnEnd {
    Box::new(move |usage: Option<translate::Usage>| {
        Box::pin(async move {
            let used = usage.map(|usage| cost(price, usage));
            limits::settle_tokens(&limiter, &limits, charge, used).await;
        })
    })
}

/// Answers a request read and charged: from the route's cache, or from its models.
async fn answer(
    exchange: &impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LlmSpec,
    asked: &Asked,
) -> (Served, Option<Record>) {
    let trace = admitted.trace.map(|trace| trace.server.clone());
    let route = &admitted.route.name;
    let mut record = None;
    let Some(cache) = &spec.cache else {
        let served = ask(asked, route, trace, &mut record).await;
        return (served, record);
    };
    let cache_control = exchange.head().headers.get(http::header::CACHE_CONTROL);
    let door = match asked.format {
        Format::OpenAi => "openai",
        Format::Anthropic => "anthropic",
    };
    let lookup = cache.lookup(door, &asked.alias.name, &asked.request, cache_control);
    let (filler, result) = match lookup.await {
        Lookup::Hit(cached) => return (Served::Reply(replay(&cached)), None),
        Lookup::Bypass => (None, "bypass"),
        Lookup::Miss(filler) => (filler, "miss"),
    };
    let served = match ask(asked, route, trace, &mut record).await {
        Served::Reply(reply) => {
            if let (Some(filler), 200) = (filler, reply.status) {
                let cached = Cached {
                    streamed: false,
                    body: reply.body.clone(),
                };
                filler.fill(cached).await;
            }
            Served::Reply(reply.header(CACHE_HEADER, result))
        }
        Served::Stream(head, mut stream) => {
            if let Some(filler) = filler {
                stream.record_into(filler);
            }
            Served::Stream(head.header(CACHE_HEADER, result), stream)
        }
        // Asking answers with a reply or the provider's stream; nothing else is kept.
        served => served,
    };
    (served, record)
}

/// Says whether the answer came from the route's cache (`hit`), was asked and kept (`miss`),
/// or could not be (`bypass`).
const CACHE_HEADER: &str = "holdfast-cache";

/// A kept answer, as it was: the stream's events (with a length: they are all here) or the
/// JSON.
fn replay(cached: &Cached) -> Reply {
    let (content_type, cache_control) = if cached.streamed {
        ("text/event-stream", "no-cache")
    } else {
        ("application/json", "no-store")
    };
    Reply::new(200)
        .with_body(
            Some(http::HeaderValue::from_static(content_type)),
            cached.body.clone(),
        )
        .header("cache-control", cache_control)
        .header(CACHE_HEADER, "hit")
}

/// A chat request read and checked, with the alias it names: what the targets are asked.
pub struct Asked {
    request: serde_json::Value,
    /// The request's bytes (after the route's mapping), which a provider of the client's own
    /// format gets with only `model` changed.
    raw: bytes::Bytes,
    pub format: Format,
    alias: Arc<AliasSpec>,
    /// The client's `anthropic-version`, passed on to Anthropic providers.
    client_version: Option<http::HeaderValue>,
}

/// The answer's tokens a request is charged before its usage is known, when it gives no
/// `max_tokens` (nor `max_completion_tokens`).
const DEFAULT_ANSWER_TOKENS: u64 = 1024;

impl Asked {
    /// The client asked for a streamed answer.
    pub fn streams(&self) -> bool {
        translate::streams(&self.request)
    }

    /// What the request is charged before its usage is known: its input at four bytes a
    /// token (the usual rate of English text; JSON's punctuation makes it an overestimate) and
    /// its answer's limit, in tokens, and what they would cost at the dearest of the alias's
    /// models.
    pub fn estimate(&self) -> limits::Cost {
        let input = self.raw.len() as u64 / 4;
        let answer = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|field| self.request.get(*field).and_then(serde_json::Value::as_u64))
            .unwrap_or(DEFAULT_ANSWER_TOKENS);
        limits::Cost {
            tokens: input.saturating_add(answer),
            spend: self.alias.most_cost(input, answer),
        }
    }
}

/// Reads the request of an `llm` route: `Err` is the reply when there is nothing to ask the
/// models — the list of models, a path that is no door, a body that is not the door's format,
/// an unknown model.
pub async fn read(
    exchange: &mut impl Exchange,
    admitted: &Admitted<'_>,
    spec: &LlmSpec,
) -> Result<Result<Asked, Reply>> {
    let head = exchange.head();
    let Some(door) = door(head) else {
        let what = format!("{} {}", head.method, head.uri.path());
        let problem = Problem::not_found(&what).with_member(
            "doors",
            serde_json::json!(["POST …/chat/completions", "POST …/messages", "GET …/models"]),
        );
        return Ok(Err(Reply::problem(&problem)));
    };
    let format = match door {
        Door::Models => return Ok(Err(models(spec))),
        Door::Chat(format) => format,
    };
    let client_version = head.headers.get("anthropic-version").cloned();
    let read = body::read_whole(exchange, admitted.route.max_body, admitted.body_timeout).await?;
    let raw = match read {
        Ok(raw) => admitted.mapped_body.cloned().unwrap_or(raw),
        Err(problem) => return Ok(Err(Reply::problem(&problem))),
    };
    let request: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(request) => request,
        Err(error) => {
            let problem = errors::bad_request(format, "body", &format!("not JSON: {error}"));
            return Ok(Err(problem));
        }
    };
    if let Err(error) = translate::validate(&request, format) {
        return Ok(Err(errors::translation(format, &error)));
    }
    let asked = request
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let Some(alias) = spec.alias(asked) else {
        return Ok(Err(errors::unknown_model(format, asked, spec)));
    };
    Ok(Ok(Asked {
        alias: alias.clone(),
        request,
        raw,
        format,
        client_version,
    }))
}

/// Asks the alias's targets in turn — the one chosen by weight, then the fallbacks — until one
/// serves; `record` keeps the last one tried.
pub async fn ask(
    asked: &Asked,
    route: &str,
    trace: Option<SpanParent>,
    record: &mut Option<Record>,
) -> Served {
    let alias = &asked.alias;
    let mut tried = Tried::default();
    for target in alias.attempts() {
        let outcome = attempt::try_target(
            attempt::Call {
                route,
                alias,
                target,
                request: &asked.request,
                raw: &asked.raw,
                door: asked.format,
                client_version: asked.client_version.as_ref(),
                trace: trace.clone(),
            },
            &mut tried,
        )
        .await;
        *record = Some(Record {
            provider: target.provider.name.to_string(),
            model: target.model.clone(),
            usage: tried.usage,
            fallbacks: tried.failures.len(),
            price: target.price,
        });
        match outcome {
            attempt::Outcome::Served(served) => return served,
            attempt::Outcome::Next => continue,
        }
    }
    Served::Reply(errors::all_failed(asked.format, &tried))
}

/// `GET …/models`: the route's aliases, in OpenAI's list format (Anthropic's SDK reads the
/// same `data` array of `id`s).
pub fn models(spec: &LlmSpec) -> Reply {
    let data: Vec<serde_json::Value> = spec
        .names()
        .map(|name| {
            serde_json::json!({
                "id": name,
                "object": "model",
                "type": "model",
                "display_name": name,
                "created": 0,
                "created_at": "1970-01-01T00:00:00Z",
                "owned_by": "holdfast",
            })
        })
        .collect();
    let first = data
        .first()
        .and_then(|m| m["id"].as_str())
        .map(str::to_owned);
    let last = data
        .last()
        .and_then(|m| m["id"].as_str())
        .map(str::to_owned);
    Reply::json(
        200,
        &serde_json::json!({
            "object": "list",
            "data": data,
            "has_more": false,
            "first_id": first,
            "last_id": last,
        }),
    )
}
