//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers) and
//! `/readyz` (ready for traffic: started, every listen address accepting, backplane reachable,
//! not shutting down). It listens on its own address so it can stay off public interfaces.

use crate::core::runtime::Runtime;
use crate::observe::metrics::METRICS;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Admin {
    pub runtime: Arc<Runtime>,
    /// Set once every listen address accepted a connection. Pingora binds each service's
    /// listeners when that service starts, so the admin service can answer before the proxy's
    /// sockets exist; until they do, the gateway is not ready.
    pub listening: AtomicBool,
}

impl Admin {
    async fn listeners_accept(&self) -> bool {
        if self.listening.load(Ordering::Acquire) {
            return true;
        }
        let listen = self.runtime.state.load().config.listen.clone();
        for address in listen {
            let Ok(mut address) = address.address.parse::<SocketAddr>() else {
                return false;
            };
            // A wildcard address is reachable on loopback.
            if address.ip().is_unspecified() {
                address.set_ip(if address.is_ipv4() {
                    Ipv4Addr::LOCALHOST.into()
                } else {
                    Ipv6Addr::LOCALHOST.into()
                });
            }
            let connect = tokio::net::TcpStream::connect(address);
            if !matches!(
                tokio::time::timeout(Duration::from_millis(200), connect).await,
                Ok(Ok(_))
            ) {
                return false;
            }
        }
        self.listening.store(true, Ordering::Release);
        true
    }
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
            "/metrics" => {
                // Counted when scraped: the hub knows its channels, and a gauge kept on every
                // publish and sweep would cost the request path for a figure read once in a while.
                let channels = self.runtime.hub.channel_count();
                METRICS
                    .channels
                    .set(i64::try_from(channels).unwrap_or(i64::MAX));
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    METRICS.render(),
                )
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.runtime.ready() {
                Ok(()) if !self.listeners_accept().await => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"not ready: the listeners are not accepting yet\n".to_vec(),
                ),
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
