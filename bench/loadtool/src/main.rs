//! loadtool — the client side of bench/longpoll.sh, and bench/llm.sh's open-stream round.
//!
//!   loadtool fanout --sub URL --n N --pub URL --pub-body BODY [--pids P1,P2] [--settle S]
//!                   [--timeout S] [--label NAME]
//!       Holds N long-polls on URL (raw HTTP/1.1 over TCP, one connection each), measures the
//!       resident memory (VmRSS summed over --pids) before and after holding them, then sends
//!       ONE publish (POST BODY to --pub) and measures, for every held poll, the time from just
//!       before the publish is written to the moment its answer reached the client's socket.
//!       That moment is the kernel's receive timestamp (SO_TIMESTAMPNS on each socket), so the
//!       figure does not include the load tool's own scheduling: while the answers arrive the
//!       tool stays idle and only collects them every 100 ms with non-blocking recvmsg.
//!
//!   loadtool throughput --sub URL_WITH_{ch} --pub URL_WITH_{ch} --pub-body BODY_WITH_{ch}
//!                   [--channels 100] [--per-channel 100] [--publishers 4] [--duration 10]
//!                   [--pub-rate R]
//!       Holds channels × per-channel polls (each re-polls as soon as it is answered), then
//!       publishes to the channels round robin from --publishers keep-alive connections for
//!       --duration seconds, and reports publishes/s and answers delivered/s. Each publisher
//!       sends its next publish when the previous one is answered, or, with --pub-rate, paced
//!       to R publishes/s in all (for a server whose publish answer does not wait for delivery).
//!
//!   loadtool sustain --sub URL --pub URL --sse 1|--ws 1 [--n 1000] [--rate 100] [--secs 10]
//!                   [--pids P1,P2] [--label NAME] [--settle 1] [--drain 5]
//!       N Server-Sent Events streams (or WebSockets) on ONE broadcast channel; once all are
//!       open (and --settle seconds more), publishes m000000, m000001, … to --pub at --rate per
//!       second for --secs seconds, from one keep-alive connection, in order (each sent when
//!       due, its answer — 2xx — read before the next). Every subscriber parses its stream as
//!       it comes (SSE `data:` lines, plain or chunked; WebSocket frames, pings answered) and
//!       checks that it got every published message exactly once and in order. Reports
//!       published, delivered, expected (published × held), lost, reordered, duplicates, the
//!       servers' CPU (utime+stime of --pids from /proc/PID/stat) from the first publish until
//!       the last delivery (at most --drain seconds after the last publish), CPU µs per delivery,
//!       the load tool's own CPU (both in % of one CPU) and the machine's busy share (in % of
//!       all its CPUs) over the same window, and the delivery latency (publish sent → the
//!       kernel's receive timestamp) p50 / p99 / max. Long-poll subscribers are not supported.
//!
//!   loadtool grip-origin --listen 127.0.0.1:PORT
//!       The origin Pushpin fronts: answers every request with `Grip-Hold: response` and
//!       `Grip-Channel: <last path segment>`, so Pushpin holds the client.
//!
//!   loadtool llm-provider --listen 127.0.0.1:PORT
//!       An OpenAI-compatible provider whose streams stay open: answers every request (its head
//!       and Content-Length body read) with `200`, `text/event-stream`, chunked, and two chat
//!       completion chunks as SSE events, each its own HTTP chunk (the role chunk, then one with
//!       content `Hello`), then sends nothing more until the client closes the connection.
//!
//!   loadtool hold-streams --url URL --body BODY --n N [--pids P1,P2] [--header 'Name: value']
//!                   [--label NAME] [--settle 1] [--concurrency 200] [--timeout 30]
//!       Memory per open, idle streamed chat completion: measures the resident memory (VmRSS
//!       summed over --pids), opens N connections (at most --concurrency being set up at once),
//!       sends on each `POST BODY` (JSON; --header added) and reads until the body holds a whole
//!       SSE event whose data has content `Hello` (the provider's first content chunk; the role
//!       chunk before it does not count), noting the time from the request's write to that
//!       event. A stream fails on a status other than 200, a close, or --timeout seconds
//!       without that event. Once every stream is held or failed, waits --settle seconds,
//!       measures the memory again and reports held, failed (and why), the memory before and
//!       after, KiB per held stream ((after − before) ÷ held), the first event's p50 / p99, how
//!       many held streams the server closed during the settle (dropped), and how much of the
//!       memory before and after transparent huge pages back (AnonHugePages); then closes all.
//!
//! Output is one line of `key=value` pairs per run, for the script to print and parse.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Args = HashMap<String, String>;

fn parse_args(raw: &[String]) -> Args {
    let mut args = HashMap::new();
    let mut i = 0;
    while i < raw.len() {
        let key = raw[i].trim_start_matches("--").to_owned();
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        args.insert(key, value);
        i += 2;
    }
    args
}

fn arg<T: std::str::FromStr>(args: &Args, key: &str, default: T) -> T {
    args.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn required<'a>(args: &'a Args, key: &str) -> &'a str {
    args.get(key).map(String::as_str).unwrap_or_else(|| {
        eprintln!("loadtool: --{key} is required");
        std::process::exit(2)
    })
}

/// `--pids P1,P2`: the server processes whose memory and CPU are measured.
fn pids(args: &Args) -> Vec<u32> {
    args.get("pids")
        .map(|p| p.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}

#[derive(Clone)]
struct Url {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Url {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            eprintln!("loadtool: cannot resolve {hostport}");
            std::process::exit(2)
        });
    Url {
        addr,
        host: hostport.to_owned(),
        path: path.to_owned(),
    }
}

fn get_request(url: &Url) -> Vec<u8> {
    get_request_accepting(url, "*/*")
}

fn get_request_accepting(url: &Url, accept: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-loadtool\r\nAccept: {accept}\r\n\r\n",
        url.path, url.host
    )
    .into_bytes()
}

/// A JSON POST; `header` (`Name: value`), if any, is added to the head.
fn post_request(url: &Url, body: &str, close: bool, header: Option<&str>) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-loadtool\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}{}\r\n{}",
        url.path,
        url.host,
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
        header.map(|h| format!("{}\r\n", h.trim())).unwrap_or_default(),
        body
    )
    .into_bytes()
}

