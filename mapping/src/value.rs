//! Values between places: the text form of a JSON value (for headers, query, path, templates),
//! the casts (`as: integer | number | boolean | string | json`), and the loose equality that
//! `when: { equals: … }` uses.

use conf::mapping::Cast;
use serde_json::{Number, Value};

/// The text form of a value: a string as it is, a number or boolean as JSON writes it, an
/// object or array as compact JSON. `null` has no text form (it counts as missing).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Converts `value` to `cast`, or says why it cannot.
pub(crate) fn cast(value: Value, cast: Cast) -> Result<Value, String> {
    let kind = crate::json::kind(&value);
    let refuse = || Err(format!("{kind} is not {}", article(cast)));
    match (cast, value) {
        (Cast::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
        (Cast::Integer, Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                Ok(Value::from(f as i64))
            }
            _ => refuse(),
        },
        (Cast::Integer, Value::String(s)) => {
            let s = s.trim();
            s.parse::<i64>()
                .map(Value::from)
                .or_else(|_| s.parse::<u64>().map(Value::from))
                .map_err(|_| format!("the text is not {}", article(cast)))
        }
        (Cast::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (Cast::Number, Value::String(s)) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Ok(Value::from(i));
            }
            s.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("the text is not {}", article(cast)))
        }
        (Cast::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (Cast::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err("the text is not true, false, 1 or 0".to_owned()),
        },
        (Cast::Boolean, Value::Number(n)) => match n.as_u64() {
            Some(1) => Ok(Value::Bool(true)),
            Some(0) => Ok(Value::Bool(false)),
            _ => Err("only the numbers 0 and 1 are booleans".to_owned()),
        },
        (Cast::String, Value::Null) => refuse(),
        (Cast::String, other) => Ok(Value::String(text(&other).unwrap_or_default())),
        (Cast::Json, Value::String(s)) => {
            serde_json::from_str(&s).map_err(|e| format!("the text is not JSON ({e})"))
        }
        (Cast::Json, other) => Ok(other),
        _ => refuse(),
    }
}

fn article(cast: Cast) -> &'static str {
    match cast {
        Cast::Integer => "an integer",
        Cast::Number => "a number",
        Cast::Boolean => "a boolean",
        Cast::String => "a string",
        Cast::Json => "JSON",
    }
}

/// Equal as JSON, or — when one side is a string and the other a number or boolean — equal as
/// text: a query's `"1"` equals the configured `1`.
pub(crate) fn loosely_equal(actual: &Value, expected: &Value) -> bool {
    if actual == expected {
        return true;
    }
    match (actual, expected) {
        (Value::String(s), other @ (Value::Number(_) | Value::Bool(_)))
        | (other @ (Value::Number(_) | Value::Bool(_)), Value::String(s)) => {
            text(other).as_deref() == Some(s.as_str())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn casts() {
        assert_eq!(cast(json!("42"), Cast::Integer), Ok(json!(42)));
        assert_eq!(cast(json!(" -7 "), Cast::Integer), Ok(json!(-7)));
        assert_eq!(cast(json!(3.0), Cast::Integer), Ok(json!(3)));
        assert!(cast(json!(3.5), Cast::Integer).is_err());
        assert!(cast(json!("4x"), Cast::Integer).is_err());
        assert!(cast(json!(true), Cast::Integer).is_err());
        assert_eq!(cast(json!("2.5"), Cast::Number), Ok(json!(2.5)));
        assert_eq!(cast(json!("10"), Cast::Number), Ok(json!(10)));
        assert!(cast(json!("NaN"), Cast::Number).is_err());
        assert!(cast(json!("inf"), Cast::Number).is_err());
        assert_eq!(cast(json!("TRUE"), Cast::Boolean), Ok(json!(true)));
        assert_eq!(cast(json!("0"), Cast::Boolean), Ok(json!(false)));
        assert_eq!(cast(json!(1), Cast::Boolean), Ok(json!(true)));
        assert!(cast(json!("yes"), Cast::Boolean).is_err());
        assert_eq!(cast(json!(12), Cast::String), Ok(json!("12")));
        assert_eq!(cast(json!({"a": 1}), Cast::String), Ok(json!("{\"a\":1}")));
        assert!(cast(json!(null), Cast::String).is_err());
        assert_eq!(
            cast(json!("{\"a\":[1]}"), Cast::Json),
            Ok(json!({"a": [1]}))
        );
        assert!(cast(json!("{"), Cast::Json).is_err());
        assert_eq!(cast(json!([1]), Cast::Json), Ok(json!([1])));
    }

    #[test]
    fn deep_json_in_a_cast_is_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(cast(Value::String(deep), Cast::Json).is_err());
    }

    #[test]
    fn loose_equality() {
        assert!(loosely_equal(&json!("1"), &json!(1)));
        assert!(loosely_equal(&json!(true), &json!("true")));
        assert!(loosely_equal(&json!({"a": 1}), &json!({"a": 1})));
        assert!(!loosely_equal(&json!("1.0"), &json!(1)));
        assert!(!loosely_equal(&json!(null), &json!("null")));
    }
}
