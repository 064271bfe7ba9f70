//! Counting a request in `holdfast_http_requests_total` once, when its answer's status is known
//! and before the answer is written: a scrape made right after an answer always sees it. Each
//! writer of an answer calls [`answered`] (problems, channel and call answers, CORS preflights,
//! proxied responses in `response_filter`); `logging` counts only the requests no answer
//! counted (the client left, an error ended it).

use crate::observe::labels;
use crate::observe::metrics::METRICS;
use crate::pipeline::ctx::RequestCtx;

/// Counts the request (`method`) with `status`, unless it was counted already.
pub fn answered(method: &http::Method, ctx: &mut RequestCtx, status: u16) {
    if std::mem::replace(&mut ctx.counted, true) {
        return;
    }
    let method = labels::method(method);
    METRICS
        .requests
        .with_label_values(&[ctx.route_name(), method, labels::code(status)])
        .inc();
}

/// Whether a response header is the final one (not a `1xx` that precedes it; `101` ends the
/// exchange as HTTP).
pub fn is_final(status: http::StatusCode) -> bool {
    !status.is_informational() || status == http::StatusCode::SWITCHING_PROTOCOLS
}
