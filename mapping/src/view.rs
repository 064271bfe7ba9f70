//! One message (request or response) as the applier sees it: reading sources, writing,
//! removing and keeping places, parsing the body on first use, and noting what changed.

use crate::body::{is_json, parse_unbounded};
use crate::error::{MappingError, Reason};
use crate::headers::{always_kept, is_safe_value};
use crate::json::{get, slot, take};
use crate::model::{header, Body, Changed, Request, Response, Sources};
use crate::path;
use crate::rule::{Keep, Target};
use crate::value::text;
use conf::mapping::{Place, Source};
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
    pub changed: Changed,
}

impl<'a> View<'a> {
    pub fn request(request: &'a mut Request, refuse_non_json: bool) -> Self {
        View {
            method: Some(&mut request.method),
            path: Some(&mut request.path),
            query: Some(&mut request.query),
            headers: &mut request.headers,
            body: &mut request.body,
            create_body: true,
            refuse_non_json,
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

    /// The JSON body, parsed on first use; `None` when there is none or it is not JSON.
    pub fn json(&mut self) -> Result<Option<&mut Value>, MappingError> {
        if let Body::Bytes(bytes) = &*self.body {
            let content_type = header(self.headers, "content-type").unwrap_or_default();
            if blank(bytes) {
                *self.body = Body::Empty;
            } else if is_json(content_type) {
                *self.body = Body::Json(parse_unbounded(bytes)?);
            } else if self.refuse_non_json {
                return Err(MappingError::UnsupportedMediaType(content_type.to_owned()));
            }
        }
        match self.body {
            Body::Json(value) => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    /// The JSON body for writing: a request without a body (and without a non-JSON content
    /// type) gets an empty object and `content-type: application/json`.
    fn json_for_write(&mut self) -> Result<Option<&mut Value>, MappingError> {
        self.json()?;
        if matches!(self.body, Body::Empty) && self.create_body {
            match header(self.headers, "content-type") {
                None => {
                    self.headers
                        .push(("content-type".to_owned(), "application/json".to_owned()));
                    self.changed.headers = true;
                }
                Some(content_type) if is_json(content_type) => {}
                Some(_) => return Ok(None),
            }
            *self.body = Body::Json(Value::Object(Map::new()));
        }
        self.changed.body |= matches!(self.body, Body::Json(_));
        Ok(match self.body {
            Body::Json(value) => Some(value),
            _ => None,
        })
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
            Place::Body(path) => self.json()?.and_then(|body| get(body, path)).cloned(),
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
            Target::Body(path) => self.json()?.is_some_and(|body| get(body, path).is_some()),
        })
    }

    /// Writes a value into a body, header or query place (replacing, or appending).
    pub fn write(&mut self, target: &Target, value: Value, append: bool) -> Result<(), Failure> {
        match target {
            Target::Body(at) => {
                let Some(body) = self.json_for_write()? else {
                    return Ok(());
                };
                let slot = slot(body, at).map_err(|why| conflict(target, why))?;
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
                let taken = self.json()?.and_then(|body| take(body, path));
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
