//! What to remove from a request before it is proxied: the credential (unless the route says
//! `forward_token: true`) and any header the client sent that a claim will fill. Pure string
//! helpers; the gateway applies them to the real request.

use http::HeaderName;

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
            let key = pair.split('=').next().unwrap_or_default();
            let key: String = form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(key, _)| key.into_owned())
                .unwrap_or_default();
            let drop = names.contains(&key);
            removed |= drop;
            !drop
        })
        .collect();
    removed.then(|| kept.join("&"))
}

/// A `Cookie` header value without the cookies named in `names`, or `None` when none of them
/// is there. An empty result means: remove the header.
pub fn strip_cookies(header: &str, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let mut removed = false;
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default().trim();
            let drop = names.iter().any(|name| name == key);
            removed |= drop;
            !drop && !pair.is_empty()
        })
        .collect();
    removed.then(|| kept.join("; "))
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
    fn removes_cookies() {
        let names = vec!["session".to_owned()];
        assert_eq!(
            strip_cookies("a=1; session=x; b=2", &names).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookies("session=x", &names).as_deref(), Some(""));
        assert_eq!(strip_cookies("a=1", &names), None);
    }
}
