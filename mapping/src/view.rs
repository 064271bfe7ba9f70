//! One message (request or response) as the applier sees it: reading sources, writing,
//! removing and keeping places, parsing the body on first use, and noting what changed.

use crate::body::{is_json, parse_unbounded};
use crate::error::{MappingError, Reason};
use crate::headers::{always_kept, is_safe_value};
use crate::json::{get, get_steps, slot, slot_from, take, take_steps};
use crate::model::{header, Body, Changed, Request, Response, Sources};
use crate::path;
use crate::rule::{Keep, Target};
use crate::shallow::{Parsed, Shallow};
use crate::value::text;
use conf::mapping::{JsonPath, JsonStep, Place, Source};
use serde_json::{Map, Value};

/// Why writing failed: a missing value (skipped unless the rule is required), a rule failure,
/// or a failure of the message itself (a body that is not JSON).
#[derive(Debug)]
pub(crate) enum Failure {
    Missing(String),
    Rule(Reason),
    Message(MappingError),
}

impl From<MappingError> for Failure {
    fn from(error: MappingError) -> Self {
        Failure::Message(error)
    }
}

pub(crate) struct View<'a> {
    method: Option<&'a mut String>,
    path: Option<&'a mut String>,
    query: Option<&'a mut Vec<(String, String)>>,
    headers: &'a mut Vec<(String, String)>,
    body: &'a mut Body,
    /// A request without a body gets a JSON object when a rule writes into the body.
    create_body: bool,
    refuse_non_json: bool,
    /// A JSON object body is parsed one level deep (shallow.rs) rather than whole.
    lazy: bool,
    pub changed: Changed,
}

impl<'a> View<'a> {
    pub fn request(request: &'a mut Request, refuse_non_json: bool, lazy: bool) -> Self {
        View {
            method: Some(&mut request.method),
            path: Some(&mut request.path),
            query: Some(&mut request.query),
            headers: &mut request.headers,
            body: &mut request.body,
            create_body: true,
            refuse_non_json,
            lazy,
            changed: Changed::default(),
        }
    }

    pub fn response(response: &'a mut Response) -> Self {
        View {
            method: None,
            path: None,
            query: None,
            headers: &mut response.headers,
            body: &mut response.body,
            create_body: false,
            refuse_non_json: false,
            lazy: false,
            changed: Changed::default(),
        }
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref().map(String::as_str)
    }

    /// Refuses a non-JSON body up front when the route says so (415).
    pub fn admit_body(&self) -> Result<(), MappingError> {
        match &*self.body {
            Body::Bytes(bytes) if self.refuse_non_json && !blank(bytes) => {
                let content_type = header(self.headers, "content-type").unwrap_or_default();
                if is_json(content_type) {
                    Ok(())
                } else {
                    Err(MappingError::UnsupportedMediaType(content_type.to_owned()))
                }
            }
            _ => Ok(()),
        }
    }

    /// Parses the body on first use: JSON (whole, or one level deep when lazy), else left as
    /// it is (or refused, when the route says so).
    fn parse_body(&mut self) -> Result<(), MappingError> {
        if let Body::Bytes(bytes) = &*self.body {
            let content_type = header(self.headers, "content-type").unwrap_or_default();
            if blank(bytes) {
                *self.body = Body::Empty;
            } else if is_json(content_type) {
                *self.body = if self.lazy {
                    match Shallow::parse(bytes)? {
                        Parsed::Shallow(shallow) => Body::Shallow(shallow),
                        Parsed::Whole(value) => Body::Json(value),
                    }
                } else {
                    Body::Json(parse_unbounded(bytes)?)
                };
            } else if self.refuse_non_json {
                return Err(MappingError::UnsupportedMediaType(content_type.to_owned()));
            }
        }
        Ok(())
    }

    /// The whole JSON body, parsed on first use; `None` when there is none or it is not JSON.
    pub fn json(&mut self) -> Result<Option<&mut Value>, MappingError> {
        self.parse_body()?;
        if matches!(self.body, Body::Shallow(_)) {
            if let Body::Shallow(shallow) = std::mem::take(self.body) {
                *self.body = Body::Json(shallow.into_value()?);
            }
        }
        match self.body {
            Body::Json(value) => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    /// The first key of `path` when the body is kept one level deep: the member it reaches.
    fn shallow_key<'p>(&self, path: &'p JsonPath) -> Option<&'p str> {
        match (&*self.body, path.0.first()) {
            (Body::Shallow(_), Some(JsonStep::Key(key))) => Some(key),
            _ => None,
        }
    }

    /// Applies `f` to the body's value at `path` (`None` when there is none).
    fn with_body_value<R>(
        &mut self,
        path: &JsonPath,
        f: impl FnOnce(Option<&Value>) -> R,
    ) -> Result<R, MappingError> {
        self.parse_body()?;
        if let Some(key) = self.shallow_key(path) {
            if let Body::Shallow(shallow) = &mut *self.body {
                let member = shallow.get(key)?;
                return Ok(f(member.and_then(|member| get_steps(member, &path.0[1..]))));
            }
        }
        Ok(f(self.json()?.and_then(|body| get(body, path))))
    }

