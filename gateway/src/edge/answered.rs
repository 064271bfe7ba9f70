//! Requests for routes the gateway answers itself (long-poll, publish, upstream calls, fan-in,
//! jobs): which ones, and serving them on HTTP/1 with only the Pingora hooks they need, not its
//! proxy state machine. See docs/edge.md.

use crate::actions::jobs;
use crate::core::routes::{Action, Lookup};
use crate::core::state::State;
use crate::pipeline::gateway::Gateway;
use crate::pipeline::{respond, routing};
use crate::problem::Problem;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::{ProxyHttp, Session};

/// Who serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Pingora's proxy.
    Proxy,
    /// Pingora's HTTP session with the gateway's hooks, without the proxy ([`serve`]).
    Answered,
    /// A long-poll or a job's result poll, on the edge's own HTTP/1 path (`held.rs`).
    HeldPoll,
}

/// Who serves the request with this method, target and `Host` (from a checked head).
pub fn serving(state: &State, method: &str, target: &str, host: Option<&str>) -> Serving {
    if !state.routes.answers_any() {
        return Serving::Proxy;
    }
    match lookup_action(state, method, target, host) {
        Some((Action::Proxy(_), ..)) | None => Serving::Proxy,
        Some((Action::LongPoll(_), ..)) => Serving::HeldPoll,
        Some((Action::Job(spec), method, path))
            if matches!(
                jobs::Target::of(spec, &method, &path),
                jobs::Target::Result(_)
            ) =>
        {
            Serving::HeldPoll
        }
        Some(_) => Serving::Answered,
    }
}

/// The action of the route the request is for, if it has one, with the request's method and
/// normal path.
fn lookup_action<'s>(
    state: &'s State,
    method: &str,
    target: &str,
    host: Option<&str>,
) -> Option<(&'s Action, http::Method, String)> {
    // Origin form only (`/path?query`): Pingora resolves the other forms.
    if !target.starts_with('/') {
        return None;
    }
    let method = http::Method::from_bytes(method.as_bytes()).ok()?;
    if method == http::Method::CONNECT {
        return None;
    }
    // As Pingora's request target parsing: the path ends at the query or a fragment.
    let path = target.split(['?', '#']).next().unwrap_or(target);
    // Routed on its normal form, as `request_filter` does; a path that has none is refused
    // there.
    let path = crate::wire::target::normalize(path).ok()?;
    match routing::find(state, host, &method, &path) {
        Lookup::Found(route, _) => Some((&route.action, method, path.into())),
        _ => None,
    }
}

/// Serves the one request whose head `session` holds (as its pipelined prefix), as Pingora's
/// `process_request` would when `request_filter` answers it. Returns the connection when it may
/// serve another request.
pub async fn serve(
    gateway: &Gateway,
    mut session: Session,
    shutdown: &ShutdownWatch,
) -> Option<ReusedHttpStream> {
    // Reading the head and finishing the session are boxed, so that while the request is held
    // this future keeps only the session, the context and the hook's own (boxed) future.
    match Box::pin(session.downstream_session.read_request()).await {
        Ok(true) => {
            // Reading the head set keep-alive from the request; as in Pingora's
            // `process_new_http`, a server shutting down answers with `Connection: close`.
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
        }
        Ok(false) => return None,
        Err(_) => {
            // The head was complete but does not parse: what Pingora answers too.
            if let Err(error) = session.downstream_session.respond_error(400).await {
                tracing::debug!(%error, "cannot answer a malformed request");
            }
            session.downstream_session.shutdown().await;
            return None;
        }
    }
    let mut ctx = gateway.new_ctx();
    let error = match gateway.request_filter(&mut session, &mut ctx).await {
        Ok(true) => {
            gateway.logging(&mut session, None, &mut ctx).await;
            return finish(session).await;
        }
        // A reload between the decision and `request_filter` made the route a proxied one
        // (anything else is a disagreement with `answered_here`, worth knowing about).
        Ok(false) => {
            let summary = gateway.request_summary(&session, &ctx);
            tracing::warn!(request = %summary, "the route changed while the request was read");
            match respond::problem(&mut session, &mut ctx, &route_changed()).await {
                Ok(_) => {
                    gateway.logging(&mut session, None, &mut ctx).await;
                    return finish(session).await;
                }
                Err(error) => error,
            }
        }
        Err(error) => error,
    };
    let failed = gateway.fail_to_proxy(&mut session, &error, &mut ctx).await;
    if !gateway.suppress_error_log(&session, &ctx, &error) {
        let summary = gateway.request_summary(&session, &ctx);
        tracing::error!(%error, status = failed.error_code, request = %summary, "cannot serve the request");
    }
    gateway.logging(&mut session, Some(&error), &mut ctx).await;
    session.downstream_session.on_proxy_failure(error);
    if failed.can_reuse_downstream {
        finish(session).await
    } else {
        None
    }
}

