//! Real upstream servers for the tests (axum on a free loopback port) that record every request
//! they see, so a test can assert what the upstream received — or that it received nothing.

use axum::body::Bytes;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What an origin saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running origin server.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Serves `router`; every request is recorded before the router sees it.
    pub async fn start(router: Router) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorder = seen.clone();
        let router = router.layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| {
                let recorder = recorder.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, 64 << 20)
                        .await
                        .unwrap_or_default();
                    recorder.lock().expect("lock").push(Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body: body.clone(),
                    });
                    next.run(Request::from_parts(parts, axum::body::Body::from(body)))
                        .await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, seen, task }
    }

    /// An origin that answers every request with a JSON echo of what it received.
    pub async fn echo() -> Self {
        Self::start(Router::new().fallback(echo)).await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `{"method","uri","headers":{…},"body":"…"}` of the request.
pub async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    axum::Json(serde_json::json!({
        "method": parts.method.to_string(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}