    /// Whether the body can be written: a request without a body (and without a non-JSON
    /// content type) gets an empty object and `content-type: application/json`.
    fn prepare_body_write(&mut self) -> Result<bool, MappingError> {
        self.parse_body()?;
        if matches!(self.body, Body::Empty) && self.create_body {
            match header(self.headers, "content-type") {
                None => {
                    self.headers
                        .push(("content-type".to_owned(), "application/json".to_owned()));
                    self.changed.headers = true;
                }
                Some(content_type) if is_json(content_type) => {}
                Some(_) => return Ok(false),
            }
            *self.body = Body::Json(Value::Object(Map::new()));
        }
        let writable = matches!(self.body, Body::Json(_) | Body::Shallow(_));
        self.changed.body |= writable;
        Ok(writable)
    }

    /// The body's slot at `path`, created on the way (see [`slot`]); `Ok(None)` when the body
    /// cannot be written.
    fn body_slot(&mut self, path: &JsonPath) -> Result<Option<&mut Value>, Failure> {
        if !self.prepare_body_write()? {
            return Ok(None);
        }
        let target = || Target::Body(path.clone());
        if self.shallow_key(path).is_some() {
            let (Body::Shallow(shallow), Some(JsonStep::Key(key))) =
                (&mut *self.body, path.0.first())
            else {
                return Ok(None);
            };
            let member = shallow.get_or_insert(key)?;
            return slot_from(member, path, 1)
                .map(Some)
                .map_err(|why| conflict(&target(), why));
        }
        match self.json()? {
            Some(body) => slot(body, path)
                .map(Some)
                .map_err(|why| conflict(&target(), why)),
            None => Ok(None),
        }
    }

    /// Removes and returns the body's value at `path`.
    fn body_take(&mut self, path: &JsonPath) -> Result<Option<Value>, MappingError> {
        self.parse_body()?;
        if let Some(key) = self.shallow_key(path) {
            if let Body::Shallow(shallow) = &mut *self.body {
                return match &path.0[1..] {
                    [] => shallow.remove(key),
                    rest => Ok(shallow
                        .get(key)?
                        .and_then(|member| take_steps(member, rest))),
                };
            }
        }
        Ok(self.json()?.and_then(|body| take(body, path)))
    }

    /// The value of a source; a repeated header or query parameter gives its first value.
    pub fn read(
        &mut self,
        source: &Source,
        sources: &Sources<'_>,
    ) -> Result<Option<Value>, MappingError> {
        let place = match source {
            Source::Claim(path) => {
                return Ok(sources.claims.and_then(|claims| get(claims, path)).cloned())
            }
            Source::Place(place) => place,
        };
        let string = |s: Option<&str>| s.map(|s| Value::String(s.to_owned()));
        Ok(match place {
            Place::Query(name) => string(self.query.as_deref().and_then(|q| first(q, name))),
            Place::Header(name) => string(first(self.headers, name)),
            Place::Path => string(self.path.as_deref().map(String::as_str)),
            Place::Method => string(self.method()),
            Place::Capture(name) => {
                raw_capture(sources, name).map(|raw| Value::String(path::decode(raw)))
            }
            Place::Body(path) => self.with_body_value(path, |value| value.cloned())?,
        })
    }

    pub fn exists(&mut self, target: &Target) -> Result<bool, MappingError> {
        Ok(match target {
            Target::Query(name) => self
                .query
                .as_deref()
                .is_some_and(|q| first(q, name).is_some()),
            Target::Header(name) => first(self.headers, name).is_some(),
            Target::Path | Target::Capture(_) | Target::Method => true,
            Target::Body(path) => self.with_body_value(path, |value| value.is_some())?,
        })
    }

    /// Writes a value into a body, header or query place (replacing, or appending).
    pub fn write(&mut self, target: &Target, value: Value, append: bool) -> Result<(), Failure> {
        match target {
            Target::Body(at) => {
                let Some(slot) = self.body_slot(at)? else {
                    return Ok(());
                };
                if !append {
                    *slot = value;
                } else if let Value::Array(items) = slot {
                    items.push(value);
                } else if slot.is_null() {
                    *slot = Value::Array(vec![value]);
                } else {
                    let why = format!("is {}, not an array to append to", crate::json::kind(slot));
                    return Err(conflict(target, why));
                }
            }
            Target::Header(name) => {
                let text =
                    text(&value).ok_or_else(|| Failure::Missing(format!("header.{name}")))?;
                if !is_safe_value(&text) {
                    return Err(Failure::Rule(Reason::UnsafeHeader(format!(
                        "header.{name}"
                    ))));
                }
                put(self.headers, name, text, append);
                self.changed.headers = true;
            }
            Target::Query(name) => {
                let text = text(&value).ok_or_else(|| Failure::Missing(format!("query.{name}")))?;
                if let Some(query) = self.query.as_deref_mut() {
                    put(query, name, text, append);
                    self.changed.query = true;
                }
            }
            Target::Method => {
                let text = text(&value).ok_or_else(|| Failure::Missing("method".to_owned()))?;
                if !conf::mapping::place::is_token(&text) {
                    return Err(Failure::Rule(Reason::InvalidMethod(truncate(&text))));
                }
                if let Some(method) = self.method.as_deref_mut() {
                    *method = text;
                    self.changed.method = true;
                }
            }
            Target::Path | Target::Capture(_) => {
                return Err(Failure::Rule(Reason::Internal(
                    "a path is written with write_path".to_owned(),
                )))
            }
        }
        Ok(())
    }

