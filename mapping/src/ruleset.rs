//! The public face of the engine: a compiled [`RuleSet`] (one list of rules, for requests or
//! responses) and a route's [`RouteMapping`] (both lists and the route's body policy).

use crate::apply::apply_all;
use crate::body::is_json;
use crate::compile::{compile_rules, Scope, Side};
use crate::error::MappingError;
use crate::model::{Changed, Request, Response, Sources};
use crate::path::layout;
use crate::rule::{Expr, Keep, Op, Piece, Rule, Target};
use conf::mapping::{NonJsonBody, Place, RouteMap, Source};
use conf::FieldError;

/// A compiled, ordered list of rules. Cheap to share (`Arc` it per route); applying it never
/// parses or compiles anything.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    needs_body: bool,
    non_json: NonJsonBody,
}

impl RuleSet {
    /// Compiles request rules. `captures` are the route's path capture names; `at` is where the
    /// rules stand in the config (`routes[0].map.request`), for error paths such as
    /// `routes[0].map.request[1].rename.to`. Writing `path.CAPTURE` needs the pattern itself:
    /// use [`RuleSet::compile_for_pattern`] (or [`RouteMapping::compile`]).
    pub fn compile(
        rules: &[conf::mapping::Rule],
        captures: &[String],
        at: &str,
    ) -> Result<RuleSet, Vec<FieldError>> {
        let scope = Scope {
            captures,
            slots: None,
            side: Side::Request,
        };
        compile_rules(rules, &scope, at).map(RuleSet::new)
    }

    /// Compiles request rules for a route whose path pattern (`/users/{id}`) is known, so that
    /// rules may also write a capture's segment (`path.id`).
    pub fn compile_for_pattern(
        rules: &[conf::mapping::Rule],
        pattern: Option<&str>,
        at: &str,
    ) -> Result<RuleSet, Vec<FieldError>> {
        compile_with_pattern(rules, pattern, Side::Request, at)
    }

    /// Compiles response rules: they write `header.*` and `body.*` of the upstream's response
    /// and may read claims and captures.
    pub fn compile_response(
        rules: &[conf::mapping::Rule],
        captures: &[String],
        at: &str,
    ) -> Result<RuleSet, Vec<FieldError>> {
        let scope = Scope {
            captures,
            slots: None,
            side: Side::Response,
        };
        compile_rules(rules, &scope, at).map(RuleSet::new)
    }

    fn new(rules: Vec<Rule>) -> RuleSet {
        let needs_body = rules.iter().any(touches_body);
        RuleSet {
            rules,
            needs_body,
            non_json: NonJsonBody::Pass,
        }
    }

