//! The HTTP/1 connection loop: reads each request head under the header and idle timeouts (the
//! slow-client guard), checks it, fences the connection at the request's end, and hands the
//! request to Pingora's proxy or to the answered-here path. See docs/edge.md.

use crate::core::runtime::Runtime;
use crate::edge::answered::Serving;
use crate::edge::fence::Fence;
use crate::exchange::Reply;
use crate::observe::metrics::METRICS;
use crate::pipeline::gateway::Gateway;
use crate::problem::Problem;
use crate::wire::framing::BodyFraming;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How reading a request head ended.
enum Head {
    Complete(BytesMut),
    /// The HTTP/2 connection preface, on a listener that accepts h2c: what was read so far.
    H2cPreface(BytesMut),
    /// The client closed, idled out or the server is shutting down: close quietly.
    Closed,
    TimedOut,
    TooLarge(usize),
}

struct Settings {
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    max_header_bytes: usize,
}

impl Settings {
    fn now(runtime: &Runtime) -> Self {
        let state = runtime.state.load();
        let limits = &state.config.limits;
        Settings {
            header_timeout: limits.header_timeout.get(),
            idle_timeout: limits.idle_timeout.get(),
            body_timeout: limits.body_timeout.get(),
            max_header_bytes: state.max_header_bytes,
        }
    }
}

/// Whether `buf` holds a whole head (an empty line after the request line and headers).
fn head_complete(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf[start..].windows(2).enumerate().any(|(i, w)| {
        w == b"\n\n" || (w == b"\r\n" && start + i >= 2 && buf[start + i - 1] == b'\n')
    })
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn read_head(
    fence: &mut Fence,
    mut buf: BytesMut,
    reused: bool,
    h2c: bool,
    settings: &Settings,
    shutdown: &mut ShutdownWatch,
) -> Head {
    let now = Instant::now();
    let mut deadline = now + settings.header_timeout;
    if reused && buf.is_empty() {
        // Idle until the next request's first byte, then the head timeout starts. A busy
        // connection's next request usually comes within a moment: it is read at once into the
        // head buffer. One idle for longer gives the buffer up and waits for its first byte
        // without one (peeked, where the stream allows it).
        let idle = now + settings.idle_timeout;
        let moment = (now + IDLE_WITH_BUFFER).min(idle);
        buf.reserve(1024);
        let read = tokio::select! {
            read = fence.inner_mut().read_buf(&mut buf) => Some(read),
            _ = tokio::time::sleep_until(moment) => None,
            _ = shutdown.changed() => return Head::Closed,
        };
        match read {
            Some(Ok(n)) if n > 0 => {}
            Some(_) => return Head::Closed,
            None => {
                buf = BytesMut::new();
                // Nor does it keep the socket digest a proxied request made (plain.rs).
                fence.forget_digest();
                if let Some(head) = wait_idle(fence.inner_mut(), &mut buf, idle, shutdown).await {
                    return head;
                }
            }
        }
        deadline = Instant::now() + settings.header_timeout;
    }
    // Most heads fit in 1 KiB; this buffer becomes the session's and lives as long as the
    // request, so it starts small and grows as [`make_room`] finds it full. `buf` may already
    // hold the start of a pipelined request.
    if buf.capacity() < 1024 {
        buf.reserve(1024 - buf.len());
    }
    loop {
        // The preface holds an empty line too: look for it before looking for a head's end.
        if h2c && !reused && !buf.is_empty() {
            if buf.starts_with(H2_PREFACE) {
                return Head::H2cPreface(buf);
            }
            let partial = buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf);
            if partial {
                match read_more(fence.inner_mut(), &mut buf, deadline).await {
                    Some(head) => return head,
                    None => continue,
                }
            }
        }
        if head_complete(&buf, 0) {
            return Head::Complete(buf);
        }
        if buf.len() > settings.max_header_bytes {
            return Head::TooLarge(settings.max_header_bytes);
        }
        if let Some(head) = read_more(fence.inner_mut(), &mut buf, deadline).await {
            return head;
        }
    }
}

/// How long a kept-alive connection keeps its head buffer while it waits for its next request.
const IDLE_WITH_BUFFER: Duration = Duration::from_secs(1);

/// Waits for a long-idle connection's next request without a buffer until its first byte;
/// `Some` when the connection is to be closed instead.
async fn wait_idle(
    stream: &mut Stream,
    buf: &mut BytesMut,
    idle: Instant,
    shutdown: &mut ShutdownWatch,
) -> Option<Head> {
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        peeked = stream.try_peek(&mut first) => match peeked {
            Ok(peeked) => peeked,
            Err(_) => return Some(Head::Closed),
        },
        _ = tokio::time::sleep_until(idle) => return Some(Head::Closed),
        _ = shutdown.changed() => return Some(Head::Closed),
    };
    buf.reserve(1024);
    if peeked {
        return None;
    }
    tokio::select! {
        read = stream.read_buf(buf) => match read {
            Ok(n) if n > 0 => None,
            _ => Some(Head::Closed),
        },
        _ = tokio::time::sleep_until(idle) => Some(Head::Closed),
        _ = shutdown.changed() => Some(Head::Closed),
    }
}

