//! The access log: one JSON line per request, written by a dedicated thread so the request path
//! only formats a line and hands it over (never blocks on disk: when the writer falls behind,
//! lines are dropped and counted). The file is reopened on SIGUSR1 for log rotation. Tokens,
//! API keys and other secret headers never appear: only listed headers are logged, and the
//! credential headers are always redacted.

use pingora_http::RequestHeader;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

/// Set by SIGUSR1: the writer reopens its file before the next line.
static REOPEN: AtomicBool = AtomicBool::new(false);
/// Lines dropped because the writer fell behind.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Asks the writer to reopen the log file (after logrotate moved it).
pub fn reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// Headers that are never logged in clear, whatever the configuration says.
const ALWAYS_REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// One finished request, as the access log records it.
pub struct Entry<'a> {
    pub request: &'a RequestHeader,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: usize,
    pub client: Option<IpAddr>,
    pub request_id: Option<&'a str>,
    pub route: Option<&'a str>,
    pub started: Instant,
    /// The last upstream target tried, if any.
    pub upstream: Option<UpstreamEntry<'a>>,
    /// How a held request ended.
    pub outcome: Option<&'static str>,
    /// The authenticated `(provider, subject)`.
    pub identity: Option<(&'a str, &'a str)>,
    /// Query parameters that carry the route's credential: redacted when the query is logged.
    pub credential_params: &'a [String],
    /// The request's trace and server span, when tracing is on.
    pub trace: Option<(u128, u64)>,
    /// An `llm` route's provider and model, tokens and fallbacks.
    pub llm: Option<LlmEntry<'a>>,
}

/// The `llm` part of an [`Entry`].
pub struct LlmEntry<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    /// Input and output tokens, when the provider told them.
    pub tokens: Option<(u64, u64)>,
    /// Targets that failed before (or besides) the one that served.
    pub fallbacks: usize,
}

/// The upstream part of an [`Entry`].
pub struct UpstreamEntry<'a> {
    pub name: Option<&'a str>,
    pub target: SocketAddr,
    pub status: Option<u16>,
    pub elapsed: Option<Duration>,
}

pub struct AccessLog {
    lines: SyncSender<Vec<u8>>,
    query: bool,
    /// Headers to log: the name, its field in the line (`header_user_agent`), whether redacted.
    headers: Vec<(http::HeaderName, String, bool)>,
}

impl AccessLog {
    /// Opens the log and starts its writer thread.
    pub fn start(settings: &conf::AccessLog) -> std::io::Result<Self> {
        let sink = Sink::open(&settings.path)?;
        let (lines, receiver) = sync_channel(64 * 1024);
        std::thread::Builder::new()
            .name("holdfast-access-log".to_owned())
            .spawn(move || write_lines(sink, receiver))?;
        let redacted = |name: &str| {
            ALWAYS_REDACTED.contains(&name)
                || settings.redact.iter().any(|r| r.eq_ignore_ascii_case(name))
        };
        let headers = settings
            .headers
            .iter()
            .filter_map(|name| {
                http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()
            })
            .map(|name| {
                let redact = redacted(name.as_str());
                let field = format!("header_{}", name.as_str().replace('-', "_"));
                (name, field, redact)
            })
            .collect();
        Ok(Self {
            lines,
            query: settings.query,
            headers,
        })
    }

