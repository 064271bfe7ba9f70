//! An `llm` route's answer cache (`llm: { cache: … }`): exact match on the alias, the door and
//! the request body, kept in this instance's memory or in the
//! backplane's Redis for `ttl`. A streamed answer is kept as the events the client got and
//! replayed byte for byte; a whole one as its JSON. Identical requests in flight on this instance
//! share one provider call: the first asks, the others wait for its answer. Only requests that
//! do not sample are kept (`temperature: 0`), unless `allow_sampling`; a client's
//! `Cache-Control: no-store` skips the cache, `no-cache` skips the look-up but keeps the answer.

use crate::core::kv;
use crate::observe::metrics::METRICS;
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// A kept answer.
#[derive(Debug)]
pub struct Cached {
    /// The client's SSE events (a streamed answer), or its JSON.
    pub streamed: bool,
    pub body: Bytes,
}

impl Cached {
    /// How it is kept in Redis: one byte for its kind, then the body.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1);
        out.push(if self.streamed { b's' } else { b'w' });
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (kind, body) = bytes.split_first()?;
        let streamed = match kind {
            b's' => true,
            b'w' => false,
            _ => return None,
        };
        Some(Self {
            streamed,
            body: Bytes::copy_from_slice(body),
        })
    }
}

/// A route's cache, compiled from its settings.
pub struct AnswerCache {
    route: Arc<str>,
    settings: conf::AnswerCache,
    memory: Mutex<Memory>,
    /// Answers being fetched, by key: the first request's, which the others wait for.
    flights: Mutex<HashMap<String, watch::Receiver<Flight>>>,
}

#[derive(Default)]
struct Memory {
    /// Each answer with its expiry and the number it was kept under.
    answers: HashMap<String, (Instant, u64, Arc<Cached>)>,
    /// Keys from the oldest kept, with the number they were kept under: a key kept again later
    /// has a newer number, and its older place in the queue evicts nothing.
    order: VecDeque<(u64, String)>,
    kept: u64,
}

/// Where the first of identical requests is.
#[derive(Clone)]
enum Flight {
    Asking,
    Answered(Arc<Cached>),
    /// It got no answer to keep: the others ask for themselves, at once.
    Failed,
}

/// What the cache says of a request.
pub enum Lookup {
    /// Served from the cache, or by an identical request's call just made.
    Hit(Arc<Cached>),
    /// Not there: the answer, once the provider gave it, goes to the filler — none when an
    /// identical request just failed to get one (this one asks, and keeps nothing).
    Miss(Option<Filler>),
    /// Not cacheable: asked of the provider, not kept.
    Bypass,
}

