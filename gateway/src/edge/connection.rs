//! Each accepted connection, from the socket to HTTP sessions: which listener accepted it, the
//! TLS handshake on TLS listeners (timed, failures counted), then HTTP/2 (Pingora's server) or
//! HTTP/1.x (our connection loop, `http1.rs`). See docs/edge.md.

use crate::core::runtime::Runtime;
use crate::edge::http1::{serve_http1, Served};
use crate::observe::metrics::METRICS;
use crate::pipeline::gateway::Gateway;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as TcpStream;
use pingora_core::protocols::{Peek, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::net::SocketAddr;
use std::sync::Arc;

/// The proxy service's `ServerApp`: every listener's connections start here.
pub struct Connections {
    pub proxy: Arc<HttpProxy<Gateway>>,
    /// The same hooks as the proxy's, for the routes served without it (answered.rs).
    pub gateway: Gateway,
    pub runtime: Arc<Runtime>,
    pub listeners: Vec<Listener>,
}

/// What one listen address speaks.
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<Acceptor>,
    pub h2c: bool,
}

impl Connections {
    /// The listener that accepted `stream`: the one whose address it reached, or one bound to
    /// the wildcard address on its port. With a single kind of listener, no lookup is needed.
    fn listener_of(&self, stream: &Stream) -> Option<&Listener> {
        if let [only] = self.listeners.as_slice() {
            return Some(only);
        }
        let digest = stream.get_socket_digest()?;
        let local = *digest.local_addr()?.as_inet()?;
        self.listeners
            .iter()
            .find(|listener| listener.address == local)
            .or_else(|| {
                self.listeners.iter().find(|listener| {
                    listener.address.ip().is_unspecified()
                        && listener.address.port() == local.port()
                })
            })
    }

    async fn handshake(&self, acceptor: &Acceptor, stream: Stream) -> Option<Stream> {
        // Pingora's plain TCP listener hands over its own stream type, which is what the
        // acceptor (and later the h2c rewind) needs.
        let mut tcp = stream.into_any().downcast::<TcpStream>().ok()?;
        let timeout = self.runtime.state.load().config.limits.header_timeout.get();
        let deadline = tokio::time::Instant::now() + timeout;
        // A port probe (a load balancer's TCP check: connect, then close without a byte) is not
        // a failed handshake: wait for the first byte before counting anything. It is put back.
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, tcp.try_peek(&mut first)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => return failed("timeout"),
        }
        match tokio::time::timeout_at(deadline, acceptor.tls_handshake(*tcp)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(error)) => {
                let reason = crate::core::tls::failure::reason(&error);
                tracing::debug!(%error, reason, "TLS handshake failed");
                failed(reason)
            }
            Err(_) => failed("timeout"),
        }
    }

    async fn serve_http2(&self, stream: Stream, protocol: &str, shutdown: &ShutdownWatch) {
        METRICS.connections.with_label_values(&[protocol]).inc();
        // Pingora's own loop: ALPN `h2`, or (h2c on in the proxy's server options) the preface.
        self.proxy.process_new(stream, shutdown).await;
    }
}

fn failed(reason: &str) -> Option<Stream> {
    METRICS
        .tls_handshake_failures
        .with_label_values(&[reason])
        .inc();
    None
}

#[async_trait]
impl ServerApp for Connections {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let listener = self.listener_of(&stream)?;
        // HTTP/2 connections are Pingora's to close at shutdown; HTTP/1 ones are waited for.
        let mut open = Some(crate::core::runtime::OpenConnection::start());
        let stream = match &listener.tls {
            // Boxed: inline, rustls's handshake state (~6.5 KB) would stay allocated in this
            // future for the whole life of every connection, TLS or not (bench/RESULTS.md §2).
            Some(acceptor) => Box::pin(self.handshake(acceptor, stream)).await?,
            None => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            open.take();
            self.serve_http2(stream, "h2", shutdown).await;
            return None;
        }
        let h2c = listener.h2c && listener.tls.is_none();
        match serve_http1(
            &self.proxy,
            &self.gateway,
            &self.runtime,
            stream,
            h2c,
            shutdown,
        )
        .await
        {
            Served::Done => {}
            Served::H2cPreface(stream, read) => {
                let mut tcp = stream.into_any().downcast::<TcpStream>().ok()?;
                tcp.rewind(&read);
                open.take();
                self.serve_http2(tcp, "h2c", shutdown).await;
            }
        }
        None
    }

    async fn cleanup(&self) {
        pingora_core::apps::HttpServerApp::http_cleanup(&*self.proxy).await;
    }
}
