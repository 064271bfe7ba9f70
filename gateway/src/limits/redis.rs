//! Rate limits shared by every instance through Redis: the same GCRA as `gcra.rs`, one Lua
//! script per request that checks every limit of the route and stores the new TATs only when
//! all pass (one round trip, atomic, on Redis' clock so instance clocks do not matter).
//!
//! If Redis does not answer within `CALL_TIMEOUT`, the request is limited locally instead and
//! Redis is not asked again for `RETRY_EVERY`, so an outage costs one timeout per second, not
//! one per request. The switch is logged once each way and shown by
//! `holdfast_ratelimit_backend{backend}` and `holdfast_ratelimit_fallbacks_total`.

use crate::backplane::{KeyShape, Link};
use crate::observe::metrics::METRICS;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The longest a rate-limit check waits for Redis before limiting locally.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the local fallback lasts before Redis is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// KEYS: one per limit. ARGV: per limit, emission and tolerance in µs.
/// Returns per limit: 1 and µs until the bucket is full again, or 0 and µs until retry.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, tats, ok = {}, {}, true
for i, key in ipairs(KEYS) do
  local emission = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + emission
  local allow_at = new_tat - tolerance
  if now < allow_at then
    ok = false
    out[2 * i - 1] = 0
    out[2 * i] = allow_at - now
  else
    tats[i] = new_tat
    out[2 * i - 1] = 1
    out[2 * i] = new_tat - now
  end
end
if ok then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, string.format('%d', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
end
return out
"#;

/// KEYS: one per limit. ARGV: per limit, µs to move its TAT by (a charge corrected).
const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local delta = tonumber(ARGV[i])
  local tat = tonumber(redis.call('GET', key) or now)
  if delta > 0 and tat < now then tat = now end
  tat = tat + delta
  if tat > now then
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
return 1
"#;

/// One limit's answer from Redis, in µs.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub allowed: bool,
    pub micros: u64,
}

pub struct RedisLimits {
    conn: Link,
    script: redis::Script,
    adjust: redis::Script,
    pub prefix: String,
    /// Local fallback until this time (ns since `epoch`); 0 when Redis is in use.
    fallback_until: AtomicU64,
    down: AtomicBool,
    epoch: std::time::Instant,
}

