//! Holding a request while its answer is awaited (a poll, a re-polled call, a fan-in, a job):
//! the work races the hold's deadline, the client leaving and the gateway shutting down.

use crate::core::runtime::Runtime;
use std::future::Future;
use std::pin::Pin;
use tokio::time::Instant;

/// How a held request ended.
#[derive(Debug, PartialEq)]
pub enum Held<T> {
    Done(T),
    HoldEnded,
    ClientGone,
    Shutdown,
}

/// Runs `work` until it ends, `deadline` passes (`None`: no deadline but the work's own), the
/// client leaves (`client_gone` ends: [`Exchange::client_gone`], or the edge's own watch) or
/// the gateway shuts down. The request body must already be read: noticing that the client
/// left may read the connection. `work` is pinned where the caller keeps it
/// (`std::pin::pin!`): a future passed by value would be stored twice in a held request's
/// state, once as the argument and once in the race.
///
/// [`Exchange::client_gone`]: crate::exchange::Exchange::client_gone
pub async fn hold<T>(
    runtime: &Runtime,
    client_gone: impl Future<Output = ()>,
    deadline: Option<Instant>,
    work: Pin<&mut impl Future<Output = T>>,
) -> Held<T> {
    let mut shutdown = runtime.shutdown_signal();
    if *shutdown.borrow_and_update() {
        return Held::Shutdown;
    }
    // Boxed, and only when there is a deadline: a held poll has none (the hub keeps it), and
    // an inline timer would size every held poll's state.
    let hold_ended = deadline.map(|deadline| Box::pin(tokio::time::sleep_until(deadline)));
    let hold_ended = async {
        match hold_ended {
            Some(sleep) => sleep.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = work => Held::Done(done),
        _ = hold_ended => Held::HoldEnded,
        _ = client_gone => Held::ClientGone,
        _ = shutdown.changed() => Held::Shutdown,
    }
}
