//! The plain model that rules read and write: a [`Request`], a [`Response`], their [`Body`], and
//! the [`Sources`] that are not part of the message (route captures, token claims). The gateway
//! adapts Pingora's types to these and back; nothing here knows Pingora.

use crate::error::MappingError;
use crate::query::parse_query;
use bytes::Bytes;
use serde_json::Value;

/// A request as the rules see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub method: String,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    /// Decoded query pairs, in order; a repeated name appears once per value.
    pub query: Vec<(String, String)>,
    /// Headers with lowercase names, in order; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// An upstream's response as the response rules see it; the status is never changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Headers with lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// A message body. The gateway reads the body only when the rule set
/// [needs it](crate::RuleSet::needs_body); otherwise it hands over [`Body::Empty`] and streams
/// the body through untouched.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Body {
    /// No body, or a body the gateway did not read.
    #[default]
    Empty,
    /// Read but not parsed: the first body rule parses it if the content type is JSON
    /// (`application/json` or `application/…+json`); any other body is left as it is.
    Bytes(Bytes),
    /// Parsed JSON. After `apply`, serialise it with [`crate::body::to_bytes`] when
    /// [`Changed::body`] says so.
    Json(Value),
    /// A JSON object parsed one level deep, only after [`RuleSet::apply_lazily`]
    /// (crate::RuleSet::apply_lazily): serialise it with [`Shallow::to_bytes`].
    Shallow(crate::Shallow),
}

/// What the rules may read besides the message itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sources<'a> {
    /// The route's path captures as matched, `(name, raw value)`: `path.NAME` / `{NAME}`.
    /// Raw means as it appears in the path (percent-encoded); rules decode it when they write
    /// it anywhere but the path.
    pub captures: &'a [(String, String)],
    /// The verified token's claims, if the route authenticates: `claim.PATH`.
    pub claims: Option<&'a Value>,
}

/// Which parts of the message the rules changed: the gateway rewrites only these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub method: bool,
    pub path: bool,
    pub query: bool,
    pub headers: bool,
    pub body: bool,
}

impl Changed {
    pub fn any(&self) -> bool {
        self.method || self.path || self.query || self.headers || self.body
    }
}

impl Request {
    /// A request from its method, its path and query as sent (`/a/b?x=1&x=2`) and its headers
    /// (names are lowercased). An invalid query string is a 400 [`MappingError::InvalidQuery`].
    pub fn new<N: AsRef<str>, V: Into<String>>(
        method: impl Into<String>,
        path_and_query: &str,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Request, MappingError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, parse_query(query)?),
            None => (path_and_query, Vec::new()),
        };
        Ok(Request {
            method: method.into(),
            path: path.to_owned(),
            query,
            headers: lowercase(headers),
            body: Body::Empty,
        })
    }

    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl Response {
    pub fn new<N: AsRef<str>, V: Into<String>>(
        status: u16,
        headers: impl IntoIterator<Item = (N, V)>,
        body: Body,
    ) -> Response {
        Response {
            status,
            headers: lowercase(headers),
            body,
        }
    }

    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn lowercase<N: AsRef<str>, V: Into<String>>(
    headers: impl IntoIterator<Item = (N, V)>,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(name, value)| (name.as_ref().to_ascii_lowercase(), value.into()))
        .collect()
}
