//! The claims a verified credential carries ([`Claims`]), looked up by dotted paths (`org.id`),
//! and their rendering as text for upstream headers and for the mapping engine (`claim.sub`).

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// A verified token's payload (or an API key's synthesized claims). Cheap to clone.
/// Held as a `Value::Object` so the mapping engine can read it as a value source without a copy.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims(Arc<Value>);

impl Default for Claims {
    fn default() -> Self {
        Self::new(Map::new())
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl Claims {
    pub fn new(map: Map<String, Value>) -> Self {
        Self(Arc::new(Value::Object(map)))
    }

    /// The whole payload.
    pub fn as_map(&self) -> &Map<String, Value> {
        self.0.as_object().unwrap_or(&EMPTY)
    }

    /// The whole payload as a JSON object value.
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// The value at a dotted path: `sub`, `org.id`, `realm_access.roles`, `groups.0`. A key that
    /// itself contains dots (`https://example.com/roles`) is found too: at each level the
    /// longest matching key wins.
    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup(self.as_map(), path)
    }

    /// The value at `path` as text: strings as they are, numbers and booleans printed, arrays of
    /// those joined with commas, objects as compact JSON. `None` when absent or null.
    pub fn text(&self, path: &str) -> Option<Cow<'_, str>> {
        self.get(path).and_then(text)
    }

    /// The strings at `path`: an array's string items, or a space-separated string split (the
    /// shapes of `scope`, `scp` and role claims). Empty when absent or of another type.
    pub fn strings(&self, path: &str) -> Vec<String> {
        strings(self.get(path))
    }
}

fn lookup<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = map.get(path) {
        return Some(value);
    }
    // Longest key first: `a.b.c` tries `a.b` + `c`, then `a` + `b.c`.
    let mut cut = path.len();
    while let Some(dot) = path[..cut].rfind('.') {
        let (key, rest) = (&path[..dot], &path[dot + 1..]);
        if let Some(value) = map.get(key) {
            if let Some(found) = descend(value, rest) {
                return Some(found);
            }
        }
        cut = dot;
    }
    None
}

fn descend<'a>(value: &'a Value, rest: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => lookup(map, rest),
        Value::Array(items) => {
            let (index, tail) = match rest.split_once('.') {
                Some((index, tail)) => (index, Some(tail)),
                None => (rest, None),
            };
            let item = items.get(index.parse::<usize>().ok()?)?;
            match tail {
                Some(tail) => descend(item, tail),
                None => Some(item),
            }
        }
        _ => None,
    }
}

fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Array(items) => {
            let parts: Vec<Cow<'_, str>> = items.iter().filter_map(text).collect();
            Some(Cow::Owned(parts.join(",")))
        }
        Value::Object(_) => Some(Cow::Owned(value.to_string())),
    }
}

pub(crate) fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        match value {
            Value::Object(map) => Claims::new(map),
            _ => Claims::default(),
        }
    }

    #[test]
    fn nested_paths_and_dotted_keys() {
        let c = claims(json!({
            "sub": "alice",
            "org": { "id": 42, "tags": ["a", "b"] },
            "https://example.com/roles": ["admin"],
            "groups": [{ "name": "g1" }],
        }));
        assert_eq!(c.text("sub").as_deref(), Some("alice"));
        assert_eq!(c.text("org.id").as_deref(), Some("42"));
        assert_eq!(c.text("org.tags").as_deref(), Some("a,b"));
        assert_eq!(c.strings("https://example.com/roles"), vec!["admin"]);
        assert_eq!(c.text("groups.0.name").as_deref(), Some("g1"));
        assert_eq!(
            c.text("org").as_deref(),
            Some(r#"{"id":42,"tags":["a","b"]}"#)
        );
        assert_eq!(c.get("org.missing"), None);
        assert_eq!(c.get("sub.x"), None);
    }

    #[test]
    fn scope_shapes() {
        let c = claims(json!({ "scope": "a  b c", "scp": ["x", 1, "y"] }));
        assert_eq!(c.strings("scope"), vec!["a", "b", "c"]);
        assert_eq!(c.strings("scp"), vec!["x", "y"]);
        assert!(c.strings("nothing").is_empty());
    }
}