/// The first of identical requests, which fetches the answer for the others.
pub struct Filler {
    cache: Arc<AnswerCache>,
    key: String,
    /// Wakes the requests waiting for this one; dropped unfilled, they ask for themselves.
    done: Option<watch::Sender<Flight>>,
    /// This flight's entry in the table, told apart from a later one for the same key.
    waiting: watch::Receiver<Flight>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AnswerCache {
    pub fn new(route: &str, settings: &conf::AnswerCache) -> Self {
        Self {
            route: route.into(),
            settings: settings.clone(),
            memory: Mutex::default(),
            flights: Mutex::default(),
        }
    }

    fn count(&self, result: &str) {
        METRICS
            .llm_cache
            .with_label_values(&[&self.route, result])
            .inc();
    }

    /// The largest answer kept.
    pub fn max_entry(&self) -> usize {
        usize::try_from(self.settings.max_entry.get()).unwrap_or(usize::MAX)
    }

    /// Looks a request up: `request` in the door's format, asking for `alias`, with the
    /// client's `Cache-Control`.
    pub async fn lookup(
        self: &Arc<Self>,
        door: &str,
        alias: &str,
        request: &Value,
        cache_control: Option<&http::HeaderValue>,
    ) -> Lookup {
        let directives = cache_control.and_then(|v| v.to_str().ok()).unwrap_or("");
        let has = |directive: &str| {
            directives
                .split(',')
                .any(|d| d.trim().eq_ignore_ascii_case(directive))
        };
        if has("no-store") || !(self.settings.allow_sampling || deterministic(request)) {
            self.count("bypass");
            return Lookup::Bypass;
        }
        let key = key(&self.route, door, alias, request);
        let look = !has("no-cache");
        if look {
            if let Some(cached) = self.find(&key).await {
                self.count("hit");
                return Lookup::Hit(cached);
            }
        }
        let claim = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(waiting) if look => Err(waiting.clone()),
                _ => {
                    let (done, waiting) = watch::channel(Flight::Asking);
                    flights.insert(key.clone(), waiting.clone());
                    Ok((done, waiting))
                }
            }
        };
        match claim {
            Ok((done, waiting)) => {
                self.count("miss");
                Lookup::Miss(Some(Filler {
                    cache: self.clone(),
                    key,
                    done: Some(done),
                    waiting,
                }))
            }
            // An identical request is being answered: its answer serves this one too. If it
            // gets none, every request that waited asks for itself at once.
            Err(mut waiting) => {
                let flight = waiting
                    .wait_for(|flight| !matches!(flight, Flight::Asking))
                    .await
                    .map(|flight| flight.clone());
                if let Ok(Flight::Answered(cached)) = flight {
                    self.count("coalesced");
                    return Lookup::Hit(cached);
                }
                self.count("miss");
                Lookup::Miss(None)
            }
        }
    }

    async fn find(&self, key: &str) -> Option<Arc<Cached>> {
        if self.settings.store == conf::CacheStore::Redis {
            let bytes = kv::get()?.fetch(&format!("llmcache:{key}")).await?;
            return Cached::decode(&bytes).map(Arc::new);
        }
        let mut memory = lock(&self.memory);
        match memory.answers.get(key) {
            Some((expires, _, cached)) if *expires > Instant::now() => Some(cached.clone()),
            Some(_) => {
                memory.answers.remove(key);
                None
            }
            None => None,
        }
    }

    async fn keep(&self, key: &str, cached: &Arc<Cached>) {
        let ttl = self.settings.ttl.get();
        if self.settings.store == conf::CacheStore::Redis {
            if let Some(kv) = kv::get() {
                let stored = kv
                    .put(&format!("llmcache:{key}"), &cached.encode(), ttl)
                    .await;
                if let Err(error) = stored {
                    tracing::warn!(%error, "cannot keep an answer in Redis");
                }
            }
            return;
        }
        let mut memory = lock(&self.memory);
        let expires = Instant::now() + ttl;
        memory.kept += 1;
        let number = memory.kept;
        memory
            .answers
            .insert(key.to_owned(), (expires, number, cached.clone()));
        memory.order.push_back((number, key.to_owned()));
        // The oldest go first; a queue place whose key was kept again since evicts nothing, and
        // the queue stays within twice the answers.
        while memory.answers.len() > self.settings.max_entries
            || memory.order.len() > self.settings.max_entries * 2
        {
            let Some((number, oldest)) = memory.order.pop_front() else {
                break;
            };
            if memory
                .answers
                .get(&oldest)
                .is_some_and(|(_, kept, _)| *kept == number)
            {
                memory.answers.remove(&oldest);
            }
        }
    }
}

impl Filler {
    /// Keeps the answer (unless it is larger than the cache's limit) and gives it to the
    /// requests waiting for it.
    pub async fn fill(mut self, cached: Cached) {
        if cached.body.len() > self.cache.max_entry() {
            self.cache.count("too_large");
            return;
        }
        let cached = Arc::new(cached);
        self.cache.keep(&self.key, &cached).await;
        if let Some(done) = self.done.take() {
            let _ = done.send(Flight::Answered(cached));
        }
    }

    /// The largest answer kept.
    pub fn max_entry(&self) -> usize {
        self.cache.max_entry()
    }

    /// Counts an answer that was served but not kept, for its size.
    pub fn too_large(self) {
        self.cache.count("too_large");
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Flight::Failed);
        }
        let mut flights = lock(&self.cache.flights);
        if flights
            .get(&self.key)
            .is_some_and(|entry| entry.same_channel(&self.waiting))
        {
            flights.remove(&self.key);
        }
    }
}

/// A request that does not sample: `temperature` 0 (both formats default to 1).
fn deterministic(request: &Value) -> bool {
    request.get("temperature").and_then(Value::as_f64) == Some(0.0)
}

