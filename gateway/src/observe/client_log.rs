//! Logging what clients get wrong, at a bounded rate: a refused head or a client that left is
//! the client's business, not an operator's error, and any client could otherwise fill the
//! log. At most [`PER_SECOND`] lines a second are written (at `info`); the rest are counted
//! and the count is logged with the next line that gets through.

use crate::problem::Problem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines logged per second at most.
const PER_SECOND: u64 = 20;

/// The current second in its high bits and the lines logged in it in its low 16 bits.
static WINDOW: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Whether one more line may be written now.
fn admit() -> bool {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_secs());
    WINDOW
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |window| {
            let (at, count) = (window >> 16, window & 0xffff);
            if at != second {
                Some(second << 16 | 1)
            } else if count < PER_SECOND {
                Some(window + 1)
            } else {
                None
            }
        })
        .is_ok()
}

/// A request refused before routing (a malformed head, a bad path).
pub fn refused(problem: &Problem) {
    if !admit() {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::info!(
        status = problem.status,
        kind = problem.kind,
        detail = %problem.detail,
        suppressed,
        "refused a malformed request"
    );
}

/// Something a client did that ended its request (it left, sent a bad body).
pub fn client_error(error: &dyn std::fmt::Display, request: &dyn std::fmt::Display) {
    if !admit() {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::info!(%error, %request, suppressed, "a client error ended the request");
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_per_second_are_bounded() {
        let admitted = (0..100).filter(|_| super::admit()).count() as u64;
        // The second may turn during the loop: at most two windows' worth.
        assert!(
            (1..=2 * super::PER_SECOND).contains(&admitted),
            "{admitted}"
        );
    }
}
