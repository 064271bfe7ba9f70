//! Reading and writing a JSON value at a [`JsonPath`] (`a.b[0].c`). Writing creates missing
//! objects and arrays on the way; it never recurses, so no value depth can overflow the stack.

use conf::mapping::{JsonPath, JsonStep};
use serde_json::{Map, Value};

/// The value at `path`, if there is one.
pub(crate) fn get<'a>(root: &'a Value, path: &JsonPath) -> Option<&'a Value> {
    get_steps(root, &path.0)
}

/// The value at the end of `steps` from `root`.
pub(crate) fn get_steps<'a>(root: &'a Value, steps: &[JsonStep]) -> Option<&'a Value> {
    steps.iter().try_fold(root, |value, step| match step {
        JsonStep::Key(key) => value.as_object()?.get(key),
        JsonStep::Index(index) => value.as_array()?.get(*index),
    })
}

/// Removes and returns the value at `path`; the root itself cannot be taken.
pub(crate) fn take(root: &mut Value, path: &JsonPath) -> Option<Value> {
    take_steps(root, &path.0)
}

/// Removes and returns the value at the end of `steps` from `root` (none when empty).
pub(crate) fn take_steps(root: &mut Value, steps: &[JsonStep]) -> Option<Value> {
    let (last, parents) = steps.split_last()?;
    let parent = parents.iter().try_fold(root, |value, step| match step {
        JsonStep::Key(key) => value.as_object_mut()?.get_mut(key),
        JsonStep::Index(index) => value.as_array_mut()?.get_mut(*index),
    })?;
    match last {
        JsonStep::Key(key) => parent.as_object_mut()?.shift_remove(key),
        JsonStep::Index(index) => {
            let array = parent.as_array_mut()?;
            (*index < array.len()).then(|| array.remove(*index))
        }
    }
}

/// The slot at `path`, created (as `null`) with every missing object or array on the way. An
/// index may name an existing element or the one just past the end (which is appended). A
/// `null` on the way is replaced by a container; any other scalar in the way is an error.
pub(crate) fn slot<'a>(root: &'a mut Value, path: &JsonPath) -> Result<&'a mut Value, String> {
    slot_from(root, path, 0)
}

/// [`slot`] for the steps of `path` from `start` on, `root` being the value the steps before
/// `start` lead to (errors name the whole path).
pub(crate) fn slot_from<'a>(
    root: &'a mut Value,
    path: &JsonPath,
    start: usize,
) -> Result<&'a mut Value, String> {
    let mut value = root;
    for (i, step) in path.0.iter().enumerate().skip(start) {
        if value.is_null() {
            *value = match step {
                JsonStep::Key(_) => Value::Object(Map::new()),
                JsonStep::Index(_) => Value::Array(Vec::new()),
            };
        }
        let at = || JsonPath(path.0[..i].to_vec());
        value = match (step, value) {
            (JsonStep::Key(key), Value::Object(map)) => {
                map.entry(key.clone()).or_insert(Value::Null)
            }
            (JsonStep::Index(index), Value::Array(array)) => {
                if *index == array.len() {
                    array.push(Value::Null);
                }
                let len = array.len();
                array.get_mut(*index).ok_or_else(|| {
                    format!(
                        "body{} has {len} elements; index {index} is past the end",
                        at()
                    )
                })?
            }
            (JsonStep::Key(_), other) => {
                return Err(format!("body{} is {}, not an object", at(), kind(other)))
            }
            (JsonStep::Index(_), other) => {
                return Err(format!("body{} is {}, not an array", at(), kind(other)))
            }
        };
    }
    Ok(value)
}

/// `an object`, `a string`, …, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> JsonPath {
        JsonPath::parse(text).expect("valid path")
    }

    #[test]
    fn get_take_and_slot() {
        let mut value = json!({"a": {"b": [1, {"c": 2}]}});
        assert_eq!(get(&value, &path(".a.b[1].c")), Some(&json!(2)));
        assert_eq!(get(&value, &path(".a.b[2]")), None);
        assert_eq!(get(&value, &path(".a.b.c")), None);
        *slot(&mut value, &path(".a.b[2]")).expect("append") = json!(3);
        *slot(&mut value, &path(".x.y[0].z")).expect("create") = json!(true);
        assert_eq!(
            value,
            json!({"a": {"b": [1, {"c": 2}, 3]}, "x": {"y": [{"z": true}]}})
        );
        assert_eq!(take(&mut value, &path(".a.b[0]")), Some(json!(1)));
        assert_eq!(
            take(&mut value, &path(".x")),
            Some(json!({"y": [{"z": true}]}))
        );
        assert_eq!(take(&mut value, &path(".nope.x")), None);
        assert_eq!(value, json!({"a": {"b": [{"c": 2}, 3]}}));
    }

    #[test]
    fn slot_conflicts_are_errors() {
        let mut value = json!({"a": "text", "b": [1]});
        assert!(slot(&mut value, &path(".a.b"))
            .expect_err("error")
            .contains("body.a is a string, not an object"));
        assert!(slot(&mut value, &path(".b[5]"))
            .expect_err("error")
            .contains("past the end"));
        assert!(slot(&mut value, &path(".b.x"))
            .expect_err("error")
            .contains("not an object"));
    }

    #[test]
    fn key_order_is_kept() {
        let mut value = json!({"z": 1, "a": 2, "m": 3});
        let taken = take(&mut value, &path(".a")).expect("present");
        *slot(&mut value, &path(".b")).expect("slot") = taken;
        assert_eq!(
            serde_json::to_string(&value).expect("serialises"),
            r#"{"z":1,"m":3,"b":2}"#
        );
    }
}
