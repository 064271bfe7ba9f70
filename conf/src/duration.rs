//! Durations written the way operators write them: `30s`, `500ms`, `1m30s`, `2h`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A `std::time::Duration` that reads from and writes to YAML as `30s`, `500ms`, `1m 30s`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
            // A bare number is ambiguous (seconds? milliseconds?): ask for a unit rather than guess.
            return Err(format!(
                "invalid duration `{text}`: a unit is required, e.g. `{text}s` or `{text}ms`"
            ));
        }
        humantime::parse_duration(text).map(Duration).map_err(|_| {
            format!("invalid duration `{text}`: expected a number and a unit, e.g. `30s`, `500ms`, `2m`, `1h`")
        })
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units() {
        assert_eq!("30s".parse::<Duration>(), Ok(Duration::from_secs(30)));
        assert_eq!("500ms".parse::<Duration>(), Ok(Duration::from_millis(500)));
        assert_eq!("1m30s".parse::<Duration>(), Ok(Duration::from_secs(90)));
        assert_eq!("2h".parse::<Duration>(), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn refuses_nonsense_and_bare_numbers() {
        assert!("thirty".parse::<Duration>().is_err());
        assert!("30"
            .parse::<Duration>()
            .unwrap_err()
            .contains("unit is required"));
        assert!("-1s".parse::<Duration>().is_err());
    }
}
