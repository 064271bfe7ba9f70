//! A channel route compiled at load: the channel-name template resolved into parts that the
//! request path only fills in (captures, query values, headers, claims).

use conf::{Template, TemplatePart};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// Where one piece of a channel name comes from.
#[derive(Debug)]
pub enum NamePart {
    Literal(String),
    Capture(String),
    Query(String),
    Header(http::HeaderName),
    Claim(String),
}

/// A `longpoll` or `publish` route's channel, ready for the request path.
#[derive(Debug)]
pub struct ChannelSpec {
    pub mode: conf::ChannelMode,
    pub name: Vec<NamePart>,
}

impl ChannelSpec {
    /// Compiles `template` (already checked by `conf::validate`).
    pub fn compile(template: &str, mode: conf::ChannelMode) -> Result<Self, String> {
        let parsed = Template::parse(template)?;
        let name = parsed
            .parts
            .into_iter()
            .map(|part| match part {
                TemplatePart::Literal(text) => Ok(NamePart::Literal(text)),
                TemplatePart::Source(source) => Ok(match source.split_once('.') {
                    Some(("query", name)) => NamePart::Query(name.to_owned()),
                    Some(("header", name)) => NamePart::Header(
                        http::HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| format!("`{name}` is not a header name"))?,
                    ),
                    Some(("claim", path)) => NamePart::Claim(path.to_owned()),
                    _ => NamePart::Capture(source),
                }),
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { mode, name })
    }
}

/// A `longpoll` route, compiled.
#[derive(Debug)]
pub struct LongPollSpec {
    pub channel: ChannelSpec,
    pub settings: conf::LongPoll,
    /// Polls held on this route now (for `max_held`); each held poll keeps a handle to it.
    pub held: Arc<AtomicUsize>,
}

/// A `publish` route, compiled.
#[derive(Debug)]
pub struct PublishSpec {
    pub channel: ChannelSpec,
}

/// Whether `origin` may call a route with these CORS settings, and the value to allow it with.
pub fn allowed_origin<'a>(cors: &conf::Cors, origin: &'a str) -> Option<&'a str> {
    let any = cors.origins.iter().any(|allowed| allowed == "*");
    if any && !cors.credentials {
        return Some("*");
    }
    (any || cors.origins.iter().any(|allowed| allowed == origin)).then_some(origin)
}
