//! Long-poll channel settings: the `longpoll` and `publish` route actions and the instance-wide
//! `channels` defaults (buffer bounds, caps).

use crate::{ByteSize, Duration};
use serde::Deserialize;

/// `longpoll:` on a route — hold the request until the channel has a message for it.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LongPoll {
    /// The channel name: a constant or a template of `{capture}`, `{query.NAME}`,
    /// `{header.NAME}` and `{claim.PATH}` (e.g. `user:{claim.sub}`).
    pub channel: String,
    #[serde(default)]
    pub mode: ChannelMode,
    /// The longest hold; a client may ask for less with `?wait=`.
    #[serde(default = "default_hold")]
    pub timeout: Duration,
    #[serde(default)]
    pub start: StartAt,
    #[serde(default)]
    pub format: PollFormat,
    /// Most messages in one batch answer.
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Held polls allowed on this route at once; past it: 503 with `Retry-After`. Streams
    /// (Server-Sent Events) count as held polls.
    #[serde(default)]
    pub max_held: Option<usize>,
    /// The transports a subscriber may use: `longpoll`, `sse` (`Accept: text/event-stream`)
    /// and `websocket`. Default: all of them.
    #[serde(default = "Transport::all")]
    pub subscribe: Vec<Transport>,
    /// How often an idle stream gets a comment line, so proxies and clients keep it open.
    #[serde(default = "default_keepalive")]
    pub keepalive: Duration,
    /// Bytes of messages a stream or socket subscriber may have waiting while its earlier
    /// writes have not gone out; past it the subscriber is closed as too slow (and counted), so
    /// a client that stops reading costs a bounded amount and slows nobody else.
    #[serde(default = "default_max_lag")]
    pub max_lag: ByteSize,
    /// WebSocket subscribers may publish to the channel: each text or binary message they send
    /// is published, as a `publish` route's request body would be (the route's `max_body` and
    /// rate limits apply to each).
    #[serde(default)]
    pub publish: bool,
}

fn default_hold() -> Duration {
    Duration::from_secs(30)
}

fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}

fn default_max_lag() -> ByteSize {
    ByteSize::mib(1)
}

/// A way for a subscriber to receive a channel's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One message (or batch) per request, held until there is one.
    Longpoll,
    /// Server-Sent Events: one response, one event per message.
    Sse,
    /// WebSocket: one frame per message.
    Websocket,
}

impl Transport {
    pub fn all() -> Vec<Transport> {
        vec![Transport::Longpoll, Transport::Sse, Transport::Websocket]
    }

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Longpoll => "longpoll",
            Transport::Sse => "sse",
            Transport::Websocket => "websocket",
        }
    }
}

fn default_limit() -> usize {
    100
}

/// `publish:` on a route — append the request body to a channel.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The channel name, a constant or template as for `longpoll`.
    pub channel: String,
    #[serde(default)]
    pub mode: ChannelMode,
}

/// How a channel hands out messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// Every subscriber sees every message, in order, from a bounded buffer with cursors.
    #[default]
    Broadcast,
    /// Each message goes to exactly one poller, the longest-waiting first.
    Queue,
}

/// Where a poll without a cursor starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Wait for the next message.
    #[default]
    Newest,
    /// Replay the buffer from its oldest message.
    Oldest,
}

/// How a poll answer carries its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PollFormat {
    /// One message, its body as published, with its content type.
    #[default]
    Raw,
    /// `{"messages":[…],"cursor":"…"}` with everything available up to `limit`.
    Batch,
    /// Polls answer as `batch`; a WebSocket subscriber gets each message as one text frame
    /// `{"id","cursor","content_type","data"}`.
    Envelope,
}

/// What a poll that waited in vain gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnTimeout {
    /// `204 No Content` with the unchanged cursor (the seeds' contract).
    #[default]
    NoContent,
    /// `200` with an empty batch.
    EmptyBatch,
}

impl<'de> Deserialize<'de> for OnTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u16::deserialize(deserializer)? {
            204 => Ok(OnTimeout::NoContent),
            200 => Ok(OnTimeout::EmptyBatch),
            other => Err(serde::de::Error::custom(format!(
                "on_timeout must be 204 or 200, not {other}"
            ))),
        }
    }
}

/// Instance-wide channel settings.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Channels {
    /// Messages a broadcast channel keeps for cursors to resume from.
    pub buffer_messages: usize,
    /// Bytes a broadcast channel keeps.
    pub buffer_bytes: ByteSize,
    /// Age after which a buffered message is dropped.
    pub buffer_age: Duration,
    /// Messages a queue channel keeps while nobody polls; past it, publish answers 507.
    pub queue_max_messages: usize,
    /// Held polls allowed on this instance at once (all routes); past it: 503.
    pub max_held: usize,
    /// Longest channel name, after template expansion; longer: 400.
    pub max_name_length: usize,
    /// Channels idle for this long with no buffer and no waiters are forgotten.
    pub idle_expiry: Duration,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            buffer_messages: 1000,
            buffer_bytes: ByteSize::mib(8),
            buffer_age: Duration::from_secs(600),
            queue_max_messages: 10_000,
            max_held: 19_000,
            max_name_length: 200,
            idle_expiry: Duration::from_secs(600),
        }
    }
}
