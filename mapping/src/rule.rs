//! Compiled rules: what [`crate::RuleSet::compile`] produces and the applier executes. Every
//! place is resolved, every template split into pieces and every regex built here, at load, so
//! that applying a rule only executes.

use crate::condition::Condition;
use crate::path::CaptureSlot;
use conf::mapping::{Cast, JsonPath, Source};
use serde_json::Value;
use std::sync::Arc;

/// One compiled rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// `map.request[1] (rename body.inputText → body.user_input)`, for error details.
    pub label: Arc<str>,
    pub when: Option<Condition>,
    pub op: Op,
    /// A missing source fails the request instead of skipping the rule.
    pub required: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// `set` and (with `if_absent`) `default`.
    Set {
        to: Target,
        value: Expr,
        cast: Option<Cast>,
        if_absent: bool,
    },
    Append {
        to: Target,
        value: Expr,
        cast: Option<Cast>,
    },
    /// `copy`, and (with `remove`: the source as a place) `move` and `rename`.
    Transfer {
        from: Source,
        to: Target,
        cast: Option<Cast>,
        remove: Option<Target>,
    },
    Remove(Target),
    Keep(Keep),
}

/// A place a rule writes, with path captures resolved to their segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Query(String),
    Header(String),
    Path,
    Capture(CaptureSlot),
    Body(JsonPath),
    Method,
}

/// Where a written value comes from.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    /// A non-string constant (strings are templates, possibly of literals only).
    Const(Value),
    Template(Vec<Piece>),
    From(Source),
}

#[derive(Clone, Debug)]
pub(crate) enum Piece {
    Literal(String),
    Source(Source),
}

/// A `keep` allow-list for one kind of place.
#[derive(Clone, Debug)]
pub(crate) enum Keep {
    Query(Vec<String>),
    Header(Vec<String>),
    Body(KeepTree),
}

/// Body fields to keep: each key either kept whole (`None`) or filtered further.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct KeepTree(pub Vec<(String, Option<KeepTree>)>);

impl KeepTree {
    /// Adds the field at `keys`; a field kept whole absorbs any deeper one.
    pub fn insert(&mut self, keys: &[String]) {
        let Some((first, rest)) = keys.split_first() else {
            return;
        };
        let index = match self.0.iter().position(|(key, _)| key == first) {
            Some(index) => index,
            None => {
                let child = (!rest.is_empty()).then(KeepTree::default);
                self.0.push((first.clone(), child));
                return self.fill(rest);
            }
        };
        match (&mut self.0[index].1, rest.is_empty()) {
            (Some(_), true) => self.0[index].1 = None,
            (Some(child), false) => child.insert(rest),
            (None, _) => {}
        }
    }

    fn fill(&mut self, rest: &[String]) {
        if let Some((_, Some(child))) = self.0.last_mut() {
            child.insert(rest);
        }
    }

    /// Drops every field of `value` not in the tree; values that are not objects stay as they are.
    pub fn retain(&self, value: &mut Value) {
        let Value::Object(map) = value else { return };
        map.retain(|key, _| self.0.iter().any(|(kept, _)| kept == key));
        for (key, child) in &self.0 {
            if let (Some(child), Some(inner)) = (child, map.get_mut(key)) {
                child.retain(inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(path: &str) -> Vec<String> {
        path.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn keep_tree_filters_nested_objects() {
        let mut tree = KeepTree::default();
        tree.insert(&keys("a.b"));
        tree.insert(&keys("c"));
        tree.insert(&keys("a.d.e"));
        let mut value = json!({"a": {"b": 1, "x": 2, "d": {"e": 3, "f": 4}}, "c": [1], "z": 0});
        tree.retain(&mut value);
        assert_eq!(value, json!({"a": {"b": 1, "d": {"e": 3}}, "c": [1]}));
        tree.insert(&keys("a"));
        let mut value = json!({"a": {"x": 1}, "y": 2});
        tree.retain(&mut value);
        assert_eq!(value, json!({"a": {"x": 1}}));
    }
}
