//! The engine end to end, as the gateway uses it: YAML rules → compile → apply to a request or
//! response. One test per operation and place, the seed's example, conditions, casts,
//! templates, bad input, compile errors, and property tests that nothing panics.

use crate::{
    Body, Changed, MappingError, Reason, Request, Response, RouteMapping, RuleSet, Sources,
};
use bytes::Bytes;
use serde_json::{json, Value};

const PATTERN: &str = "/users/{id}/files/{*rest}";

fn rules(yaml: &str) -> Vec<conf::mapping::Rule> {
    serde_yaml::from_str(yaml).expect("the test's YAML parses")
}

fn compile(yaml: &str) -> RuleSet {
    match RuleSet::compile_for_pattern(&rules(yaml), Some(PATTERN), "routes[0].map.request") {
        Ok(set) => set,
        Err(errors) => panic!("compile errors: {errors:#?}"),
    }
}

fn compile_errors(yaml: &str) -> Vec<String> {
    match RuleSet::compile_for_pattern(&rules(yaml), Some(PATTERN), "routes[0].map.request") {
        Ok(_) => vec![],
        Err(errors) => errors
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect(),
    }
}

fn request(uri: &str, body: Option<Value>) -> Request {
    let mut headers = vec![("Host", "api.example.com"), ("X-Trace", "t1")];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let mut request = Request::new("POST", uri, headers).expect("valid request");
    if let Some(body) = body {
        request.body = Body::Bytes(Bytes::from(body.to_string()));
    }
    request
}

fn claims() -> Value {
    json!({"sub": "user-1", "org": {"id": 42, "name": "Acme"}, "tier": "gold", "evil": "x\r\nx-admin: true"})
}

/// Applies `yaml` to `req` with the standard captures and claims.
fn run(yaml: &str, req: &mut Request) -> Result<Changed, MappingError> {
    let captures = [
        ("id".to_owned(), "7".to_owned()),
        ("rest".to_owned(), "a/b%20c".to_owned()),
    ];
    let claims = claims();
    compile(yaml).apply(
        req,
        &Sources {
            captures: &captures,
            claims: Some(&claims),
        },
    )
}

fn body(req: &Request) -> Value {
    match &req.body {
        Body::Json(value) => value.clone(),
        other => panic!("expected a JSON body, got {other:?}"),
    }
}