/// The cache key: a digest of the route, door, alias and the body but its `model` (the alias
/// stands for it), written with its object keys in order so the members' order does not
/// matter. `stream_options` is in it: whether a stream ends with its usage chunk depends on it.
fn key(route: &str, door: &str, alias: &str, request: &Value) -> String {
    let mut hasher = Sha256::new();
    for part in [route, door, alias] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let mut canonical = Vec::with_capacity(256);
    match request {
        Value::Object(members) => {
            let mut body = members.clone();
            body.remove("model");
            write_canonical(&Value::Object(body), &mut canonical);
        }
        other => write_canonical(other, &mut canonical),
    }
    hasher.update(&canonical);
    format!("{route}:{}", hex::encode(hasher.finalize()))
}

/// JSON with every object's members in key order.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(&members[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_ignores_member_order_but_not_the_rest() {
        let a = json!({"model": "fast", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]});
        let b = json!({"messages": [{"content": "hi", "role": "user"}], "temperature": 0,
                       "model": "fast"});
        let key_of = |v: &Value| key("ai", "openai", "fast", v);
        assert_eq!(key_of(&a), key_of(&b));
        let mut usage = a.clone();
        usage["stream_options"] = json!({"include_usage": true});
        assert_ne!(key_of(&a), key_of(&usage));
        let mut c = a.clone();
        c["messages"][0]["content"] = json!("hi!");
        assert_ne!(key_of(&a), key_of(&c));
        let mut streamed = a.clone();
        streamed["stream"] = json!(true);
        assert_ne!(key_of(&a), key_of(&streamed));
        assert_ne!(key_of(&a), key("ai", "anthropic", "fast", &a));
        assert_ne!(key_of(&a), key("ai", "openai", "slow", &a));
    }

    fn cache(max_entries: usize) -> Arc<AnswerCache> {
        let settings: conf::AnswerCache = serde_yaml::from_str(&format!(
            "{{ ttl: 60s, max_entries: {max_entries}, allow_sampling: true }}"
        ))
        .expect("settings");
        Arc::new(AnswerCache::new("test", &settings))
    }

    fn answer(text: &'static str) -> Cached {
        Cached {
            streamed: false,
            body: Bytes::from_static(text.as_bytes()),
        }
    }

    #[tokio::test]
    async fn when_the_first_request_gets_nothing_the_waiting_ones_all_ask_at_once() {
        let cache = cache(10);
        let request = json!({"messages": []});
        let Lookup::Miss(Some(leader)) = cache.lookup("openai", "a", &request, None).await else {
            panic!("the first one asks");
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (cache, request) = (cache.clone(), request.clone());
                tokio::spawn(async move { cache.lookup("openai", "a", &request, None).await })
            })
            .collect();
        tokio::task::yield_now().await;
        drop(leader);
        for waiter in waiters {
            let lookup = waiter.await.expect("joined");
            assert!(matches!(lookup, Lookup::Miss(None)), "asks, keeps nothing");
        }
        // The next one leads again; its answer serves the one after.
        let Lookup::Miss(Some(leader)) = cache.lookup("openai", "a", &request, None).await else {
            panic!("a new flight");
        };
        leader.fill(answer("{}")).await;
        assert!(matches!(
            cache.lookup("openai", "a", &request, None).await,
            Lookup::Hit(_)
        ));
    }

    #[tokio::test]
    async fn the_oldest_answer_goes_first_even_when_a_key_was_kept_again() {
        let cache = cache(2);
        let keep = |name: &'static str| {
            let cache = cache.clone();
            async move { cache.keep(name, &Arc::new(answer(name))).await }
        };
        keep("a").await;
        keep("b").await;
        keep("a").await; // kept again: now newer than b
        keep("c").await; // evicts b, not a
        assert!(cache.find("a").await.is_some());
        assert!(cache.find("b").await.is_none());
        assert!(cache.find("c").await.is_some());
    }

    #[test]
    fn only_requests_that_do_not_sample_are_deterministic() {
        assert!(deterministic(&json!({"temperature": 0})));
        assert!(deterministic(&json!({"temperature": 0.0})));
        assert!(!deterministic(&json!({"temperature": 0.7})));
        assert!(!deterministic(&json!({})));
    }

    #[test]
    fn a_kept_answer_reads_back_as_it_was() {
        for streamed in [true, false] {
            let cached = Cached {
                streamed,
                body: Bytes::from_static(b"data: x\n\n"),
            };
            let back = Cached::decode(&cached.encode()).expect("decodes");
            assert_eq!((back.streamed, back.body), (streamed, cached.body));
        }
        assert!(Cached::decode(b"").is_none());
        assert!(Cached::decode(b"?x").is_none());
    }
}
