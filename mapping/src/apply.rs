//! Executing compiled rules on a [`View`], in order. Nothing is parsed or compiled here; a rule
//! that cannot find its source is skipped unless it is `required`.

use crate::error::{MappingError, Reason};
use crate::path::{encode_path, encode_segment};
use crate::rule::{Expr, Op, Piece, Rule, Target};
use crate::value::{cast, text};
use crate::view::{raw_capture, Failure, View};
use crate::Sources;
use conf::mapping::{Cast, Place, Source};
use serde_json::Value;
use std::fmt::Display;

/// Applies `rules` in order.
pub(crate) fn apply_all(
    rules: &[Rule],
    view: &mut View<'_>,
    sources: &Sources<'_>,
) -> Result<(), MappingError> {
    view.admit_body()?;
    for rule in rules {
        match run(rule, view, sources) {
            Ok(()) => {}
            Err(Failure::Missing(_)) if !rule.required => {}
            Err(Failure::Missing(place)) => return Err(rule_error(rule, Reason::Missing(place))),
            Err(Failure::Rule(reason)) => return Err(rule_error(rule, reason)),
            Err(Failure::Message(error)) => return Err(error),
        }
    }
    Ok(())
}

fn rule_error(rule: &Rule, reason: Reason) -> MappingError {
    MappingError::Rule {
        rule: rule.label.clone(),
        reason,
    }
}

fn run(rule: &Rule, view: &mut View<'_>, sources: &Sources<'_>) -> Result<(), Failure> {
    if let Some(when) = &rule.when {
        if !when.holds(view, sources)? {
            return Ok(());
        }
    }
    match &rule.op {
        Op::Set {
            to,
            value,
            cast,
            if_absent,
        } => {
            if *if_absent && view.exists(to)? {
                return Ok(());
            }
            write(view, sources, to, value, *cast, false)
        }
        Op::Append { to, value, cast } => write(view, sources, to, value, *cast, true),
        Op::Transfer {
            from,
            to,
            cast,
            remove,
        } => {
            // A header or query parameter renamed within its kind keeps its position and every
            // value of a repeated name.
            if let (None, Some(removed)) = (cast, remove) {
                if view.rename_entries(removed, to) {
                    return Ok(());
                }
            }
            let value = match remove {
                Some(removed @ Target::Body(_)) => view.remove(removed)?,
                _ => view.read(from, sources)?,
            };
            let Some(value) = value else {
                return Err(Failure::Missing(from.to_string()));
            };
            if let Some(removed @ (Target::Query(_) | Target::Header(_))) = remove {
                view.remove(removed)?;
            }
            put(view, to, value, *cast, false, from)
        }
        Op::Remove(target) => view.remove(target).map(drop).map_err(Failure::from),
        Op::Keep(keep) => view.keep(keep).map_err(Failure::from),
    }
}

/// Evaluates `value` and writes it into `to`.
fn write(
    view: &mut View<'_>,
    sources: &Sources<'_>,
    to: &Target,
    value: &Expr,
    cast: Option<Cast>,
    append: bool,
) -> Result<(), Failure> {
    if matches!(to, Target::Path | Target::Capture(_)) {
        let encoded = path_text(view, sources, to, value)?;
        return view.write_path(to, &encoded);
    }
    let produced = match value {
        Expr::Const(constant) => constant.clone(),
        Expr::Template(pieces) => Value::String(render(view, sources, pieces, Render::Text)?),
        Expr::From(source) => view
            .read(source, sources)?
            .ok_or_else(|| Failure::Missing(source.to_string()))?,
    };
    let label: &dyn Display = match value {
        Expr::From(source) => source,
        _ => &"value",
    };
    put_value(view, to, produced, cast, append, label)
}

fn put(
    view: &mut View<'_>,
    to: &Target,
    value: Value,
    cast: Option<Cast>,
    append: bool,
    from: &Source,
) -> Result<(), Failure> {
    if matches!(to, Target::Path | Target::Capture(_)) {
        let text = text(&value).ok_or_else(|| Failure::Missing(from.to_string()))?;
        let encoded = match to {
            Target::Capture(slot) if !slot.tail => encode_segment(&text),
            _ => encode_path(&text),
        };
        return view.write_path(to, &encoded);
    }
    put_value(view, to, value, cast, append, from)
}

fn put_value(
    view: &mut View<'_>,
    to: &Target,
    value: Value,
    to_type: Option<Cast>,
    append: bool,
    // Only formatted when the cast fails.
    label: &dyn Display,
) -> Result<(), Failure> {
    let value = match to_type {
        Some(to_type) => cast(value, to_type).map_err(|why| {
            Failure::Rule(Reason::Cast {
                place: label.to_string(),
                to: to_type.name(),
                why,
            })
        })?,
        None => value,
    };
    view.write(to, value, append)
}

/// How a template's sources are inserted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Render {
    /// As text.
    Text,
    /// Into a path: captures as matched (already encoded), anything else encoded as a segment.
    Path,
}

fn render(
    view: &mut View<'_>,
    sources: &Sources<'_>,
    pieces: &[Piece],
    mode: Render,
) -> Result<String, Failure> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(literal) => out.push_str(literal),
            Piece::Source(Source::Place(Place::Capture(name))) if mode == Render::Path => {
                let raw = raw_capture(sources, name)
                    .ok_or_else(|| Failure::Missing(format!("path.{name}")))?;
                out.push_str(raw);
            }
            Piece::Source(source) => {
                let value = view.read(source, sources)?;
                let text = value
                    .as_ref()
                    .and_then(text)
                    .ok_or_else(|| Failure::Missing(source.to_string()))?;
                match mode {
                    Render::Text => out.push_str(&text),
                    Render::Path => out.push_str(&encode_segment(&text)),
                }
            }
        }
    }
    Ok(out)
}

/// The percent-encoded text a path or capture target receives.
fn path_text(
    view: &mut View<'_>,
    sources: &Sources<'_>,
    to: &Target,
    value: &Expr,
) -> Result<String, Failure> {
    let tail = !matches!(to, Target::Capture(slot) if !slot.tail);
    let source = match value {
        Expr::Template(pieces) => return render(view, sources, pieces, Render::Path),
        Expr::From(Source::Place(Place::Capture(name))) => {
            return raw_capture(sources, name)
                .map(str::to_owned)
                .ok_or_else(|| Failure::Missing(format!("path.{name}")))
        }
        Expr::From(source) => source,
        Expr::Const(_) => {
            return Err(Failure::Rule(Reason::Internal(
                "a path takes a template or a source".to_owned(),
            )))
        }
    };
    let value = view.read(source, sources)?;
    let text = value
        .as_ref()
        .and_then(text)
        .ok_or_else(|| Failure::Missing(source.to_string()))?;
    Ok(match source {
        Source::Place(Place::Path) => text,
        _ if tail => encode_path(&text),
        _ => encode_segment(&text),
    })
}
