//! The Lua scripts the Redis backplane runs, their arguments, and the decoding of what they and
//! the queue list return. Scripts make each publish atomic (append, trim, wake-up in id order)
//! and each read consistent (trim state and entries from one instant).

use super::super::cursor::Cursor;
use super::super::message::Message;
use super::super::HubError;
use ::redis::{Cmd, Script, ScriptInvocation, Value};
use bytes::Bytes;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// KEYS[1] stream. ARGV: 1 max length, 2 max age in ms (0: none), 3 key TTL in ms, 4 notify
/// channel, 5 wake-up payload, 6 body, 7 content type ('' for none), 8 publish time in ms, 9
/// event name ('' for none), 10 the wake-up command (`PUBLISH`, or `SPUBLISH` in a cluster).
/// Returns {id, instances listening}.
///
/// Trims with `XDEL` of the oldest entries rather than `MAXLEN`/`MINID`: Redis (7.0) records
/// `max-deleted-entry-id` for `XDEL` only, and that is what tells a gone cursor from one that
/// lost nothing. At most 1,000 entries go per publish, so shrinking the bounds on a big stream
/// never blocks Redis for long.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local fields = {'b', ARGV[6], 't', ARGV[8]}
if ARGV[7] ~= '' then
  table.insert(fields, 'c')
  table.insert(fields, ARGV[7])
end
if ARGV[9] ~= '' then
  table.insert(fields, 'e')
  table.insert(fields, ARGV[9])
end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
local function drop(entries)
  if #entries > 0 then
    local ids = {}
    for i, entry in ipairs(entries) do ids[i] = entry[1] end
    redis.call('XDEL', KEYS[1], unpack(ids))
  end
end
local excess = math.min(redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1]), 1000)
if excess > 0 then
  drop(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess))
end
if tonumber(ARGV[2]) > 0 then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[2])
  if oldest > 0 then
    drop(redis.call('XRANGE', KEYS[1], '-', string.format('(%.0f-0', oldest), 'COUNT', 1000))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {id, redis.call(ARGV[10], ARGV[4], ARGV[5])}
"#,
    )
});

/// KEYS[1] list, KEYS[2] id counter. ARGV: 1 max length, 2 notify channel, 3 wake-up payload,
/// 4 the item without its id, 5 the wake-up command. Returns {id, instances listening}, or
/// {'', -1} when full.
static PUBLISH_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return {'', -1}
end
local seq = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 60000)
local now = redis.call('TIME')
local id = string.format('%.0f-%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), seq)
redis.call('LPUSH', KEYS[1], id .. '\n' .. ARGV[4])
return {id, redis.call(ARGV[5], ARGV[2], ARGV[3])}
"#,
    )
});

/// KEYS[1] stream. ARGV: 1 cursor ('' for the trim state only), 2 count.
/// Returns {0, Redis' clock in ms} for no stream, else {1, last id, max deleted id, first id or
/// '', entries}.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = redis.call('TIME')
  return {0, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted, first = '0-0', '', ''
for i = 1, #info, 2 do
  local field = info[i]
  if field == 'last-generated-id' then
    last = info[i + 1]
  elseif field == 'max-deleted-entry-id' then
    deleted = info[i + 1]
  elseif field == 'first-entry' then
    local entry = info[i + 1]
    if entry then first = entry[1] end
  end
end
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return {1, last, deleted, first, entries}
"#,
    )
});

/// A publish script's call: `EVALSHA` (sent in a pipeline, with a `WAIT` after it when the
/// publish must be replicated), and the script to load when Redis answers `NOSCRIPT`.
pub(crate) struct ScriptCall {
    pub(crate) evalsha: Cmd,
    pub(crate) script: &'static Script,
}

