//! Reading a poll's inputs from the request: the channel name, the cursor (`?cursor=`,
//! `Last-Event-ID`, `If-None-Match`) and the hold time (`?wait=`, capped by the route). Each bad
//! input is a 400 problem naming what was wrong.

use crate::core::spec::channel::{ChannelSpec, NamePart};
use crate::hub::{validate_channel_name, ChannelKey, Cursor};
use crate::problem::Problem;
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::time::Duration;

fn bad_request(detail: String) -> Problem {
    Problem::new(400, "bad-request", "Bad Request", detail)
}

/// The decoded value of query parameter `name`, if present.
pub fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Expands the channel name and checks it (length, characters).
pub fn channel_key(
    spec: &ChannelSpec,
    header: &RequestHeader,
    captures: &[(String, String)],
    claims: Option<&serde_json::Value>,
    max_len: usize,
) -> Result<ChannelKey, Problem> {
    let query = header.uri.query();
    let mut name = String::new();
    for part in &spec.name {
        let value: Option<Cow<'_, str>> = match part {
            NamePart::Literal(text) => Some(Cow::Borrowed(text)),
            NamePart::Capture(capture) => captures
                .iter()
                .find(|(k, _)| k == capture)
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
            NamePart::Query(key) => query_value(query, key),
            NamePart::Header(key) => header
                .headers
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            NamePart::Claim(path) => claims.and_then(|c| claim_text(c, path)).map(Cow::Owned),
        };
        match value {
            Some(value) if !value.is_empty() => name.push_str(&value),
            _ => {
                return Err(bad_request(format!(
                    "the channel name needs {}",
                    describe(part)
                )))
            }
        }
        // Stop expanding early: a 10 MiB query value must not become a 10 MiB string.
        if name.len() > max_len {
            break;
        }
    }
    validate_channel_name(&name, max_len)
        .map_err(|error| bad_request(format!("invalid channel name: {error}")))?;
    Ok(ChannelKey::new(spec.mode, name))
}

fn describe(part: &NamePart) -> String {
    match part {
        NamePart::Literal(_) => "a value".to_owned(),
        NamePart::Capture(name) => format!("the path segment `{name}`"),
        NamePart::Query(name) => format!("the query parameter `{name}`"),
        NamePart::Header(name) => format!("the header `{name}`"),
        NamePart::Claim(path) => format!("the token claim `{path}`"),
    }
}

fn claim_text(claims: &serde_json::Value, path: &str) -> Option<String> {
    let value = path
        .split('.')
        .try_fold(claims, |value, key| value.get(key))?;
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The poll's cursor, from `?cursor=`, then `Last-Event-ID`, then `If-None-Match`.
pub fn cursor(header: &RequestHeader) -> Result<Option<Cursor>, Problem> {
    let from_query = query_value(header.uri.query(), "cursor");
    let from_header = |name: &str| {
        header
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    };
    let raw = from_query
        .or_else(|| from_header("last-event-id"))
        .or_else(|| {
            // ETags are quoted, possibly weak: W/"1700000000000-0".
            from_header("if-none-match")
                .map(|tag| Cow::Owned(tag.trim_start_matches("W/").trim_matches('"').to_owned()))
        });
    match raw {
        None => Ok(None),
        Some(text) => Cursor::parse(&text).map(Some).map_err(|error| {
            bad_request(format!(
                "invalid cursor: {error}; a cursor looks like `1700000000000-0`"
            ))
        }),
    }
}

/// A stream's cursor: `Last-Event-ID` first (what EventSource sends when it reconnects, while
/// its URL keeps the cursor it started from), then `?last_event_id=`, then `?cursor=`.
pub fn stream_cursor(header: &RequestHeader) -> Result<Option<Cursor>, Problem> {
    let query = header.uri.query();
    let raw = header
        .headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map(Cow::Borrowed)
                .unwrap_or(Cow::Borrowed("\u{fffd}"))
        })
        .or_else(|| query_value(query, "last_event_id"))
        .or_else(|| query_value(query, "cursor"));
    match raw {
        None => Ok(None),
        Some(text) => Cursor::parse(&text).map(Some).map_err(|error| {
            bad_request(format!(
                "invalid Last-Event-ID or cursor: {error}; a cursor looks like `1700000000000-0`"
            ))
        }),
    }
}

/// The hold time: the route's timeout, or less if the client asks with `?wait=SECONDS`.
pub fn hold(header: &RequestHeader, route_timeout: Duration) -> Result<Duration, Problem> {
    let Some(wait) = query_value(header.uri.query(), "wait") else {
        return Ok(route_timeout);
    };
    let seconds: f64 = wait
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            bad_request(format!(
                "invalid wait `{wait}`: give a number of seconds from 0 to {}",
                route_timeout.as_secs()
            ))
        })?;
    Ok(Duration::from_secs_f64(
        seconds.min(route_timeout.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut header = RequestHeader::build("GET", uri.as_bytes(), None).expect("header");
        for (name, value) in headers {
            header
                .insert_header(name.to_string(), *value)
                .expect("insert");
        }
        header
    }

    #[test]
    fn cursor_sources_in_order() {
        let h = request("/p?cursor=5-1", &[("last-event-id", "6-0")]);
        assert_eq!(
            cursor(&h).expect("ok").map(|c| c.to_string()).as_deref(),
            Some("5-1")
        );
        let h = request("/p", &[("if-none-match", "W/\"7-2\"")]);
        assert_eq!(
            cursor(&h).expect("ok").map(|c| c.to_string()).as_deref(),
            Some("7-2")
        );
        assert_eq!(
            cursor(&request("/p?cursor=zz", &[])).unwrap_err().status,
            400
        );
    }

    #[test]
    fn wait_is_capped_and_checked() {
        let cap = Duration::from_secs(30);
        assert_eq!(
            hold(&request("/p?wait=5", &[]), cap).ok(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(hold(&request("/p?wait=500", &[]), cap).ok(), Some(cap));
        assert_eq!(
            hold(&request("/p?wait=-1", &[]), cap).unwrap_err().status,
            400
        );
        assert_eq!(
            hold(&request("/p?wait=abc", &[]), cap).unwrap_err().status,
            400
        );
    }

    #[test]
    fn channel_names_expand_and_are_checked() {
        let spec = ChannelSpec::compile("room:{room}:{query.kind}", conf::ChannelMode::Broadcast)
            .expect("spec");
        let captures = vec![("room".to_owned(), "7".to_owned())];
        let key =
            channel_key(&spec, &request("/r/7?kind=chat", &[]), &captures, None, 200).expect("key");
        assert_eq!(&*key.name, "room:7:chat");
        let missing = channel_key(&spec, &request("/r/7", &[]), &captures, None, 200).unwrap_err();
        assert_eq!(
            missing.detail,
            "the channel name needs the query parameter `kind`"
        );
        let long = format!("/r/7?kind={}", "a".repeat(10 * 1024));
        assert_eq!(
            channel_key(&spec, &request(&long, &[]), &captures, None, 200)
                .unwrap_err()
                .status,
            400
        );
    }
}
