//! Why an answer stopped, in each format's words.

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`; `None` for a reason Anthropic lacks.
pub(super) fn stop_reason_of(finish_reason: &str) -> Option<&'static str> {
    match finish_reason {
        // OpenAI does not say whether a stop sequence ended the answer.
        "stop" => Some("end_turn"),
        "length" => Some("max_tokens"),
        // `function_call` is the deprecated name of the same ending.
        "tool_calls" | "function_call" => Some("tool_use"),
        "content_filter" => Some("refusal"),
        _ => None,
    }
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`; `None` for a reason OpenAI lacks
/// (`pause_turn`, which asks the client to send the turn back to a server tool).
pub(super) fn finish_reason_of(stop_reason: &str) -> Option<&'static str> {
    match stop_reason {
        "end_turn" | "stop_sequence" => Some("stop"),
        "max_tokens" | "model_context_window_exceeded" => Some("length"),
        "tool_use" => Some("tool_calls"),
        "refusal" => Some("content_filter"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_both_ways() {
        for (openai, anthropic) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(stop_reason_of(openai), Some(anthropic));
            assert_eq!(finish_reason_of(anthropic), Some(openai));
        }
        assert_eq!(finish_reason_of("stop_sequence"), Some("stop"));
        assert_eq!(finish_reason_of("pause_turn"), None);
        assert_eq!(stop_reason_of("something_new"), None);
    }
}
