//! The grammar of mapping places and sources: `query.NAME`, `header.NAME`, `path`,
//! `path.CAPTURE`, `body.a.b[0].c`, `method`, and (sources only) `claim.PATH` and bare capture
//! names. Parsed once at load; nothing here touches a request.

use crate::suggest::nearest;
use std::fmt;

/// A place of a request or response that rules read and write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A query parameter, by decoded name.
    Query(String),
    /// A header, by lowercase name.
    Header(String),
    /// The whole path (without the query).
    Path,
    /// The path segment(s) a route capture matched.
    Capture(String),
    /// A field of the JSON body; the empty path is the whole body.
    Body(JsonPath),
    /// The request method.
    Method,
}

/// Where a value can come from: a place, or a claim of the verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Place(Place),
    /// A claim; the empty path is every claim as one object.
    Claim(JsonPath),
}

/// A path into a JSON value: `a.b[0].c` or `["key.with.dots"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct JsonPath(pub Vec<JsonStep>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JsonStep {
    Key(String),
    Index(usize),
}

const PLACES: &str = "query.NAME, header.NAME, path, path.CAPTURE, body.PATH, method";
const HEADS: [&str; 6] = ["query", "header", "path", "body", "method", "claim"];

impl Place {
    /// Parses a place; `captures` are the route's path captures.
    pub fn parse(text: &str, captures: &[String]) -> Result<Place, String> {
        parse(text, captures, "place")
    }

    /// The kind of place, as written in the config (`query`, `header`, `body`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Place::Query(_) => "query",
            Place::Header(_) => "header",
            Place::Path => "path",
            Place::Capture(_) => "path capture",
            Place::Body(_) => "body",
            Place::Method => "method",
        }
    }
}

impl Source {
    /// Parses a source: a place, `claim.PATH`, or a bare capture name (`id` for `path.id`).
    pub fn parse(text: &str, captures: &[String]) -> Result<Source, String> {
        let text = text.trim();
        if text.contains(['{', '}']) {
            return Err(format!(
                "`{text}` is a template; write templates under `value:`, sources under `from:`"
            ));
        }
        if let Some(rest) = text.strip_prefix("claim") {
            if rest.is_empty() || rest.starts_with(['.', '[']) {
                return JsonPath::parse(rest)
                    .map(Source::Claim)
                    .map_err(|m| format!("`{text}`: {m}"));
            }
        }
        if !text.contains(['.', '[']) && !HEADS.contains(&text) {
            if captures.iter().any(|c| c == text) {
                return Ok(Source::Place(Place::Capture(text.to_owned())));
            }
            return Err(unknown_capture(text, captures));
        }
        parse(text, captures, "source").map(Source::Place)
    }
}

fn parse(text: &str, captures: &[String], what: &str) -> Result<Place, String> {
    let text = text.trim();
    let cut = text.find(['.', '[']).unwrap_or(text.len());
    let (head, rest) = text.split_at(cut);
    let name = rest.strip_prefix('.').unwrap_or(rest);
    match head {
        "method" if rest.is_empty() => Ok(Place::Method),
        "path" if rest.is_empty() => Ok(Place::Path),
        "path" if rest.starts_with('.') => {
            if captures.iter().any(|c| c == name) {
                Ok(Place::Capture(name.to_owned()))
            } else {
                Err(unknown_capture(name, captures))
            }
        }
        "query" if rest.starts_with('.') && !name.is_empty() => Ok(Place::Query(name.to_owned())),
        "header" if rest.starts_with('.') => {
            if is_token(name) {
                Ok(Place::Header(name.to_ascii_lowercase()))
            } else {
                Err(format!("`{text}`: `{name}` is not a header name"))
            }
        }
        "body" => JsonPath::parse(rest)
            .map(Place::Body)
            .map_err(|m| format!("`{text}`: {m}")),
        "claim" => Err(format!(
            "`{text}` is read-only: a claim can be a source (`from:`), not a place to write"
        )),
        _ => {
            let hint = match nearest(head, HEADS) {
                Some(best) if best != head => format!(" (did you mean `{best}{rest}`?)"),
                _ => format!(
                    "; {what}s: {PLACES}{}",
                    if what == "source" {
                        ", claim.PATH, CAPTURE"
                    } else {
                        ""
                    }
                ),
            };
            Err(format!("unknown {what} `{text}`{hint}"))
        }
    }
}

fn unknown_capture(name: &str, captures: &[String]) -> String {
    if captures.is_empty() {
        format!("unknown capture `{name}`: the route's path has no captures")
    } else {
        format!(
            "unknown capture `{name}`; the route's captures: {}",
            captures.join(", ")
        )
    }
}