impl RedisLimits {
    /// A lazy connection: nothing is dialled until the first check. Must run inside a runtime
    /// that lives as long as the process (the manager's driver runs there).
    pub fn connect(redis: &conf::RedisBackplane) -> Result<Self, crate::backplane::LinkError> {
        let conn = Link::lazy(redis, CALL_TIMEOUT)?;
        show_backend(true);
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
            adjust: redis::Script::new(ADJUST),
            prefix: format!("{}rl:", redis.prefix),
            fallback_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
        })
    }

    /// How this Redis wants keys named: in a cluster each limit's key is its own hash tag.
    pub fn key_shape(&self) -> KeyShape {
        self.conn.key_shape()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Checks every limit in one round trip; `None` means "limit locally" (Redis unreachable).
    pub async fn check(&self, keys: &[Vec<u8>], args: &[u64]) -> Option<Vec<Answer>> {
        let until = self.fallback_until.load(Ordering::Relaxed);
        if until != 0 && self.now() < until {
            METRICS.ratelimit_fallbacks.inc();
            return None;
        }
        let result = if keys.len() > 1 && self.key_shape() == KeyShape::Tagged {
            tokio::time::timeout(CALL_TIMEOUT, self.check_each(keys, args)).await
        } else {
            let mut invocation = self.script.prepare_invoke();
            for key in keys {
                invocation.key(key.as_slice());
            }
            for arg in args {
                invocation.arg(*arg);
            }
            let mut conn = self.conn.clone();
            tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<Vec<i64>>(&mut conn)).await
        };
        let error = match result {
            Ok(Ok(values)) if values.len() == keys.len() * 2 => {
                self.mark_up();
                return Some(
                    values
                        .chunks_exact(2)
                        .map(|pair| Answer {
                            allowed: pair[0] == 1,
                            micros: u64::try_from(pair[1]).unwrap_or(0),
                        })
                        .collect(),
                );
            }
            Ok(Ok(values)) => format!("unexpected answer of {} values", values.len()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        self.mark_down(&error);
        METRICS.ratelimit_fallbacks.inc();
        None
    }

    /// In a cluster each limit's key is on a slot of its own, where one script cannot reach
    /// them all: each is checked by itself (at once, side by side), and when one refuses, the
    /// ones that passed are given their charge back, so a refused request costs nothing, as it
    /// does on one Redis.
    async fn check_each(&self, keys: &[Vec<u8>], args: &[u64]) -> redis::RedisResult<Vec<i64>> {
        let checks = keys.iter().zip(args.chunks_exact(2)).map(|(key, pair)| {
            let mut invocation = self.script.prepare_invoke();
            invocation.key(key.as_slice()).arg(pair[0]).arg(pair[1]);
            let mut conn = self.conn.clone();
            async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await }
        });
        let answers = futures_util::future::join_all(checks).await;
        let mut out = Vec::with_capacity(keys.len() * 2);
        for answer in answers {
            out.extend(answer?);
        }
        let refused = out.chunks_exact(2).any(|pair| pair[0] != 1);
        if refused {
            let (passed, refunds): (Vec<Vec<u8>>, Vec<i64>) = keys
                .iter()
                .zip(args.chunks_exact(2))
                .zip(out.chunks_exact(2))
                .filter(|(_, answer)| answer[0] == 1)
                .map(|((key, pair), _)| (key.clone(), -i64::try_from(pair[0]).unwrap_or(i64::MAX)))
                .unzip();
            for (key, refund) in passed.iter().zip(&refunds) {
                let mut invocation = self.adjust.prepare_invoke();
                invocation.key(key.as_slice()).arg(*refund);
                let mut conn = self.conn.clone();
                let _: redis::RedisResult<i64> = invocation.invoke_async(&mut conn).await;
            }
        }
        Ok(out)
    }

    /// Moves each key's TAT by its delta (µs); `false` when Redis did not take it (the caller
    /// corrects locally).
    pub async fn adjust(&self, keys: &[Vec<u8>], deltas: &[i64]) -> bool {
        let until = self.fallback_until.load(Ordering::Relaxed);
        if keys.is_empty() || (until != 0 && self.now() < until) {
            return false;
        }
        if keys.len() > 1 && self.key_shape() == KeyShape::Tagged {
            // Each key on its own slot (see `check_each`).
            let each = keys.iter().zip(deltas).map(|(key, delta)| {
                let mut invocation = self.adjust.prepare_invoke();
                invocation.key(key.as_slice()).arg(*delta);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async::<i64>(&mut conn).await }
            });
            let all = futures_util::future::join_all(each);
            return matches!(tokio::time::timeout(CALL_TIMEOUT, all).await, Ok(results) if results.iter().all(Result::is_ok));
        }
        let mut invocation = self.adjust.prepare_invoke();
        for key in keys {
            invocation.key(key.as_slice());
        }
        for delta in deltas {
            invocation.arg(*delta);
        }
        let mut conn = self.conn.clone();
        let call = invocation.invoke_async::<i64>(&mut conn);
        matches!(tokio::time::timeout(CALL_TIMEOUT, call).await, Ok(Ok(_)))
    }

    fn mark_up(&self) {
        self.fallback_until.store(0, Ordering::Relaxed);
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis is back: rate limits are shared again");
            show_backend(true);
        }
    }

    fn mark_down(&self, error: &str) {
        let retry = u64::try_from(RETRY_EVERY.as_nanos()).unwrap_or(u64::MAX);
        self.fallback_until
            .store(self.now().saturating_add(retry).max(1), Ordering::Relaxed);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "Redis is unreachable: rate limits fall back to this instance's own counts");
            show_backend(false);
        }
    }
}

/// `holdfast_ratelimit_backend`: 1 for the backend that counts now, 0 for the other.
fn show_backend(redis: bool) {
    let gauge = &METRICS.ratelimit_backend;
    gauge.with_label_values(&["redis"]).set(i64::from(redis));
    gauge.with_label_values(&["local"]).set(i64::from(!redis));
}
