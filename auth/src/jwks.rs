//! A JWKS provider's key set and its refresh schedule ([`Jwks`]). The gateway does the HTTP
//! fetching from a background task; this type decides *when* to fetch and keeps the keys:
//!
//! ```text
//! loop {
//!     let now = SystemTime::now();
//!     if let Some(_cause) = jwks.begin_fetch(now) {
//!         match http_get(jwks.url(), jwks.timeout()) {
//!             Ok(answer) => { let _ = jwks.apply_jwks(&answer.body, parse_max_age(cache_control), now); }
//!             Err(_) => jwks.record_fetch_failure(now),
//!         }
//!     }
//!     sleep_until(jwks.next_due()) or until a request reported an unknown `kid`;
//! }
//! ```
//!
//! The set is held in an `ArcSwap`: requests read it without locks, a refresh replaces it
//! whole, and a failed or garbage fetch leaves the last good set in place. Unknown `kid`s seen
//! by requests ask for an early refetch, at most once per `refetch_cooldown`.

use crate::keys::{Key, KeySet};
use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::Jwk;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The most keys kept from one document.
const MAX_KEYS: usize = 100;
/// The first retry after a failed fetch; it doubles up to `min_refresh`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Why a JWKS document was not used. The previous key set stays in place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    NotAJwks(String),
    #[error("the JWKS holds no usable signing key ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

/// Why a fetch is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchCause {
    /// The first fetch, the refresh interval, or a retry after a failure.
    Scheduled,
    /// A request named a `kid` the set does not hold.
    UnknownKid,
}

/// Refresh timing, from `jwt.jwks` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    pub refresh: Duration,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub refetch_cooldown: Duration,
    pub timeout: Duration,
}

impl From<&conf::auth::JwksSettings> for Timing {
    fn from(settings: &conf::auth::JwksSettings) -> Self {
        Self {
            refresh: settings.refresh.get(),
            min_refresh: settings.min_refresh.get(),
            max_refresh: settings.max_refresh.get(),
            refetch_cooldown: settings.refetch_cooldown.get(),
            timeout: settings.timeout.get(),
        }
    }
}

#[derive(Debug)]
struct Schedule {
    next_due: SystemTime,
    in_flight_since: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
    failures: u32,
    last_success: Option<SystemTime>,
    /// SHA-256 of the document in use, to tell a real change from the same keys again.
    digest: Option<[u8; 32]>,
}

/// One JWKS provider's keys and refresh state. Shared (`Arc`) between the request path and the
/// gateway's fetch task, and carried over a reload when the URL and timing did not change.
#[derive(Debug)]
pub struct Jwks {
    provider: Arc<str>,
    url: String,
    timing: Timing,
    keys: ArcSwapOption<KeySet>,
    /// Bumped whenever the keys change: cached tokens verified under an older set are re-verified.
    generation: AtomicU64,
    refetch_wanted: AtomicBool,
    schedule: Mutex<Schedule>,
}

impl Jwks {
    pub(crate) fn new(provider: Arc<str>, url: String, timing: Timing) -> Self {
        Self {
            provider,
            url,
            timing,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            refetch_wanted: AtomicBool::new(false),
            schedule: Mutex::new(Schedule {
                next_due: SystemTime::UNIX_EPOCH,
                in_flight_since: None,
                last_attempt: None,
                failures: 0,
                last_success: None,
                digest: None,
            }),
        }
    }

    /// The provider's name (for logs and metric labels).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long one fetch may take.
    pub fn timeout(&self) -> Duration {
        self.timing.timeout
    }

    pub(crate) fn same_source(&self, url: &str, timing: Timing) -> bool {
        self.url == url && self.timing == timing
    }

    /// The keys in use, `None` until a fetch succeeded.
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn has_keys(&self) -> bool {
        self.keys.load().is_some()
    }

    pub fn key_count(&self) -> usize {
        self.keys.load().as_ref().map_or(0, |keys| keys.len())
    }

