//! The schema of a route's `map:` — request and response rewrite rules — and the checks that
//! need nothing but the config: one operation per rule, the grammar of places and sources
//! (see [`place`]), templates, and references to the route's path captures.
//!
//! A rule is one operation key plus an optional `when:`:
//!
//! ```yaml
//! map:
//!   request:
//!     - rename: { from: body.inputText, to: body.user_input }
//!     - set:    { to: header.x-user-id, from: claim.sub }
//!     - set:    { to: query.page, value: "1" }
//!       when:   { absent: query.page }
//! ```
//!
//! The `holdfast-mapping` crate compiles these into executable rule sets and adds the checks
//! that need more than syntax (which places an operation may write, casts, regexes).

pub mod place;

pub use place::{JsonPath, JsonStep, Place, Source};

use crate::config::one_or_many;
use crate::{Config, FieldError, Template};
use serde::{Deserialize, Deserializer};

/// A route's `map:` section.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMap {
    /// Applied in order to the request, before it is proxied.
    #[serde(default)]
    pub request: Vec<Rule>,
    /// Applied in order to the upstream's JSON response; the status is kept.
    #[serde(default)]
    pub response: Vec<Rule>,
    /// A request body that is not JSON (`application/json` or `…+json`): `pass` it through
    /// untouched (body rules then do nothing), or `refuse` it with 415.
    #[serde(default)]
    pub non_json_body: NonJsonBody,
}

/// What a route does with a request body that is not JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NonJsonBody {
    #[default]
    Pass,
    Refuse,
}

/// One rule: exactly one operation, and an optional condition.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Write a value into a place, replacing what is there.
    #[serde(default)]
    pub set: Option<Assign>,
    /// Write a value into a place only if the place is absent.
    #[serde(default)]
    pub default: Option<Assign>,
    /// Give a field, header or query parameter a new name in the same place.
    #[serde(default)]
    pub rename: Option<Transfer>,
    /// Copy a value from a place or source to another place.
    #[serde(default)]
    pub copy: Option<Transfer>,
    /// Copy a value to another place and remove it from where it was.
    #[serde(default, rename = "move")]
    pub move_: Option<Transfer>,
    /// Remove a place (every value of a repeated header or query parameter).
    #[serde(default)]
    pub remove: Option<String>,
    /// Add a value to a JSON array, a repeated header or a repeated query parameter.
    #[serde(default)]
    pub append: Option<Assign>,
    /// Keep only these places of one kind (`query.*`, `header.*` or `body.*`), drop the rest.
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    /// The rule runs only when every condition given here holds.
    #[serde(default)]
    pub when: Option<When>,
}

/// `set`, `default` and `append`: a target and a value, given by `from` or `value`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    pub to: String,
    /// A source: a place of the message, `claim.PATH`, or a path capture.
    #[serde(default)]
    pub from: Option<String>,
    /// A constant. A string is a template: `"{claim.sub}:{query.page}"` (`{{`/`}}` for braces).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<serde_json::Value>,
    #[serde(default, rename = "as")]
    pub cast: Option<Cast>,
    /// A missing source fails the request (400) instead of skipping the rule.
    #[serde(default)]
    pub required: bool,
}

/// `rename`, `copy` and `move`: from one place to another.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub from: String,
    pub to: String,
    #[serde(default, rename = "as")]
    pub cast: Option<Cast>,
    /// A missing source fails the request (400) instead of skipping the rule.
    #[serde(default)]
    pub required: bool,
}

/// The type a value is converted to before it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cast {
    Integer,
    Number,
    Boolean,
    String,
    /// Parse a string as JSON.
    Json,
}

impl Cast {
    pub fn name(self) -> &'static str {
        match self {
            Cast::Integer => "integer",
            Cast::Number => "number",
            Cast::Boolean => "boolean",
            Cast::String => "string",
            Cast::Json => "json",
        }
    }
}