    /// Sets what a request body that is not JSON gets: passed through (the default), or 415.
    pub fn with_non_json_body(mut self, policy: NonJsonBody) -> RuleSet {
        self.non_json = policy;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether any rule reads or writes the body (in a place, a template, a condition or a
    /// keep): only then must the gateway buffer the body and hand it over as
    /// [`crate::Body::Bytes`]. Otherwise it streams the body and passes [`crate::Body::Empty`].
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }

    /// Checked before reading a request body: with `non_json_body: refuse`, a body whose
    /// content type is not JSON is a 415 at once.
    pub fn admits(&self, content_type: Option<&str>, has_body: bool) -> Result<(), MappingError> {
        if self.non_json == NonJsonBody::Refuse && has_body && !content_type.is_some_and(is_json) {
            return Err(MappingError::UnsupportedMediaType(
                content_type.unwrap_or_default().to_owned(),
            ));
        }
        Ok(())
    }

    /// Applies the rules to a request, in order; says what changed. Errors carry their status
    /// (400 for the client's input, 415 for a refused body, 500 for a misconfiguration).
    pub fn apply(
        &self,
        request: &mut Request,
        sources: &Sources<'_>,
    ) -> Result<Changed, MappingError> {
        self.apply_request(request, sources, false)
    }

    /// [`apply`](Self::apply), except that a JSON object body is parsed one level deep: the
    /// members no rule reaches keep the client's bytes, and the body may be left as
    /// [`Body::Shallow`](crate::Body::Shallow). For a caller that only sends the body on (the
    /// gateway): the result, serialised, is the same JSON as `apply`'s.
    pub fn apply_lazily(
        &self,
        request: &mut Request,
        sources: &Sources<'_>,
    ) -> Result<Changed, MappingError> {
        self.apply_request(request, sources, true)
    }

    fn apply_request(
        &self,
        request: &mut Request,
        sources: &Sources<'_>,
        lazy: bool,
    ) -> Result<Changed, MappingError> {
        let refuse_non_json = self.non_json == NonJsonBody::Refuse;
        let mut view = crate::view::View::request(request, refuse_non_json, lazy);
        apply_all(&self.rules, &mut view, sources)?;
        Ok(view.changed)
    }

    /// Applies the rules to an upstream's response (the status is never changed). Compile
    /// these with [`RuleSet::compile_response`]: request-only places have no effect here. A body that
    /// is not JSON passes untouched; a failure is the gateway's 502
    /// ([`MappingError::Upstream`]).
    pub fn apply_response(
        &self,
        response: &mut Response,
        sources: &Sources<'_>,
    ) -> Result<Changed, MappingError> {
        let mut view = crate::view::View::response(response);
        apply_all(&self.rules, &mut view, sources).map_err(MappingError::upstream)?;
        Ok(view.changed)
    }
}

fn compile_with_pattern(
    rules: &[conf::mapping::Rule],
    pattern: Option<&str>,
    side: Side,
    at: &str,
) -> Result<RuleSet, Vec<FieldError>> {
    let slots = match pattern.map(layout).transpose() {
        Ok(slots) => slots.unwrap_or_default(),
        Err(message) => return Err(vec![FieldError::new(at, message)]),
    };
    let captures: Vec<String> = slots.iter().map(|slot| slot.name.clone()).collect();
    let scope = Scope {
        captures: &captures,
        slots: Some(&slots),
        side,
    };
    compile_rules(rules, &scope, at).map(RuleSet::new)
}

/// A route's compiled `map:`.
#[derive(Clone, Debug, Default)]
pub struct RouteMapping {
    pub request: RuleSet,
    pub response: RuleSet,
}

impl RouteMapping {
    /// Compiles a route's `map:`; `pattern` is the route's `match.path` (captures come from
    /// it), `at` the map's place in the config (`routes[0].map`). Collects every error.
    pub fn compile(
        map: &RouteMap,
        pattern: Option<&str>,
        at: &str,
    ) -> Result<RouteMapping, Vec<FieldError>> {
        let request = compile_with_pattern(
            &map.request,
            pattern,
            Side::Request,
            &format!("{at}.request"),
        );
        let response = compile_with_pattern(
            &map.response,
            pattern,
            Side::Response,
            &format!("{at}.response"),
        );
        match (request, response) {
            (Ok(request), Ok(response)) => Ok(RouteMapping {
                request: request.with_non_json_body(map.non_json_body),
                response,
            }),
            (request, response) => Err(request
                .err()
                .into_iter()
                .chain(response.err())
                .flatten()
                .collect()),
        }
    }
}

fn touches_body(rule: &Rule) -> bool {
    let in_source = |source: &Source| matches!(source, Source::Place(Place::Body(_)));
    let in_expr = |expr: &Expr| match expr {
        Expr::From(source) => in_source(source),
        Expr::Template(pieces) => pieces
            .iter()
            .any(|piece| matches!(piece, Piece::Source(source) if in_source(source))),
        Expr::Const(_) => false,
    };
    let in_op = match &rule.op {
        Op::Set { to, value, .. } | Op::Append { to, value, .. } => {
            matches!(to, Target::Body(_)) || in_expr(value)
        }
        Op::Transfer { from, to, .. } => in_source(from) || matches!(to, Target::Body(_)),
        Op::Remove(target) => matches!(target, Target::Body(_)),
        Op::Keep(keep) => matches!(keep, Keep::Body(_)),
    };
    let in_when = rule.when.as_ref().is_some_and(|when| {
        [&when.exists, &when.absent, &when.place]
            .into_iter()
            .flatten()
            .any(in_source)
    });
    in_op || in_when
}
