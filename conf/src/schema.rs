//! The JSON Schema of Holdfast's config files, generated from the serde types themselves
//! (schemars), so editors with yaml-language-server complete and check route files. Types read by
//! hand-written deserializers (durations, sizes, `${ENV}` strings, the forms that accept a
//! scalar or a map) describe their accepted forms here, next to each other.

use crate::upstream_call::{Backoff, Coalesce, FaninUpstream, Until};
use crate::{Backplane, ByteSize, Config, Duration, EnvString, OnTimeout, RedisBackplane};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// The schema of a config file (or of one file of a config directory: every key is optional).
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Config);
    let mut value = serde_json::to_value(schema).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("title".into(), "Holdfast configuration".into());
        object.insert(
            "$id".into(),
            "https://github.com/holdfast/holdfast/conf/holdfast.schema.json".into(),
        );
    }
    value
}

/// `x` or `[x, y]`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// A listener: a bare address or the settings map.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum ListenerSchema {
    Address(String),
    Settings(crate::listener::ListenerMap),
}

/// `true`/`false` or the settings map.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "BoolOr{T}")]
#[allow(dead_code)]
pub(crate) enum BoolOr<T> {
    Bool(bool),
    Settings(T),
}

const DURATION_PATTERN: &str = r"^\s*(\d+(\.\d+)?\s*(ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|hours?|d|days?|w|weeks?)\s*)+$";

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration with a unit: `30s`, `500ms`, `1m30s`, `2h`.",
            "examples": ["30s", "500ms"]
        })
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes, or a number and a unit (`64KiB`, `1MiB`, `10MB`).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgG]i?[bB]?|[bB])?\s*$" }
            ]
        })
    }
}

impl JsonSchema for EnvString {
    fn schema_name() -> Cow<'static, str> {
        "EnvString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Text in which `${NAME}` and `${NAME:-default}` are read from the environment."
        })
    }
}

impl JsonSchema for Backplane {
    fn schema_name() -> Cow<'static, str> {
        "Backplane".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let redis = generator.subschema_for::<RedisBackplane>();
        json_schema!({
            "description": "`memory` (one instance) or `{ redis: { url: … } }` (several instances share channels).",
            "oneOf": [
                { "const": "memory" },
                {
                    "type": "object",
                    "properties": { "redis": redis },
                    "required": ["redis"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl JsonSchema for OnTimeout {
    fn schema_name() -> Cow<'static, str> {
        "OnTimeout".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What a poll that waited in vain gets: 204 (no content) or 200 (an empty batch).",
            "enum": [204, 200]
        })
    }
}

impl JsonSchema for Backoff {
    fn schema_name() -> Cow<'static, str> {
        "Backoff".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<Duration>();
        json_schema!({
            "description": "A fixed wait between re-polls, or `{ initial, max }` doubling from `initial` to `max`.",
            "anyOf": [
                duration.clone(),
                {
                    "type": "object",
                    "properties": { "initial": duration.clone(), "max": duration },
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl JsonSchema for Coalesce {
    fn schema_name() -> Cow<'static, str> {
        "Coalesce".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "properties": { "shared": { "type": "boolean", "description": "Share calls across identities." } },
            "additionalProperties": false
        })
    }
}

impl JsonSchema for FaninUpstream {
    fn schema_name() -> Cow<'static, str> {
        "FaninUpstream".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let duration = generator.subschema_for::<Duration>();
        json_schema!({
            "description": "An upstream's name, or `{ name, timeout, required, path }`.",
            "anyOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "timeout": duration,
                        "required": { "type": "boolean" },
                        "path": { "type": "string" }
                    },
                    "required": ["name"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl JsonSchema for Until {
    fn schema_name() -> Cow<'static, str> {
        "Until".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "When a fan-in answers: `first`, `all`, or `{ quorum: N }`.",
            "oneOf": [
                { "enum": ["first", "all"] },
                {
                    "type": "object",
                    "properties": { "quorum": { "type": "integer", "minimum": 1 } },
                    "required": ["quorum"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::schema;

    #[test]
    fn the_schema_describes_the_top_level_and_refuses_unknown_keys() {
        let schema = schema();
        assert_eq!(schema["title"], "Holdfast configuration");
        assert_eq!(schema["additionalProperties"], false);
        for key in [
            "listen",
            "admin",
            "upstreams",
            "routes",
            "auth",
            "backplane",
            "channels",
        ] {
            assert!(schema["properties"].get(key).is_some(), "{key} missing");
        }
    }
}