    /// Writes percent-encoded text into the path or a capture's segment(s).
    pub fn write_path(&mut self, target: &Target, encoded: &str) -> Result<(), Failure> {
        let Some(current) = self.path.as_deref_mut() else {
            return Ok(());
        };
        let new = match target {
            Target::Capture(slot) => {
                path::replace_capture(current, slot, encoded).ok_or_else(|| {
                    Failure::Rule(Reason::Internal(format!(
                        "the path has no segment for capture `{}`",
                        slot.name
                    )))
                })?
            }
            _ => encoded.to_owned(),
        };
        path::check(&new).map_err(|why| match why.as_str() {
            "dot" => Failure::Rule(Reason::DotSegment),
            _ => Failure::Rule(Reason::Conflict {
                place: "path".to_owned(),
                why,
            }),
        })?;
        *current = new;
        self.changed.path = true;
        Ok(())
    }

    /// Removes a place (every value of a repeated header or query parameter); returns the
    /// body value it removed.
    pub fn remove(&mut self, target: &Target) -> Result<Option<Value>, MappingError> {
        Ok(match target {
            Target::Query(name) => {
                if let Some(query) = self.query.as_deref_mut() {
                    let before = query.len();
                    query.retain(|(n, _)| n != name);
                    self.changed.query |= query.len() != before;
                }
                None
            }
            Target::Header(name) => {
                let before = self.headers.len();
                self.headers.retain(|(n, _)| n != name);
                self.changed.headers |= self.headers.len() != before;
                None
            }
            Target::Body(path) => {
                let taken = self.body_take(path)?;
                self.changed.body |= taken.is_some();
                taken
            }
            Target::Path | Target::Capture(_) | Target::Method => None,
        })
    }

    /// Renames every entry of a header or query parameter in place, keeping order; an entry
    /// already under the new name is replaced. `false` if there was nothing to rename.
    pub fn rename_entries(&mut self, from: &Target, to: &Target) -> bool {
        let (list, from, to, flag) = match (from, to) {
            (Target::Query(from), Target::Query(to)) => match self.query.as_deref_mut() {
                Some(query) => (query, from, to, &mut self.changed.query),
                None => return false,
            },
            (Target::Header(from), Target::Header(to)) => {
                (&mut *self.headers, from, to, &mut self.changed.headers)
            }
            _ => return false,
        };
        if first(list, from).is_none() {
            return false;
        }
        list.retain(|(n, _)| n != to);
        for (name, _) in list.iter_mut().filter(|(n, _)| n == from) {
            name.clone_from(to);
        }
        *flag = true;
        true
    }

    pub fn keep(&mut self, keep: &Keep) -> Result<(), MappingError> {
        match keep {
            Keep::Query(names) => {
                if let Some(query) = self.query.as_deref_mut() {
                    let before = query.len();
                    query.retain(|(n, _)| names.contains(n));
                    self.changed.query |= query.len() != before;
                }
            }
            Keep::Header(names) => {
                let before = self.headers.len();
                self.headers
                    .retain(|(n, _)| names.contains(n) || always_kept(n));
                self.changed.headers |= self.headers.len() != before;
            }
            Keep::Body(tree) => {
                if let Some(body) = self.json()? {
                    tree.retain(body);
                    self.changed.body = true;
                }
            }
        }
        Ok(())
    }
}

/// A capture's value as matched (percent-encoded).
pub(crate) fn raw_capture<'s>(sources: &Sources<'s>, name: &str) -> Option<&'s str> {
    sources
        .captures
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn first<'l>(list: &'l [(String, String)], name: &str) -> Option<&'l str> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Sets (at the first entry's position, dropping the others) or appends a list entry.
fn put(list: &mut Vec<(String, String)>, name: &str, value: String, append: bool) {
    if !append {
        if let Some(index) = list.iter().position(|(n, _)| n == name) {
            let mut seen = false;
            list.retain(|(n, _)| n != name || !std::mem::replace(&mut seen, true));
            list[index].1 = value;
            return;
        }
    }
    list.push((name.to_owned(), value));
}

fn blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

fn conflict(target: &Target, why: String) -> Failure {
    let place = match target {
        Target::Body(path) => format!("body{path}"),
        other => format!("{other:?}"),
    };
    Failure::Rule(Reason::Conflict { place, why })
}

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}
