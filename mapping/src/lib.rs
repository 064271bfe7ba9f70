//! Holdfast's mapping engine: declarative rewrite rules for a request's query, headers, path,
//! method and JSON body, and for an upstream's JSON response.
//!
//! Rules are compiled once, at load, from conf's schema ([`conf::mapping::RouteMap`]) into a
//! [`RuleSet`]; applying one to the plain [`Request`] / [`Response`] model only executes —
//! no parsing of templates, no regex building. This crate is pure: no I/O, no Pingora types,
//! no clocks. Start with [`RouteMapping::compile`] and [`RuleSet::apply`]; `tests.rs` shows
//! every operation on the seed's example.
//!
//! The gateway's part: build a [`Request`] ([`Request::new`] parses the query and lowercases
//! header names), read the body only when [`RuleSet::needs_body`] (into [`Body::Bytes`],
//! within its size limit), apply, then write back what [`Changed`] names — the method, the
//! path plus [`encode_query`], the headers through [`headers::diff`], and the body through
//! [`body::to_bytes`] with a new `Content-Length`. Errors carry their status
//! ([`MappingError::status`]) and a `detail` that names the rule.

mod apply;
pub mod body;
mod compile;
mod condition;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
mod json;
mod model;
mod path;
mod query;
mod rule;
mod ruleset;
mod shallow;
mod value;
mod view;

#[cfg(test)]
mod tests;

pub use body::{is_json, parse_json, to_bytes};
pub use error::{MappingError, Reason};
pub use model::{Body, Changed, Request, Response, Sources};
pub use query::{encode_query, parse_query};
pub use ruleset::{RouteMapping, RuleSet};
pub use shallow::Shallow;
