//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers) and
//! `/readyz` (ready for traffic: started, backplane reachable, not shutting down). It listens on
//! its own address so it can stay off public interfaces.

use crate::metrics::METRICS;
use crate::runtime::Runtime;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

pub struct Admin {
    pub runtime: Arc<Runtime>,
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    if let Ok(value) = response.body().len().to_string().parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, value);
    }
    response
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                METRICS.render(),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.runtime.ready() {
                Ok(()) => text(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n").into_bytes(),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /metrics, /healthz or /readyz\n".to_vec(),
            ),
        }
    }
}
