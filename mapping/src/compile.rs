//! Compiling conf's rules into [`crate::rule::Rule`]s: resolving places and captures, splitting
//! templates, casting constants, building regexes, and refusing every rule that could never
//! work — each error with the rule's field path (`routes[0].map.request[1].rename.to`).

use crate::condition::Condition;
use crate::headers::{is_safe_value, MANAGED};
use crate::path::CaptureSlot;
use crate::rule::{Expr, Keep, KeepTree, Op, Piece, Rule, Target};
use crate::value::cast;
use conf::mapping::{self as schema, Cast, JsonStep, Operation, Place, Source};
use conf::{FieldError, TemplatePart};
use regex::RegexBuilder;
use serde_json::Value;
use std::sync::Arc;

/// Which message a rule set rewrites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Side {
    #[default]
    Request,
    Response,
}

/// What the rules of one list may refer to, and where their errors point.
pub(crate) struct Scope<'a> {
    pub captures: &'a [String],
    /// Capture positions, known when compiled from the route's pattern.
    pub slots: Option<&'a [CaptureSlot]>,
    pub side: Side,
}

/// Compiles a rule list whose field paths start with `at` (`routes[0].map.request`).
pub(crate) fn compile_rules(
    rules: &[schema::Rule],
    scope: &Scope<'_>,
    at: &str,
) -> Result<Vec<Rule>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let label_at = label_prefix(at);
    let mut compiled = Vec::with_capacity(rules.len());
    let mut path_rewritten = false;
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("{at}[{i}]");
        let before = errors.len();
        if let Some(rule) = compile_rule(
            rule,
            scope,
            &field,
            &format!("{label_at}[{i}]"),
            &mut errors,
        ) {
            if errors.len() == before {
                check_order(&rule, &mut path_rewritten, &field, &mut errors);
                compiled.push(rule);
            }
        }
    }
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// `map.request` from `routes[3].map.request`: the route is known where the error is shown.
fn label_prefix(at: &str) -> &str {
    match at
        .strip_prefix("routes[")
        .and_then(|rest| rest.split_once("]."))
    {
        Some((_, rest)) => rest,
        None => at,
    }
}

/// A capture's segment is found by its position in the route's pattern; once a rule rewrote
/// the whole path, that position means nothing.
fn check_order(rule: &Rule, path_rewritten: &mut bool, field: &str, errors: &mut Vec<FieldError>) {
    let target = match &rule.op {
        Op::Set { to, .. } | Op::Append { to, .. } | Op::Transfer { to, .. } => to,
        _ => return,
    };
    match target {
        Target::Path => *path_rewritten = true,
        Target::Capture(slot) if *path_rewritten => errors.push(FieldError::new(
            field,
            format!("`path.{}` is written after a rule rewrote the whole path; write captures first, or use the capture in the path template", slot.name),
        )),
        _ => {}
    }
}