    /// When keys were last loaded (`holdfast_jwks_last_success_timestamp_seconds`).
    pub fn last_success(&self) -> Option<SystemTime> {
        self.lock().last_success
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fetch that started this long ago and never reported back is forgotten.
    fn stale(&self, schedule: &Schedule, now: SystemTime) -> bool {
        schedule
            .in_flight_since
            .is_none_or(|since| elapsed(since, now) > self.timing.timeout * 2)
    }

    /// Whether the scheduled refresh (or retry) is due.
    pub fn refresh_due(&self, now: SystemTime) -> bool {
        let schedule = self.lock();
        self.stale(&schedule, now) && schedule.next_due <= now
    }

    /// Whether a request saw an unknown `kid` and the cooldown since the last fetch has passed.
    pub fn wants_refetch(&self, now: SystemTime) -> bool {
        let schedule = self.lock();
        self.refetch_wanted.load(Ordering::Acquire)
            && self.stale(&schedule, now)
            && self.cooled(&schedule, now)
    }

    fn cooled(&self, schedule: &Schedule, now: SystemTime) -> bool {
        schedule
            .last_attempt
            .is_none_or(|last| elapsed(last, now) >= self.timing.refetch_cooldown)
    }

    /// Claims the next fetch if one is due: the caller must then report with
    /// [`apply_jwks`](Self::apply_jwks) or [`record_fetch_failure`](Self::record_fetch_failure).
    /// Concurrent callers get `None` while a fetch is in flight.
    pub fn begin_fetch(&self, now: SystemTime) -> Option<FetchCause> {
        let mut schedule = self.lock();
        if !self.stale(&schedule, now) {
            return None;
        }
        let cause = if schedule.next_due <= now {
            FetchCause::Scheduled
        } else if self.refetch_wanted.load(Ordering::Acquire) && self.cooled(&schedule, now) {
            FetchCause::UnknownKid
        } else {
            return None;
        };
        self.refetch_wanted.store(false, Ordering::Release);
        schedule.in_flight_since = Some(now);
        schedule.last_attempt = Some(now);
        Some(cause)
    }

    /// When the fetch task should next look: the scheduled refresh, or the end of the refetch
    /// cooldown if a refetch is wanted.
    pub fn next_due(&self) -> SystemTime {
        let schedule = self.lock();
        let mut due = schedule.next_due;
        if self.refetch_wanted.load(Ordering::Acquire) {
            let cooled = schedule
                .last_attempt
                .map_or(SystemTime::UNIX_EPOCH, |last| {
                    last + self.timing.refetch_cooldown
                });
            due = due.min(cooled);
        }
        due
    }

    /// Uses a fetched JWKS document. `max_age` is the answer's `Cache-Control: max-age` (see
    /// [`parse_max_age`]): the next refresh comes after it (or after `refresh` without one),
    /// kept between `min_refresh` and `max_refresh`. A document that cannot be used counts as a
    /// failed fetch and leaves the last good keys in place. Returns the number of keys.
    pub fn apply_jwks(
        &self,
        body: &[u8],
        max_age: Option<Duration>,
        now: SystemTime,
    ) -> Result<usize, JwksError> {
        let set = match parse_jwks(body) {
            Ok(set) => set,
            Err(error) => {
                self.record_fetch_failure(now);
                return Err(error);
            }
        };
        let count = set.len();
        let digest: [u8; 32] = Sha256::digest(body).into();
        let mut schedule = self.lock();
        if schedule.digest != Some(digest) || !self.has_keys() {
            self.keys.store(Some(Arc::new(set)));
            self.generation.fetch_add(1, Ordering::AcqRel);
            schedule.digest = Some(digest);
        }
        let wait = max_age.unwrap_or(self.timing.refresh).clamp(
            self.timing.min_refresh,
            self.timing.max_refresh.max(self.timing.min_refresh),
        );
        schedule.next_due = now + wait;
        schedule.in_flight_since = None;
        schedule.failures = 0;
        schedule.last_success = Some(now);
        Ok(count)
    }

    /// A fetch failed (unreachable, timeout, non-200): retry after 1 s, doubling up to
    /// `min_refresh`. The last good keys stay in place.
    pub fn record_fetch_failure(&self, now: SystemTime) {
        let mut schedule = self.lock();
        schedule.failures = schedule.failures.saturating_add(1);
        let doubled = FIRST_RETRY.saturating_mul(1 << schedule.failures.saturating_sub(1).min(16));
        schedule.next_due = now + doubled.min(self.timing.min_refresh);
        schedule.in_flight_since = None;
    }

    /// A request named a `kid` this set does not hold.
    pub(crate) fn note_unknown_kid(&self) {
        self.refetch_wanted.store(true, Ordering::Release);
    }
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

/// `max-age` of a `Cache-Control` value; `no-cache` and `no-store` count as 0 (so the next
/// refresh comes after `min_refresh`).
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-cache" | "no-store" => return Some(Duration::ZERO),
            "max-age" => {
                if let Ok(secs) = value.trim().trim_matches('"').parse::<u64>() {
                    found = Some(Duration::from_secs(secs));
                }
            }
            _ => {}
        }
    }
    found
}

