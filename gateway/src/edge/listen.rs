//! The listeners: our own accept loop for every `listen` address, as a Pingora service, so a
//! connection costs only its own task and what serving it needs. The listening sockets come
//! from, and go into, Pingora's table for a graceful upgrade. See docs/edge.md.

use crate::edge::connection::Connections;
use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Connections waiting to be accepted, per listening socket (Pingora's own backlog).
const BACKLOG: i32 = 65535;

/// The proxy service: every `listen` address, accepted here and served by [`Connections`].
/// `addresses[i]` is the address of `connections.listeners[i]`.
pub struct Listeners {
    pub connections: Arc<Connections>,
    /// The `listen` addresses, as written in the config (the keys of the upgrade table).
    pub addresses: Vec<String>,
}

#[async_trait]
impl Service for Listeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let mut loops = Vec::with_capacity(self.addresses.len());
        for (index, address) in self.addresses.iter().enumerate() {
            let listener = match listen(address, fds.as_ref()) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, address, "cannot listen");
                    std::process::exit(2);
                }
            };
            let connections = self.connections.clone();
            loops.push(tokio::spawn(accept_loop(
                listener,
                index,
                connections,
                shutdown.clone(),
            )));
        }
        for accepting in loops {
            let _ = accepting.await;
        }
        self.connections.cleanup().await;
    }

    fn name(&self) -> &str {
        "holdfast"
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addresses.clone())
    }
}

/// The listening socket for `address`: the one a process being upgraded handed over, or a new
/// one, which then goes into the table so the next upgrade can hand it on.
fn listen(address: &str, fds: Option<&ListenFds>) -> std::io::Result<TcpListener> {
    if let Some(fd) = fds.and_then(|fds| fds.lock().get(address).copied()) {
        tracing::info!(
            address,
            "listening on the socket handed over by the previous process"
        );
        return TcpListener::from_std(inherited(fd));
    }
    let addr: std::net::SocketAddr = address
        .parse()
        .map_err(|_| std::io::Error::other(format!("`{address}` is not an address")))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let listener: std::net::TcpListener = socket.into();
    if let Some(fds) = fds {
        fds.lock().add(address.to_owned(), listener.as_raw_fd());
    }
    // The table holds the descriptor number only: this listener stays open for the process.
    TcpListener::from_std(listener)
}

/// A listening socket received from the process being upgraded (Pingora received it over its
/// upgrade socket; the table is its only record).
#[allow(unsafe_code)]
fn inherited(fd: std::os::fd::RawFd) -> std::net::TcpListener {
    // SAFETY: `fd` is an open listening TCP socket that Pingora received for this address
    // (SCM_RIGHTS) and recorded in the table; nothing else in the process owns or closes it,
    // so this listener becomes its one owner.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    // It was in blocking mode only if the old process made it so; tokio needs non-blocking.
    let _ = listener.set_nonblocking(true);
    listener
}

/// Accepts until shutdown on the listener at `index` (in [`Connections::listeners`]); each
/// connection gets its own task, which holds nothing else.
async fn accept_loop(
    listener: TcpListener,
    index: usize,
    connections: Arc<Connections>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                let connections = connections.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connections.serve(tcp, peer, index, &shutdown).await;
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                // Out of descriptors: accept() fails at once until one is freed.
                if error.raw_os_error() == Some(24) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Closing it stops new connections here; a process this one was upgraded to holds its own
    // descriptor of the same socket and goes on accepting.
    drop(listener);
}