/// Doubles `buf` when little room is left: a full `BytesMut` would otherwise be read into 64
/// bytes at a time.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(buf.capacity().max(1024));
    }
}

/// Reads what is there into `buf`; `Some` when reading must stop there. Shutdown does not stop
/// it: a connection accepted before shutdown is served (its answer closes it), so a client
/// whose connection was accepted just then loses nothing; only idle keep-alive connections
/// are closed at shutdown (in `read_head`).
async fn read_more(stream: &mut Stream, buf: &mut BytesMut, deadline: Instant) -> Option<Head> {
    let before = buf.len();
    make_room(buf);
    tokio::select! {
        read = stream.read_buf(buf) => match read {
            Ok(n) if n > 0 => None,
            _ => Some(Head::Closed),
        },
        _ = tokio::time::sleep_until(deadline) => {
            Some(if before == 0 { Head::Closed } else { Head::TimedOut })
        }
    }
}

/// Writes `problem` on the raw connection, closing it.
async fn refuse(stream: &mut Stream, problem: &Problem) {
    let reply = Reply::problem(problem).to_http1(false, true);
    let written = async {
        stream.write_all(&reply).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if let Err(error) = tokio::time::timeout(Duration::from_secs(1), written).await {
        tracing::debug!(%error, "cannot write the refusal to a slow client");
    }
}

/// How an HTTP/1 connection ended.
pub enum Served {
    Done,
    /// An h2c listener received the HTTP/2 preface first: the connection and the bytes read.
    H2cPreface(Stream, BytesMut),
}

/// Serves HTTP/1.x requests on `stream` until the connection closes, reading each request head
/// under the header timeout, as Pingora's own HTTP/1 loop (`impl ServerApp for
/// HttpServerApp`) would otherwise do without one. Each head is checked (head.rs) before
/// Pingora parses it, and Pingora reads the connection through a fence (fence.rs) that ends at
/// the request's last byte, so pipelined requests are served one after the other, in order.
pub async fn serve_http1(
    proxy: &Arc<HttpProxy<Gateway>>,
    gateway: &Gateway,
    runtime: &Runtime,
    stream: Stream,
    h2c: bool,
    shutdown: &ShutdownWatch,
) -> Served {
    let mut shutdown = shutdown.clone();
    let mut fence = Box::new(Fence::new(stream));
    let mut persistent = None;
    let mut reused = false;
    loop {
        let settings = Settings::now(runtime);
        let ahead = fence.take_ahead();
        // Boxed: inline, its timers and buffers would size the connection's state for as long
        // as the connection lives, held polls and idle keep-alive included.
        let head = Box::pin(read_head(
            &mut fence,
            ahead,
            reused,
            h2c,
            &settings,
            &mut shutdown,
        ))
        .await;
        let mut prefix = match head {
            Head::Complete(prefix) => {
                if !reused {
                    // Counted at its first request: an h2c connection starts here too.
                    METRICS.connections.with_label_values(&["http1"]).inc();
                }
                prefix
            }
            Head::H2cPreface(read) => return Served::H2cPreface(fence.into_inner(), read),
            Head::Closed => return Served::Done,
            Head::TimedOut => {
                let problem = crate::limits::request_timeout(&format!(
                    "the request head did not arrive within {:?}",
                    settings.header_timeout
                ));
                Box::pin(refuse_head(fence.inner_mut(), "OTHER", &problem)).await;
                return Served::Done;
            }
            Head::TooLarge(max) => {
                let problem = Problem::new(
                    431,
                    "header-too-large",
                    "Request Header Fields Too Large",
                    format!("the request head is larger than {max} bytes"),
                );
                Box::pin(refuse_head(fence.inner_mut(), "OTHER", &problem)).await;
                return Served::Done;
            }
        };
        let admitted = match admit_head(&mut prefix, &runtime.state.load()) {
            Ok(admitted) => admitted,
            Err(problem) => {
                Box::pin(refuse_head(
                    fence.inner_mut(),
                    method_label(&prefix),
                    &problem,
                ))
                .await;
                return Served::Done;
            }
        };
        // What was read past the head: this request's body (as far as it came), then the next
        // request. A malformed chunk already here is refused before anything is forwarded.
        let mut rest = prefix.split_off(admitted.len);
        let mut body = BodyFraming::new(admitted.framing);
        let used = match body.advance(&rest) {
            Ok(used) => used,
            Err(error) => {
                let problem =
                    Problem::new(400, "malformed-request", "Bad Request", error.to_string());
                Box::pin(refuse_head(
                    fence.inner_mut(),
                    method_label(&prefix),
                    &problem,
                ))
                .await;
                return Served::Done;
            }
        };
        let next = rest.split_off(used);
        prefix.unsplit(rest);
        let next = unshared(next);
        // Of the routes answered here, only a channel's WebSocket subscriber switches protocols.
        let answered = admitted.serving != Serving::Proxy;
        fence.begin(
            body,
            next,
            admitted.upgrade && admitted.serving != Serving::Answered,
        );
        if admitted.serving == Serving::HeldPoll {
            let keep_alive = !settings.idle_timeout.is_zero();
            // Boxed: inline, the hold would size this connection's task for its whole life,
            // idle keep-alive included.
            let reuse = Box::pin(crate::edge::held::serve(
                runtime,
                &mut fence,
                (prefix, admitted.len),
                keep_alive,
                &shutdown,
            ))
            .await;
            if !reuse {
                return Served::Done;
            }
            reused = true;
            continue;
        }
        let prepare = |session: &mut ServerSession| {
            if let Some(settings) = persistent.take() {
                HttpPersistentSettings::apply_to_session(settings, session);
            }
            let idle = settings.idle_timeout.as_secs();
            if *shutdown.borrow() || idle == 0 {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(idle));
            }
            session.set_read_timeout(Some(settings.body_timeout));
            session.set_pipelined_prefix(prefix);
        };
        // The sessions are made in blocks that end before the await: a session still in scope
        // there would be kept in this connection's state (moved out or not) for its whole
        // life, held polls and idle keep-alive included.
        let serving = if answered {
            let mut session = crate::edge::answered::session(fence);
            prepare(&mut session.downstream_session);
            // Boxed: this connection's task stays small while it idles between requests.
            Box::pin(crate::edge::answered::serve(gateway, session, &shutdown))
        } else {
            let mut session = ServerSession::new_http1(fence);
            prepare(&mut session);
            // Already boxed by `async_trait`.
            proxy.process_new_http(session, &shutdown)
        };
        let reusable = serving.await;
        let Some(reusable) = reusable else {
            return Served::Done;
        };
        let (next, settings) = reusable.consume();
        // The fence went in as the session's stream and comes back as it.
        let Ok(next) = next.into_any().downcast::<Fence>() else {
            return Served::Done;
        };
        if next.closed() {
            return Served::Done;
        }
        fence = next;
        persistent = settings;
        reused = true;
    }
}

