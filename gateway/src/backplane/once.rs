//! Writes that must not run twice (a publish script, a queue pop) on a cluster: the cluster
//! client is told never to resend them, since after a broken connection a command may have
//! run, and they are sent again here only where the cluster said they did not.

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use std::time::Duration;

/// How often a write is sent again after a redirect; after `MOVED`, following a pause of
/// `MOVED_PAUSE` times the attempt.
const REDIRECTS: u32 = 3;
const MOVED_PAUSE: Duration = Duration::from_millis(50);

/// A write that must not run twice, on a cluster connection that never resends by itself. It is
/// sent again only where the cluster said it did not run: after `MOVED` (once the client has its
/// new slot map) and, mid-migration, after `ASK` (to the node the slot is moving to, with
/// `ASKING`).
pub(super) async fn send_once(conn: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    let mut attempt = 0;
    loop {
        let error = match conn.req_packed_command(cmd).await {
            Err(error) if attempt < REDIRECTS => error,
            answer => return answer,
        };
        attempt += 1;
        match error.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => {
                // The client rebuilds its slot map on `MOVED`: give it a moment.
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
                asking.cmd("ASKING").ignore().add_command(cmd.clone());
                let target = SingleNodeRoutingInfo::ByAddress { host, port };
                let mut answers = conn.route_pipeline(asking, 1, 1, target).await?;
                return answers.pop().ok_or_else(|| {
                    RedisError::from((ErrorKind::Client, "no answer after ASKING"))
                });
            }
            _ => return Err(error),
        }
    }
}