/// A rule's condition; every key given must hold.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// This source is present.
    #[serde(default)]
    pub exists: Option<String>,
    /// This source is absent.
    #[serde(default)]
    pub absent: Option<String>,
    /// The source that `equals` and `matches` test.
    #[serde(default)]
    pub place: Option<String>,
    /// `place` holds this value (text and scalars compare by their text: `1` equals `"1"`).
    #[serde(default, deserialize_with = "present")]
    pub equals: Option<serde_json::Value>,
    /// `place` matches this regular expression (searched, not anchored: use `^…$`).
    #[serde(default)]
    pub matches: Option<String>,
    /// The request's method is one of these.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "crate::schema::OneOrMany<String>")]
    pub method: Vec<String>,
}

/// The one operation of a rule, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Operation<'a> {
    Set(&'a Assign),
    Default(&'a Assign),
    Rename(&'a Transfer),
    Copy(&'a Transfer),
    Move(&'a Transfer),
    Remove(&'a str),
    Append(&'a Assign),
    Keep(&'a [String]),
}

impl Operation<'_> {
    /// The YAML key of the operation.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Set(_) => "set",
            Operation::Default(_) => "default",
            Operation::Rename(_) => "rename",
            Operation::Copy(_) => "copy",
            Operation::Move(_) => "move",
            Operation::Remove(_) => "remove",
            Operation::Append(_) => "append",
            Operation::Keep(_) => "keep",
        }
    }
}

const OPERATIONS: &str = "set, default, rename, copy, move, remove, append or keep";

impl Rule {
    /// The rule's operation, or why there is not exactly one.
    pub fn operation(&self) -> Result<Operation<'_>, String> {
        let mut found = Vec::with_capacity(1);
        if let Some(a) = &self.set {
            found.push(Operation::Set(a));
        }
        if let Some(a) = &self.default {
            found.push(Operation::Default(a));
        }
        if let Some(t) = &self.rename {
            found.push(Operation::Rename(t));
        }
        if let Some(t) = &self.copy {
            found.push(Operation::Copy(t));
        }
        if let Some(t) = &self.move_ {
            found.push(Operation::Move(t));
        }
        if let Some(p) = &self.remove {
            found.push(Operation::Remove(p));
        }
        if let Some(a) = &self.append {
            found.push(Operation::Append(a));
        }
        if let Some(k) = &self.keep {
            found.push(Operation::Keep(k));
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("a rule needs one operation: {OPERATIONS}")),
            more => {
                let names: Vec<&str> = more.iter().map(Operation::name).collect();
                Err(format!(
                    "a rule takes exactly one operation, not {}; write one rule each",
                    names.join(" and ")
                ))
            }
        }
    }
}

/// `Some(value)` even for an explicit `null`, so that `value: null` sets JSON null.
fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// Checks of routes' `map:` sections that need only the config: syntax and references.
pub(crate) fn check(config: &Config, errors: &mut Vec<FieldError>) {
    for (i, route) in config.routes.iter().enumerate() {
        let Some(map) = &route.map else { continue };
        let captures = match &route.matcher.path {
            Some(pattern) => match crate::validate::path_captures(pattern) {
                Ok(captures) => captures,
                // The pattern's own error is reported by the route checks.
                Err(_) => continue,
            },
            None => Vec::new(),
        };
        check_rules(
            &map.request,
            &captures,
            &format!("routes[{i}].map.request"),
            errors,
        );
        check_rules(
            &map.response,
            &captures,
            &format!("routes[{i}].map.response"),
            errors,
        );
    }
}

/// Checks a list of rules whose field paths start with `at` (`routes[0].map.request`).
pub fn check_rules(rules: &[Rule], captures: &[String], at: &str, errors: &mut Vec<FieldError>) {
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule, captures, &format!("{at}[{i}]"), errors);
    }
}

