//! `${NAME}` references to environment variables, for secrets and addresses that must not live
//! in the config file. `${NAME:-fallback}` gives a default; a missing variable without one is an
//! error at load, never an empty secret.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A string whose `${NAME}` references were replaced from the environment when it was loaded.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EnvString(pub String);

impl EnvString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Expands every `${NAME}` / `${NAME:-default}` in `text` with `lookup`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!("invalid environment variable name `{name}`"));
        }
        match lookup(name).or_else(|| default.map(str::to_owned)) {
            Some(value) => out.push_str(&value),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        expand(&raw, |name| std::env::var(name).ok())
            .map(EnvString)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for EnvString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl fmt::Debug for EnvString {
    // Secrets come through here: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvString(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s3cret".to_owned())
    }

    #[test]
    fn expands_references_and_defaults() {
        assert_eq!(expand("k=${SECRET}!", env).as_deref(), Ok("k=s3cret!"));
        assert_eq!(expand("${MISSING:-x}", env).as_deref(), Ok("x"));
        assert_eq!(expand("plain", env).as_deref(), Ok("plain"));
    }

    #[test]
    fn missing_variable_is_an_error() {
        assert!(expand("${MISSING}", env).unwrap_err().contains("MISSING"));
        assert!(expand("${SECRET", env).is_err());
        assert!(expand("${1BAD}", env).is_err());
    }
}