/// The usable signing keys of a JWKS document; keys that are not usable (encryption keys,
/// shared secrets, unsupported types, short RSA keys) are skipped.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<KeySet, JwksError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| JwksError::NotAJwks(e.to_string()))?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for value in document.keys.into_iter().take(MAX_KEYS) {
        let key = serde_json::from_value::<Jwk>(value)
            .map_err(|e| e.to_string())
            .and_then(|jwk| Key::jwk(&jwk, false));
        match key {
            Ok(key) => keys.push(key),
            Err(why) => {
                tracing::debug!(%why, "JWKS key skipped");
                skipped += 1;
            }
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys { skipped });
    }
    Ok(KeySet { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn jwks() -> Jwks {
        let timing = Timing {
            refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            refetch_cooldown: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        };
        Jwks::new("main".into(), "https://id/jwks".to_owned(), timing)
    }

    pub(crate) fn document() -> Vec<u8> {
        crate::testkit::jwks_json(&[("k1", crate::testkit::Signer::rs256())]).into_bytes()
    }

    #[test]
    fn first_fetch_is_due_at_once_and_claimed_once() {
        let jwks = jwks();
        assert!(jwks.refresh_due(at(0)));
        assert_eq!(jwks.begin_fetch(at(0)), Some(FetchCause::Scheduled));
        assert_eq!(jwks.begin_fetch(at(1)), None, "one fetch at a time");
        assert_eq!(jwks.apply_jwks(&document(), None, at(1)), Ok(1));
        assert!(jwks.has_keys());
        assert_eq!(jwks.next_due(), at(301));
        assert!(!jwks.refresh_due(at(300)));
        assert!(jwks.refresh_due(at(301)));
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        let jwks = jwks();
        let _ = jwks.apply_jwks(&document(), Some(Duration::from_secs(600)), at(0));
        assert_eq!(jwks.next_due(), at(600));
        let _ = jwks.apply_jwks(&document(), Some(Duration::ZERO), at(0));
        assert_eq!(jwks.next_due(), at(30), "never sooner than min_refresh");
        let _ = jwks.apply_jwks(&document(), Some(Duration::from_secs(86_400)), at(0));
        assert_eq!(jwks.next_due(), at(3600), "never later than max_refresh");
        assert_eq!(
            parse_max_age("public, max-age=120, must-revalidate"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
    }

    #[test]
    fn garbage_keeps_the_last_good_keys() {
        let jwks = jwks();
        assert_eq!(jwks.apply_jwks(&document(), None, at(0)), Ok(1));
        let generation = jwks.generation();
        assert!(matches!(
            jwks.apply_jwks(b"<html>oops</html>", None, at(1)),
            Err(JwksError::NotAJwks(_))
        ));
        assert_eq!(
            jwks.apply_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, None, at(2)),
            Err(JwksError::NoUsableKeys { skipped: 1 })
        );
        assert_eq!(jwks.key_count(), 1);
        assert_eq!(jwks.generation(), generation);
        assert_eq!(jwks.last_success(), Some(at(0)));
        // Failures retry soon, doubling: 1 s, then 2 s.
        assert_eq!(jwks.next_due(), at(2 + 2));
    }

    #[test]
    fn failures_back_off_up_to_min_refresh() {
        let jwks = jwks();
        let mut waits = Vec::new();
        for _ in 0..8 {
            jwks.record_fetch_failure(at(0));
            waits.push(
                jwks.next_due()
                    .duration_since(at(0))
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_cooldown() {
        let jwks = jwks();
        let _ = jwks.begin_fetch(at(0));
        let _ = jwks.apply_jwks(&document(), None, at(0));
        assert!(!jwks.wants_refetch(at(1)));
        jwks.note_unknown_kid();
        assert!(!jwks.wants_refetch(at(5)), "within the cooldown");
        assert_eq!(jwks.next_due(), at(10));
        assert_eq!(jwks.begin_fetch(at(10)), Some(FetchCause::UnknownKid));
        let _ = jwks.apply_jwks(&document(), None, at(10));
        // A flood of bad kids right after: nothing until the cooldown has passed again.
        for second in 11..20 {
            jwks.note_unknown_kid();
            assert_eq!(jwks.begin_fetch(at(second)), None);
        }
        assert_eq!(jwks.begin_fetch(at(20)), Some(FetchCause::UnknownKid));
    }

    #[test]
    fn a_lost_fetch_is_forgotten_after_twice_the_timeout() {
        let jwks = jwks();
        assert!(jwks.begin_fetch(at(0)).is_some());
        assert_eq!(jwks.begin_fetch(at(10)), None);
        assert!(jwks.begin_fetch(at(11)).is_some());
    }
}