/// A `Name:  N kB` line of a /proc/PID file, summed over the given processes, in KiB.
fn proc_kib(pids: &[u32], file: &str, field: &str) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
        .filter_map(|text| {
            text.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Of the given processes' memory, what transparent huge pages back, summed, in KiB.
fn huge_kib(pids: &[u32]) -> u64 {
    proc_kib(pids, "smaps_rollup", "AnonHugePages:")
}

/// Resident memory of the given processes, summed, in KiB.
fn rss_kib(pids: &[u32]) -> u64 {
    proc_kib(pids, "status", "VmRSS:")
}

fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn enable_rx_timestamps(fd: i32) {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

enum Recv {
    Nothing,
    Closed,
    /// bytes read, the kernel's receive time (realtime ns) if it gave one
    Data(Vec<u8>, Option<i128>),
}

/// One non-blocking recvmsg with the receive timestamp.
fn recv_timestamped(fd: i32, peek: bool) -> Recv {
    let mut buf = vec![0u8; 8192];
    let flags = if peek { libc::MSG_PEEK } else { 0 };
    match recv_stamped(fd, &mut buf, flags) {
        Ok((0, _)) => Recv::Closed,
        Ok((n, stamp)) => {
            buf.truncate(n);
            Recv::Data(buf, stamp.map(i128::from))
        }
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Recv::Nothing,
        Err(_) => Recv::Closed,
    }
}

fn status_of(bytes: &[u8]) -> u16 {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends one request on a fresh blocking connection and returns the status and the body.
fn one_shot(url: &Url, request: &[u8]) -> (u16, String) {
    let Ok(mut stream) = StdStream::connect_timeout(&url.addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    if stream.write_all(request).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the head and the body announced by Content-Length are in (or EOF).
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if let Some((head, _, _, Length::Exact(length))) = parse_head(&out) {
            if out.len() >= head + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status_of(&out), body)
}

async fn fanout(args: Args) {
    let sub = parse_url(required(&args, "sub"));
    let publish = parse_url(required(&args, "pub"));
    let body = required(&args, "pub-body").to_owned();
    let n: usize = arg(&args, "n", 1000);
    let settle: f64 = arg(&args, "settle", 3.0);
    let timeout: f64 = arg(&args, "timeout", 30.0);
    let concurrency: usize = arg(&args, "connect-concurrency", 256);
    let label = args
        .get("label")
        .cloned()
        .unwrap_or_else(|| "server".into());
    let pids = pids(&args);

    // `--sse 1`: the subscribers are Server-Sent Events streams (`Accept: text/event-stream`);
    // `--ws 1`: WebSockets. Each is held once its head (and anything the server sends first)
    // has been read; its first data after the publish is the message.
    let ws = arg::<u8>(&args, "ws", 0) == 1;
    let sse = arg::<u8>(&args, "sse", 0) == 1 || ws;
    let opened_status = if ws { 101 } else { 200 };
    let rss_before = rss_kib(&pids);
    let request = Arc::new(if ws {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            sub.path, sub.host
        )
        .into_bytes()
    } else if sse {
        get_request_accepting(&sub, "text/event-stream")
    } else {
        get_request(&sub)
    });
    let sockets = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let failed = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (request, sockets, failed, gate) = (
            request.clone(),
            sockets.clone(),
            failed.clone(),
            gate.clone(),
        );
        let addr = sub.addr;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            for attempt in 0..20 {
                match TcpStream::connect(addr).await {
                    Ok(mut stream) => {
                        enable_rx_timestamps(stream.as_raw_fd());
                        if stream.write_all(&request).await.is_ok() {
                            if let Ok(std) = stream.into_std() {
                                sockets.lock().unwrap().push(std);
                                return;
                            }
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await,
                }
            }
            failed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let sockets = std::mem::take(&mut *sockets.lock().unwrap());
    // Anything already answered (a 503 over a cap, an error, a closed socket) is not held.
    let mut early = 0usize;
    let mut early_status = HashMap::<u16, usize>::new();
    let mut held: Vec<&StdStream> = Vec::with_capacity(sockets.len());
    for socket in &sockets {
        if sse {
            // A stream's head says 200; what follows it (a retry line, a comment) is drained.
            match recv_timestamped(socket.as_raw_fd(), false) {
                Recv::Data(bytes, _) if status_of(&bytes) == opened_status => {
                    while let Recv::Data(..) = recv_timestamped(socket.as_raw_fd(), false) {}
                    held.push(socket);
                }
                Recv::Data(bytes, _) => {
                    early += 1;
                    *early_status.entry(status_of(&bytes)).or_default() += 1;
                }
                Recv::Nothing | Recv::Closed => {
                    early += 1;
                    *early_status.entry(0).or_default() += 1;
                }
            }
            continue;
        }
        match recv_timestamped(socket.as_raw_fd(), true) {
            Recv::Nothing => held.push(socket),
            Recv::Closed => {
                early += 1;
                *early_status.entry(0).or_default() += 1;
            }
            Recv::Data(bytes, _) => {
                early += 1;
                *early_status.entry(status_of(&bytes)).or_default() += 1;
            }
        }
    }
    let rss_after = rss_kib(&pids);
    let per_conn = if held.is_empty() {
        f64::NAN
    } else {
        (rss_after as f64 - rss_before as f64) / held.len() as f64
    };

    // One publish; every held poll should get it.
    let publish_request = post_request(&publish, &body, true, None);
    let t0 = realtime_ns();
    let (publish_status, publish_body) = one_shot(&publish, &publish_request);
    let publish_ms = (realtime_ns() - t0) as f64 / 1e6;

    let mut latencies = Vec::with_capacity(held.len());
    let mut non200 = 0usize;
    let mut closed = 0usize;
    let mut unstamped = 0usize;
    let mut pending: Vec<&StdStream> = held.clone();
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        pending.retain(|socket| match recv_timestamped(socket.as_raw_fd(), false) {
            Recv::Nothing => true,
            Recv::Closed => {
                closed += 1;
                false
            }
            Recv::Data(bytes, stamp) => {
                // A stream's event has no status line.
                if !sse && status_of(&bytes) != 200 {
                    non200 += 1;
                }
                let at = stamp.unwrap_or_else(|| {
                    unstamped += 1;
                    realtime_ns()
                });
                latencies.push((at - t0) as f64 / 1e6);
                false
            }
        });
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let early_status: Vec<String> = early_status
        .iter()
        .map(|(s, c)| format!("{s}:{c}"))
        .collect();
    println!(
        "label={label} n={n} connected={} connect_failed={} connect_secs={connect_secs:.2} held={} early={early} early_status={} \
         rss_before_kib={rss_before} rss_after_kib={rss_after} kib_per_held={per_conn:.2} \
         publish_status={publish_status} publish_ms={publish_ms:.1} received={} missing={} non200={non200} closed={closed} unstamped={unstamped} \
         p50_ms={:.1} p99_ms={:.1} max_ms={:.1} publish_answer={}",
        sockets.len(),
        failed.load(Ordering::Relaxed),
        held.len(),
        if early_status.is_empty() { "-".into() } else { early_status.join(",") },
        latencies.len(),
        pending.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        publish_body.split_whitespace().collect::<Vec<_>>().join(""),
    );
}

enum Length {
    Exact(usize),
    Chunked,
    UntilClose,
}

/// Parses a response head in `buf`: (head length, status, close, body length).
fn parse_head(buf: &[u8]) -> Option<(usize, u16, bool, Length)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = status_of(&buf[..end]);
    let mut close = head.starts_with("HTTP/1.0");
    let mut length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let length = if chunked {
        Length::Chunked
    } else if let Some(length) = length {
        Length::Exact(length)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Length::Exact(0)
    } else {
        Length::UntilClose
    };
    Some((end, status, close, length))
}

/// The length of a complete chunked body at the start of `buf`, if it is all there.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let size_text = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // no trailers expected: the final CRLF
            if buf.len() >= pos + 2 {
                return Some(pos + 2);
            }
            return None;
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        pos += size + 2;
    }
}

/// Reads one whole response from a keep-alive connection; returns (status, close).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((head, status, close, length)) = parse_head(buf) {
            let total = match length {
                Length::Exact(n) => (buf.len() >= head + n).then_some(head + n),
                Length::Chunked => chunked_len(&buf[head..]).map(|n| head + n),
                Length::UntilClose => None,
            };
            if let Some(total) = total {
                buf.drain(..total);
                return Ok((status, close));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                if matches!(length, Length::UntilClose) {
                    buf.clear();
                    return Ok((status, true));
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        } else {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn throughput(args: Args) {
    let sub_template = required(&args, "sub").to_owned();
    let pub_template = required(&args, "pub").to_owned();
    let body_template = required(&args, "pub-body").to_owned();
    let channels: usize = arg(&args, "channels", 100);
    let per_channel: usize = arg(&args, "per-channel", 100);
    let publishers: usize = arg(&args, "publishers", 4);
    let duration: f64 = arg(&args, "duration", 10.0);
    // Publishes per second over all publishers; 0 = as fast as the answers come back.
    let pub_rate: f64 = arg(&args, "pub-rate", 0.0);
    let settle: f64 = arg(&args, "settle", 3.0);
    let label = args
        .get("label")
        .cloned()
        .unwrap_or_else(|| "server".into());

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let sub_errors = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut subscribers = Vec::new();
    for ch in 0..channels {
        let url = parse_url(&sub_template.replace("{ch}", &format!("c{ch}")));
        let request = Arc::new(get_request(&url));
        for _ in 0..per_channel {
            let (request, measuring, stop, delivered, other, sub_errors, connected, gate) = (
                request.clone(),
                measuring.clone(),
                stop.clone(),
                delivered.clone(),
                other.clone(),
                sub_errors.clone(),
                connected.clone(),
                gate.clone(),
            );
            let addr = url.addr;
            subscribers.push(tokio::spawn(async move {
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let permit = gate.acquire().await;
                    let Ok(mut stream) = TcpStream::connect(addr).await else {
                        sub_errors.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    drop(permit);
                    if first {
                        connected.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                    let mut buf = Vec::with_capacity(1024);
                    loop {
                        if stream.write_all(&request).await.is_err() {
                            break;
                        }
                        let response = tokio::select! {
                            r = read_response(&mut stream, &mut buf) => r,
                            _ = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(200)).await } } => return,
                        };
                        match response {
                            Ok((status, close)) => {
                                if measuring.load(Ordering::Relaxed) {
                                    if status == 200 {
                                        delivered.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        other.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                if close {
                                    break;
                                }
                            }
                            Err(_) => {
                                sub_errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            }));
        }
    }
    let total = (channels * per_channel) as u64;
    let wait_until = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < total && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;

    let published = Arc::new(AtomicU64::new(0));
    let pub_errors = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(duration);
    let mut pubs = Vec::new();
    for _ in 0..publishers {
        let (published, pub_errors, seq) = (published.clone(), pub_errors.clone(), seq.clone());
        let (pub_template, body_template) = (pub_template.clone(), body_template.clone());
        pubs.push(tokio::spawn(async move {
            let mut stream: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(1024);
            while Instant::now() < end {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                if pub_rate > 0.0 {
                    let due = started + Duration::from_secs_f64(i as f64 / pub_rate);
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let ch = format!("c{}", i % channels as u64);
                let url = parse_url(&pub_template.replace("{ch}", &ch));
                let body = body_template
                    .replace("{ch}", &ch)
                    .replace("{seq}", &i.to_string());
                if stream.is_none() {
                    stream = TcpStream::connect(url.addr).await.ok();
                    buf.clear();
                }
                let Some(s) = stream.as_mut() else {
                    pub_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let ok = s
                    .write_all(&post_request(&url, &body, false, None))
                    .await
                    .is_ok();
                match if ok {
                    read_response(s, &mut buf).await.ok()
                } else {
                    None
                } {
                    Some((status, close)) => {
                        if (200..300).contains(&status) {
                            published.fetch_add(1, Ordering::Relaxed);
                        } else {
                            pub_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if close {
                            stream = None;
                        }
                    }
                    None => {
                        pub_errors.fetch_add(1, Ordering::Relaxed);
                        stream = None;
                    }
                }
            }
        }));
    }
    for p in pubs {
        let _ = p.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Answers to the last publishes still on their way count too (bounded wait).
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let published = published.load(Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed);
    println!(
        "label={label} subscribers={} connected={} publishers={publishers} secs={elapsed:.1} published={published} \
         publish_per_s={:.0} delivered={delivered} delivered_per_s={:.0} delivered_per_publish={:.1} \
         other_answers={} pub_errors={} sub_errors={}",
        total,
        connected.load(Ordering::Relaxed),
        published as f64 / elapsed,
        delivered as f64 / elapsed,
        if published > 0 { delivered as f64 / published as f64 } else { 0.0 },
        other.load(Ordering::Relaxed),
        pub_errors.load(Ordering::Relaxed),
        sub_errors.load(Ordering::Relaxed),
    );
    for s in subscribers {
        s.abort();
    }
}

// ---- sustain ------------------------------------------------------------------------------------

/// utime + stime of the given processes (all their threads), in seconds.
fn cpu_secs(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The name (field 2) may hold spaces: count the fields after its closing parenthesis,
            // which start at field 3 (state); utime and stime are fields 14 and 15.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some(utime + stime)
        })
        .sum();
    ticks as f64 / hz
}

/// The whole machine's (busy, total) jiffies, from the first line of /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// One non-blocking recvmsg into `buf` (with `flags`, e.g. `MSG_PEEK`), with the kernel's
/// receive time (realtime ns) if it gave one; `WouldBlock` as an error, for `try_io`.
fn recv_stamped(fd: i32, buf: &mut [u8], flags: i32) -> std::io::Result<(usize, Option<i64>)> {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all pointers point into buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: see above.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote, with libc's own macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                stamp = Some(ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

/// The sequence number of a message body `m<digits>`.
fn seq_of(body: &[u8]) -> Option<usize> {
    let digits = body.strip_prefix(b"m")?;
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let mut value = 0usize;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + usize::from(d - b'0');
    }
    Some(value)
}

/// Where a chunked body's decoder is.
enum Chunk {
    /// In a chunk-size line: the size so far, and whether an extension (`;…`) began.
    Size(usize, bool),
    /// In a chunk's data: bytes left.
    Data(usize),
    /// After a chunk's data, until its line end.
    DataEnd,
    /// The last chunk came: the stream is over.
    Done,
}

/// What a subscriber's bytes brought.
#[derive(Default)]
struct Seen {
    /// message sequence numbers, in arrival order
    seqs: Vec<usize>,
    /// `cursor-gone` resets (the subscriber fell behind the server's buffer)
    resets: u64,
    /// events or frames that were neither a message nor a reset
    other: u64,
    /// the server closed the stream or socket (last chunk, close frame)
    ended: bool,
}

/// A subscriber's incremental parser: the response head, then Server-Sent Events (plain or
/// chunked) or WebSocket frames from the server.
struct StreamParser {
    ws: bool,
    /// The head's status, once it is in.
    status: Option<u16>,
    /// Bytes of the head so far; then unparsed stream bytes (SSE lines or WebSocket frames).
    buf: Vec<u8>,
    /// Whether the SSE body is chunked, and the decoder.
    chunked: Option<Chunk>,
    /// The current SSE event's `event:` is `reset`.
    reset_event: bool,
    /// A fragmented WebSocket message so far.
    fragment: Vec<u8>,
    /// Masked pongs to send (answers to the server's pings).
    pongs: Vec<u8>,
}

impl StreamParser {
    fn new(ws: bool) -> Self {
        Self {
            ws,
            status: None,
            buf: Vec::with_capacity(1024),
            chunked: None,
            reset_event: false,
            fragment: Vec::new(),
            pongs: Vec::new(),
        }
    }

    fn feed(&mut self, data: &[u8], seen: &mut Seen) {
        if self.status.is_none() {
            self.buf.extend_from_slice(data);
            let Some((head, status, _, length)) = parse_head(&self.buf) else {
                return;
            };
            self.status = Some(status);
            if matches!(length, Length::Chunked) && !self.ws {
                self.chunked = Some(Chunk::Size(0, false));
            }
            let rest = self.buf.split_off(head);
            self.buf.clear();
            self.body(&rest, seen);
        } else {
            self.body(data, seen);
        }
    }

    /// Body bytes as they came off the socket: de-chunked if need be, then parsed.
    fn body(&mut self, data: &[u8], seen: &mut Seen) {
        let Some(mut state) = self.chunked.take() else {
            self.buf.extend_from_slice(data);
            self.parse(seen);
            return;
        };
        let mut i = 0;
        while i < data.len() {
            state = match state {
                Chunk::Size(size, ext) => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\n' if size == 0 => Chunk::Done,
                        b'\n' => Chunk::Data(size),
                        b';' => Chunk::Size(size, true),
                        _ if ext => Chunk::Size(size, true),
                        b'0'..=b'9' => Chunk::Size(size * 16 + usize::from(b - b'0'), false),
                        b'a'..=b'f' => Chunk::Size(size * 16 + usize::from(b - b'a' + 10), false),
                        b'A'..=b'F' => Chunk::Size(size * 16 + usize::from(b - b'A' + 10), false),
                        _ => Chunk::Size(size, ext), // CR, whitespace
                    }
                }
                Chunk::Data(left) => {
                    let take = left.min(data.len() - i);
                    self.buf.extend_from_slice(&data[i..i + take]);
                    i += take;
                    if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    }
                }
                Chunk::DataEnd => {
                    let b = data[i];
                    i += 1;
                    if b == b'\n' {
                        Chunk::Size(0, false)
                    } else {
                        Chunk::DataEnd
                    }
                }
                Chunk::Done => {
                    seen.ended = true;
                    break;
                }
            };
        }
        if matches!(state, Chunk::Done) {
            seen.ended = true;
        }
        self.chunked = Some(state);
        self.parse(seen);
    }

    fn parse(&mut self, seen: &mut Seen) {
        if self.ws {
            self.frames(seen)
        } else {
            self.lines(seen)
        }
    }

    /// Server-Sent Events: `data:` lines are messages (each message is one line); `event:
    /// reset` marks the event's data as a reset; comments, `id:`, `retry:` are skipped.
    fn lines(&mut self, seen: &mut Seen) {
        let mut start = 0;
        while let Some(end) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + end];
            start += end + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.is_empty() {
                self.reset_event = false;
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if self.reset_event {
                    seen.resets += 1;
                } else if let Some(seq) = seq_of(value) {
                    seen.seqs.push(seq);
                } else {
                    seen.other += 1;
                }
            } else if let Some(value) = line.strip_prefix(b"event:") {
                self.reset_event = value.trim_ascii() == b"reset";
            }
        }
        self.buf.drain(..start);
    }

    /// WebSocket frames from the server (unmasked, but a mask is honoured): text and binary
    /// messages (fragmented ones put together), pings answered, a close ends it.
    fn frames(&mut self, seen: &mut Seen) {
        let mut pos = 0;
        loop {
            let avail = &self.buf[pos..];
            if avail.len() < 2 {
                break;
            }
            let (fin, opcode) = (avail[0] & 0x80 != 0, avail[0] & 0x0f);
            let masked = avail[1] & 0x80 != 0;
            let (len, mut header) = match avail[1] & 0x7f {
                126 if avail.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([avail[2], avail[3]])), 4)
                }
                127 if avail.len() >= 10 => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&avail[2..10]);
                    (u64::from_be_bytes(be) as usize, 10)
                }
                126 | 127 => break,
                len => (usize::from(len), 2),
            };
            let mask = if masked {
                if avail.len() < header + 4 {
                    break;
                }
                header += 4;
                Some([
                    avail[header - 4],
                    avail[header - 3],
                    avail[header - 2],
                    avail[header - 1],
                ])
            } else {
                None
            };
            if avail.len() < header + len {
                break;
            }
            let mut payload = avail[header..header + len].to_vec();
            if let Some(mask) = mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            pos += header + len;
            match opcode {
                0..=2 => {
                    let whole = if opcode != 0 && fin && self.fragment.is_empty() {
                        payload
                    } else {
                        self.fragment.extend_from_slice(&payload);
                        if !fin {
                            continue;
                        }
                        std::mem::take(&mut self.fragment)
                    };
                    if let Some(seq) = seq_of(&whole) {
                        seen.seqs.push(seq);
                    } else if whole.windows(11).any(|w| w == b"cursor-gone") {
                        seen.resets += 1;
                    } else {
                        seen.other += 1;
                    }
                }
                8 => {
                    seen.ended = true;
                    break;
                }
                9 => {
                    // pong, FIN, masked with a fixed key, the ping's payload
                    let key = [0x5a, 0x17, 0xc3, 0x0e];
                    self.pongs.push(0x8a);
                    self.pongs.push(0x80 | payload.len() as u8);
                    self.pongs.extend_from_slice(&key);
                    self.pongs
                        .extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
                }
                _ => {}
            }
        }
        self.buf.drain(..pos);
    }
}

/// What one subscriber reports at the end.
struct SubReport {
    /// opened (its 101 or 200 came)
    opened: bool,
    status: u16,
    /// bit i: message i arrived
    got: Vec<u64>,
    duplicates: u64,
    /// arrived after a later message
    reordered: u64,
    resets: u64,
    other: u64,
    /// the server ended it, or the connection broke, before the end
    closed: bool,
    /// microseconds from the publish to the kernel's receive time, one per message
    latencies_us: Vec<u32>,
    unstamped: u64,
}

async fn sustain(args: Args) {
    let sub = parse_url(required(&args, "sub"));
    let publish = parse_url(required(&args, "pub"));
    let n: usize = arg(&args, "n", 1000);
    let rate: f64 = arg(&args, "rate", 100.0);
    let secs: f64 = arg(&args, "secs", 10.0);
    let settle: f64 = arg(&args, "settle", 1.0);
    // After the last publish, how long the last deliveries may take at most.
    let drain: f64 = arg(&args, "drain", 5.0);
    let concurrency: usize = arg(&args, "connect-concurrency", 256);
    let label = args
        .get("label")
        .cloned()
        .unwrap_or_else(|| "server".into());
    let pids = pids(&args);
    let ws = arg::<u8>(&args, "ws", 0) == 1;
    let sse = arg::<u8>(&args, "sse", 0) == 1 && !ws;
    if !ws && !sse {
        eprintln!("loadtool sustain: --sse 1 or --ws 1 (long-poll is not supported here)");
        std::process::exit(2)
    }
    let planned = (rate * secs).round().max(1.0) as usize;
    let opened_status = if ws { 101 } else { 200 };
    let request = Arc::new(if ws {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-loadtool\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            sub.path, sub.host
        )
        .into_bytes()
    } else {
        get_request_accepting(&sub, "text/event-stream")
    });

    // The publisher writes each message's send time (realtime ns) here before it sends it;
    // subscribers read it to time their deliveries.
    let sent_at: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new(
        (0..planned)
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect(),
    );
    let opened = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    // One stop signal per subscriber: a oneshot is polled without locks (a shared watch would
    // take its mutex on every read).
    let mut stops = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let words = planned.div_ceil(64);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (request, sent_at, opened, refused, delivered, gate) = (
            request.clone(),
            sent_at.clone(),
            opened.clone(),
            refused.clone(),
            delivered.clone(),
            gate.clone(),
        );
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop_tx);
        let addr = sub.addr;
        tasks.push(tokio::spawn(async move {
            let mut report = SubReport {
                opened: false,
                status: 0,
                got: vec![0u64; words],
                duplicates: 0,
                reordered: 0,
                resets: 0,
                other: 0,
                closed: false,
                latencies_us: Vec::with_capacity(planned),
                unstamped: 0,
            };
            let permit = gate.acquire().await;
            let mut stream = None;
            for attempt in 0..20 {
                match TcpStream::connect(addr).await {
                    Ok(mut s) => {
                        enable_rx_timestamps(s.as_raw_fd());
                        if s.write_all(&request).await.is_ok() {
                            stream = Some(s);
                            break;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await,
                }
            }
            drop(permit);
            let Some(mut stream) = stream else {
                refused.fetch_add(1, Ordering::Relaxed);
                return report;
            };
            let fd = stream.as_raw_fd();
            let mut parser = StreamParser::new(ws);
            let mut seen = Seen::default();
            let mut rbuf = vec![0u8; 16384];
            let mut next = 0usize; // one past the highest sequence seen
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    ready = stream.readable() => if ready.is_err() { report.closed = true; break },
                }
                let (k, stamp) = match stream.try_io(tokio::io::Interest::READABLE, || {
                    recv_stamped(fd, &mut rbuf, 0)
                }) {
                    Ok((0, _)) => {
                        report.closed = true;
                        break;
                    }
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => {
                        report.closed = true;
                        break;
                    }
                };
                let arrived = stamp.unwrap_or_else(|| realtime_ns() as i64);
                parser.feed(&rbuf[..k], &mut seen);
                if !report.opened {
                    match parser.status {
                        None => continue,
                        Some(status) if status == opened_status => {
                            report.status = status;
                            report.opened = true;
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(status) => {
                            report.status = status;
                            refused.fetch_add(1, Ordering::Relaxed);
                            return report;
                        }
                    }
                }
                let mut fresh = 0;
                for &seq in &seen.seqs {
                    if seq >= planned {
                        report.other += 1;
                        continue;
                    }
                    let (word, bit) = (seq / 64, 1u64 << (seq % 64));
                    if report.got[word] & bit != 0 {
                        report.duplicates += 1;
                        continue;
                    }
                    report.got[word] |= bit;
                    fresh += 1;
                    if seq < next {
                        report.reordered += 1;
                    } else {
                        next = seq + 1;
                    }
                    let sent = sent_at[seq].load(Ordering::Acquire);
                    if sent > 0 && stamp.is_some() {
                        report
                            .latencies_us
                            .push(((arrived - sent).max(0) / 1000) as u32);
                    } else {
                        report.unstamped += 1;
                    }
                }
                seen.seqs.clear();
                if fresh > 0 {
                    delivered.fetch_add(fresh, Ordering::Relaxed);
                }
                if !parser.pongs.is_empty() {
                    let pongs = std::mem::take(&mut parser.pongs);
                    if stream.write_all(&pongs).await.is_err() {
                        report.closed = true;
                        break;
                    }
                }
                if seen.ended {
                    report.closed = true;
                    break;
                }
            }
            report.resets = seen.resets;
            report.other += seen.other;
            report.latencies_us.shrink_to_fit();
            report
        }));
    }

    // Settle: every subscriber open (or refused), then a little longer.
    let connect_started = Instant::now();
    let wait_until = connect_started + Duration::from_secs(60 + n as u64 / 1000);
    while opened.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) < n as u64
        && Instant::now() < wait_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let held = opened.load(Ordering::Relaxed);

    // Publish m000000, m000001, … at the fixed rate, one keep-alive connection, in order: each
    // publish is sent when due and its answer read before the next.
    let cpu_before = cpu_secs(&pids);
    let self_before = cpu_secs(&[std::process::id()]);
    let machine_before = machine_jiffies();
    let started = Instant::now();
    let publisher = {
        let sent_at = sent_at.clone();
        let publish = publish.clone();
        tokio::spawn(async move {
            let mut ok = vec![false; planned];
            let mut errors = 0u64;
            let mut answer_us: Vec<u32> = Vec::with_capacity(planned);
            let mut stream: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(1024);
            for (i, ok) in ok.iter_mut().enumerate() {
                tokio::time::sleep_until(
                    (started + Duration::from_secs_f64(i as f64 / rate)).into(),
                )
                .await;
                if stream.is_none() {
                    stream = TcpStream::connect(publish.addr).await.ok();
                    if let Some(s) = &stream {
                        let _ = s.set_nodelay(true);
                    }
                    buf.clear();
                }
                let Some(s) = stream.as_mut() else {
                    errors += 1;
                    continue;
                };
                let body = format!("m{i:06}");
                let request = format!(
                    "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-loadtool\r\n\
                     Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    publish.path,
                    publish.host,
                    body.len()
                );
                let t = realtime_ns() as i64;
                sent_at[i].store(t, Ordering::Release);
                let written = s.write_all(request.as_bytes()).await.is_ok();
                match if written {
                    read_response(s, &mut buf).await.ok()
                } else {
                    None
                } {
                    Some((status, close)) => {
                        answer_us.push(((realtime_ns() as i64 - t) / 1000) as u32);
                        if (200..300).contains(&status) {
                            *ok = true;
                        } else {
                            errors += 1;
                        }
                        if close {
                            stream = None;
                        }
                    }
                    None => {
                        errors += 1;
                        stream = None;
                    }
                }
            }
            (ok, errors, answer_us)
        })
    };
    let (ok, pub_errors, mut answer_us) = publisher.await.expect("publisher");
    let publish_secs = started.elapsed().as_secs_f64();
    let published = ok.iter().filter(|&&o| o).count() as u64;
    let expected = published * held;
    let drain_until = Instant::now() + Duration::from_secs_f64(drain);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = cpu_secs(&pids) - cpu_before;
    let client_cpu = cpu_secs(&[std::process::id()]) - self_before;
    let machine_after = machine_jiffies();
    for stop in stops {
        let _ = stop.send(());
    }

    let mut lost = 0u64;
    let (mut delivered, mut duplicates, mut reordered, mut resets, mut other, mut closed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut unstamped = 0u64;
    let mut latencies: Vec<u32> = Vec::with_capacity(expected as usize);
    let mut statuses = HashMap::<u16, usize>::new();
    for task in tasks {
        let Ok(report) = task.await else { continue };
        if !report.opened {
            *statuses.entry(report.status).or_default() += 1;
            continue;
        }
        for (seq, _) in ok.iter().enumerate().filter(|(_, &o)| o) {
            if report.got[seq / 64] & (1u64 << (seq % 64)) == 0 {
                lost += 1;
            }
        }
        delivered += report
            .got
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum::<u64>();
        duplicates += report.duplicates;
        reordered += report.reordered;
        resets += report.resets;
        other += report.other;
        closed += u64::from(report.closed);
        unstamped += report.unstamped;
        latencies.extend_from_slice(&report.latencies_us);
    }
    latencies.sort_unstable();
    answer_us.sort_unstable();
    let ms = |v: &[u32], p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            f64::from(v[rank.clamp(1, v.len()) - 1]) / 1000.0
        }
    };
    let (busy, total) = (
        machine_after.0.saturating_sub(machine_before.0) as f64,
        machine_after.1.saturating_sub(machine_before.1) as f64,
    );
    let refused: Vec<String> = statuses.iter().map(|(s, c)| format!("{s}:{c}")).collect();
    println!(
        "label={label} transport={} n={n} held={held} refused={} connect_secs={connect_secs:.2} \
         rate={rate} secs={secs} publish_secs={publish_secs:.2} elapsed={elapsed:.2} \
         published={published} pub_errors={pub_errors} publish_per_s={:.1} pub_answer_p50_ms={:.2} \
         pub_answer_max_ms={:.2} delivered={delivered} expected={expected} delivered_per_s={:.0} \
         lost={lost} reordered={reordered} duplicates={duplicates} resets={resets} other={other} \
         closed={closed} server_cpu_s={server_cpu:.2} server_cpu_pct={:.1} \
         cpu_us_per_delivery={:.2} client_cpu_s={client_cpu:.2} client_cpu_pct={:.1} \
         client_us_per_delivery={:.2} machine_busy_pct={:.1} p50_ms={:.2} p99_ms={:.2} \
         max_ms={:.2} unstamped={unstamped}",
        if ws { "ws" } else { "sse" },
        if refused.is_empty() {
            "-".into()
        } else {
            refused.join(",")
        },
        // the last publish's period ends 1/rate after it was sent
        published as f64 / (publish_secs + 1.0 / rate),
        ms(&answer_us, 50.0),
        answer_us
            .last()
            .map_or(f64::NAN, |&v| f64::from(v) / 1000.0),
        delivered as f64 / (publish_secs + 1.0 / rate),
        server_cpu / elapsed * 100.0,
        if delivered > 0 {
            server_cpu * 1e6 / delivered as f64
        } else {
            f64::NAN
        },
        client_cpu / elapsed * 100.0,
        if delivered > 0 {
            client_cpu * 1e6 / delivered as f64
        } else {
            f64::NAN
        },
        if total > 0.0 {
            busy / total * 100.0
        } else {
            f64::NAN
        },
        ms(&latencies, 50.0),
        ms(&latencies, 99.0),
        latencies
            .last()
            .map_or(f64::NAN, |&v| f64::from(v) / 1000.0),
    );
}

