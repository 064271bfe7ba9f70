//! Holding a request while its answer is awaited (a poll, a re-polled call, a fan-in, a job):
//! the work races the hold's deadline, the client leaving and the gateway shutting down.

use crate::core::runtime::Runtime;
use crate::exchange::Exchange;
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
/// client leaves or the gateway shuts down. The request body must already be read: noticing
/// that the client left may read the connection. `work` is pinned where the caller keeps it
/// (`std::pin::pin!`): a future passed by value would be stored twice in a held request's
/// state, once as the argument and once in the race.
pub async fn hold<T>(
    runtime: &Runtime,
    exchange: &mut impl Exchange,
    deadline: Option<Instant>,
    work: Pin<&mut impl Future<Output = T>>,
) -> Held<T> {
    let mut shutdown = runtime.shutdown_signal();
    if *shutdown.borrow_and_update() {
        return Held::Shutdown;
    }
    let hold_ended = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = work => Held::Done(done),
        _ = hold_ended => Held::HoldEnded,
        _ = exchange.client_gone() => Held::ClientGone,
        _ = shutdown.changed() => Held::Shutdown,
    }
}
