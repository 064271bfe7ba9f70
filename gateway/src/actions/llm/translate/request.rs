//! Client request → provider request: the top-level parameters, and which of them have no
//! equivalent in the other format (refused) or no effect on the answer's content (dropped).
//!
//! Dropped from OpenAI requests: `seed` (best-effort determinism), `store` and `metadata` (kept
//! by OpenAI for its dashboard), `service_tier`, `prompt_cache_key` and
//! `prompt_cache_retention` (price and latency), `prediction` (latency), `stream_options`
//! (Anthropic streams always report usage), and options set to their defaults (`n: 1`,
//! `logprobs: false`, penalties of 0, `response_format: {"type": "text"}`, ...).
//! Dropped from Anthropic requests: `service_tier` (capacity), `thinking: {"type": "disabled"}`.
//! Unknown fields are refused: nothing tells whether they would change the answer.

use super::fields::{
    body_object, get, get_array, get_object, get_str, invalid, untranslatable, Object,
};
use super::{messages, tools, validate, Format, TranslateError};
use serde_json::{json, Value};

/// Anthropic requires `max_tokens`; OpenAI clients may leave it to the model.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The most stop sequences OpenAI takes.
const OPENAI_MAX_STOP_SEQUENCES: usize = 4;

pub(super) fn request(
    body: &Value,
    from: Format,
    to: Format,
    model: &str,
) -> Result<Value, TranslateError> {
    validate::validate(body, from)?;
    let client = body_object(body)?;
    let mut provider = match (from, to) {
        (Format::OpenAi, Format::Anthropic) => openai_to_anthropic(client)?,
        (Format::Anthropic, Format::OpenAi) => anthropic_to_openai(client)?,
        _ => client.clone(),
    };
    provider.insert("model".into(), Value::String(model.to_owned()));
    if to == Format::OpenAi && super::streams(body) {
        ask_for_stream_usage(&mut provider);
    }
    Ok(Value::Object(provider))
}

/// OpenAI reports a stream's usage only when asked; the gateway always needs it.
fn ask_for_stream_usage(provider: &mut Object) {
    let options = provider
        .entry("stream_options")
        .or_insert_with(|| json!({}));
    if !options.is_object() {
        *options = json!({});
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".into(), Value::Bool(true));
    }
}

