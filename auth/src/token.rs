//! Finding the credential in a request: `Authorization: Bearer` by default, or a provider's
//! named header, query parameter or cookie. Refuses two `Authorization` headers, `Bearer`
//! without a token, a credential given in several places at once, and anything longer than
//! [`MAX_TOKEN_BYTES`].
//!
//! An oversized token is answered 401 `invalid_token`, not 431: the limit applies alike to
//! headers, query parameters and cookies (431 only fits headers), the client must get a
//! different token rather than trim its headers, and a header section that is too large as a
//! whole already meets the gateway's own 431 (`limits.max_header_bytes`).

use crate::{AuthError, Reason};
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName};
use std::borrow::Cow;

/// The longest credential read: 8 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where one provider reads its credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// A header; `Authorization` is read as `Bearer <token>`, any other as the bare token.
    pub header: Option<HeaderName>,
    pub query: Option<String>,
    pub cookie: Option<String>,
}

impl Location {
    /// `Authorization: Bearer`.
    pub fn bearer() -> Self {
        Self {
            header: Some(AUTHORIZATION),
            query: None,
            cookie: None,
        }
    }

    /// The credential in `headers` / `query`, `Ok(None)` when it is not there at all.
    pub fn find<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Result<Option<Cow<'a, str>>, AuthError> {
        let mut found: Option<Cow<'a, str>> = None;
        let mut take = |value: Cow<'a, str>| {
            if found.is_some() {
                return Err(AuthError::InvalidRequest(
                    "the credential is given in more than one place",
                ));
            }
            found = Some(value);
            Ok(())
        };
        if let Some(name) = &self.header {
            if let Some(value) = from_header(headers, name)? {
                take(Cow::Borrowed(value))?;
            }
        }
        if let (Some(name), Some(query)) = (&self.query, query) {
            if let Some(value) = from_query(query, name)? {
                take(value)?;
            }
        }
        if let Some(name) = &self.cookie {
            if let Some(value) = from_cookies(headers, name)? {
                take(Cow::Borrowed(value))?;
            }
        }
        if let Some(token) = &found {
            if token.len() > MAX_TOKEN_BYTES {
                return Err(AuthError::InvalidToken(Reason::TooLarge));
            }
        }
        Ok(found)
    }
}

fn from_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(if name == AUTHORIZATION {
            "more than one Authorization header"
        } else {
            "the credential header is given more than once"
        }));
    }
    // Not visible ASCII: no token or key can look like that.
    let value = value
        .to_str()
        .map_err(|_| AuthError::InvalidToken(Reason::Malformed))?
        .trim_matches([' ', '\t']);
    if name != AUTHORIZATION {
        if value.is_empty() {
            return Err(AuthError::InvalidRequest("the credential header is empty"));
        }
        return Ok(Some(value));
    }
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, …) is no bearer token: the route's challenge asks for one.
        return Ok(None);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(AuthError::InvalidRequest("Bearer without a token"));
    }
    if !is_b64token(token) {
        return Err(AuthError::InvalidToken(Reason::Malformed));
    }
    Ok(Some(token))
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn from_query<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, AuthError> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(AuthError::InvalidRequest(
                "the credential parameter is given more than once",
            ));
        }
        if value.is_empty() {
            return Err(AuthError::InvalidRequest(
                "the credential parameter is empty",
            ));
        }
        found = Some(value);
    }
    Ok(found)
}

fn from_cookies<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthError> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for pair in header.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key.trim() != name {
                continue;
            }
            if found.is_some() {
                return Err(AuthError::InvalidRequest(
                    "the credential cookie is given more than once",
                ));
            }
            let value = value.trim().trim_matches('"');
            if value.is_empty() {
                return Err(AuthError::InvalidRequest("the credential cookie is empty"));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn bearer(pairs: &[(&str, &str)]) -> Result<Option<String>, AuthError> {
        Location::bearer()
            .find(&headers(pairs), None)
            .map(|found| found.map(Cow::into_owned))
    }

    #[test]
    fn reads_a_bearer_token() {
        assert_eq!(
            bearer(&[("authorization", "Bearer abc.def.ghi")]),
            Ok(Some("abc.def.ghi".to_owned()))
        );
        assert_eq!(
            bearer(&[("authorization", "bearer  abc==")]),
            Ok(Some("abc==".to_owned()))
        );
        assert_eq!(bearer(&[]), Ok(None));
        assert_eq!(bearer(&[("authorization", "Basic dXNlcjpwYXNz")]), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_an_invalid_request() {
        let found = bearer(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            found,
            Err(AuthError::InvalidRequest(
                "more than one Authorization header"
            ))
        );
        assert_eq!(found.map_err(|e| e.status()), Err(401));
    }

    #[test]
    fn bearer_without_a_token_is_an_invalid_request() {
        for value in ["Bearer", "Bearer ", "Bearer   "] {
            assert_eq!(
                bearer(&[("authorization", value)]),
                Err(AuthError::InvalidRequest("Bearer without a token")),
                "{value:?}"
            );
        }
        assert_eq!(
            bearer(&[("authorization", "Bearer a b")]),
            Err(AuthError::InvalidToken(Reason::Malformed))
        );
    }

    #[test]
    fn a_token_over_8_kib_is_refused() {
        let token = "a".repeat(MAX_TOKEN_BYTES + 1);
        let error =
            bearer(&[("authorization", &format!("Bearer {token}"))]).expect_err("too large");
        assert_eq!(error, AuthError::InvalidToken(Reason::TooLarge));
        assert_eq!(error.status(), 401);
        let token = "a".repeat(MAX_TOKEN_BYTES);
        assert!(bearer(&[("authorization", &format!("Bearer {token}"))]).is_ok());
    }

    #[test]
    fn header_query_and_cookie_locations() {
        let location = Location {
            header: Some(HeaderName::from_static("x-api-key")),
            query: Some("api_key".to_owned()),
            cookie: Some("session".to_owned()),
        };
        let none = HeaderMap::new();
        assert_eq!(
            location.find(&headers(&[("x-api-key", " k1 ")]), None),
            Ok(Some(Cow::Borrowed("k1")))
        );
        assert_eq!(
            location
                .find(&none, Some("a=1&api_key=k%2B2"))
                .map(|f| f.map(Cow::into_owned)),
            Ok(Some("k+2".to_owned()))
        );
        assert_eq!(
            location.find(&headers(&[("cookie", "a=1; session=k3")]), None),
            Ok(Some(Cow::Borrowed("k3")))
        );
        assert_eq!(
            location.find(&none, Some("api_key=a&api_key=b")),
            Err(AuthError::InvalidRequest(
                "the credential parameter is given more than once"
            ))
        );
        assert_eq!(
            location.find(&headers(&[("x-api-key", "k1")]), Some("api_key=k1")),
            Err(AuthError::InvalidRequest(
                "the credential is given in more than one place"
            ))
        );
        assert_eq!(location.find(&none, Some("other=1")), Ok(None));
    }
}
