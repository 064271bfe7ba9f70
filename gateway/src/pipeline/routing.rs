//! Which route a request is for, decided the same way wherever it is asked: by the edge (is the
//! request one the gateway answers itself?) and by admission (whose auth, limits and action
//! apply).

use crate::core::routes::Lookup;
use crate::core::state::State;
use pingora_http::RequestHeader;
use std::borrow::Cow;

/// The route for `method` and the normal `path` on the host `raw_host` names (a `Host` value or
/// a target's authority, port and case as the client wrote them).
pub fn find<'s>(
    state: &'s State,
    raw_host: Option<&str>,
    method: &http::Method,
    path: &str,
) -> Lookup<'s> {
    let host = raw_host.map(normalized_host);
    state.routes.find(host.as_deref(), method, path)
}

/// The host a request names: its target's authority, else its `Host` header.
pub fn raw_host(header: &RequestHeader) -> Option<&str> {
    header.uri.host().or_else(|| {
        header
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// A Host value as routes name hosts: lower case, without the port or IPv6 brackets.
pub fn normalized_host(raw: &str) -> Cow<'_, str> {
    let host = match raw.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => raw.split(':').next().unwrap_or(raw),
    };
    // `admin.example.com.` is the same name (fully qualified), and origins such as nginx
    // serve it as `admin.example.com`: route it as that, so its route's auth applies.
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