fn openai_to_anthropic(client: &Object) -> Result<Object, TranslateError> {
    refuse_openai_only_fields(client)?;
    let conversation =
        messages::openai_to_anthropic(get_array(client, "messages").unwrap_or_default())?;
    let mut provider = Object::new();
    // First, as in the providers' examples; its value is the caller's.
    provider.insert("model".into(), Value::Null);
    let max_tokens = get(client, "max_completion_tokens")
        .or_else(|| get(client, "max_tokens"))
        .cloned()
        .unwrap_or_else(|| DEFAULT_MAX_TOKENS.into());
    provider.insert("max_tokens".into(), max_tokens);
    if let Some(system) = conversation.system {
        provider.insert("system".into(), Value::String(system));
    }
    provider.insert("messages".into(), Value::Array(conversation.messages));
    if let Some(temperature) = get(client, "temperature") {
        if temperature
            .as_f64()
            .is_some_and(|temperature| temperature > 1.0)
        {
            return Err(untranslatable(
                "temperature",
                "Anthropic's temperature goes from 0 to 1",
            ));
        }
        provider.insert("temperature".into(), temperature.clone());
    }
    if let Some(top_p) = get(client, "top_p") {
        provider.insert("top_p".into(), top_p.clone());
    }
    match get(client, "stop") {
        Some(Value::String(stop)) => {
            provider.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            provider.insert("stop_sequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(stream) = get(client, "stream") {
        provider.insert("stream".into(), stream.clone());
    }
    tools::openai_to_anthropic(client, &mut provider)?;
    // `safety_identifier` is `user`'s successor: both identify the end user for abuse detection.
    if let Some(user) = get_str(client, "user").or_else(|| get_str(client, "safety_identifier")) {
        provider.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(provider)
}

fn refuse_openai_only_fields(client: &Object) -> Result<(), TranslateError> {
    for (key, value) in client {
        if value.is_null() {
            continue;
        }
        let refused = match key.as_str() {
            "model"
            | "messages"
            | "max_tokens"
            | "max_completion_tokens"
            | "temperature"
            | "top_p"
            | "stop"
            | "stream"
            | "tools"
            | "tool_choice"
            | "parallel_tool_calls"
            | "user"
            | "safety_identifier" => None,
            "seed"
            | "store"
            | "metadata"
            | "service_tier"
            | "prompt_cache_key"
            | "prompt_cache_retention"
            | "prediction"
            | "stream_options" => None,
            "n" => (value.as_u64() != Some(1)).then_some("Anthropic gives one answer per request"),
            "logprobs" => (value.as_bool() != Some(false))
                .then_some("Anthropic does not report log probabilities"),
            "top_logprobs" => {
                (value.as_u64() != Some(0)).then_some("Anthropic does not report log probabilities")
            }
            "frequency_penalty" | "presence_penalty" => {
                (value.as_f64() != Some(0.0)).then_some("Anthropic has no repetition penalties")
            }
            "logit_bias" => value
                .as_object()
                .is_none_or(|bias| !bias.is_empty())
                .then_some("Anthropic has no token biases"),
            "response_format" => (value.get("type").and_then(Value::as_str) != Some("text"))
                .then_some("Anthropic has no structured output mode in the Messages API"),
            "modalities" => value
                .as_array()
                .is_none_or(|modalities| modalities.iter().any(|m| m != "text"))
                .then_some("Anthropic answers only in text"),
            "audio" => Some("Anthropic answers only in text"),
            "reasoning_effort" | "verbosity" => {
                Some("Anthropic has no equivalent of OpenAI's reasoning and verbosity settings")
            }
            "web_search_options" => Some("Anthropic's web search is a tool of its own"),
            "functions" | "function_call" => {
                Some("the deprecated functions API has no Anthropic equivalent (tools do)")
            }
            _ => Some("unknown to this gateway, so whether it changes the answer is unknown"),
        };
        if let Some(reason) = refused {
            let field = match key.as_str() {
                "response_format" => "response_format.type".to_owned(),
                _ => key.clone(),
            };
            return Err(untranslatable(field, reason));
        }
    }
    Ok(())
}

fn anthropic_to_openai(client: &Object) -> Result<Object, TranslateError> {
    refuse_anthropic_only_fields(client)?;
    let messages = messages::anthropic_to_openai(
        get(client, "system"),
        get_array(client, "messages").unwrap_or_default(),
    )?;
    let mut provider = Object::new();
    provider.insert("model".into(), Value::Null);
    provider.insert("messages".into(), Value::Array(messages));
    // `max_completion_tokens`, not the deprecated `max_tokens`, which OpenAI's reasoning models
    // refuse.
    if let Some(max_tokens) = get(client, "max_tokens") {
        provider.insert("max_completion_tokens".into(), max_tokens.clone());
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(value) = get(client, key) {
            provider.insert(key.into(), value.clone());
        }
    }
    if let Some(stops) = get_array(client, "stop_sequences").filter(|stops| !stops.is_empty()) {
        if stops.len() > OPENAI_MAX_STOP_SEQUENCES {
            return Err(untranslatable(
                "stop_sequences",
                format!("OpenAI takes at most {OPENAI_MAX_STOP_SEQUENCES} stop sequences"),
            ));
        }
        provider.insert("stop".into(), Value::Array(stops.to_vec()));
    }
    tools::anthropic_to_openai(client, &mut provider)?;
    if let Some(user) = get_object(client, "metadata").and_then(|metadata| get(metadata, "user_id"))
    {
        provider.insert("user".into(), user.clone());
    }
    Ok(provider)
}

fn refuse_anthropic_only_fields(client: &Object) -> Result<(), TranslateError> {
    for (key, value) in client {
        if value.is_null() {
            continue;
        }
        let refused = match key.as_str() {
            "model" | "messages" | "max_tokens" | "system" | "temperature" | "top_p"
            | "stop_sequences" | "stream" | "tools" | "tool_choice" | "metadata"
            | "service_tier" => None,
            "top_k" => Some("OpenAI has no top-k sampling"),
            "thinking" => (value.get("type").and_then(Value::as_str) != Some("disabled"))
                .then_some("extended thinking has no OpenAI Chat Completions equivalent"),
            "container" | "mcp_servers" | "context_management" => {
                Some("runs on Anthropic's side; OpenAI has no equivalent")
            }
            _ => Some("unknown to this gateway, so whether it changes the answer is unknown"),
        };
        if let Some(reason) = refused {
            return Err(untranslatable(key.clone(), reason));
        }
    }
    if let Some(metadata) = get_object(client, "metadata") {
        if let Some(key) = metadata.keys().find(|key| key.as_str() != "user_id") {
            return Err(invalid(
                format!("metadata.{key}"),
                "is not an Anthropic metadata field",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn translate(body: Value, from: Format, to: Format) -> Value {
        request(&body, from, to, "provider-model").unwrap()
    }

    fn refused_field(body: Value, from: Format, to: Format) -> String {
        match request(&body, from, to, "m") {
            Err(TranslateError::Untranslatable { field, .. }) => field,
            other => panic!("expected Untranslatable, got {other:?}"),
        }
    }

    #[test]
    fn the_same_format_keeps_the_body_but_the_model() {
        let openai = fixtures::openai_tools_request();
        let mut expected = openai.clone();
        expected["model"] = json!("provider-model");
        assert_eq!(translate(openai, Format::OpenAi, Format::OpenAi), expected);
        let anthropic = fixtures::anthropic_tools_request();
        let mut expected = anthropic.clone();
        expected["model"] = json!("provider-model");
        assert_eq!(
            translate(anthropic, Format::Anthropic, Format::Anthropic),
            expected
        );
    }

    #[test]
    fn openai_streams_always_report_usage() {
        let mut openai = fixtures::openai_basic_request();
        openai["stream"] = json!(true);
        let forwarded = translate(openai.clone(), Format::OpenAi, Format::OpenAi);
        assert_eq!(forwarded["stream_options"], json!({"include_usage": true}));
        openai["stream_options"] = json!({"include_usage": false});
        let forwarded = translate(openai, Format::OpenAi, Format::OpenAi);
        assert_eq!(forwarded["stream_options"], json!({"include_usage": true}));
        let mut anthropic = fixtures::anthropic_basic_request();
        anthropic["stream"] = json!(true);
        let translated = translate(anthropic, Format::Anthropic, Format::OpenAi);
        assert_eq!(translated["stream"], json!(true));
        assert_eq!(translated["stream_options"], json!({"include_usage": true}));
        let not_streamed = translate(
            fixtures::anthropic_basic_request(),
            Format::Anthropic,
            Format::OpenAi,
        );
        assert!(not_streamed.get("stream_options").is_none());
    }

    #[test]
    fn openai_parameters_become_anthropic_parameters() {
        let mut openai = fixtures::openai_basic_request();
        let extra = json!({"max_completion_tokens": 300, "temperature": 0.2, "top_p": 0.9,
            "stop": "END", "stream": true, "stream_options": {"include_usage": true},
            "user": "user-1234", "seed": 7, "n": 1, "logprobs": false, "store": false,
            "frequency_penalty": 0, "response_format": {"type": "text"}});
        openai
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_eq!(
            translate(openai, Format::OpenAi, Format::Anthropic),
            json!({
                "model": "provider-model",
                "max_tokens": 300,
                "system": "You are a helpful assistant.",
                "messages": [{"role": "user", "content": "Hello!"}],
                "temperature": 0.2,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "stream": true,
                "metadata": {"user_id": "user-1234"},
            })
        );
    }

    #[test]
    fn max_tokens_defaults_for_anthropic() {
        let translated = translate(
            fixtures::openai_basic_request(),
            Format::OpenAi,
            Format::Anthropic,
        );
        assert_eq!(translated["max_tokens"], json!(DEFAULT_MAX_TOKENS));
        let mut openai = fixtures::openai_basic_request();
        openai["max_tokens"] = json!(99);
        let translated = translate(openai, Format::OpenAi, Format::Anthropic);
        assert_eq!(translated["max_tokens"], json!(99));
    }

    #[test]
    fn anthropic_parameters_become_openai_parameters() {
        let mut anthropic = fixtures::anthropic_basic_request();
        let extra = json!({"system": "Be brief.", "temperature": 0.5, "top_p": 0.8,
            "stop_sequences": ["\n\nHuman:", "END"], "metadata": {"user_id": "u-1"},
            "service_tier": "auto", "thinking": {"type": "disabled"}});
        anthropic
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_eq!(
            translate(anthropic, Format::Anthropic, Format::OpenAi),
            json!({
                "model": "provider-model",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello, world"},
                ],
                "max_completion_tokens": 1024,
                "temperature": 0.5,
                "top_p": 0.8,
                "stop": ["\n\nHuman:", "END"],
                "user": "u-1",
            })
        );
    }

    #[test]
    fn a_conversation_survives_the_round_trip() {
        let mut openai = fixtures::openai_tool_conversation();
        let extra = json!({"tools": fixtures::openai_tools_request()["tools"], "tool_choice": "auto",
            "max_completion_tokens": 500, "temperature": 0.7, "stop": ["END"], "user": "u"});
        openai
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut with_system = openai["messages"].as_array().unwrap().clone();
        with_system.insert(
            0,
            json!({"role": "system", "content": "You are a weather bot."}),
        );
        with_system.insert(
            1,
            json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": fixtures::IMAGE_URL}}]}),
        );
        with_system.insert(2, json!({"role": "assistant", "content": "Nice picture."}));
        openai["messages"] = Value::Array(with_system);
        let anthropic = request(&openai, Format::OpenAi, Format::Anthropic, "claude").unwrap();
        assert_eq!(validate::validate(&anthropic, Format::Anthropic), Ok(()));
        let back = request(&anthropic, Format::Anthropic, Format::OpenAi, "gpt-4o").unwrap();
        assert_eq!(back["messages"], openai["messages"]);
        for key in [
            "tools",
            "tool_choice",
            "max_completion_tokens",
            "temperature",
            "stop",
            "user",
        ] {
            assert_eq!(back[key], openai[key], "{key}");
        }
    }

    #[test]
    fn requests_are_validated_first() {
        assert_eq!(
            request(
                &json!({"model": "m", "messages": []}),
                Format::OpenAi,
                Format::Anthropic,
                "x"
            ),
            Err(invalid("messages", "must not be empty"))
        );
        assert!(matches!(
            request(&fixtures::openai_basic_request(), Format::Anthropic, Format::OpenAi, "x"),
            Err(TranslateError::Invalid { field, .. }) if field == "max_tokens"
        ));
    }

    #[test]
    fn openai_options_without_an_anthropic_equivalent_are_refused() {
        let cases = [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
            (json!({"presence_penalty": -1}), "presence_penalty"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
                "response_format.type",
            ),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format.type",
            ),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (
                json!({"audio": {"voice": "alloy", "format": "wav"}}),
                "audio",
            ),
            (json!({"reasoning_effort": "high"}), "reasoning_effort"),
            (json!({"verbosity": "low"}), "verbosity"),
            (json!({"web_search_options": {}}), "web_search_options"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"top_k": 5}), "top_k"),
            (json!({"temperature": 1.5}), "temperature"),
        ];
        for (extra, expected) in cases {
            let mut body = fixtures::openai_basic_request();
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            assert_eq!(
                refused_field(body, Format::OpenAi, Format::Anthropic),
                expected,
                "{extra}"
            );
        }
    }

    #[test]
    fn anthropic_options_without_an_openai_equivalent_are_refused() {
        let cases = [
            (json!({"top_k": 5}), "top_k"),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}),
                "thinking",
            ),
            (json!({"container": "container_1"}), "container"),
            (
                json!({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}),
                "mcp_servers",
            ),
            (json!({"frequency_penalty": 1}), "frequency_penalty"),
            (
                json!({"stop_sequences": ["a", "b", "c", "d", "e"]}),
                "stop_sequences",
            ),
        ];
        for (extra, expected) in cases {
            let mut body = fixtures::anthropic_basic_request();
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            assert_eq!(
                refused_field(body, Format::Anthropic, Format::OpenAi),
                expected,
                "{extra}"
            );
        }
    }
}
