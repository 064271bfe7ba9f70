//! Whole (non-streamed) answers: OpenAI `chat.completion` ⇄ Anthropic `message`.
//!
//! Dropped from OpenAI answers: `system_fingerprint`, `service_tier`, `logprobs` (never asked
//! for: requests asking are refused) and `annotations` (URL citations of OpenAI's search models,
//! which the text already reads). Dropped from Anthropic answers: `thinking` and
//! `redacted_thinking` blocks (reasoning OpenAI keeps hidden from its own answers too) and the
//! text blocks' `citations` (the text is kept whole).

use super::fields::{
    body_object, get, get_array, get_object, get_str, invalid, prefixed_id, unix_now,
    untranslatable, Object,
};
use super::messages::arguments_object;
use super::reasons::{finish_reason_of, stop_reason_of};
use super::tokens::TokenCounts;
use super::{Format, TranslateError};
use serde_json::{json, Value};

pub(super) fn response(
    body: &Value,
    from: Format,
    to: Format,
    alias: &str,
) -> Result<Value, TranslateError> {
    let answer = body_object(body)?;
    match (from, to) {
        (Format::OpenAi, Format::Anthropic) => openai_to_anthropic(answer, alias),
        (Format::Anthropic, Format::OpenAi) => anthropic_to_openai(answer, alias),
        _ => {
            let mut answer = answer.clone();
            answer.insert("model".into(), Value::String(alias.to_owned()));
            Ok(Value::Object(answer))
        }
    }
}

fn openai_to_anthropic(answer: &Object, alias: &str) -> Result<Value, TranslateError> {
    let id = get_str(answer, "id").ok_or_else(|| invalid("id", "must be a string"))?;
    let choices = get_array(answer, "choices")
        .filter(|choices| !choices.is_empty())
        .ok_or_else(|| invalid("choices", "must be a non-empty array"))?;
    if choices.len() > 1 {
        return Err(untranslatable(
            "choices",
            "an Anthropic answer holds one message",
        ));
    }
    let choice = choices
        .first()
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("choices[0]", "must be an object"))?;
    let message = get_object(choice, "message")
        .ok_or_else(|| invalid("choices[0].message", "must be an object"))?;
    for key in ["audio", "function_call"] {
        if get(message, key).is_some() {
            return Err(untranslatable(
                format!("choices[0].message.{key}"),
                "has no Anthropic equivalent",
            ));
        }
    }
    let mut content = Vec::new();
    match get(message, "content") {
        Some(Value::String(text)) if !text.is_empty() => {
            content.push(json!({"type": "text", "text": text}));
        }
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    content.push(json!({"type": "text", "text": text}));
                }
            }
        }
        _ => {}
    }
    let refusal = get_str(message, "refusal").filter(|refusal| !refusal.is_empty());
    if let Some(refusal) = refusal {
        content.push(json!({"type": "text", "text": refusal}));
    }
    for (index, call) in get_array(message, "tool_calls")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("choices[0].message.tool_calls[{index}]");
        let function = call
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("{path}.function"), "must be an object"))?;
        let arguments = get_str(function, "arguments").unwrap_or_default();
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or_default(),
            "name": get(function, "name").cloned().unwrap_or_default(),
            "input": arguments_object(arguments, &format!("{path}.function.arguments"))?,
        }));
    }
    let stop_reason = match get_str(choice, "finish_reason") {
        // A refusal that ended normally is still Anthropic's `refusal`.
        Some("stop") if refusal.is_some() => json!("refusal"),
        Some(reason) => json!(stop_reason_of(reason).ok_or_else(|| untranslatable(
            "choices[0].finish_reason",
            format!("`{reason}` has no Anthropic equivalent"),
        ))?),
        None => Value::Null,
    };
    let usage = get(answer, "usage")
        .and_then(TokenCounts::from_openai)
        .unwrap_or_default();
    Ok(json!({
        "id": prefixed_id("msg_", id),
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content,
        "stop_reason": stop_reason,
        // OpenAI does not say which stop sequence ended the answer.
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    }))
}