/// Ends the request; the connection when it may be reused.
async fn finish(session: Session) -> Option<ReusedHttpStream> {
    let settings = HttpPersistentSettings::for_session(&session.downstream_session);
    let reusable = Box::pin(session.downstream_session.finish())
        .await
        .ok()
        .flatten()?;
    Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
}

fn route_changed() -> Problem {
    crate::edge::held::route_changed()
}

/// A connection's stream as Pingora's HTTP/1 session wants it, for [`serve`].
pub fn session(stream: Stream) -> Session {
    Session::new_h1_with_modules(stream, &pingora_core::modules::http::HttpModules::new())
}

#[cfg(test)]
mod tests {
    use super::{serving, Serving};

    fn answered_here(
        state: &crate::core::state::State,
        method: &str,
        target: &str,
        host: Option<&str>,
    ) -> bool {
        serving(state, method, target, host) != Serving::Proxy
    }
    use std::path::Path;

    const CONFIG: &str = r#"
upstreams:
  api: { targets: ["127.0.0.1:9"] }
routes:
  - { name: api, match: { prefix: /api }, upstream: api }
  - { name: sub, match: { path: "/sub/{ch}", methods: [GET] }, longpoll: { channel: "{ch}" } }
  - { name: hosted, match: { path: /h, host: poll.example.com }, longpoll: { channel: h } }
  - { name: proxied, match: { path: /h }, upstream: api }
  - { name: exact, match: { path: /poll/x }, upstream: api }
  - { name: polls, match: { prefix: /poll }, longpoll: { channel: p } }
"#;

    fn state(yaml: &str) -> crate::core::state::State {
        let config = conf::load_str(Path::new("t.yaml"), yaml).expect("parses");
        crate::core::state::compile(config, None).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn only_heads_for_answered_routes_are_answered_here() {
        let state = state(CONFIG);
        let here = |head: &str| {
            crate::wire::head::check(head.as_bytes(), 100)
                .is_ok_and(|head| answered_here(&state, head.method, head.target, head.host))
        };
        assert!(here("GET /sub/a HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(here("GET /sub/a?cursor=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(here(
            "GET /h HTTP/1.1\r\nhost: POLL.example.com:8080\r\n\r\n"
        ));
        assert!(!here("GET /h HTTP/1.1\r\nHost: other.example.com\r\n\r\n"));
        // A fully qualified name (trailing dot) is the same host.
        assert!(here(
            "GET /h HTTP/1.1\r\nHost: poll.example.com.:80\r\n\r\n"
        ));
        // What `request_filter` reads: a path ends at a fragment too, and a Host that is not
        // visible ASCII is no host at all.
        assert!(!here("GET /poll/x#y HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(here("GET /poll/y#x HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!here(
            "GET /h HTTP/1.1\r\nHost: poll.example.com:\u{e9}\r\n\r\n"
        ));
        assert!(!here("GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n"));
        // Not found or not allowed: Pingora's path answers those.
        assert!(!here("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!here("POST /sub/a HTTP/1.1\r\nHost: x\r\n\r\n"));
        // Unusual forms go to Pingora, which serves everything.
        assert!(!here("GET http://x/sub/a HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!here("CONNECT /sub/a HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!here("GET /sub/a HTTP/1.1\r\nHost: x\r\n"));
        assert!(!here("\u{1}\u{2} garbage\r\n\r\n"));
    }

    #[test]
    fn polls_and_job_results_are_held_on_the_edge_and_other_actions_answered_through_pingora() {
        let channels = state(CONFIG);
        assert_eq!(serving(&channels, "GET", "/sub/a", None), Serving::HeldPoll);
        assert_eq!(serving(&channels, "GET", "/api/x", None), Serving::Proxy);
        let jobs = state(
            "upstreams: { a: { targets: [\"127.0.0.1:9\"] } }\nroutes:\n  - { name: j, match: { prefix: /jobs }, job: { upstream: a } }\n  - { name: p, match: { path: /p }, publish: { channel: c } }\n",
        );
        assert_eq!(serving(&jobs, "GET", "/jobs/1", None), Serving::HeldPoll);
        assert_eq!(serving(&jobs, "HEAD", "/jobs/1", None), Serving::HeldPoll);
        assert_eq!(
            serving(&jobs, "GET", "/jobs/./1?wait=2", None),
            Serving::HeldPoll
        );
        // Starting a job, and the paths that are refused, are answered through Pingora.
        assert_eq!(serving(&jobs, "POST", "/jobs", None), Serving::Answered);
        assert_eq!(serving(&jobs, "GET", "/jobs", None), Serving::Answered);
        assert_eq!(serving(&jobs, "GET", "/jobs/1/x", None), Serving::Answered);
        assert_eq!(serving(&jobs, "POST", "/p", None), Serving::Answered);
    }

    #[test]
    fn a_proxy_only_config_skips_the_decision() {
        let state = state("upstreams: { a: { targets: [\"127.0.0.1:9\"] } }\nroutes: [{ name: a, upstream: a }]\n");
        assert!(!state.routes.answers_any());
        assert!(!answered_here(&state, "GET", "/", None));
    }
}