/// `buf`, or a new empty buffer when it is empty: an empty split of the head buffer still
/// shares its allocation, which the fence would then keep for as long as the request lasts (a
/// held poll's whole hold). Taken by value so that the split is dropped here.
fn unshared(buf: BytesMut) -> BytesMut {
    if buf.is_empty() {
        BytesMut::new()
    } else {
        buf
    }
}

/// Where a checked request goes, and how its body is framed.
struct Admitted {
    /// Who serves it: Pingora's proxy, or the gateway itself (answered.rs, held.rs).
    serving: Serving,
    /// The head's length.
    len: usize,
    framing: crate::wire::framing::Framing,
    /// It asks to switch protocols; the fence lets it become a tunnel after a `101`.
    upgrade: bool,
}

/// Checks the head at the start of `buf`, rewriting an absolute-form target into origin form in
/// place, and decides where the request is served: whether the gateway answers it itself, the
/// head's length and the body's framing.
fn admit_head(buf: &mut BytesMut, state: &crate::core::state::State) -> Result<Admitted, Problem> {
    let decide = |head: crate::wire::head::Checked<'_>| Admitted {
        serving: crate::edge::answered::serving(state, head.method, head.target, head.host),
        len: head.len,
        framing: head.framing,
        upgrade: head.upgrade,
    };
    let head = crate::wire::head::check(buf, state.max_headers)?;
    let Some(rewritten) = crate::wire::head::origin_form(buf, &head)? else {
        return Ok(decide(head));
    };
    let rest = buf.split_off(head.len);
    *buf = BytesMut::from(&rewritten[..]);
    buf.unsplit(rest);
    crate::wire::head::check(buf, state.max_headers).map(decide)
}

/// The request method as a metric label, from a head that may not parse.
fn method_label(head: &[u8]) -> &'static str {
    head.split(|&b| b == b' ')
        .next()
        .and_then(|method| http::Method::from_bytes(method).ok())
        .map_or("OTHER", |method| crate::observe::labels::method(&method))
}

/// Refuses a head the gateway will not pass on: counted (before the answer goes out), logged
/// at a bounded rate, answered, and the connection closed.
async fn refuse_head(stream: &mut Stream, method: &str, problem: &Problem) {
    if let Some(kind) = crate::limits::rejection_kind(problem.status) {
        METRICS
            .limit_rejections
            .with_label_values(&["none", kind])
            .inc();
    }
    METRICS
        .requests
        .with_label_values(&["none", method, crate::observe::labels::code(problem.status)])
        .inc();
    crate::observe::client_log::refused(problem);
    refuse(stream, problem).await;
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    #[test]
    fn an_empty_rest_of_the_head_buffer_does_not_keep_it() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let rest = buf.split_off(buf.len());
        assert!(rest.capacity() > 0, "a split shares the buffer's room");
        assert_eq!(super::unshared(rest).capacity(), 0);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\nGET"[..]);
        let rest = buf.split_off(18);
        assert_eq!(&super::unshared(rest)[..], b"GET");
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert!(super::head_complete(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            0
        ));
        assert!(super::head_complete(b"GET / HTTP/1.1\nHost: x\n\n", 0));
        assert!(!super::head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
        assert!(!super::head_complete(b"GET / HTTP/1.1\r\n", 0));
    }
}
