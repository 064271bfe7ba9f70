//! Each accepted connection, from the socket to HTTP sessions: which listener accepted it, the
//! TLS handshake on TLS listeners (timed, failures counted), then HTTP/2 (Pingora's server) or
//! HTTP/1.x (our connection loop, `http1.rs`). See docs/edge.md.

use crate::core::runtime::Runtime;
use crate::edge::http1::{serve_http1, Served};
use crate::edge::plain::{digest_of, PlainStream};
use crate::observe::metrics::METRICS;
use crate::pipeline::gateway::Gateway;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Peek, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// How every listener's connections are served.
pub struct Connections {
    pub proxy: Arc<HttpProxy<Gateway>>,
    /// The same hooks as the proxy's, for the routes served without it (answered.rs).
    pub gateway: Gateway,
    pub runtime: Arc<Runtime>,
    pub listeners: Vec<Listener>,
}

/// What one listen address speaks.
pub struct Listener {
    pub tls: Option<Acceptor>,
    pub h2c: bool,
}

impl Connections {
    /// Serves the connection `tcp` from `peer`, accepted on the listener `listener` (an index
    /// into [`Connections::listeners`]), until it closes.
    pub async fn serve(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        listener: usize,
        shutdown: &ShutdownWatch,
    ) {
        let Some(listener) = self.listeners.get(listener) else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        // HTTP/2 connections are Pingora's to close at shutdown; HTTP/1 ones are waited for.
        let mut open = Some(crate::core::runtime::OpenConnection::start());
        let stream: Stream = match &listener.tls {
            Some(acceptor) => {
                // Boxed: inline, rustls's handshake state (~6.5 KB) would stay allocated in
                // this future for the whole life of every connection, TLS or not
                // (bench/RESULTS.md §2). Pingora's stream is made inside it too, so no
                // copy of it stays in this future either.
                match Box::pin(self.handshake(acceptor, tcp, peer)).await {
                    Some(stream) => stream,
                    None => return,
                }
            }
            None => Box::new(PlainStream::new(tcp, peer)),
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            open.take();
            self.serve_http2(stream, "h2", shutdown).await;
            return;
        }
        let h2c = listener.h2c && listener.tls.is_none();
        let served = serve_http1(
            &self.proxy,
            &self.gateway,
            &self.runtime,
            stream,
            h2c,
            shutdown,
        )
        .await;
        if let Served::H2cPreface(stream, read) = served {
            // Pingora's HTTP/2 server reads the preface again: from its own stream type,
            // which can put back what was read.
            let Ok(plain) = stream.into_any().downcast::<PlainStream>() else {
                return;
            };
            let mut l4 = plain.into_l4();
            l4.rewind(&read);
            open.take();
            self.serve_http2(Box::new(l4), "h2c", shutdown).await;
        }
    }

    async fn handshake(
        &self,
        acceptor: &Acceptor,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<Stream> {
        let mut tcp = L4Stream::from(tcp);
        tcp.set_socket_digest(digest_of(&tcp, peer));
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
        match tokio::time::timeout_at(deadline, acceptor.tls_handshake(tcp)).await {
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

    /// Pingora's cleanup when the service stops.
    pub async fn cleanup(&self) {
        pingora_core::apps::HttpServerApp::http_cleanup(&*self.proxy).await;
    }
}

fn failed(reason: &str) -> Option<Stream> {
    METRICS
        .tls_handshake_failures
        .with_label_values(&[reason])
        .inc();
    None
}