    /// Formats and queues the line for one finished request. The JSON is written straight into
    /// the line's buffer (no intermediate map): this runs once per request.
    pub fn record(&self, entry: &Entry<'_>) {
        let request = entry.request;
        let redacted = self
            .query
            .then(|| request.uri.query())
            .flatten()
            .and_then(|query| auth::redact_query(query, entry.credential_params));
        let path: std::borrow::Cow<'_, str> = match redacted {
            // A credential in the query is never written out, as in a header.
            Some(query) => format!("{}?{query}", request.uri.path()).into(),
            None if self.query => request
                .uri
                .path_and_query()
                .map_or_else(|| request.uri.path(), |pq| pq.as_str())
                .into(),
            None => request.uri.path().into(),
        };
        let mut line = Line(Vec::with_capacity(384));
        line.0.extend_from_slice(b"{\"time\":\"");
        let _ = write!(
            line.0,
            "{}",
            humantime::format_rfc3339_millis(SystemTime::now())
        );
        line.0.push(b'"');
        line.text("request_id", entry.request_id);
        if let Some((trace_id, span_id)) = entry.trace {
            line.key("trace_id");
            let _ = write!(line.0, "\"{trace_id:032x}\"");
            line.key("span_id");
            let _ = write!(line.0, "\"{span_id:016x}\"");
        }
        line.text("route", entry.route);
        line.text("method", Some(request.method.as_str()));
        line.text("path", Some(&path));
        line.number("status", entry.status);
        line.number("bytes", entry.bytes);
        line.number("duration_ms", millis(entry.started.elapsed()));
        match entry.client {
            Some(client) => line.display("client", client),
            None => line.text("client", None),
        }
        if let Some(upstream) = &entry.upstream {
            line.text("upstream", upstream.name);
            line.display("upstream_target", upstream.target);
            match upstream.status {
                Some(code) => line.number("upstream_status", code),
                None => line.text("upstream_status", None),
            }
            match upstream.elapsed {
                Some(elapsed) => line.number("upstream_ms", millis(elapsed)),
                None => line.text("upstream_ms", None),
            }
        }
        if let Some(outcome) = entry.outcome {
            line.text("outcome", Some(outcome));
        }
        if let Some(llm) = &entry.llm {
            line.text("llm_provider", Some(llm.provider));
            line.text("llm_model", Some(llm.model));
            if let Some((input, output)) = llm.tokens {
                line.number("llm_input_tokens", input);
                line.number("llm_output_tokens", output);
            }
            line.number("llm_fallbacks", llm.fallbacks);
        }
        if let Some((provider, subject)) = entry.identity {
            line.text("auth_provider", Some(provider));
            line.text("auth_subject", Some(subject));
        }
        for (name, field, redact) in &self.headers {
            if let Some(value) = request.headers.get(name) {
                let value = if *redact {
                    std::borrow::Cow::Borrowed("[redacted]")
                } else {
                    String::from_utf8_lossy(value.as_bytes())
                };
                line.text(field, Some(&value));
            }
        }
        line.0.extend_from_slice(b"}\n");
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line.0) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One JSON object being written, its fields after the first.
struct Line(Vec<u8>);

impl Line {
    fn key(&mut self, name: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    /// A string field (escaped by serde_json), or `null`.
    fn text(&mut self, name: &str, value: Option<&str>) {
        self.key(name);
        match value {
            Some(value) => {
                let _ = serde_json::to_writer(&mut self.0, value);
            }
            None => self.0.extend_from_slice(b"null"),
        }
    }

    fn number(&mut self, name: &str, value: impl std::fmt::Display) {
        self.key(name);
        let _ = write!(self.0, "{value}");
    }

    /// A field whose `Display` needs no escaping (addresses), quoted.
    fn display(&mut self, name: &str, value: impl std::fmt::Display) {
        self.key(name);
        let _ = write!(self.0, "\"{value}\"");
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Where lines go, buffered: a batch of lines is one write (std's stdout alone would write
/// each line separately).
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Stderr(std::io::BufWriter<std::io::Stderr>),
    File(std::path::PathBuf, std::io::BufWriter<std::fs::File>),
}

const SINK_BUFFER: usize = 64 * 1024;

impl Sink {
    fn open(path: &str) -> std::io::Result<Self> {
        Ok(match path {
            "stdout" | "-" => Sink::Stdout(std::io::BufWriter::with_capacity(
                SINK_BUFFER,
                std::io::stdout(),
            )),
            "stderr" => Sink::Stderr(std::io::BufWriter::with_capacity(
                SINK_BUFFER,
                std::io::stderr(),
            )),
            file => {
                let handle = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)?;
                Sink::File(
                    file.into(),
                    std::io::BufWriter::with_capacity(SINK_BUFFER, handle),
                )
            }
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(line),
            Sink::Stderr(out) => out.write_all(line),
            Sink::File(_, file) => file.write_all(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::Stderr(out) => out.flush(),
            Sink::File(_, file) => file.flush(),
        }
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Sink::File(path, file) = self {
            file.flush()?;
            let handle = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)?;
            *file = std::io::BufWriter::with_capacity(SINK_BUFFER, handle);
        }
        Ok(())
    }
}

/// How long the writer lets lines gather between batches. While it sleeps, queuing a line is a
/// push onto the channel and nothing more; a writer blocked on the channel would instead be
/// woken (a futex call, and a thread switch on a busy machine) for nearly every request. Lines
/// reach the file at most this much later.
const BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// The writer thread: waits for a line, writes it with every line queued behind it, flushes,
/// then sleeps a moment so that the next lines gather without waking it.
fn write_lines(mut sink: Sink, lines: Receiver<Vec<u8>>) {
    loop {
        if REOPEN.swap(false, Ordering::AcqRel) {
            if let Err(error) = sink.reopen() {
                tracing::error!(%error, "cannot reopen the access log");
            }
        }
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                for line in std::iter::once(line).chain(lines.try_iter()) {
                    if let Err(error) = sink.write(&line) {
                        tracing::error!(%error, "cannot write the access log");
                    }
                }
                let _ = sink.flush();
                std::thread::sleep(BATCH_INTERVAL);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = sink.flush();
                return;
            }
        }
    }
}