fn compile_rule(
    rule: &schema::Rule,
    scope: &Scope<'_>,
    at: &str,
    label: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Rule> {
    let op = match rule.operation() {
        Ok(op) => op,
        Err(message) => {
            errors.push(FieldError::new(at, message));
            return None;
        }
    };
    let at_op = format!("{at}.{}", op.name());
    let (compiled, required, what) = match op {
        Operation::Set(a) | Operation::Default(a) | Operation::Append(a) => {
            let append = matches!(op, Operation::Append(_));
            let to = target(&a.to, scope, &format!("{at_op}.to"), errors);
            if append
                && !matches!(
                    to,
                    Some(Target::Query(_) | Target::Header(_) | Target::Body(_)) | None
                )
            {
                errors.push(FieldError::new(
                    format!("{at_op}.to"),
                    "append adds to a JSON array, a repeated header or a repeated query parameter",
                ));
            }
            let to = to?;
            let (value, cast) = assign_value(a, &to, scope, &at_op, errors)?;
            let what = match &a.from {
                Some(from) => format!("{} {} ← {}", op.name(), a.to.trim(), from.trim()),
                None => format!("{} {}", op.name(), a.to.trim()),
            };
            let op = match op {
                Operation::Append(_) => Op::Append { to, value, cast },
                _ => Op::Set {
                    to,
                    value,
                    cast,
                    if_absent: matches!(op, Operation::Default(_)),
                },
            };
            (op, a.required, what)
        }
        Operation::Rename(t) | Operation::Move(t) | Operation::Copy(t) => {
            let what = format!("{} {} → {}", op.name(), t.from.trim(), t.to.trim());
            (transfer(op, t, scope, &at_op, errors)?, t.required, what)
        }
        Operation::Remove(text) => {
            let field = at_op.clone();
            let place = target(text, scope, &field, errors)?;
            if !removable(&place) {
                errors.push(FieldError::new(
                    field,
                    "remove takes a header, a query parameter or a body field",
                ));
                return None;
            }
            (Op::Remove(place), false, format!("remove {}", text.trim()))
        }
        Operation::Keep(list) => {
            let what = format!(
                "keep {}",
                list.iter().map(|s| s.trim()).collect::<Vec<_>>().join(", ")
            );
            (Op::Keep(keep(list, scope, &at_op, errors)?), false, what)
        }
    };
    let when = match &rule.when {
        Some(when) => Some(condition(when, scope, &format!("{at}.when"), errors)?),
        None => None,
    };
    Some(Rule {
        label: Arc::from(format!("{label} ({what})")),
        when,
        op: compiled,
        required,
    })
}

/// A place to write, checked for this side of the exchange.
fn target(
    text: &str,
    scope: &Scope<'_>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Target> {
    let place = match Place::parse(text, scope.captures) {
        Ok(place) => place,
        Err(message) => {
            errors.push(FieldError::new(field, message));
            return None;
        }
    };
    if !available(&place, scope.side) {
        errors.push(FieldError::new(field, not_in_response(&place)));
        return None;
    }
    Some(match place {
        Place::Query(name) => Target::Query(name),
        Place::Header(name) => {
            if MANAGED.contains(&name.as_str()) {
                errors.push(FieldError::new(field, format!("`{name}` is managed by the gateway (message framing); rules cannot change it")));
                return None;
            }
            Target::Header(name)
        }
        Place::Path => Target::Path,
        Place::Method => Target::Method,
        Place::Body(path) => Target::Body(path),
        Place::Capture(name) => {
            let Some(slots) = scope.slots else {
                errors.push(FieldError::new(field, format!("writing `path.{name}` needs the route's path pattern (compile with `RuleSet::compile_for_pattern`)")));
                return None;
            };
            match slots.iter().find(|slot| slot.name == name) {
                Some(slot) => Target::Capture(slot.clone()),
                None => {
                    errors.push(FieldError::new(
                        field,
                        format!("the route's pattern has no capture `{name}`"),
                    ));
                    return None;
                }
            }
        }
    })
}

fn source(
    text: &str,
    scope: &Scope<'_>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Source> {
    match Source::parse(text, scope.captures) {
        Ok(Source::Place(place))
            if !available(&place, scope.side) && !matches!(place, Place::Capture(_)) =>
        {
            errors.push(FieldError::new(field, not_in_response(&place)));
            None
        }
        Ok(source) => Some(source),
        Err(message) => {
            errors.push(FieldError::new(field, message));
            None
        }
    }
}

fn available(place: &Place, side: Side) -> bool {
    side == Side::Request || matches!(place, Place::Header(_) | Place::Body(_))
}

fn not_in_response(place: &Place) -> String {
    format!("`{place}` is not part of a response; response rules use header.NAME and body.PATH (and read claims and captures)")
}

fn removable(target: &Target) -> bool {
    match target {
        Target::Query(_) | Target::Header(_) => true,
        Target::Body(path) => !path.is_root(),
        _ => false,
    }
}

/// Whether a target holds text (so only scalar values and text casts make sense).
fn holds_text(target: &Target) -> bool {
    !matches!(target, Target::Body(_))
}

fn assign_value(
    a: &schema::Assign,
    to: &Target,
    scope: &Scope<'_>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<(Expr, Option<Cast>)> {
    check_cast(a.cast, to, &format!("{at}.as"), errors)?;
    let field = format!("{at}.value");
    let expr = match (&a.from, &a.value) {
        (Some(from), None) => Expr::From(source(from, scope, &format!("{at}.from"), errors)?),
        (None, Some(Value::String(text))) => template(text, to, scope, &field, errors)?,
        (None, Some(constant)) => {
            if matches!(to, Target::Path | Target::Capture(_)) {
                errors.push(FieldError::new(
                    field,
                    "a path takes text: a template such as `/v2/users/{id}`",
                ));
                return None;
            }
            Expr::Const(constant.clone())
        }
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(at, "give `from` or `value`, not both"));
            return None;
        }
        (None, None) => {
            errors.push(FieldError::new(
                at,
                "give `from` (a source such as `claim.sub`) or `value` (a constant or template)",
            ));
            return None;
        }
    };
    // A constant is cast and checked now, once.
    if let Expr::Const(constant) = expr {
        let constant = match a.cast {
            Some(to_type) => match cast(constant, to_type) {
                Ok(cast) => cast,
                Err(why) => {
                    errors.push(FieldError::new(
                        field,
                        format!("cannot cast the value to {}: {why}", to_type.name()),
                    ));
                    return None;
                }
            },
            None => constant,
        };
        check_constant(&constant, to, &field, errors)?;
        return Some((Expr::Const(constant), None));
    }
    Some((expr, a.cast))
}