impl ScriptCall {
    fn new(script: &'static Script, keys: &[&str]) -> Self {
        let mut evalsha = ::redis::cmd("EVALSHA");
        evalsha.arg(script.get_hash()).arg(keys.len()).arg(keys);
        Self { evalsha, script }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn publish_broadcast(
    stream: &str,
    max_len: usize,
    max_age_ms: u64,
    ttl_ms: u64,
    wake: (&str, &str),
    payload: &str,
    body: &[u8],
    content_type: Option<&str>,
    event: Option<&str>,
    published_ms: u64,
) -> ScriptCall {
    let mut call = ScriptCall::new(&PUBLISH, &[stream]);
    call.evalsha
        .arg(max_len)
        .arg(max_age_ms)
        .arg(ttl_ms)
        .arg(wake.1)
        .arg(payload)
        .arg(body)
        .arg(content_type.unwrap_or(""))
        .arg(published_ms)
        .arg(event.unwrap_or(""))
        .arg(wake.0);
    call
}

pub(crate) fn publish_queue(
    list: &str,
    seq: &str,
    max_len: usize,
    wake: (&str, &str),
    payload: &str,
    item: &[u8],
) -> ScriptCall {
    let mut call = ScriptCall::new(&PUBLISH_QUEUE, &[list, seq]);
    call.evalsha
        .arg(max_len)
        .arg(wake.1)
        .arg(payload)
        .arg(item)
        .arg(wake.0);
    call
}

pub(crate) fn read<'a>(stream: &str, after: Option<Cursor>, limit: usize) -> ScriptInvocation<'a> {
    let mut invocation = READ.prepare_invoke();
    invocation
        .key(stream)
        .arg(after.map(|c| c.to_string()).unwrap_or_default())
        .arg(limit.max(1));
    invocation
}

/// What one `READ` returned.
#[derive(Debug, Default)]
pub(crate) struct StreamRead {
    /// There is a stream (a channel with history, its `last` known).
    pub exists: bool,
    /// Without a stream: Redis' clock in ms at the read, which numbers the next message.
    pub clock_ms: Option<u64>,
    /// The newest id the stream ever gave out (`0-0` if there is no stream).
    pub last: Cursor,
    /// The greatest id trimmed so far (`0-0`: none); `None` on Redis < 7.0, which does not say.
    pub max_deleted: Option<Cursor>,
    /// The oldest entry still held.
    pub first: Option<Cursor>,
    pub messages: Vec<Message>,
}

impl StreamRead {
    /// Where a poll without a cursor starts.
    pub(crate) fn start(&self, start: conf::StartAt) -> Cursor {
        match (start, self.first) {
            (conf::StartAt::Oldest, Some(first)) => first.pred(),
            _ => self.last,
        }
    }

    /// Refuses a cursor past every id the channel gave out: the next message would get a smaller
    /// id and the poll would never see it. Without a stream (a new or expired channel) there is
    /// no last id, and the next one comes from Redis' clock: a cursor ahead of that is refused.
    pub(crate) fn check_cursor(&self, cursor: Cursor) -> Result<(), HubError> {
        let ahead = if self.exists {
            cursor > self.last
        } else {
            self.clock_ms.is_some_and(|clock| cursor.ms > clock)
        };
        if !ahead {
            return Ok(());
        }
        Err(HubError::CursorAhead {
            cursor,
            newest: self.exists.then_some(self.last),
        })
    }

    /// `Some(oldest valid cursor)` if messages after `cursor` were trimmed.
    pub(crate) fn gone(&self, cursor: Cursor) -> Option<Cursor> {
        let gone = match (self.max_deleted, self.first) {
            (Some(deleted), _) => cursor < deleted,
            // Redis < 7 does not say what it trimmed: a gap before the first entry counts.
            (None, Some(first)) => cursor < first.pred(),
            (None, None) => false,
        };
        gone.then(|| self.start(conf::StartAt::Oldest))
    }

    pub(crate) fn decode(value: Value) -> Result<Self, String> {
        let mut parts = into_array(value)?.into_iter();
        if as_int(parts.next())? == 0 {
            // An older script said only `{0}`: no clock, and no cursor is refused.
            let clock_ms = match parts.next() {
                Some(clock) => {
                    Some(u64::try_from(as_int(Some(clock))?).map_err(|_| "a negative clock")?)
                }
                None => None,
            };
            return Ok(Self {
                clock_ms,
                ..Self::default()
            });
        }
        let last = cursor_of(parts.next())?.unwrap_or_default();
        // `0-0` (nothing trimmed yet) stays `Some`: `None` means Redis < 7 did not say.
        let max_deleted = cursor_of(parts.next())?;
        let first = cursor_of(parts.next())?;
        let entries = parts
            .next()
            .map(into_array)
            .transpose()?
            .unwrap_or_default();
        let messages = entries
            .into_iter()
            .map(decode_entry)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            exists: true,
            clock_ms: None,
            last,
            max_deleted,
            first,
            messages,
        })
    }
}

/// A stream entry: `[id, [field, value, …]]` with fields `b` (body), `c` (content type), `e`
/// (event name), `t` (publish time in ms).
fn decode_entry(entry: Value) -> Result<Message, String> {
    let mut parts = into_array(entry)?.into_iter();
    let id = cursor_of(parts.next())?.ok_or("an entry without an id")?;
    let fields = parts
        .next()
        .map(into_array)
        .transpose()?
        .unwrap_or_default();
    let mut body = Bytes::new();
    let mut content_type = None;
    let mut event = None;
    let mut published_ms = id.ms;
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let value = into_bytes(value)?;
        match into_bytes(name)?.as_slice() {
            b"b" => body = Bytes::from(value),
            b"c" => content_type = String::from_utf8(value).ok().map(Arc::<str>::from),
            b"e" => event = String::from_utf8(value).ok().map(Arc::<str>::from),
            b"t" => {
                published_ms = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(id.ms)
            }
            _ => {}
        }
    }
    Ok(Message::new(id, body, content_type, from_ms(published_ms)).with_event(event))
}