fn query(req: &Request) -> Vec<(&str, &str)> {
    req.query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

const USER: &str = "/users/7/files/a/b%20c";

#[test]
fn the_seed_example() {
    let yaml = "
- rename: { from: body.inputText, to: body.user_input }
- rename: { from: body.requirement, to: body.context }
- set:    { to: header.x-user-id, from: claim.sub }
";
    let mut req = request(
        "/ai/poll",
        Some(json!({"inputText": "Hello", "requirement": "new data"})),
    );
    let changed = run(yaml, &mut req).expect("maps");
    assert_eq!(
        crate::to_bytes(&body(&req)),
        Bytes::from_static(br#"{"user_input":"Hello","context":"new data"}"#)
    );
    assert_eq!(req.header("x-user-id"), Some("user-1"));
    assert_eq!(
        changed,
        Changed {
            body: true,
            headers: true,
            ..Changed::default()
        }
    );
    assert!(compile(yaml).needs_body());
}

#[test]
fn set_writes_every_kind_of_place() {
    let yaml = r#"
- set: { to: header.x-org, from: claim.org.id }
- set: { to: query.page, value: "{claim.sub}:{query.page}" }
- set: { to: body.user.id, from: claim.sub }
- set: { to: 'body.items[0]', value: { a: 1 } }
- set: { to: body.count, value: "3", as: integer }
- set: { to: method, value: PUT }
- set: { to: path.id, value: "{claim.sub}" }
"#;
    let mut req = request(&format!("{USER}?page=2&x=1"), Some(json!({"items": []})));
    let changed = run(yaml, &mut req).expect("maps");
    assert_eq!(req.header("x-org"), Some("42"));
    assert_eq!(query(&req), vec![("page", "user-1:2"), ("x", "1")]);
    assert_eq!(
        body(&req),
        json!({"items": [{"a": 1}], "user": {"id": "user-1"}, "count": 3})
    );
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path, "/users/user-1/files/a/b%20c");
    assert_eq!(
        changed,
        Changed {
            method: true,
            path: true,
            query: true,
            headers: true,
            body: true
        }
    );
}

#[test]
fn set_path_from_a_template_of_captures() {
    let yaml = "- set: { to: path, value: '/v2/accounts/{id}/{rest}/by/{claim.org.name}' }";
    let mut req = request(USER, None);
    run(yaml, &mut req).expect("maps");
    assert_eq!(req.path, "/v2/accounts/7/a/b%20c/by/Acme");
    // A value from outside the path stays one segment: `/` and spaces are encoded.
    let yaml = "- set: { to: path, value: '/v2/{header.x-name}' }";
    let mut req = request(USER, None);
    req.headers.push(("x-name".into(), "a/b c".into()));
    run(yaml, &mut req).expect("maps");
    assert_eq!(req.path, "/v2/a%2Fb%20c");
    // Writing a catch-all capture keeps its slashes.
    let mut req = request(USER, None);
    run("- set: { to: path.rest, value: 'x/{claim.sub}' }", &mut req).expect("maps");
    assert_eq!(req.path, "/users/7/files/x/user-1");
}

#[test]
fn a_path_rule_producing_dot_segments_is_refused() {
    for value in ["..", "."] {
        let mut req = request(USER, None);
        req.headers.push(("x-id".into(), value.into()));
        // Dots are unreserved: encoding the value as a segment leaves `..` as it is. Refused.
        let error = run("- set: { to: path.id, from: header.x-id }", &mut req).expect_err(value);
        assert_eq!(error.status(), 400);
        assert!(
            matches!(
                &error,
                MappingError::Rule {
                    reason: Reason::DotSegment,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(req.path, USER, "the path is left as it was");
    }
    // The text `%2e%2e` from a header is encoded (`%252e%252e`): a harmless segment.
    let mut req = request(USER, None);
    req.headers.push(("x-id".into(), "%2e%2e".into()));
    run("- set: { to: path.id, from: header.x-id }", &mut req).expect("encoded");
    assert_eq!(req.path, "/users/%252e%252e/files/a/b%20c");
    let mut req = request("/users/../files/x", None);
    let captures = [
        ("id".to_owned(), "..".to_owned()),
        ("rest".to_owned(), "x".to_owned()),
    ];
    let set = compile("- set: { to: path, value: '/api/{id}/admin' }");
    let error = set
        .apply(
            &mut req,
            &Sources {
                captures: &captures,
                claims: None,
            },
        )
        .expect_err("dot segment");
    assert!(
        error.detail().starts_with(
            "map.request[0] (set path): the rewritten path holds a `.` or `..` segment"
        ),
        "{error}"
    );
}

#[test]
fn default_sets_only_what_is_absent() {
    let yaml = "
- default: { to: query.limit, value: '20' }
- default: { to: query.page, value: '1' }
- default: { to: body.lang, value: en }
- default: { to: header.x-trace, value: none }
";
    let mut req = request("/a?page=5", Some(json!({"lang": "fr"})));
    run(yaml, &mut req).expect("maps");
    assert_eq!(query(&req), vec![("page", "5"), ("limit", "20")]);
    assert_eq!(body(&req), json!({"lang": "fr"}));
    assert_eq!(req.header("x-trace"), Some("t1"));
}

#[test]
fn rename_keeps_position_and_every_value() {
    let yaml = "
- rename: { from: query.q, to: query.search }
- rename: { from: header.x-trace, to: header.x-request-id }
- rename: { from: body.a.b, to: body.a.c }
";
    let mut req = request(
        "/a?q=1&x=2&q=3&search=old",
        Some(json!({"a": {"b": 1, "z": 2}})),
    );
    run(yaml, &mut req).expect("maps");
    assert_eq!(
        query(&req),
        vec![("search", "1"), ("x", "2"), ("search", "3")]
    );
    assert_eq!(req.header("x-request-id"), Some("t1"));
    assert_eq!(req.header("x-trace"), None);
    assert_eq!(body(&req), json!({"a": {"z": 2, "c": 1}}));
}

#[test]
fn copy_and_move_between_places() {
    let yaml = "
- copy: { from: query.page, to: body.page, as: integer }
- move: { from: query.token, to: header.x-token }
- move: { from: body.meta.trace, to: header.x-body-trace }
- copy: { from: id, to: body.user_id }
- copy: { from: path.rest, to: body.rest }
- copy: { from: method, to: body.method }
- copy: { from: claim.org, to: body.org }
";
    let mut req = request(
        &format!("{USER}?page=4&token=abc"),
        Some(json!({"meta": {"trace": 9}})),
    );
    run(yaml, &mut req).expect("maps");
    assert_eq!(query(&req), vec![("page", "4")]);
    assert_eq!(req.header("x-token"), Some("abc"));
    assert_eq!(req.header("x-body-trace"), Some("9"));
    assert_eq!(
        body(&req),
        json!({"meta": {}, "page": 4, "user_id": "7", "rest": "a/b c", "method": "POST", "org": {"id": 42, "name": "Acme"}})
    );
}

#[test]
fn remove_every_kind() {
    let yaml = "
- remove: query.debug
- remove: header.x-trace
- remove: body.secret
- remove: 'body.list[0]'
";
    let mut req = request(
        "/a?debug=1&a=2&debug=3",
        Some(json!({"secret": 1, "keep": 2, "list": [1, 2]})),
    );
    run(yaml, &mut req).expect("maps");
    assert_eq!(query(&req), vec![("a", "2")]);
    assert_eq!(req.header("x-trace"), None);
    assert_eq!(body(&req), json!({"keep": 2, "list": [2]}));
}

#[test]
fn append_to_arrays_headers_and_query() {
    let yaml = "
- append: { to: body.tags, value: new }
- append: { to: body.fresh, from: claim.sub }
- append: { to: header.x-trace, value: t2 }
- append: { to: query.tag, from: claim.tier }
";
    let mut req = request("/a?tag=x", Some(json!({"tags": ["old"]})));
    run(yaml, &mut req).expect("maps");
    assert_eq!(
        body(&req),
        json!({"tags": ["old", "new"], "fresh": ["user-1"]})
    );
    let traces: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "x-trace")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(traces, vec!["t1", "t2"]);
    assert_eq!(query(&req), vec![("tag", "x"), ("tag", "gold")]);
    let mut req = request("/a", Some(json!({"tags": "not an array"})));
    let error = run("- append: { to: body.tags, value: x }", &mut req).expect_err("conflict");
    assert_eq!(error.status(), 400);
}

#[test]
fn keep_is_an_allow_list() {
    let mut req = request(
        "/a?page=1&secret=2&limit=3&page=4",
        Some(json!({"user": {"name": "a", "password": "p"}, "x": 1, "ok": true})),
    );
    req.headers.push(("x-keep".into(), "1".into()));
    let yaml = "
- keep: [query.page, query.limit]
- keep: [header.x-keep]
- keep: [body.user.name, body.ok]
";
    run(yaml, &mut req).expect("maps");
    assert_eq!(
        query(&req),
        vec![("page", "1"), ("limit", "3"), ("page", "4")]
    );
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec!["host", "content-type", "x-keep"],
        "host and content-type are always kept"
    );
    assert_eq!(body(&req), json!({"user": {"name": "a"}, "ok": true}));
}

#[test]
fn conditions() {
    let yaml = r#"
- set: { to: header.x-a, value: exists }
  when: { exists: query.debug }
- set: { to: header.x-b, value: absent }
  when: { absent: query.debug }
- set: { to: header.x-c, value: gold }
  when: { place: claim.tier, equals: gold }
- set: { to: header.x-d, value: number }
  when: { place: query.n, equals: 5 }
- set: { to: header.x-e, value: v1 }
  when: { place: path, matches: "^/users/[0-9]+/" }
- set: { to: header.x-f, value: get }
  when: { method: [GET, HEAD] }
- set: { to: header.x-g, value: post }
  when: { method: post, exists: body.a }
"#;
    let mut req = request(&format!("{USER}?debug&n=5"), Some(json!({"a": 1})));
    run(yaml, &mut req).expect("maps");
    let got: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-") && n != "x-trace")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(got, vec!["exists", "gold", "number", "v1", "post"]);
}

#[test]
fn casts_at_runtime() {
    let yaml = "
- copy: { from: query.n, to: body.n, as: number }
- copy: { from: query.flag, to: body.flag, as: boolean }
- copy: { from: query.doc, to: body.doc, as: json }
- copy: { from: claim.org.id, to: body.org, as: string }
- copy: { from: claim.org, to: header.x-org, as: string }
";
    let mut req = request(
        "/a?n=2.5&flag=true&doc=%7B%22k%22%3A%5B1%5D%7D",
        Some(json!({})),
    );
    run(yaml, &mut req).expect("maps");
    assert_eq!(
        body(&req),
        json!({"n": 2.5, "flag": true, "doc": {"k": [1]}, "org": "42"})
    );
    assert_eq!(req.header("x-org"), Some(r#"{"id":42,"name":"Acme"}"#));
    let mut req = request("/a?n=many", Some(json!({})));
    let error = run(
        "- copy: { from: query.n, to: body.n, as: integer }",
        &mut req,
    )
    .expect_err("cast fails");
    assert_eq!(error.status(), 400);
    assert_eq!(error.detail(), "map.request[0] (copy query.n → body.n): cannot cast `query.n` to integer: the text is not an integer");
}

#[test]
fn a_missing_source_skips_unless_required() {
    let mut req = request("/a", Some(json!({"a": 1})));
    let changed = run("- move: { from: body.nope, to: body.b }\n- set: { to: header.x, value: '{claim.missing}:{query.page}' }", &mut req).expect("optional rules skip");
    assert!(!changed.headers && req.header("x").is_none());
    let error = run("- set: { to: body.x, value: 'a' }\n- move: { from: body.nope, to: body.b, required: true }", &mut req).expect_err("required");
    assert_eq!(error.status(), 400);
    assert_eq!(
        error.detail(),
        "map.request[1] (move body.nope → body.b): `body.nope` is missing"
    );
    let error = run(
        "- set: { to: header.x, value: '{claim.missing}', required: true }",
        &mut req,
    )
    .expect_err("required");
    assert_eq!(
        error.detail(),
        "map.request[0] (set header.x): `claim.missing` is missing"
    );
    // Without claims at all (a route without auth), claim sources are missing too.
    let set = compile("- set: { to: header.x, from: claim.sub }");
    assert!(set.apply(&mut req, &Sources::default()).is_ok());
}

#[test]
fn a_claim_with_crlf_never_reaches_a_header() {
    let mut req = request("/a", None);
    let error =
        run("- set: { to: header.x-user, from: claim.evil }", &mut req).expect_err("refused");
    assert_eq!(error.status(), 400);
    assert!(matches!(
        &error,
        MappingError::Rule {
            reason: Reason::UnsafeHeader(_),
            ..
        }
    ));
    assert!(
        !error.detail().contains("x-admin"),
        "the value is not echoed: {error}"
    );
    assert_eq!(req.header("x-user"), None);
    // The same from a body value, from a template, or appended.
    for yaml in [
        "- copy: { from: body.v, to: header.x }",
        "- set: { to: header.x, value: 'a {body.v}' }",
        "- append: { to: header.x, from: body.v }",
    ] {
        let mut req = request("/a", Some(json!({"v": "a\nb"})));
        assert_eq!(
            run(yaml, &mut req).map_err(|e| e.status()),
            Err(400),
            "{yaml}"
        );
        let mut req = request("/a", Some(json!({"v": "a\u{0}b"})));
        assert_eq!(
            run(yaml, &mut req).map_err(|e| e.status()),
            Err(400),
            "{yaml}"
        );
    }
}

#[test]
fn a_body_that_is_not_json_is_a_400() {
    let mut req = request("/a", None);
    req.headers
        .push(("content-type".into(), "application/json".into()));
    req.body = Body::Bytes(Bytes::from_static(b"{\"inputText\": "));
    let error = run(
        "- rename: { from: body.inputText, to: body.user_input }",
        &mut req,
    )
    .expect_err("invalid");
    assert_eq!(error.status(), 400);
    assert!(matches!(error, MappingError::InvalidJson(_)));
}

#[test]
fn a_body_nested_ten_thousand_levels_is_refused() {
    let mut req = request("/a", None);
    req.headers
        .push(("content-type".into(), "application/json".into()));
    req.body = Body::Bytes(Bytes::from(format!(
        "{}{}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    )));
    let error = run("- set: { to: body.a.b, value: 1 }", &mut req).expect_err("too deep");
    assert_eq!(error.status(), 400);
}

#[test]
fn a_hundred_thousand_element_array_works() {
    let items: Vec<u32> = (0..100_000).collect();
    let mut req = request("/a", Some(json!({"items": items, "x": 1})));
    run("- rename: { from: body.x, to: body.y }\n- append: { to: body.items, value: 100000 }\n- copy: { from: 'body.items[99999]', to: header.x-last }", &mut req).expect("maps");
    let value = body(&req);
    assert_eq!(value["items"].as_array().map(Vec::len), Some(100_001));
    assert_eq!(req.header("x-last"), Some("99999"));
}

#[test]
fn invalid_percent_encoding_in_the_query_is_a_400() {
    let error = Request::new("GET", "/a?x=%zz", [("host", "h")]).expect_err("invalid");
    assert_eq!(error.status(), 400);
    assert!(error.detail().contains("two hex digits"), "{error}");
}

#[test]
fn bodies_that_are_not_json_pass_or_are_refused() {
    let yaml = "- set: { to: body.a, value: 1 }\n- set: { to: header.x, value: y }";
    let mut req = Request::new("POST", "/a", [("content-type", "text/plain")]).expect("valid");
    req.body = Body::Bytes(Bytes::from_static(b"hello"));
    let changed = run(yaml, &mut req).expect("passes");
    assert_eq!(req.body, Body::Bytes(Bytes::from_static(b"hello")));
    assert!(!changed.body && changed.headers);

    let mut map: conf::mapping::RouteMap = serde_yaml::from_str(&format!(
        "non_json_body: refuse\nrequest:\n{}",
        indent(yaml)
    ))
    .expect("yaml");
    let mapping = RouteMapping::compile(&map, Some(PATTERN), "routes[0].map").expect("compiles");
    assert_eq!(
        mapping
            .request
            .admits(Some("text/plain"), true)
            .map_err(|e| e.status()),
        Err(415)
    );
    assert!(mapping
        .request
        .admits(Some("application/vnd.x+json"), true)
        .is_ok());
    assert!(mapping.request.admits(None, false).is_ok());
    let error = mapping
        .request
        .apply(&mut req, &Sources::default())
        .expect_err("refused");
    assert_eq!(error.status(), 415);
    map.non_json_body = conf::mapping::NonJsonBody::Pass;
    let mapping = RouteMapping::compile(&map, Some(PATTERN), "routes[0].map").expect("compiles");
    assert!(mapping.request.admits(Some("text/plain"), true).is_ok());
}

fn indent(yaml: &str) -> String {
    yaml.lines().map(|l| format!("  {l}\n")).collect()
}

#[test]
fn a_request_without_a_body_gets_one_when_a_rule_writes_it() {
    let yaml = "- set: { to: method, value: POST }\n- move: { from: query.q, to: body.query }";
    let mut req = Request::new("GET", "/search?q=cats", [("host", "h")]).expect("valid");
    let changed = run(yaml, &mut req).expect("maps");
    assert_eq!(body(&req), json!({"query": "cats"}));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(changed.body && changed.query && changed.method);
}

#[test]
fn needs_body_only_when_a_rule_touches_it() {
    assert!(!compile("- set: { to: header.x, from: claim.sub }\n- remove: query.a").needs_body());
    assert!(compile("- set: { to: header.x, value: '{body.a}' }").needs_body());
    assert!(compile("- set: { to: header.x, value: a }\n  when: { exists: body.a }").needs_body());
    assert!(compile("- keep: [body.a]").needs_body());
    assert!(!RuleSet::default().needs_body());
}

#[test]
fn response_rules_rewrite_the_json_body_and_keep_the_status() {
    let map: conf::mapping::RouteMap = serde_yaml::from_str(
        "response:\n  - rename: { from: body.output, to: body.answer }\n  - set: { to: header.x-user, from: claim.sub }\n  - remove: header.server\n",
    )
    .expect("yaml");
    let mapping = RouteMapping::compile(&map, None, "routes[0].map").expect("compiles");
    assert!(mapping.response.needs_body() && mapping.request.is_empty());
    let mut response = Response::new(
        201,
        [("Content-Type", "application/json"), ("Server", "x")],
        Body::Bytes(Bytes::from_static(br#"{"output":"hi"}"#)),
    );
    let claims = claims();
    let changed = mapping
        .response
        .apply_response(
            &mut response,
            &Sources {
                captures: &[],
                claims: Some(&claims),
            },
        )
        .expect("maps");
    assert_eq!(response.status, 201);
    assert_eq!(response.body, Body::Json(json!({"answer": "hi"})));
    assert_eq!(response.header("x-user"), Some("user-1"));
    assert_eq!(response.header("server"), None);
    assert!(changed.body && changed.headers);
    // An upstream answering invalid JSON is the gateway's 502; a non-JSON answer passes.
    let mut bad = Response::new(
        200,
        [("content-type", "application/json")],
        Body::Bytes(Bytes::from_static(b"{")),
    );
    assert_eq!(
        mapping
            .response
            .apply_response(&mut bad, &Sources::default())
            .map_err(|e| e.status()),
        Err(502)
    );
    let mut text = Response::new(
        200,
        [("content-type", "text/plain")],
        Body::Bytes(Bytes::from_static(b"{")),
    );
    assert!(mapping
        .response
        .apply_response(&mut text, &Sources::default())
        .is_ok());
    // A 204 without a body gets none.
    let mut empty = Response::new(204, [("content-type", "application/json")], Body::Empty);
    assert!(mapping
        .response
        .apply_response(&mut empty, &Sources::default())
        .is_ok());
    assert_eq!(empty.body, Body::Empty);
}

#[test]
fn compile_errors_name_the_rule_and_field() {
    let cases: &[(&str, &str)] = &[
        ("- set: { to: cookie.a, value: 1 }", "routes[0].map.request[0].set.to: unknown place `cookie.a`"),
        ("- rename: { from: body.a..b, to: body.c }", "routes[0].map.request[0].rename.from: `body.a..b`"),
        ("- set: { to: 'body.a[x]', value: 1 }", "routes[0].map.request[0].set.to: `body.a[x]`"),
        ("- set: { to: path, value: '/v2/{nope}' }", "routes[0].map.request[0].set.value: in `/v2/{nope}`: unknown capture `nope`"),
        ("- set: { to: header.x, from: claims.sub }", "routes[0].map.request[0].set.from: unknown source `claims.sub` (did you mean `claim.sub`?)"),
        ("- set: { to: header.x, from: query.a, as: json }", "routes[0].map.request[0].set.as: `as: json` makes a JSON value"),
        ("- set: { to: body.a, value: abc, as: integer }", "routes[0].map.request[0].set.value: cannot cast the value to integer"),
        ("- set: { to: path, value: 'v2/{id}' }", "routes[0].map.request[0].set.value: a path template must start with `/`"),
        ("- rename: { from: body.a, to: header.a }", "routes[0].map.request[0].rename.to: rename keeps a value in its place"),
        ("- append: { to: path, value: a }", "routes[0].map.request[0].append.to: append adds to"),
        ("- move: { from: claim.sub, to: body.a }", "routes[0].map.request[0].move.from: `claim.sub` is read-only"),
        ("- remove: method", "routes[0].map.request[0].remove: remove takes"),
        ("- set: { to: header.content-length, value: '1' }", "routes[0].map.request[0].set.to: `content-length` is managed"),
        ("- set: { to: header.x, value: \"a\\r\\nb\" }", "routes[0].map.request[0].set.value: the value holds a control character"),
        ("- set: { to: method, value: 'GE T' }", "routes[0].map.request[0].set.value: the value is not a method"),
        ("- keep: [query.a, header.b]", "routes[0].map.request[0].keep: a keep rule names places of one kind"),
        ("- keep: ['body.a[0]']", "routes[0].map.request[0].keep[0]: keep names object fields"),
        ("- set: { to: header.x, value: a }\n  when: { place: query.a, matches: '(' }", "routes[0].map.request[0].when.matches: invalid regular expression"),
        ("- set: { to: path, value: '/x/{id}' }\n- set: { to: path.id, value: '1' }", "routes[0].map.request[1]: `path.id` is written after"),
        ("- set: { to: header.x, value: { a: 1 } }", "routes[0].map.request[0].set.value: `header.x` holds text, not an object"),
        ("- set: { to: body.x }", "routes[0].map.request[0].set: give `from`"),
    ];
    for (yaml, expected) in cases {
        let errors = compile_errors(yaml);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{yaml}\nexpected: {expected}\ngot: {errors:#?}"
        );
    }
    // Every error is collected, not just the first.
    assert_eq!(
        compile_errors("- set: { to: cookie.a, value: 1 }\n- remove: nope\n- keep: []").len(),
        3
    );
}

#[test]
fn response_rules_cannot_name_request_places() {
    let errors = match RuleSet::compile_response(
        &rules("- set: { to: query.a, value: 1 }\n- copy: { from: method, to: body.m }"),
        &[],
        "routes[1].map.response",
    ) {
        Ok(_) => vec![],
        Err(errors) => errors,
    };
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].path, "routes[1].map.response[0].set.to");
    assert!(errors[0].message.contains("not part of a response"));
}

#[test]
fn compile_without_a_pattern_reads_captures_but_cannot_write_them() {
    let captures = vec!["id".to_owned()];
    let set = RuleSet::compile(
        &rules("- copy: { from: path.id, to: header.x-id }"),
        &captures,
        "routes[0].map.request",
    )
    .expect("compiles");
    let mut req = request("/users/a%20b", None);
    let caps = [("id".to_owned(), "a%20b".to_owned())];
    set.apply(
        &mut req,
        &Sources {
            captures: &caps,
            claims: None,
        },
    )
    .expect("maps");
    assert_eq!(req.header("x-id"), Some("a b"));
    let error = RuleSet::compile(&rules("- set: { to: path.id, value: x }"), &captures, "r")
        .expect_err("needs the pattern");
    assert!(error[0].message.contains("compile_for_pattern"));
}

#[test]
fn the_fuzz_bodies_run_on_a_few_inputs() {
    let inputs: &[&[u8]] = &[
        b"",
        b"request: [{ set: { to: body.a, value: 1 } }]",
        b"request:\n  - rename: { from: body.a, to: body.b }\n  - set: { to: path.id, value: '{claim.sub}' }\x00{\"a\": [1, 2]}\x00a=1&b=%20",
        b"response: [{ keep: [body.a.b] }]\x00{\"a\": {\"b\": 1, \"c\": 2}}",
        b"request: [{ append: { to: body.x[0], value: 1 } }]\x00[[[[]]]]\x00%%%",
        b"\xff\xfe",
        b"request: [{ set: { to: path, value: '/{rest}/../x' } }]\x00null",
    ];
    for input in inputs {
        crate::fuzzing::compile_yaml(input);
        crate::fuzzing::apply(input);
    }
}

mod properties {
    //! Random rules on random JSON: applying never panics, whatever the outcome.

    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\r\n ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn place() -> impl Strategy<Value = String> {
        prop_oneof![
            "body(\\.[a-c]|\\[[0-2]\\]){0,3}",
            "query\\.[a-c]",
            "header\\.x-[a-c]",
            Just("path".to_owned()),
            Just("path.id".to_owned()),
            Just("path.rest".to_owned()),
            Just("method".to_owned()),
        ]
    }

    fn source() -> impl Strategy<Value = String> {
        prop_oneof![place(), "claim(\\.[a-c]){0,2}", Just("id".to_owned())]
    }

    fn rule() -> impl Strategy<Value = String> {
        let cast = prop_oneof![
            Just(""),
            Just(", as: integer"),
            Just(", as: number"),
            Just(", as: boolean"),
            Just(", as: string"),
            Just(", as: json")
        ];
        prop_oneof![
            (
                prop_oneof![Just("set"), Just("default"), Just("append")],
                place(),
                source(),
                cast.clone(),
                any::<bool>()
            )
                .prop_map(|(op, to, from, cast, required)| format!(
                    "{{ {op}: {{ to: '{to}', from: '{from}'{cast}, required: {required} }} }}"
                )),
            (
                prop_oneof![Just("set"), Just("append")],
                place(),
                "[a-z/{}. ]{0,8}",
                cast.clone()
            )
                .prop_map(|(op, to, value, cast)| format!(
                    "{{ {op}: {{ to: '{to}', value: '{value}'{cast} }} }}"
                )),
            (
                prop_oneof![Just("rename"), Just("move"), Just("copy")],
                source(),
                place(),
                cast
            )
                .prop_map(|(op, from, to, cast)| format!(
                    "{{ {op}: {{ from: '{from}', to: '{to}'{cast} }} }}"
                )),
            place().prop_map(|p| format!("{{ remove: '{p}' }}")),
            prop::collection::vec(place(), 1..3)
                .prop_map(|ps| format!("{{ keep: ['{}'] }}", ps.join("', '"))),
            (place(), source()).prop_map(|(to, s)| format!(
                "{{ set: {{ to: '{to}', value: x }}, when: {{ place: '{s}', matches: '^a' }} }}"
            )),
        ]
    }

    /// The generated rules that parse, keeping those that compile on their own, so that most
    /// cases apply something.
    fn compiling_rules(list: &[String]) -> Option<Vec<conf::mapping::Rule>> {
        let yaml = format!("[{}]", list.join(", "));
        let parsed = serde_yaml::from_str::<Vec<conf::mapping::Rule>>(&yaml).ok()?;
        Some(
            parsed
                .into_iter()
                .filter(|rule| {
                    RuleSet::compile_for_pattern(std::slice::from_ref(rule), Some(PATTERN), "r")
                        .is_ok()
                })
                .collect(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn random_rules_on_random_json_never_panic(list in prop::collection::vec(rule(), 0..6), body in json_value(), claims in json_value(), query in "[a-c=&%0-9]{0,12}") {
            let Some(parsed) = compiling_rules(&list) else { return Ok(()) };
            let captures = [("id".to_owned(), "7".to_owned()), ("rest".to_owned(), "a/b".to_owned())];
            let sources = Sources { captures: &captures, claims: Some(&claims) };
            if let Ok(set) = RuleSet::compile_for_pattern(&parsed, Some(PATTERN), "routes[0].map.request") {
                if let Ok(mut req) = Request::new("POST", &format!("/users/7/files/a/b?{query}"), [("content-type", "application/json")]) {
                    req.body = Body::Json(body.clone());
                    let _ = set.apply(&mut req, &sources);
                    if let Body::Json(value) = &req.body {
                        let _ = crate::to_bytes(value);
                    }
                }
            }
            if let Ok(set) = RuleSet::compile_response(&parsed, &["id".to_owned()], "routes[0].map.response") {
                let mut response = Response::new(200, [("content-type", "application/json")], Body::Json(body));
                let _ = set.apply_response(&mut response, &sources);
            }
        }

        /// The gateway's lazy application (a JSON object parsed one level deep) sends the same
        /// JSON, and fails the same way, as the reference one, on compact and pretty bodies.
        #[test]
        fn lazy_application_gives_the_same_json(list in prop::collection::vec(rule(), 0..6), members in prop::collection::vec(("[a-c]", json_value()), 0..5), claims in json_value(), pretty in any::<bool>()) {
            let Some(parsed) = compiling_rules(&list) else { return Ok(()) };
            let Ok(set) = RuleSet::compile_for_pattern(&parsed, Some(PATTERN), "routes[0].map.request") else { return Ok(()) };
            let captures = [("id".to_owned(), "7".to_owned()), ("rest".to_owned(), "a/b".to_owned())];
            let sources = Sources { captures: &captures, claims: Some(&claims) };
            let body = Value::Object(members.into_iter().collect());
            let text = if pretty { serde_json::to_vec_pretty(&body) } else { serde_json::to_vec(&body) };
            let bytes = Bytes::from(text.expect("serialises"));
            let run = |lazy: bool| {
                let mut req = Request::new("POST", "/users/7/files/a/b?a=1", [("content-type", "application/json")]).expect("request");
                req.body = Body::Bytes(bytes.clone());
                let result = if lazy { set.apply_lazily(&mut req, &sources) } else { set.apply(&mut req, &sources) };
                let sent = match (&result, req.body) {
                    (Ok(changed), Body::Json(value)) if changed.body => crate::to_bytes(&value),
                    (Ok(changed), Body::Shallow(shallow)) if changed.body => shallow.to_bytes(),
                    _ => bytes.clone(),
                };
                let sent: Value = serde_json::from_slice(&sent).expect("valid JSON");
                (result.map(|changed| (changed.method, changed.path, changed.query, changed.headers, changed.body)).map_err(|e| e.to_string()), sent, req.headers)
            };
            prop_assert_eq!(run(true), run(false));
        }
    }
}
