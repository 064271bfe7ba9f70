//! A channel route compiled at load: the channel-name template resolved into parts that the
//! request path only fills in (captures, query values, headers, claims).

use crate::observe::metrics::METRICS;
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
    /// The route's stream and socket subscribers' metrics.
    pub sse: Arc<SubscriberMetrics>,
    pub websocket: Arc<SubscriberMetrics>,
}

impl LongPollSpec {
    pub fn compile(route: &str, channel: ChannelSpec, settings: conf::LongPoll) -> Self {
        let route: Arc<str> = Arc::from(route);
        Self {
            channel,
            settings,
            held: Default::default(),
            sse: Arc::new(SubscriberMetrics::new(&route, conf::Transport::Sse)),
            websocket: Arc::new(SubscriberMetrics::new(&route, conf::Transport::Websocket)),
        }
    }

    /// The metrics of this route's subscribers by `transport` (streams' for anything but
    /// WebSocket: polls are counted elsewhere).
    pub fn subscriber_metrics(&self, transport: conf::Transport) -> &Arc<SubscriberMetrics> {
        match transport {
            conf::Transport::Websocket => &self.websocket,
            conf::Transport::Sse | conf::Transport::Longpoll => &self.sse,
        }
    }
}

/// One route's metrics for subscribers by one transport, looked up once at load: a delivery
/// counts without hashing its labels.
#[derive(Debug)]
pub struct SubscriberMetrics {
    pub route: Arc<str>,
    pub subscribers: prometheus::IntGauge,
    pub delivered: prometheus::IntCounter,
    pub resets: prometheus::IntCounter,
    pub slow: prometheus::IntCounter,
}

impl SubscriberMetrics {
    fn new(route: &Arc<str>, transport: conf::Transport) -> Self {
        let labels = [&**route, transport.as_str()];
        Self {
            route: route.clone(),
            subscribers: METRICS.subscribers.with_label_values(&labels),
            delivered: METRICS.messages_delivered.with_label_values(&labels),
            resets: METRICS.stream_resets.with_label_values(&[&**route]),
            slow: METRICS.slow_subscribers.with_label_values(&labels),
        }
    }
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