fn anthropic_to_openai(answer: &Object, alias: &str) -> Result<Value, TranslateError> {
    let id = get_str(answer, "id").ok_or_else(|| invalid("id", "must be a string"))?;
    let blocks =
        get_array(answer, "content").ok_or_else(|| invalid("content", "must be an array"))?;
    let mut text = String::new();
    let mut has_text = false;
    let mut calls = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str).unwrap_or_default() {
            // Several text blocks (split by citations) are one text.
            "text" => {
                has_text = true;
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            "tool_use" => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(untranslatable(
                    format!("content[{index}].type"),
                    format!("`{other}` blocks have no OpenAI equivalent"),
                ))
            }
        }
    }
    let finish_reason = match get_str(answer, "stop_reason") {
        Some(reason) => json!(finish_reason_of(reason).ok_or_else(|| untranslatable(
            "stop_reason",
            format!("`{reason}` has no OpenAI equivalent"),
        ))?),
        None => Value::Null,
    };
    let mut message = Object::new();
    message.insert("role".into(), json!("assistant"));
    let content = if has_text || calls.is_empty() {
        Value::String(text)
    } else {
        Value::Null
    };
    message.insert("content".into(), content);
    message.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let usage = get(answer, "usage")
        .and_then(TokenCounts::from_anthropic)
        .unwrap_or_default();
    Ok(json!({
        "id": prefixed_id("chatcmpl-", id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": alias,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": usage.to_openai(),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn refused_field(body: Value, from: Format, to: Format) -> String {
        match response(&body, from, to, "alias") {
            Err(TranslateError::Untranslatable { field, .. }) => field,
            other => panic!("expected Untranslatable, got {other:?}"),
        }
    }

    fn without_created(mut answer: Value) -> Value {
        answer.as_object_mut().unwrap().remove("created");
        answer
    }

    #[test]
    fn the_same_format_keeps_the_answer_but_the_model() {
        let answer = fixtures::openai_text_answer();
        let mut expected = answer.clone();
        expected["model"] = json!("my-alias");
        assert_eq!(
            response(&answer, Format::OpenAi, Format::OpenAi, "my-alias").unwrap(),
            expected
        );
        let answer = fixtures::anthropic_text_answer();
        let mut expected = answer.clone();
        expected["model"] = json!("my-alias");
        assert_eq!(
            response(&answer, Format::Anthropic, Format::Anthropic, "my-alias").unwrap(),
            expected
        );
    }

    #[test]
    fn an_openai_text_answer_as_anthropic() {
        let translated = response(
            &fixtures::openai_text_answer(),
            Format::OpenAi,
            Format::Anthropic,
            "claude-alias",
        )
        .unwrap();
        assert_eq!(
            translated,
            json!({
                "id": "msg_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
                "type": "message",
                "role": "assistant",
                "model": "claude-alias",
                "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 19, "output_tokens": 10},
            })
        );
    }

    #[test]
    fn an_anthropic_text_answer_as_openai() {
        let translated = response(
            &fixtures::anthropic_text_answer(),
            Format::Anthropic,
            Format::OpenAi,
            "gpt-alias",
        )
        .unwrap();
        assert!(translated["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            without_created(translated),
            json!({
                "id": "chatcmpl-msg_013Zva2CMHLNnXjNJJKqJ2EF",
                "object": "chat.completion",
                "model": "gpt-alias",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
            })
        );
    }

    #[test]
    fn tool_calls_translate_both_ways() {
        let anthropic = fixtures::anthropic_tool_answer();
        let openai = response(&anthropic, Format::Anthropic, Format::OpenAi, "gpt").unwrap();
        assert_eq!(
            openai["choices"][0],
            json!({
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll check the current weather in San Francisco for you.",
                    "refusal": null,
                    "tool_calls": [{
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"},
                    }],
                },
                "logprobs": null,
                "finish_reason": "tool_calls",
            })
        );
        let back = response(
            &openai,
            Format::OpenAi,
            Format::Anthropic,
            "claude-sonnet-4-5",
        )
        .unwrap();
        let mut expected = anthropic.clone();
        expected["id"] = json!("msg_chatcmpl-msg_01Aq9w938a90dw8q");
        assert_eq!(back, expected);

        let openai = fixtures::openai_tool_answer();
        let anthropic = response(&openai, Format::OpenAi, Format::Anthropic, "c").unwrap();
        assert_eq!(
            anthropic["content"],
            json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                "input": {"location": "Boston, MA"}}])
        );
        assert_eq!(anthropic["stop_reason"], json!("tool_use"));
        let back = response(&anthropic, Format::Anthropic, Format::OpenAi, "g").unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            back["choices"][0]["message"]["tool_calls"],
            openai["choices"][0]["message"]["tool_calls"]
        );
    }

    #[test]
    fn stop_reasons_translate() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            let mut openai = fixtures::openai_text_answer();
            openai["choices"][0]["finish_reason"] = json!(finish);
            let anthropic = response(&openai, Format::OpenAi, Format::Anthropic, "a").unwrap();
            assert_eq!(anthropic["stop_reason"], json!(stop));
            let back = response(&anthropic, Format::Anthropic, Format::OpenAi, "a").unwrap();
            assert_eq!(back["choices"][0]["finish_reason"], json!(finish));
        }
        let mut anthropic = fixtures::anthropic_text_answer();
        anthropic["stop_reason"] = json!("stop_sequence");
        anthropic["stop_sequence"] = json!("END");
        let openai = response(&anthropic, Format::Anthropic, Format::OpenAi, "a").unwrap();
        assert_eq!(openai["choices"][0]["finish_reason"], json!("stop"));
    }

    #[test]
    fn a_refusal_is_anthropic_text_with_a_refusal_stop() {
        let openai = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]});
        let anthropic = response(&openai, Format::OpenAi, Format::Anthropic, "a").unwrap();
        assert_eq!(
            anthropic["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        assert_eq!(anthropic["stop_reason"], json!("refusal"));
        assert_eq!(
            anthropic["usage"],
            json!({"input_tokens": 0, "output_tokens": 0})
        );
    }

    #[test]
    fn thinking_blocks_are_left_out_of_openai_answers() {
        let mut anthropic = fixtures::anthropic_text_answer();
        anthropic["content"] = json!([
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "text", "text": "Forty-two", "citations": []},
            {"type": "text", "text": "."},
        ]);
        let openai = response(&anthropic, Format::Anthropic, Format::OpenAi, "a").unwrap();
        assert_eq!(
            openai["choices"][0]["message"]["content"],
            json!("Forty-two.")
        );
    }

    #[test]
    fn cached_tokens_keep_their_share() {
        let mut openai = fixtures::openai_text_answer();
        openai["usage"]["prompt_tokens_details"]["cached_tokens"] = json!(16);
        let anthropic = response(&openai, Format::OpenAi, Format::Anthropic, "a").unwrap();
        assert_eq!(
            anthropic["usage"],
            json!({"input_tokens": 3, "cache_read_input_tokens": 16, "output_tokens": 10})
        );
    }

    #[test]
    fn answers_that_do_not_translate_are_refused() {
        let mut two_choices = fixtures::openai_text_answer();
        let choice = two_choices["choices"][0].clone();
        two_choices["choices"].as_array_mut().unwrap().push(choice);
        assert_eq!(
            refused_field(two_choices, Format::OpenAi, Format::Anthropic),
            "choices"
        );

        let mut bad_arguments = fixtures::openai_tool_answer();
        bad_arguments["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] =
            json!("{\"location\": ");
        assert_eq!(
            refused_field(bad_arguments, Format::OpenAi, Format::Anthropic),
            "choices[0].message.tool_calls[0].function.arguments"
        );

        let mut audio = fixtures::openai_text_answer();
        audio["choices"][0]["message"]["audio"] = json!({"id": "audio_1", "data": "AAAA"});
        assert_eq!(
            refused_field(audio, Format::OpenAi, Format::Anthropic),
            "choices[0].message.audio"
        );

        let mut paused = fixtures::anthropic_text_answer();
        paused["stop_reason"] = json!("pause_turn");
        assert_eq!(
            refused_field(paused, Format::Anthropic, Format::OpenAi),
            "stop_reason"
        );

        let mut server_tool = fixtures::anthropic_text_answer();
        server_tool["content"] = json!([{"type": "server_tool_use", "id": "srvtoolu_1",
            "name": "web_search", "input": {"query": "weather"}}]);
        assert_eq!(
            refused_field(server_tool, Format::Anthropic, Format::OpenAi),
            "content[0].type"
        );
    }

    #[test]
    fn malformed_answers_are_invalid() {
        let cases = [
            (json!([]), Format::OpenAi, "body"),
            (json!({"choices": []}), Format::OpenAi, "id"),
            (json!({"id": "x", "choices": []}), Format::OpenAi, "choices"),
            (
                json!({"id": "x", "choices": [{"index": 0}]}),
                Format::OpenAi,
                "choices[0].message",
            ),
            (json!({"type": "message"}), Format::Anthropic, "id"),
            (
                json!({"id": "x", "content": "Hi"}),
                Format::Anthropic,
                "content",
            ),
        ];
        for (body, from, expected) in cases {
            let to = match from {
                Format::OpenAi => Format::Anthropic,
                Format::Anthropic => Format::OpenAi,
            };
            match response(&body, from, to, "a") {
                Err(TranslateError::Invalid { field, .. }) => assert_eq!(field, expected),
                other => panic!("expected Invalid for {body}, got {other:?}"),
            }
        }
    }
}
