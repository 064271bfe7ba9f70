//! What to remove from a request before it is proxied: the credential (unless the route says
//! `forward_token: true`) and any header the client sent that a claim will fill. Pure string
//! helpers; the gateway applies them to the real request.

use http::{HeaderName, HeaderValue};

/// The places a route's credentials are read from, to remove before proxying.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strip {
    pub headers: Vec<HeaderName>,
    pub query: Vec<String>,
    pub cookies: Vec<String>,
}

impl Strip {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty() && self.cookies.is_empty()
    }

    pub(crate) fn add(&mut self, location: &crate::Location) {
        if let Some(header) = &location.header {
            if !self.headers.contains(header) {
                self.headers.push(header.clone());
            }
        }
        for (list, name) in [
            (&mut self.query, &location.query),
            (&mut self.cookies, &location.cookie),
        ] {
            if let Some(name) = name {
                if !list.contains(name) {
                    list.push(name.clone());
                }
            }
        }
    }
}

/// `query` without the parameters named in `names` (others keep their exact encoding), or
/// `None` when none of them is there.
pub fn strip_query(query: &str, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let drop = names.contains(&param_name(pair));
            removed |= drop;
            !drop
        })
        .collect();
    removed.then(|| kept.join("&"))
}

/// `query` with the values of the parameters named in `names` replaced by `[redacted]` (for
/// logs), or `None` when none of them is there.
pub fn redact_query(query: &str, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let mut redacted = false;
    let pairs: Vec<std::borrow::Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            if !names.contains(&param_name(pair)) {
                return pair.into();
            }
            redacted = true;
            let key = pair.split('=').next().unwrap_or_default();
            format!("{key}=[redacted]").into()
        })
        .collect();
    redacted.then(|| pairs.join("&"))
}

/// A `name=value` pair's decoded name.
fn param_name(pair: &str) -> String {
    let key = pair.split('=').next().unwrap_or_default();
    form_urlencoded::parse(key.as_bytes())
        .next()
        .map(|(key, _)| key.into_owned())
        .unwrap_or_default()
}

/// A `Cookie` header value without the cookies named in `names`, or `None` when none of them
/// is there. An empty result means: remove the header.
pub fn strip_cookies(header: &str, names: &[String]) -> Option<String> {
    strip_cookie_value(header.as_bytes(), names)
        .map(|kept| String::from_utf8_lossy(&kept).into_owned())
}

/// One `Cookie` value without the cookies named in `names` (`None` when it holds none of
/// them): the bytes both [`strip_cookies`] and [`strip_cookie_headers`] work on.
fn strip_cookie_value(value: &[u8], names: &[String]) -> Option<Vec<u8>> {
    let mut removed = false;
    let mut kept: Vec<&[u8]> = Vec::new();
    for pair in value.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        let key = pair.split(|&b| b == b'=').next().unwrap_or_default();
        if names.iter().any(|name| name.as_bytes() == key.trim_ascii()) {
            removed = true;
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    removed.then(|| kept.join(&b"; "[..]))
}

/// Every `Cookie` header's value without the cookies named in `names`, or `None` when no header
/// holds one of them (then the headers are left as they are). A client may split its cookies
/// over several `Cookie` headers (HTTP/2 clients do so routinely), and the credential is read
/// from any of them, so each is stripped; a header left empty is dropped from the list.
///
/// Works on the bytes, not on text: a header that is not visible ASCII is stripped too, though
/// the credential is never read from one.
pub fn strip_cookie_headers<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    names: &[String],
) -> Option<Vec<HeaderValue>> {
    if names.is_empty() {
        return None;
    }
    let mut removed = false;
    let mut kept_headers = Vec::new();
    for value in values {
        let Some(kept) = strip_cookie_value(value.as_bytes(), names) else {
            kept_headers.push(value.clone());
            continue;
        };
        removed = true;
        if kept.is_empty() {
            continue;
        }
        // The pieces come from a valid value, so the joined one is valid too; were it not, the
        // header is dropped rather than forwarded with the credential.
        if let Ok(value) = HeaderValue::from_bytes(&kept) {
            kept_headers.push(value);
        }
    }
    removed.then_some(kept_headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_query_parameters() {
        let names = vec!["access_token".to_owned()];
        assert_eq!(
            strip_query("a=1&access_token=x&b=%20", &names).as_deref(),
            Some("a=1&b=%20")
        );
        assert_eq!(strip_query("access_token=x", &names).as_deref(), Some(""));
        assert_eq!(strip_query("a=1", &names), None);
    }

    #[test]
    fn redacts_query_parameters_however_their_name_is_encoded() {
        let names = vec!["access_token".to_owned()];
        assert_eq!(
            redact_query("a=1&access_token=x&b=%20&access%5Ftoken=y", &names).as_deref(),
            Some("a=1&access_token=[redacted]&b=%20&access%5Ftoken=[redacted]")
        );
        assert_eq!(redact_query("a=1", &names), None);
        assert_eq!(redact_query("access_token=x", &[]), None);
    }

    #[test]
    fn removes_cookies() {
        let names = vec!["session".to_owned()];
        assert_eq!(
            strip_cookies("a=1; session=x; b=2", &names).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookies("session=x", &names).as_deref(), Some(""));
        assert_eq!(strip_cookies("a=1", &names), None);
    }

    fn values(headers: &[&str]) -> Vec<HeaderValue> {
        headers
            .iter()
            .map(|h| HeaderValue::from_str(h).expect("value"))
            .collect()
    }

    #[test]
    fn removes_cookies_from_every_cookie_header() {
        let names = vec!["session".to_owned()];
        let strip = |headers: &[&str]| {
            strip_cookie_headers(&values(headers), &names).map(|kept| {
                kept.iter()
                    .map(|v| v.to_str().expect("ascii").to_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            strip(&["a=1", "session=x; b=2"]),
            Some(vec!["a=1".to_owned(), "b=2".to_owned()])
        );
        assert_eq!(
            strip(&["session=x", "a=1"]),
            Some(vec!["a=1".to_owned()]),
            "a header left empty is dropped"
        );
        assert_eq!(
            strip(&["session=x", " session = y ;", "c=3"]),
            Some(vec!["c=3".to_owned()]),
            "every instance, spaces around the name too"
        );
        assert_eq!(
            strip(&["a=1", "b=2"]),
            None,
            "untouched without the credential"
        );
        assert_eq!(
            strip(&["sessions=1; xsession=2"]),
            None,
            "only the exact name"
        );
        assert_eq!(strip(&[]), None);
        let other = vec!["other".to_owned()];
        assert_eq!(strip_cookie_headers(&values(&["session=x"]), &[]), None);
        assert_eq!(strip_cookie_headers(&values(&["session=x"]), &other), None);
    }

    #[test]
    fn removes_cookies_from_headers_that_are_not_ascii() {
        let names = vec!["session".to_owned()];
        let header = HeaderValue::from_bytes(b"caf\xc3\xa9=1; session=x").expect("obs-text");
        let kept = strip_cookie_headers([&header], &names).expect("stripped");
        assert_eq!(
            kept,
            [HeaderValue::from_bytes(b"caf\xc3\xa9=1").expect("obs-text")]
        );
    }
}
