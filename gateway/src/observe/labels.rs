//! Metric label values that stay bounded whatever clients send: status codes and methods.

use std::sync::LazyLock;

static CODES: LazyLock<Vec<String>> =
    LazyLock::new(|| (0..600).map(|code| code.to_string()).collect());

/// The status code as a label, without allocating per request.
pub fn code(status: u16) -> &'static str {
    CODES
        .get(usize::from(status))
        .map_or("other", String::as_str)
}

/// The standard methods by name; anything else is `OTHER`, so a client cannot mint labels.
pub fn method(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounded_labels() {
        assert_eq!(super::code(204), "204");
        assert_eq!(super::code(700), "other");
        let odd = http::Method::from_bytes(b"BREW").expect("method");
        assert_eq!(super::method(&odd), "OTHER");
    }
}