fn check_rule(rule: &Rule, captures: &[String], at: &str, errors: &mut Vec<FieldError>) {
    let place = |field: String, text: &str, errors: &mut Vec<FieldError>| {
        if let Err(message) = Place::parse(text, captures) {
            errors.push(FieldError::new(field, message));
        }
    };
    match rule.operation() {
        Err(message) => errors.push(FieldError::new(at, message)),
        Ok(op) => {
            let at = format!("{at}.{}", op.name());
            match op {
                Operation::Set(a) | Operation::Default(a) | Operation::Append(a) => {
                    place(format!("{at}.to"), &a.to, errors);
                    check_assign_value(a, captures, &at, errors);
                }
                Operation::Rename(t) | Operation::Move(t) => {
                    place(format!("{at}.from"), &t.from, errors);
                    place(format!("{at}.to"), &t.to, errors);
                }
                Operation::Copy(t) => {
                    place(format!("{at}.to"), &t.to, errors);
                    check_source(&t.from, captures, format!("{at}.from"), errors);
                }
                Operation::Remove(p) => place(at, p, errors),
                Operation::Keep(list) => {
                    if list.is_empty() {
                        errors.push(FieldError::new(
                            at.clone(),
                            "list at least one place to keep",
                        ));
                    }
                    for (j, p) in list.iter().enumerate() {
                        place(format!("{at}[{j}]"), p, errors);
                    }
                }
            }
        }
    }
    if let Some(when) = &rule.when {
        check_when(when, captures, &format!("{at}.when"), errors);
    }
}

fn check_assign_value(a: &Assign, captures: &[String], at: &str, errors: &mut Vec<FieldError>) {
    match (&a.from, &a.value) {
        (Some(from), None) => check_source(from, captures, format!("{at}.from"), errors),
        (None, Some(serde_json::Value::String(text))) => {
            if let Err(message) = check_template(text, captures) {
                errors.push(FieldError::new(format!("{at}.value"), message));
            }
        }
        (None, Some(_)) => {}
        (Some(_), Some(_)) => errors.push(FieldError::new(at, "give `from` or `value`, not both")),
        (None, None) => errors.push(FieldError::new(
            at,
            "give `from` (a source such as `claim.sub`) or `value` (a constant or template)",
        )),
    }
}

fn check_source(text: &str, captures: &[String], at: String, errors: &mut Vec<FieldError>) {
    if let Err(message) = Source::parse(text, captures) {
        errors.push(FieldError::new(at, message));
    }
}

/// Parses a `value:` template and checks every source it names.
pub fn check_template(text: &str, captures: &[String]) -> Result<Template, String> {
    let template = Template::parse(text)?;
    for source in template.sources() {
        Source::parse(source, captures).map_err(|message| format!("in `{text}`: {message}"))?;
    }
    Ok(template)
}

