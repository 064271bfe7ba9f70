//! Token counts as both formats report them. OpenAI's `prompt_tokens` counts every prompt token,
//! its cached share in `prompt_tokens_details.cached_tokens`; Anthropic's `input_tokens` leaves
//! out the tokens written to and read from its cache, reported beside it. Kept apart here so
//! either format's report can be written without losing the cached share.

use super::Usage;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TokenCounts {
    /// Prompt tokens neither written to nor read from a cache (Anthropic's `input_tokens`).
    pub uncached_input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl TokenCounts {
    /// OpenAI's `usage` object; `None` unless it holds both counts.
    pub fn from_openai(usage: &Value) -> Option<Self> {
        let prompt = usage.get("prompt_tokens")?.as_u64()?;
        let completion = usage.get("completion_tokens")?.as_u64()?;
        let cached = usage
            .get("prompt_tokens_details")
            .and_then(|details| details.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(prompt);
        Some(Self {
            uncached_input: prompt - cached,
            cache_creation: 0,
            cache_read: cached,
            output: completion,
        })
    }

    /// Anthropic's `usage` object (of a whole answer or of `message_start`); `None` unless it
    /// holds both counts.
    pub fn from_anthropic(usage: &Value) -> Option<Self> {
        let mut counts = Self {
            uncached_input: usage.get("input_tokens")?.as_u64()?,
            output: usage.get("output_tokens")?.as_u64()?,
            ..Self::default()
        };
        counts.merge_anthropic(usage);
        Some(counts)
    }

    /// Overwrites the counts a later Anthropic report (`message_delta`'s `usage`, cumulative)
    /// holds, keeping the others.
    pub fn merge_anthropic(&mut self, usage: &Value) {
        let read = |key: &str| usage.get(key).and_then(Value::as_u64);
        if let Some(input) = read("input_tokens") {
            self.uncached_input = input;
        }
        if let Some(created) = read("cache_creation_input_tokens") {
            self.cache_creation = created;
        }
        if let Some(cached) = read("cache_read_input_tokens") {
            self.cache_read = cached;
        }
        if let Some(output) = read("output_tokens") {
            self.output = output;
        }
    }

    pub fn input(&self) -> u64 {
        self.uncached_input + self.cache_creation + self.cache_read
    }

    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input(),
            output: self.output,
        }
    }

    /// OpenAI's `usage` object.
    pub fn to_openai(self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.input(),
            "completion_tokens": self.output,
            "total_tokens": self.input() + self.output,
        });
        if self.cache_read > 0 {
            if let Some(usage) = usage.as_object_mut() {
                usage.insert(
                    "prompt_tokens_details".into(),
                    json!({"cached_tokens": self.cache_read}),
                );
            }
        }
        usage
    }

    /// Anthropic's `usage` object.
    pub fn to_anthropic(self) -> Value {
        let mut usage = Map::new();
        usage.insert("input_tokens".into(), self.uncached_input.into());
        if self.cache_creation > 0 {
            usage.insert(
                "cache_creation_input_tokens".into(),
                self.cache_creation.into(),
            );
        }
        if self.cache_read > 0 {
            usage.insert("cache_read_input_tokens".into(), self.cache_read.into());
        }
        usage.insert("output_tokens".into(), self.output.into());
        Value::Object(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_cached_tokens_become_anthropic_cache_reads() {
        let openai = json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920}});
        let counts = TokenCounts::from_openai(&openai).unwrap();
        assert_eq!(
            counts.to_anthropic(),
            json!({"input_tokens": 86, "cache_read_input_tokens": 1920, "output_tokens": 300})
        );
        assert_eq!(
            counts.to_openai(),
            json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920}})
        );
    }

    #[test]
    fn anthropic_cache_counts_join_the_prompt_tokens() {
        let anthropic = json!({"input_tokens": 50, "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30, "output_tokens": 5});
        let counts = TokenCounts::from_anthropic(&anthropic).unwrap();
        assert_eq!(
            counts.usage(),
            Usage {
                input: 100,
                output: 5
            }
        );
        assert_eq!(
            counts.to_openai(),
            json!({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                "prompt_tokens_details": {"cached_tokens": 30}})
        );
    }

    #[test]
    fn a_later_anthropic_report_overwrites_only_what_it_holds() {
        let mut counts =
            TokenCounts::from_anthropic(&json!({"input_tokens": 25, "output_tokens": 1})).unwrap();
        counts.merge_anthropic(&json!({"output_tokens": 15}));
        assert_eq!(
            counts.usage(),
            Usage {
                input: 25,
                output: 15
            }
        );
    }

    #[test]
    fn incomplete_reports_are_not_usage() {
        assert_eq!(TokenCounts::from_openai(&json!({"prompt_tokens": 3})), None);
        assert_eq!(
            TokenCounts::from_anthropic(&json!({"output_tokens": 3})),
            None
        );
        assert_eq!(TokenCounts::from_openai(&Value::Null), None);
    }
}
