//! Writes that must not run twice (a publish script, a queue pop) on a cluster: the cluster
//! client is told never to resend them, since after a broken connection a command may have
//! run, and they are sent again here only where the cluster said they did not.

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};
use std::time::Duration;

/// How often a write is sent again after a redirect; after `MOVED`, following a pause of
/// `MOVED_PAUSE` times the attempt.
const REDIRECTS: u32 = 3;
const MOVED_PAUSE: Duration = Duration::from_millis(50);

/// What a write is: one command, or a pipeline (a publish script and its `WAIT`).
enum Write<'a> {
    One(&'a Cmd),
    Pipeline(&'a Pipeline, usize, usize),
}

/// A write that must not run twice, on a cluster connection that never resends by itself. It is
/// sent again only where the cluster said it did not run: after `MOVED` (once the client has its
/// new slot map), `TRYAGAIN` (mid-migration, its keys split between two nodes) and `ASK` (to the
/// node the slot is moving to, with `ASKING`; a `WAIT` in the pipeline goes there too).
pub(super) async fn send_once(conn: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    let mut answers = send(conn, Write::One(cmd)).await?;
    answers
        .pop()
        .ok_or_else(|| RedisError::from((ErrorKind::Client, "no answer")))
}

/// [`send_once`] for a pipeline.
pub(super) async fn send_pipeline_once(
    conn: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    send(conn, Write::Pipeline(pipeline, offset, count)).await
}

async fn send(conn: &mut ClusterConnection, write: Write<'_>) -> RedisResult<Vec<Value>> {
    let mut attempt = 0;
    loop {
        let sent = match write {
            Write::One(cmd) => conn.req_packed_command(cmd).await.map(|value| vec![value]),
            Write::Pipeline(pipeline, offset, count) => {
                conn.req_packed_commands(pipeline, offset, count).await
            }
        };
        let error = match sent {
            Err(error) if attempt < REDIRECTS => error,
            answer => return answer,
        };
        attempt += 1;
        match error.kind() {
            ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::TryAgain) => {
                // The client rebuilds its slot map on `MOVED`; a migration moves the rest of
                // the keys on `TRYAGAIN`: give either a moment.
                tokio::time::sleep(MOVED_PAUSE * attempt).await;
            }
            ErrorKind::Server(ServerErrorKind::Ask) => {
                let Some((host, port)) = error
                    .redirect_node()
                    .and_then(|(address, _)| address.rsplit_once(':'))
                    .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                else {
                    return Err(error);
                };
                let mut asking = redis::pipe();
                asking.cmd("ASKING").ignore();
                let (offset, count) = match write {
                    Write::One(cmd) => {
                        asking.add_command(cmd.clone());
                        (1, 1)
                    }
                    Write::Pipeline(pipeline, offset, count) => {
                        for cmd in pipeline.cmd_iter() {
                            asking.add_command(cmd.clone());
                        }
                        (offset + 1, count)
                    }
                };
                let target = SingleNodeRoutingInfo::ByAddress { host, port };
                return conn.route_pipeline(asking, offset, count, target).await;
            }
            _ => return Err(error),
        }
    }
}
