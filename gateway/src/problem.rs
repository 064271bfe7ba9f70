//! Refusals and failures the gateway answers itself, as `application/problem+json` (RFC 9457)
//! with `type`, `title`, `status` and `detail`. Written as an `exchange::Reply`.

use bytes::Bytes;
use serde::Serialize;

/// An error answer the gateway produces itself.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    /// A short stable slug, part of the `type` URI (`not-found`, `upstream-timeout`).
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Extra headers (`Allow`, `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
    /// Extra members of the JSON body (e.g. `oldest` for a 410).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl Problem {
    pub fn new(
        status: u16,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            headers: Vec::new(),
            extra: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value);
        self
    }

    pub fn not_found(path_hint: &str) -> Self {
        Self::new(
            404,
            "not-found",
            "Not Found",
            format!("no route matches {path_hint}"),
        )
    }

    pub fn method_not_allowed(method: &str, allow: &str) -> Self {
        Self::new(
            405,
            "method-not-allowed",
            "Method Not Allowed",
            format!("this route does not accept {method}; allowed: {allow}"),
        )
        .with_header("allow", allow)
    }

    pub fn body(&self) -> Bytes {
        let body = Body {
            kind: format!("urn:holdfast:problem:{}", self.kind),
            title: self.title,
            status: self.status,
            detail: &self.detail,
            extra: self.extra.as_deref(),
        };
        // Serialising a struct of strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_rfc9457() {
        let problem = Problem::not_found("/nowhere").with_member("oldest", "1-0".into());
        let body: serde_json::Value = serde_json::from_slice(&problem.body()).expect("json");
        assert_eq!(body["type"], "urn:holdfast:problem:not-found");
        assert_eq!(body["title"], "Not Found");
        assert_eq!(body["status"], 404);
        assert_eq!(body["detail"], "no route matches /nowhere");
        assert_eq!(body["oldest"], "1-0");
    }
}