/// An HTTP token (RFC 9110 `tchar`s): header names and methods.
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl JsonPath {
    /// Parses steps such as `.a.b[0].c` or `["a.b"]`; the empty text is the root.
    pub fn parse(mut text: &str) -> Result<JsonPath, String> {
        let mut steps = Vec::new();
        while !text.is_empty() {
            if let Some(rest) = text.strip_prefix("[\"") {
                let (key, after) = rest.split_once("\"]").ok_or("unclosed `[\"`")?;
                steps.push(JsonStep::Key(key.to_owned()));
                text = after;
            } else if let Some(rest) = text.strip_prefix('[') {
                let (index, after) = rest.split_once(']').ok_or("unclosed `[`")?;
                let index = index
                    .parse::<usize>()
                    .map_err(|_| format!("`[{index}]` is not an array index such as `[0]`"))?;
                steps.push(JsonStep::Index(index));
                text = after;
            } else if let Some(rest) = text.strip_prefix('.') {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let key = &rest[..end];
                if key.is_empty() || key.contains([']', '"']) {
                    return Err(format!(
                        "`{key}` is not a field name (use `[\"…\"]` for unusual names)"
                    ));
                }
                steps.push(JsonStep::Key(key.to_owned()));
                text = &rest[end..];
            } else {
                return Err(format!("expected `.name` or `[index]` at `{text}`"));
            }
        }
        Ok(JsonPath(steps))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.0 {
            match step {
                JsonStep::Key(key) if key.is_empty() || key.contains(['.', '[', ']']) => {
                    write!(f, "[\"{key}\"]")?
                }
                JsonStep::Key(key) => write!(f, ".{key}")?,
                JsonStep::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Query(name) => write!(f, "query.{name}"),
            Place::Header(name) => write!(f, "header.{name}"),
            Place::Path => f.write_str("path"),
            Place::Capture(name) => write!(f, "path.{name}"),
            Place::Body(path) => write!(f, "body{path}"),
            Place::Method => f.write_str("method"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Place(place) => place.fmt(f),
            Source::Claim(path) => write!(f, "claim{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Vec<String> {
        vec!["id".to_owned()]
    }

    #[test]
    fn places() {
        let c = caps();
        assert_eq!(
            Place::parse("query.page", &c),
            Ok(Place::Query("page".into()))
        );
        assert_eq!(
            Place::parse("header.X-Team", &c),
            Ok(Place::Header("x-team".into()))
        );
        assert_eq!(Place::parse("path", &c), Ok(Place::Path));
        assert_eq!(Place::parse("path.id", &c), Ok(Place::Capture("id".into())));
        assert_eq!(Place::parse("method", &c), Ok(Place::Method));
        assert_eq!(
            Place::parse("body", &c),
            Ok(Place::Body(JsonPath::default()))
        );
        let path = JsonPath(vec![
            JsonStep::Key("a".into()),
            JsonStep::Index(0),
            JsonStep::Key("c.d".into()),
        ]);
        assert_eq!(
            Place::parse("body.a[0][\"c.d\"]", &c),
            Ok(Place::Body(path.clone()))
        );
        assert_eq!(Place::Body(path).to_string(), "body.a[0][\"c.d\"]");
    }

    #[test]
    fn malformed_places() {
        let c = caps();
        for bad in [
            "body..a",
            "body.a[",
            "body.a[x]",
            "body.a[-1]",
            "bodya",
            "header.a b",
            "query.",
            "path.nope",
            "claim.sub",
            "cookie.a",
            "body.a]",
        ] {
            assert!(Place::parse(bad, &c).is_err(), "{bad}");
        }
        assert!(Place::parse("heder.x", &c)
            .expect_err("error")
            .contains("did you mean `header.x`"));
    }

    #[test]
    fn sources() {
        let c = caps();
        assert_eq!(
            Source::parse("id", &c),
            Ok(Source::Place(Place::Capture("id".into())))
        );
        assert_eq!(
            Source::parse("claim.org.id", &c).map(|s| s.to_string()),
            Ok("claim.org.id".to_owned())
        );
        assert_eq!(
            Source::parse("claim", &c),
            Ok(Source::Claim(JsonPath::default()))
        );
        assert!(Source::parse("nope", &c)
            .expect_err("error")
            .contains("unknown capture `nope`"));
        assert!(Source::parse("{claim.sub}", &c)
            .expect_err("error")
            .contains("template"));
    }
}