/// Reads one request (its head and its Content-Length body) from `stream`, consuming it from
/// `buf` (which keeps whatever follows); returns the head, or None once the client is gone.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + 4 + length);
        return Some(head);
    }
}

async fn grip_origin(args: Args) {
    let listen = required(&args, "listen").to_owned();
    let listener = TcpListener::bind(&listen).await.unwrap_or_else(|e| {
        eprintln!("loadtool: cannot listen on {listen}: {e}");
        std::process::exit(2)
    });
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(2048);
            while let Some(head) = read_request(&mut stream, &mut buf).await {
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                let channel = path
                    .rsplit('/')
                    .next()
                    .filter(|c| !c.is_empty())
                    .unwrap_or("x");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nGrip-Hold: response\r\nGrip-Channel: {channel}\r\nGrip-Timeout: 600\r\nContent-Length: 2\r\n\r\n{{}}"
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

// ---- llm-provider, hold-streams -----------------------------------------------------------------

/// The provider's two chat completion chunks: the role chunk, then the first content.
const ROLE_CHUNK: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
const CONTENT_CHUNK: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n";

async fn llm_provider(args: Args) {
    let listen = required(&args, "listen").to_owned();
    // A deep accept queue (std's is 128): a burst of streams set up at once must not overflow
    // it, or their SYNs are retried a second later and the first event's p99 is that second.
    let listener = listen
        .parse::<SocketAddr>()
        .map_err(std::io::Error::other)
        .and_then(|addr| {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(4096)
        })
        .unwrap_or_else(|e| {
            eprintln!("loadtool: cannot listen on {listen}: {e}");
            std::process::exit(2)
        });
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::with_capacity(2048);
            if read_request(&mut stream, &mut buf).await.is_none() {
                return;
            }
            drop(buf);
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            for part in [
                head.to_owned(),
                format!("{:x}\r\n{ROLE_CHUNK}\r\n", ROLE_CHUNK.len()),
                format!("{:x}\r\n{CONTENT_CHUNK}\r\n", CONTENT_CHUNK.len()),
            ] {
                if stream.write_all(part.as_bytes()).await.is_err() {
                    return;
                }
            }
            // Silent from here on: whatever the client sends is read and dropped until it closes.
            let mut chunk = [0u8; 512];
            while let Ok(1..) = stream.read(&mut chunk).await {}
        });
    }
}

