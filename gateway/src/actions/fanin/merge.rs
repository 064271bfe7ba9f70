//! Pure functions that merge a fan-in's JSON answers into one body: `by_name`, `concat` and
//! `deep` (`first` needs none). `deep` merges objects key by key, concatenates two arrays, and in
//! any other collision keeps the later upstream's value. See docs/actions.md.

use serde_json::{Map, Value};

/// `by_name`'s value for one body: its JSON, or its text.
pub fn by_name_value(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// `{"name": value, …}` in list order.
pub fn by_name(parts: Vec<(&str, Value)>) -> Value {
    let mut map = Map::new();
    for (name, value) in parts {
        map.insert(name.to_owned(), value);
    }
    Value::Object(map)
}

/// Arrays concatenated, other values appended, in list order.
pub fn concat(parts: Vec<Value>) -> Value {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Value::Array(items) => out.extend(items),
            other => out.push(other),
        }
    }
    Value::Array(out)
}

/// Every value merged into the first, in list order (see the module doc for the rule).
pub fn deep(parts: Vec<Value>) -> Value {
    let mut parts = parts.into_iter();
    let Some(mut merged) = parts.next() else {
        return Value::Null;
    };
    for part in parts {
        deep_into(&mut merged, part);
    }
    merged
}

fn deep_into(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => deep_into(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(into), Value::Array(from)) => into.extend(from),
        (into, from) => *into = from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_merges_objects_concatenates_arrays_and_later_wins() {
        let merged = deep(vec![
            json!({"a": 1, "o": {"x": 1, "keep": true}, "list": [1], "t": "s"}),
            json!({"a": 2, "o": {"x": 2, "y": 3}, "list": [2, 3], "t": {"now": "object"}}),
        ]);
        assert_eq!(
            merged,
            json!({"a": 2, "o": {"x": 2, "keep": true, "y": 3}, "list": [1, 2, 3], "t": {"now": "object"}})
        );
    }

    #[test]
    fn concat_and_by_name() {
        assert_eq!(
            concat(vec![json!([1, 2]), json!(3), json!([4])]),
            json!([1, 2, 3, 4])
        );
        assert_eq!(by_name_value(b"not json"), json!("not json"));
        assert_eq!(
            by_name(vec![("a", json!({"v": 1})), ("b", json!("t"))]),
            json!({"a": {"v": 1}, "b": "t"})
        );
    }
}