/// A queue item: `id \n ms \n content-type \n body` (the script adds the id on publish). The
/// first three never hold a newline (content types are header values), the body may. A message
/// with an event name has it after the time: `ms event` (event names hold no space); items
/// without one are as before event names existed.
pub(crate) fn encode_queue_item(
    id: Option<Cursor>,
    published_ms: u64,
    content_type: Option<&str>,
    event: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let content_type = content_type
        .filter(|ct| !ct.contains(['\n', '\r']))
        .unwrap_or("");
    let mut item = Vec::with_capacity(body.len() + content_type.len() + 64);
    if let Some(id) = id {
        item.extend_from_slice(format!("{id}\n").as_bytes());
    }
    match event.filter(|event| !event.contains([' ', '\n', '\r'])) {
        Some(event) => {
            item.extend_from_slice(format!("{published_ms} {event}\n{content_type}\n").as_bytes())
        }
        None => item.extend_from_slice(format!("{published_ms}\n{content_type}\n").as_bytes()),
    }
    item.extend_from_slice(body);
    item
}

pub(crate) fn decode_queue_item(item: &[u8]) -> Result<Message, String> {
    let mut parts = item.splitn(4, |&b| b == b'\n');
    let (Some(id), Some(ms), Some(content_type), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a queue item without its header".into());
    };
    let text = |part: &[u8]| {
        std::str::from_utf8(part)
            .map(str::to_owned)
            .map_err(|e| e.to_string())
    };
    let id = Cursor::parse(&text(id)?).map_err(|e| e.to_string())?;
    let time = text(ms)?;
    let (ms, event) = match time.split_once(' ') {
        Some((ms, event)) => (ms, Some(Arc::<str>::from(event))),
        None => (time.as_str(), None),
    };
    let published_ms = ms
        .parse()
        .map_err(|_| "a queue item with a bad time".to_owned())?;
    let content_type = Some(text(content_type)?)
        .filter(|ct| !ct.is_empty())
        .map(Arc::<str>::from);
    Ok(Message::new(
        id,
        Bytes::copy_from_slice(body),
        content_type,
        from_ms(published_ms),
    )
    .with_event(event))
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn into_array(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

fn into_bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn as_int(value: Option<Value>) -> Result<i64, String> {
    match value {
        Some(Value::Int(n)) => Ok(n),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

/// A cursor from a string value; `''` and nil are `None`.
fn cursor_of(value: Option<Value>) -> Result<Option<Cursor>, String> {
    let bytes = match value {
        None | Some(Value::Nil) => return Ok(None),
        Some(value) => into_bytes(value)?,
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    Cursor::parse(&text)
        .map(Some)
        .map_err(|e| format!("id {text:?}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn queue_items_round_trip() {
        let body = b"line one\nline two";
        let item = encode_queue_item(
            Some(Cursor::new(5, 2)),
            1234,
            Some("application/json"),
            Some("update"),
            body,
        );
        let message = decode_queue_item(&item).unwrap();
        assert_eq!(message.id, Cursor::new(5, 2));
        assert_eq!(&message.body[..], body);
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(message.event.as_deref(), Some("update"));
        assert_eq!(message.published_at, from_ms(1234));
        let bare = encode_queue_item(Some(Cursor::new(1, 0)), 1, None, None, b"");
        assert_eq!(bare, b"1-0\n1\n\n", "as before event names");
        let bare = decode_queue_item(&bare).unwrap();
        assert_eq!((bare.content_type, bare.event), (None, None));
        assert!(decode_queue_item(b"garbage").is_err());
    }

    #[test]
    fn gone_is_exact_at_the_boundary() {
        let read = StreamRead {
            exists: true,
            clock_ms: None,
            last: Cursor::new(9, 0),
            max_deleted: Some(Cursor::new(5, 0)),
            first: Some(Cursor::new(6, 0)),
            messages: Vec::new(),
        };
        assert_eq!(
            read.gone(Cursor::new(5, 0)),
            None,
            "the last trimmed id itself lost nothing after it"
        );
        assert_eq!(read.gone(Cursor::new(4, 9)), Some(Cursor::new(6, 0).pred()));
        assert_eq!(read.start(conf::StartAt::Newest), Cursor::new(9, 0));
    }

    #[test]
    fn a_cursor_past_the_last_id_or_the_clock_is_ahead() {
        let read = StreamRead {
            exists: true,
            last: Cursor::new(9, 2),
            ..StreamRead::default()
        };
        assert!(read.check_cursor(Cursor::new(9, 2)).is_ok());
        assert_eq!(
            read.check_cursor(Cursor::new(9, 3)),
            Err(HubError::CursorAhead {
                cursor: Cursor::new(9, 3),
                newest: Some(Cursor::new(9, 2))
            })
        );
        let fresh = StreamRead::decode(Value::Array(vec![Value::Int(0), Value::Int(1_000)]))
            .expect("decodes");
        assert!(fresh.check_cursor(Cursor::new(1_000, 99)).is_ok());
        assert_eq!(
            fresh.check_cursor(Cursor::new(1_001, 0)),
            Err(HubError::CursorAhead {
                cursor: Cursor::new(1_001, 0),
                newest: None
            })
        );
        let old_script = StreamRead::decode(Value::Array(vec![Value::Int(0)])).expect("decodes");
        assert!(old_script.check_cursor(Cursor::new(u64::MAX, 0)).is_ok());
    }
}