/// The complete chunks' data at the start of a chunked body, and the data of a chunk not yet
/// complete (whatever of it is there).
fn dechunk_prefix(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut pos = 0;
    while let Some(line) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
        let line_end = pos + line;
        let size = std::str::from_utf8(&buf[pos..line_end])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next()?.trim(), 16).ok());
        let (Some(size), start) = (size, line_end + 2) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.extend_from_slice(&buf[start..buf.len().min(start + size)]);
        pos = start + size + 2;
        if pos > buf.len() {
            break;
        }
    }
    out
}

/// Whether `data` (an SSE `data:` value) has `"content"` : `"Hello"`, spaces allowed around
/// the colon.
fn has_hello(data: &str) -> bool {
    data.match_indices("\"content\"").any(|(i, key)| {
        let rest = data[i + key.len()..].trim_start();
        rest.strip_prefix(':')
            .is_some_and(|r| r.trim_start().starts_with("\"Hello\""))
    })
}

/// Whether an event stream's body (chunked or not) holds a whole event (ended by a blank line)
/// whose `data:` has content `Hello`.
fn has_content_event(body: &[u8], chunked: bool) -> bool {
    let decoded;
    let body = if chunked {
        decoded = dechunk_prefix(body);
        &decoded[..]
    } else {
        body
    };
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let Some(last) = text.rfind("\n\n") else {
        return false;
    };
    text[..last].split("\n\n").any(|event| {
        event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .any(has_hello)
    })
}

