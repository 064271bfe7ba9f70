//! The bodies of the cargo-fuzz targets (`mapping/fuzz/`), as plain functions so that unit
//! tests run them on stable too. Each must return without panicking on any input.

use crate::{Body, Request, Response, RouteMapping, Sources};
use bytes::Bytes;

const PATTERN: &str = "/users/{id}/files/{*rest}";

/// YAML text → a route's `map:` → compile. Errors are fine; panics are not.
pub fn compile_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = serde_yaml::from_str::<conf::mapping::RouteMap>(text) {
        let _ = RouteMapping::compile(&map, Some(PATTERN), "routes[0].map");
    }
}

/// `YAML map` + `\n---\n` + `body` [+ `\n---\n` + `query string`]: compile the map, then apply
/// it to a request with that body and query, and to a response with that body.
pub fn apply(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(rules), Some(body)) = (parts.next(), parts.next()) else {
        return;
    };
    let query = parts
        .next()
        .and_then(|q| std::str::from_utf8(q).ok())
        .unwrap_or("");
    let Ok(text) = std::str::from_utf8(rules) else {
        return;
    };
    let Ok(map) = serde_yaml::from_str::<conf::mapping::RouteMap>(text) else {
        return;
    };
    let Ok(mapping) = RouteMapping::compile(&map, Some(PATTERN), "routes[0].map") else {
        return;
    };
    let headers = [("content-type", "application/json"), ("x-a", "1")];
    let Ok(mut request) = Request::new("POST", &format!("/users/7/files/a/b?{query}"), headers)
    else {
        return;
    };
    request.body = Body::Bytes(Bytes::copy_from_slice(body));
    let captures = [
        ("id".to_owned(), "7".to_owned()),
        ("rest".to_owned(), "a/b".to_owned()),
    ];
    let claims = serde_json::json!({"sub": "u1", "org": {"id": 5}, "roles": ["a", "b"]});
    let sources = Sources {
        captures: &captures,
        claims: Some(&claims),
    };
    let _ = mapping.request.apply(&mut request, &sources);
    let mut response = Response::new(200, headers, Body::Bytes(Bytes::copy_from_slice(body)));
    let _ = mapping.response.apply_response(&mut response, &sources);
    if let Body::Json(value) = &request.body {
        let _ = crate::to_bytes(value);
    }
}