fn check_when(when: &When, captures: &[String], at: &str, errors: &mut Vec<FieldError>) {
    for (key, source) in [
        ("exists", &when.exists),
        ("absent", &when.absent),
        ("place", &when.place),
    ] {
        if let Some(source) = source {
            check_source(source, captures, format!("{at}.{key}"), errors);
        }
    }
    let tests = when.equals.is_some() || when.matches.is_some();
    if when.place.is_some() && !tests {
        errors.push(FieldError::new(
            format!("{at}.place"),
            "`place` needs `equals` or `matches`",
        ));
    }
    if when.place.is_none() && tests {
        errors.push(FieldError::new(
            at,
            "`equals` and `matches` need `place` (the source they test)",
        ));
    }
    let empty = when.exists.is_none()
        && when.absent.is_none()
        && when.place.is_none()
        && when.method.is_empty()
        && !tests;
    if empty {
        errors.push(FieldError::new(
            at,
            "give at least one of exists, absent, place (with equals or matches), method",
        ));
    }
    for (j, method) in when.method.iter().enumerate() {
        if !place::is_token(method) {
            errors.push(FieldError::new(
                format!("{at}.method[{j}]"),
                format!("`{method}` is not a method"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_str, validate};
    use std::path::Path;

    fn errors(routes: &str) -> Vec<String> {
        let text = format!("listen: 127.0.0.1:8080\nupstreams:\n  ai: {{ targets: [127.0.0.1:9] }}\nroutes:\n{routes}");
        let config = match load_str(Path::new("m.yaml"), &text) {
            Ok(config) => config,
            Err(errors) => return errors.iter().map(ToString::to_string).collect(),
        };
        match validate(&config) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_seed_example_is_valid() {
        let routes = "  - name: ai\n    match: { path: /ai/poll }\n    map:\n      request:\n        - rename: { from: body.inputText, to: body.user_input }\n        - rename: { from: body.requirement, to: body.context }\n        - set: { to: header.x-user-id, from: claim.sub }\n    upstream: ai\n";
        assert_eq!(errors(routes), Vec::<String>::new());
    }

    #[test]
    fn an_unknown_place_names_the_field_and_line() {
        let routes = "  - name: ai\n    map:\n      request:\n        - set: { to: header.x, value: a }\n        - set: { to: cookie.x, value: a }\n    upstream: ai\n";
        let found = errors(routes);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("m.yaml:9:"), "{}", found[0]);
        assert!(
            found[0].contains("routes[0].map.request[1].set.to: unknown place `cookie.x`"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn unknown_captures_and_sources_in_templates() {
        let routes = "  - name: ai\n    match: { path: '/users/{id}' }\n    map:\n      request:\n        - set: { to: path, value: '/v2/{id}/{nope}' }\n        - set: { to: header.x, value: '{claims.sub}' }\n        - set: { to: header.y, value: '{path.id}' }\n    upstream: ai\n";
        let found = errors(routes);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].contains("request[0].set.value")
                && found[0].contains("unknown capture `nope`"),
            "{}",
            found[0]
        );
        assert!(
            found[1].contains("request[1].set.value")
                && found[1].contains("did you mean `claim.sub`"),
            "{}",
            found[1]
        );
    }

    #[test]
    fn a_rule_needs_exactly_one_operation() {
        let routes = "  - name: ai\n    map:\n      request:\n        - set: { to: header.x, value: a }\n          remove: header.y\n        - when: { exists: query.a }\n    upstream: ai\n";
        let found = errors(routes);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].contains("request[0]: a rule takes exactly one operation, not set and remove"),
            "{}",
            found[0]
        );
        assert!(
            found[1].contains("request[1]: a rule needs one operation"),
            "{}",
            found[1]
        );
    }

    #[test]
    fn unknown_keys_and_casts_are_refused_by_the_parser() {
        let found = errors("  - name: ai\n    map:\n      request:\n        - rename: { from: body.a, to: body.b, as: float }\n    upstream: ai\n");
        assert!(found[0].contains("unknown value `float`"), "{found:#?}");
        let found = errors("  - name: ai\n    map:\n      request:\n        - renam: { from: body.a, to: body.b }\n    upstream: ai\n");
        assert!(found[0].contains("did you mean `rename`"), "{found:#?}");
    }

    #[test]
    fn conditions_are_checked() {
        let routes = "  - name: ai\n    map:\n      request:\n        - set: { to: header.x, value: a }\n          when: { equals: 1 }\n        - set: { to: header.x, value: a }\n          when: { place: query.a, equals: 1, method: [POST, 'B AD'] }\n    upstream: ai\n";
        let found = errors(routes);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].contains("request[0].when: `equals` and `matches` need `place`"),
            "{}",
            found[0]
        );
        assert!(
            found[1].contains("request[1].when.method[1]"),
            "{}",
            found[1]
        );
    }

    #[test]
    fn value_or_from() {
        let found = errors("  - name: ai\n    map:\n      request:\n        - set: { to: body.a }\n        - set: { to: body.a, value: null }\n    upstream: ai\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].contains("request[0].set: give `from`"),
            "{}",
            found[0]
        );
    }
}