/// Why a stream was not held.
#[derive(PartialEq, Eq, Hash)]
enum NotHeld {
    Connect,
    Status(u16),
    Closed,
    Timeout,
}

impl std::fmt::Display for NotHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            NotHeld::Connect => write!(f, "connect"),
            NotHeld::Status(status) => write!(f, "status{status}"),
            NotHeld::Closed => write!(f, "closed"),
            NotHeld::Timeout => write!(f, "timeout"),
        }
    }
}

/// Opens one stream: connects, sends `request`, reads until the first content event.
async fn open_stream(addr: SocketAddr, request: &[u8]) -> Result<TcpStream, NotHeld> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|_| NotHeld::Connect)?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(request)
        .await
        .map_err(|_| NotHeld::Closed)?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(NotHeld::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some((head, status, _, length)) = parse_head(&buf) {
            if status != 200 {
                return Err(NotHeld::Status(status));
            }
            if has_content_event(&buf[head..], matches!(length, Length::Chunked)) {
                return Ok(stream);
            }
        }
    }
}

async fn hold_streams(args: Args) {
    let url = parse_url(required(&args, "url"));
    let body = required(&args, "body").to_owned();
    let n: usize = arg(&args, "n", 1000);
    let settle: f64 = arg(&args, "settle", 1.0);
    let concurrency: usize = arg(&args, "concurrency", 200);
    let timeout: f64 = arg(&args, "timeout", 30.0);
    let label = args
        .get("label")
        .cloned()
        .unwrap_or_else(|| "server".into());
    let pids = pids(&args);
    let request = Arc::new(post_request(
        &url,
        &body,
        false,
        args.get("header").map(String::as_str),
    ));

    let (rss_before, huge_before) = (rss_kib(&pids), huge_kib(&pids));
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (request, gate, addr) = (request.clone(), gate.clone(), url.addr);
        tasks.push(tokio::spawn(async move {
            // The permit is held while the stream is set up, not while it is held.
            let _permit = gate.acquire().await;
            let sent = Instant::now();
            match tokio::time::timeout(
                Duration::from_secs_f64(timeout),
                open_stream(addr, &request),
            )
            .await
            {
                Ok(Ok(stream)) => Ok((stream, sent.elapsed().as_secs_f64() * 1e3)),
                Ok(Err(why)) => Err(why),
                Err(_) => Err(NotHeld::Timeout),
            }
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut first_event_ms = Vec::with_capacity(n);
    let mut failed = HashMap::<String, usize>::new();
    for task in tasks {
        match task.await {
            Ok(Ok((stream, ms))) => {
                held.push(stream);
                first_event_ms.push(ms);
            }
            Ok(Err(why)) => *failed.entry(why.to_string()).or_default() += 1,
            Err(_) => *failed.entry("panic".into()).or_default() += 1,
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let (rss_after, huge_after) = (rss_kib(&pids), huge_kib(&pids));
    // A held stream the server has closed since (a read of 0 bytes, or an error) is dropped.
    let dropped = held
        .iter()
        .filter(|s| matches!(recv_timestamped(s.as_raw_fd(), true), Recv::Closed))
        .count();
    first_event_ms.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let kib_per_stream = if held.is_empty() {
        f64::NAN
    } else {
        (rss_after as f64 - rss_before as f64) / held.len() as f64
    };
    let failures: Vec<String> = failed.iter().map(|(why, c)| format!("{why}:{c}")).collect();
    println!(
        "label={label} n={n} held={} failed={} rss_before_kib={rss_before} rss_after_kib={rss_after} \
         kib_per_stream={kib_per_stream:.2} first_event_p50_ms={:.2} first_event_p99_ms={:.2} \
         first_event_max_ms={:.2} open_secs={open_secs:.2} failed_by={} dropped={dropped} \
         huge_before_kib={huge_before} huge_after_kib={huge_after}",
        held.len(),
        failed.values().sum::<usize>(),
        percentile(&first_event_ms, 50.0),
        percentile(&first_event_ms, 99.0),
        first_event_ms.last().copied().unwrap_or(f64::NAN),
        if failures.is_empty() { "-".into() } else { failures.join(",") },
    );
    drop(held);
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = raw.first().cloned() else {
        eprintln!(
            "usage: loadtool fanout|throughput|sustain|grip-origin|llm-provider|hold-streams \
             --key value …"
        );
        std::process::exit(2)
    };
    let args = parse_args(&raw[1..]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(arg(&args, "threads", 2))
        .enable_all()
        .build()
        .expect("tokio runtime");
    match command.as_str() {
        "fanout" => runtime.block_on(fanout(args)),
        "throughput" => runtime.block_on(throughput(args)),
        "sustain" => runtime.block_on(sustain(args)),
        "grip-origin" => runtime.block_on(grip_origin(args)),
        "llm-provider" => runtime.block_on(llm_provider(args)),
        "hold-streams" => runtime.block_on(hold_streams(args)),
        other => {
            eprintln!("loadtool: unknown command {other}");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every `step` bytes; the sequences, resets and others it saw.
    fn parse_in_steps(ws: bool, bytes: &[u8], step: usize) -> (Vec<usize>, Seen, Vec<u8>) {
        let mut parser = StreamParser::new(ws);
        let mut seen = Seen::default();
        let mut seqs = Vec::new();
        for piece in bytes.chunks(step) {
            parser.feed(piece, &mut seen);
            seqs.append(&mut seen.seqs);
        }
        (seqs, seen, parser.pongs)
    }

    #[test]
    fn chunked_event_stream_in_any_pieces() {
        // Holdfast: chunked, `retry:` first, `id:` lines, a keep-alive comment, a reset event.
        let events = [
            "retry: 1000\n\n",
            "id: 1-0\ndata: m000000\n\n",
            ":\n\n",
            "id: 1-1\ndata: m000001\n\nid: 1-2\ndata: m000002\n\n",
            "event: reset\nid: 1-3\ndata: {\"type\":\"cursor-gone\"}\n\n",
            "id: 1-3\r\ndata:m000003\r\n\r\n",
        ];
        let mut wire =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        for e in events {
            wire.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        for step in 1..wire.len() {
            let (seqs, seen, _) = parse_in_steps(false, &wire, step);
            assert_eq!(seqs, vec![0, 1, 2, 3], "step {step}");
            assert_eq!(
                (seen.resets, seen.other, seen.ended),
                (1, 0, true),
                "step {step}"
            );
        }
    }

    #[test]
    fn plain_event_stream() {
        // Nchan: no chunking, a `: hi` comment first.
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n\
                     : hi\n\nid: 17:0\ndata: m000000\n\nid: 17:1\ndata: m000001\n\n";
        for step in 1..wire.len() {
            let (seqs, seen, _) = parse_in_steps(false, wire, step);
            assert_eq!(seqs, vec![0, 1]);
            assert!(!seen.ended);
        }
    }

    #[test]
    fn first_content_event_in_any_pieces() {
        let mut wire =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        for event in [ROLE_CHUNK, CONTENT_CHUNK] {
            wire.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
        }
        // Only once the whole content event (its blank line too) is in.
        for cut in 1..wire.len() {
            let part = &wire[..cut];
            let held = parse_head(part).is_some_and(|(head, status, _, length)| {
                status == 200 && has_content_event(&part[head..], matches!(length, Length::Chunked))
            });
            assert_eq!(held, cut >= wire.len() - 2, "cut {cut}");
        }
        // Unchunked, CRLF lines, spaces after the colon (Python's json.dumps).
        let plain = "data: {\"choices\": [{\"delta\": {\"role\": \"assistant\", \"content\": \"\"}}]}\r\n\r\n\
                     data: {\"choices\": [{\"delta\": {\"content\": \"Hello\"}}]}\r\n\r\n";
        assert!(has_content_event(plain.as_bytes(), false));
        assert!(!has_content_event(ROLE_CHUNK.as_bytes(), false));
        assert!(!has_content_event(
            &CONTENT_CHUNK.as_bytes()[..CONTENT_CHUNK.len() - 1],
            false
        ));
    }

    #[test]
    fn websocket_frames() {
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        wire.extend_from_slice(&[0x81, 7]);
        wire.extend_from_slice(b"m000000");
        wire.extend_from_slice(&[0x89, 2, b'h', b'i']); // ping
        wire.extend_from_slice(&[0x01, 3]); // fragmented text
        wire.extend_from_slice(b"m00");
        wire.extend_from_slice(&[0x80, 4]);
        wire.extend_from_slice(b"0001");
        let long = format!("m{}", "0".repeat(199)); // > 12 digits: not a sequence
        wire.extend_from_slice(&[0x81, 126, 0, 200]);
        wire.extend_from_slice(long.as_bytes());
        wire.extend_from_slice(&[0x81, 127, 0, 0, 0, 0, 0, 0, 0, 7]);
        wire.extend_from_slice(b"m000002");
        wire.extend_from_slice(&[0x88, 2, 3, 232]); // close 1000
        for step in 1..wire.len() {
            let (seqs, seen, pongs) = parse_in_steps(true, &wire, step);
            assert_eq!(seqs, vec![0, 1, 2], "step {step}");
            assert_eq!((seen.other, seen.ended), (1, true));
            assert_eq!(&pongs[..2], &[0x8a, 0x82]);
            let key = &pongs[2..6];
            assert_eq!([pongs[6] ^ key[0], pongs[7] ^ key[1]], [b'h', b'i']);
        }
    }
}