/// A constant headed for a text place must be text, safe for a header, a method's token.
fn check_constant(
    constant: &Value,
    to: &Target,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<()> {
    if !holds_text(to) {
        return Some(());
    }
    let text = match constant {
        Value::String(text) => text.clone(),
        Value::Number(_) | Value::Bool(_) => constant.to_string(),
        _ => {
            errors.push(FieldError::new(
                field,
                format!(
                    "{} holds text, not {}; add `as: string` to write JSON text",
                    describe(to),
                    crate::json::kind(constant)
                ),
            ));
            return None;
        }
    };
    let problem = match to {
        Target::Header(_) if !is_safe_value(&text) => {
            Some("holds a control character (CR, LF, NUL, …) and cannot go into a header")
        }
        Target::Method if !conf::mapping::place::is_token(&text) => Some("is not a method"),
        _ => None,
    };
    match problem {
        Some(problem) => {
            errors.push(FieldError::new(field, format!("the value {problem}")));
            None
        }
        None => Some(()),
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Query(name) => format!("`query.{name}`"),
        Target::Header(name) => format!("`header.{name}`"),
        Target::Path => "`path`".to_owned(),
        Target::Capture(slot) => format!("`path.{}`", slot.name),
        Target::Body(path) => format!("`body{path}`"),
        Target::Method => "`method`".to_owned(),
    }
}

/// A cast must make sense for the target: text places take no JSON, the path and method no cast.
fn check_cast(
    to_type: Option<Cast>,
    to: &Target,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<()> {
    let Some(to_type) = to_type else {
        return Some(());
    };
    let message = match to {
        Target::Path | Target::Capture(_) | Target::Method => format!(
            "{} takes text as it is; `as` converts values for body, header and query places",
            describe(to)
        ),
        Target::Query(_) | Target::Header(_) if to_type == Cast::Json => {
            format!("`as: json` makes a JSON value, but {} holds text; use `as: string`, or write into a body place", describe(to))
        }
        _ => return Some(()),
    };
    errors.push(FieldError::new(field, message));
    None
}

/// A `value:` string: a template, or (with no sources) a constant string.
fn template(
    text: &str,
    to: &Target,
    scope: &Scope<'_>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Expr> {
    let parsed = match schema::check_template(text, scope.captures) {
        Ok(parsed) => parsed,
        Err(message) => {
            errors.push(FieldError::new(field, message));
            return None;
        }
    };
    if matches!(to, Target::Path)
        && !matches!(parsed.parts.first(), Some(TemplatePart::Literal(l)) if l.starts_with('/'))
    {
        errors.push(FieldError::new(
            field,
            format!("a path template must start with `/`, e.g. `/v2{text}`"),
        ));
        return None;
    }
    if parsed.is_constant() && !matches!(to, Target::Path | Target::Capture(_)) {
        return Some(Expr::Const(Value::String(literal(&parsed.parts))));
    }
    let mut pieces = Vec::with_capacity(parsed.parts.len());
    for part in parsed.parts {
        match part {
            TemplatePart::Literal(literal) => {
                if matches!(to, Target::Header(_)) && !is_safe_value(&literal) {
                    errors.push(FieldError::new(
                        field,
                        "the template holds a control character and cannot go into a header",
                    ));
                    return None;
                }
                pieces.push(Piece::Literal(literal));
            }
            TemplatePart::Source(text) => {
                pieces.push(Piece::Source(source(&text, scope, field, errors)?))
            }
        }
    }
    Some(Expr::Template(pieces))
}

fn literal(parts: &[TemplatePart]) -> String {
    parts
        .iter()
        .map(|part| match part {
            TemplatePart::Literal(text) | TemplatePart::Source(text) => text.as_str(),
        })
        .collect()
}

fn transfer(
    op: Operation<'_>,
    t: &schema::Transfer,
    scope: &Scope<'_>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Op> {
    let from_field = format!("{at}.from");
    let to = target(&t.to, scope, &format!("{at}.to"), errors);
    let (from, remove) = match op {
        Operation::Copy(_) => (source(&t.from, scope, &from_field, errors), None),
        _ => match target(&t.from, scope, &from_field, errors) {
            Some(removed) if removable(&removed) => (Some(source_of(&removed)), Some(removed)),
            Some(_) => {
                errors.push(FieldError::new(
                    from_field,
                    format!(
                        "{} takes a header, a query parameter or a body field from where it is",
                        op.name()
                    ),
                ));
                return None;
            }
            None => (None, None),
        },
    };
    let (from, to) = (from?, to?);
    if let (Operation::Rename(_), Some(removed)) = (op, &remove) {
        let same_kind = std::mem::discriminant(removed) == std::mem::discriminant(&to);
        if !same_kind || !removable(&to) {
            errors.push(FieldError::new(
                format!("{at}.to"),
                format!(
                    "rename keeps a value in its place: {} → {} changes the place; use `move`",
                    describe(removed),
                    describe(&to)
                ),
            ));
            return None;
        }
    }
    if remove.as_ref() == Some(&to) {
        errors.push(FieldError::new(
            format!("{at}.to"),
            "`from` and `to` are the same place",
        ));
        return None;
    }
    check_cast(t.cast, &to, &format!("{at}.as"), errors)?;
    Some(Op::Transfer {
        from,
        to,
        cast: t.cast,
        remove,
    })
}

fn source_of(target: &Target) -> Source {
    Source::Place(match target {
        Target::Query(name) => Place::Query(name.clone()),
        Target::Header(name) => Place::Header(name.clone()),
        Target::Path => Place::Path,
        Target::Capture(slot) => Place::Capture(slot.name.clone()),
        Target::Body(path) => Place::Body(path.clone()),
        Target::Method => Place::Method,
    })
}

fn keep(
    list: &[String],
    scope: &Scope<'_>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Keep> {
    let mut places = Vec::with_capacity(list.len());
    for (j, text) in list.iter().enumerate() {
        let field = format!("{at}[{j}]");
        match Place::parse(text, scope.captures) {
            Ok(place) if available(&place, scope.side) => places.push((field, place)),
            Ok(place) => errors.push(FieldError::new(field, not_in_response(&place))),
            Err(message) => errors.push(FieldError::new(field, message)),
        }
    }
    let Some((_, first)) = places.first() else {
        if list.is_empty() {
            errors.push(FieldError::new(at, "list at least one place to keep"));
        }
        return None;
    };
    let kind = first.kind();
    if places.len() != list.len() {
        return None;
    }
    if places.iter().any(|(_, place)| place.kind() != kind) {
        errors.push(FieldError::new(at, "a keep rule names places of one kind (all query, all header or all body); write one rule per kind"));
        return None;
    }
    match first {
        Place::Query(_) => Some(Keep::Query(
            places
                .into_iter()
                .filter_map(|(_, p)| {
                    if let Place::Query(n) = p {
                        Some(n)
                    } else {
                        None
                    }
                })
                .collect(),
        )),
        Place::Header(_) => Some(Keep::Header(
            places
                .into_iter()
                .filter_map(|(_, p)| {
                    if let Place::Header(n) = p {
                        Some(n)
                    } else {
                        None
                    }
                })
                .collect(),
        )),
        Place::Body(_) => {
            let mut tree = KeepTree::default();
            for (field, place) in places {
                let Place::Body(path) = place else { continue };
                let mut keys = Vec::with_capacity(path.0.len());
                for step in path.0 {
                    match step {
                        JsonStep::Key(key) => keys.push(key),
                        JsonStep::Index(_) => {
                            errors.push(FieldError::new(
                                field,
                                "keep names object fields, not array elements",
                            ));
                            return None;
                        }
                    }
                }
                if keys.is_empty() {
                    errors.push(FieldError::new(
                        field,
                        "keep names fields of the body, such as `body.user`",
                    ));
                    return None;
                }
                tree.insert(&keys);
            }
            Some(Keep::Body(tree))
        }
        _ => {
            errors.push(FieldError::new(
                at,
                format!("keep works on query, header and body places, not on the {kind}"),
            ));
            None
        }
    }
}

fn condition(
    when: &schema::When,
    scope: &Scope<'_>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Condition> {
    let before = errors.len();
    let parse = |key: &str, text: &Option<String>, errors: &mut Vec<FieldError>| {
        text.as_deref()
            .and_then(|text| source(text, scope, &format!("{at}.{key}"), errors))
    };
    let exists = parse("exists", &when.exists, errors);
    let absent = parse("absent", &when.absent, errors);
    let place = parse("place", &when.place, errors);
    let tests = when.equals.is_some() || when.matches.is_some();
    if when.place.is_some() != tests {
        errors.push(FieldError::new(
            at,
            "`place` goes with `equals` or `matches` (the test of that place)",
        ));
    }
    if when.exists.is_none()
        && when.absent.is_none()
        && when.place.is_none()
        && when.method.is_empty()
        && !tests
    {
        errors.push(FieldError::new(
            at,
            "give at least one of exists, absent, place (with equals or matches), method",
        ));
    }
    if scope.side == Side::Response && !when.method.is_empty() {
        errors.push(FieldError::new(
            format!("{at}.method"),
            "a response has no method; response rules cannot test it",
        ));
    }
    let mut methods = Vec::with_capacity(when.method.len());
    for (j, method) in when.method.iter().enumerate() {
        if conf::mapping::place::is_token(method) {
            methods.push(method.to_ascii_uppercase());
        } else {
            errors.push(FieldError::new(
                format!("{at}.method[{j}]"),
                format!("`{method}` is not a method"),
            ));
        }
    }
    let matches = when.matches.as_deref().and_then(|pattern| {
        match RegexBuilder::new(pattern).size_limit(1 << 20).build() {
            Ok(regex) => Some(regex),
            Err(error) => {
                errors.push(FieldError::new(
                    format!("{at}.matches"),
                    format!("invalid regular expression: {error}"),
                ));
                None
            }
        }
    });
    (errors.len() == before).then(|| Condition {
        exists,
        absent,
        place,
        equals: when.equals.clone(),
        matches,
        methods,
    })
}
