//! What a client request must look like in each format, checked before it is translated or
//! forwarded. Only the shape of the fields both formats define is checked here; whether a
//! well-formed field can be expressed in the other format is the translation's question.

use super::fields::{body_object, field, get, get_object, get_str, invalid, Object};
use super::{Format, TranslateError};
use serde_json::Value;

pub(super) fn validate(body: &Value, format: Format) -> Result<(), TranslateError> {
    let request = body_object(body)?;
    match request.get("model") {
        Some(Value::String(_)) => {}
        _ => return Err(invalid("model", "must be a string")),
    }
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => return Err(invalid("messages", "must not be empty")),
        _ => return Err(invalid("messages", "must be an array of messages")),
    };
    optional_bool(request, "", "stream")?;
    match format {
        Format::OpenAi => openai_request(request, messages),
        Format::Anthropic => anthropic_request(request, messages),
    }
}

fn openai_request(request: &Object, messages: &[Value]) -> Result<(), TranslateError> {
    for (index, message) in messages.iter().enumerate() {
        openai_message(message, &format!("messages[{index}]"))?;
    }
    optional_positive_integer(request, "", "max_tokens")?;
    optional_positive_integer(request, "", "max_completion_tokens")?;
    optional_positive_integer(request, "", "n")?;
    optional_number_within(request, "", "temperature", 0.0, 2.0)?;
    optional_number_within(request, "", "top_p", 0.0, 1.0)?;
    optional_bool(request, "", "parallel_tool_calls")?;
    optional_str(request, "", "user")?;
    match get(request, "stop") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(stops)) => strings(stops, "stop")?,
        Some(_) => return Err(invalid("stop", "must be a string or an array of strings")),
    }
    if let Some(options) = get(request, "stream_options") {
        let options = options
            .as_object()
            .ok_or_else(|| invalid("stream_options", "must be an object"))?;
        optional_bool(options, "stream_options", "include_usage")?;
    }
    if let Some(tools) = get(request, "tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| invalid("tools", "must be an array of tools"))?;
        for (index, tool) in tools.iter().enumerate() {
            openai_tool(tool, &format!("tools[{index}]"))?;
        }
    }
    if let Some(choice) = get(request, "tool_choice") {
        openai_tool_choice(choice)?;
    }
    Ok(())
}

fn openai_tool_choice(choice: &Value) -> Result<(), TranslateError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => Ok(()),
        Value::Object(choice) => {
            if required_str(choice, "tool_choice", "type")? == "function" {
                let function = required_object(choice, "tool_choice", "function")?;
                required_str(function, "tool_choice.function", "name")?;
            }
            Ok(())
        }
        _ => Err(invalid(
            "tool_choice",
            "must be `none`, `auto`, `required` or an object",
        )),
    }
}

fn openai_message(message: &Value, path: &str) -> Result<(), TranslateError> {
    let message = message
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    match required_str(message, path, "role")? {
        "system" | "developer" | "user" => openai_content(message, path, true),
        "assistant" => {
            // An assistant message may be nothing but its calls.
            let calls_only = get(message, "tool_calls").is_some()
                || get(message, "function_call").is_some()
                || get(message, "refusal").is_some()
                || get(message, "audio").is_some();
            openai_content(message, path, !calls_only)?;
            optional_str(message, path, "refusal")?;
            if let Some(calls) = get(message, "tool_calls") {
                let calls = calls
                    .as_array()
                    .ok_or_else(|| invalid(field(path, "tool_calls"), "must be an array"))?;
                for (index, call) in calls.iter().enumerate() {
                    openai_tool_call(call, &format!("{path}.tool_calls[{index}]"))?;
                }
            }
            Ok(())
        }
        "tool" => {
            required_str(message, path, "tool_call_id")?;
            openai_content(message, path, true)
        }
        "function" => {
            required_str(message, path, "name")?;
            openai_content(message, path, false)
        }
        _ => Err(invalid(
            field(path, "role"),
            "must be one of system, developer, user, assistant, tool, function",
        )),
    }
}

fn openai_content(message: &Object, path: &str, required: bool) -> Result<(), TranslateError> {
    let content_field = field(path, "content");
    match get(message, "content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                openai_part(part, &format!("{content_field}[{index}]"))?;
            }
            Ok(())
        }
        None if required => Err(invalid(content_field, "is required")),
        None => Ok(()),
        Some(_) => Err(invalid(
            content_field,
            "must be a string or an array of content parts",
        )),
    }
}

fn openai_part(part: &Value, path: &str) -> Result<(), TranslateError> {
    let part = part
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    match required_str(part, path, "type")? {
        "text" => required_str(part, path, "text").map(drop),
        "refusal" => required_str(part, path, "refusal").map(drop),
        "image_url" => {
            let image = required_object(part, path, "image_url")?;
            required_str(image, &field(path, "image_url"), "url").map(drop)
        }
        // Other parts (audio, files, ...) are well formed as far as this gateway cares; whether
        // they translate is decided where they are translated.
        _ => Ok(()),
    }
}

fn openai_tool_call(call: &Value, path: &str) -> Result<(), TranslateError> {
    let call = call
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    required_str(call, path, "id")?;
    if get_str(call, "type").unwrap_or("function") == "function" {
        let function = required_object(call, path, "function")?;
        let function_path = field(path, "function");
        required_str(function, &function_path, "name")?;
        required_str(function, &function_path, "arguments")?;
    }
    Ok(())
}

fn openai_tool(tool: &Value, path: &str) -> Result<(), TranslateError> {
    let tool = tool
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    if required_str(tool, path, "type")? == "function" {
        let function = required_object(tool, path, "function")?;
        let function_path = field(path, "function");
        required_str(function, &function_path, "name")?;
        optional_str(function, &function_path, "description")?;
        if let Some(parameters) = get(function, "parameters") {
            if !parameters.is_object() {
                return Err(invalid(
                    field(&function_path, "parameters"),
                    "must be a JSON Schema object",
                ));
            }
        }
    }
    Ok(())
}

fn anthropic_request(request: &Object, messages: &[Value]) -> Result<(), TranslateError> {
    match request.get("max_tokens") {
        Some(Value::Number(number)) if number.as_u64().is_some_and(|tokens| tokens > 0) => {}
        _ => return Err(invalid("max_tokens", "must be a positive integer")),
    }
    for (index, message) in messages.iter().enumerate() {
        anthropic_message(message, &format!("messages[{index}]"))?;
    }
    match get(request, "system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (index, block) in blocks.iter().enumerate() {
                let path = format!("system[{index}]");
                let block = block
                    .as_object()
                    .ok_or_else(|| invalid(&path, "must be a text block"))?;
                if required_str(block, &path, "type")? != "text" {
                    return Err(invalid(field(&path, "type"), "must be `text`"));
                }
                required_str(block, &path, "text")?;
            }
        }
        Some(_) => {
            return Err(invalid(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    optional_number_within(request, "", "temperature", 0.0, 1.0)?;
    optional_number_within(request, "", "top_p", 0.0, 1.0)?;
    if let Some(top_k) = get(request, "top_k") {
        if top_k.as_u64().is_none() {
            return Err(invalid("top_k", "must be a non-negative integer"));
        }
    }
    if let Some(stops) = get(request, "stop_sequences") {
        let stops = stops
            .as_array()
            .ok_or_else(|| invalid("stop_sequences", "must be an array of strings"))?;
        strings(stops, "stop_sequences")?;
    }
    if let Some(metadata) = get(request, "metadata") {
        let metadata = metadata
            .as_object()
            .ok_or_else(|| invalid("metadata", "must be an object"))?;
        optional_str(metadata, "metadata", "user_id")?;
    }
    if let Some(tools) = get(request, "tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| invalid("tools", "must be an array of tools"))?;
        for (index, tool) in tools.iter().enumerate() {
            let path = format!("tools[{index}]");
            let tool = tool
                .as_object()
                .ok_or_else(|| invalid(&path, "must be an object"))?;
            required_str(tool, &path, "name")?;
            if get_str(tool, "type").unwrap_or("custom") == "custom" {
                required_object(tool, &path, "input_schema")?;
                optional_str(tool, &path, "description")?;
            }
        }
    }
    if let Some(choice) = get(request, "tool_choice") {
        let choice = choice
            .as_object()
            .ok_or_else(|| invalid("tool_choice", "must be an object"))?;
        match required_str(choice, "tool_choice", "type")? {
            "auto" | "any" | "none" => {}
            "tool" => {
                required_str(choice, "tool_choice", "name")?;
            }
            _ => {
                return Err(invalid(
                    "tool_choice.type",
                    "must be `auto`, `any`, `tool` or `none`",
                ))
            }
        }
        optional_bool(choice, "tool_choice", "disable_parallel_tool_use")?;
    }
    Ok(())
}

fn anthropic_message(message: &Value, path: &str) -> Result<(), TranslateError> {
    let message = message
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    let role = required_str(message, path, "role")?;
    if !matches!(role, "user" | "assistant") {
        return Err(invalid(
            field(path, "role"),
            "must be `user` or `assistant`",
        ));
    }
    let content_path = field(path, "content");
    match message.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (index, block) in blocks.iter().enumerate() {
                anthropic_block(block, role, &format!("{content_path}[{index}]"))?;
            }
            Ok(())
        }
        None | Some(Value::Null) => Err(invalid(content_path, "is required")),
        Some(_) => Err(invalid(
            content_path,
            "must be a string or an array of content blocks",
        )),
    }
}

fn anthropic_block(block: &Value, role: &str, path: &str) -> Result<(), TranslateError> {
    let block = block
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    match required_str(block, path, "type")? {
        "text" => required_str(block, path, "text").map(drop),
        "image" => {
            let source = required_object(block, path, "source")?;
            let source_path = field(path, "source");
            match required_str(source, &source_path, "type")? {
                "base64" => {
                    required_str(source, &source_path, "media_type")?;
                    required_str(source, &source_path, "data").map(drop)
                }
                "url" => required_str(source, &source_path, "url").map(drop),
                _ => Ok(()),
            }
        }
        "tool_use" => {
            if role != "assistant" {
                return Err(invalid(
                    field(path, "type"),
                    "tool_use blocks belong in assistant messages",
                ));
            }
            required_str(block, path, "id")?;
            required_str(block, path, "name")?;
            required_object(block, path, "input").map(drop)
        }
        "tool_result" => {
            if role != "user" {
                return Err(invalid(
                    field(path, "type"),
                    "tool_result blocks belong in user messages",
                ));
            }
            required_str(block, path, "tool_use_id")?;
            match get(block, "content") {
                None | Some(Value::String(_)) => {}
                Some(Value::Array(parts)) => {
                    for (index, part) in parts.iter().enumerate() {
                        let part_path = format!("{path}.content[{index}]");
                        let part = part
                            .as_object()
                            .ok_or_else(|| invalid(&part_path, "must be an object"))?;
                        required_str(part, &part_path, "type")?;
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        field(path, "content"),
                        "must be a string or an array of content blocks",
                    ))
                }
            }
            optional_bool(block, path, "is_error")
        }
        _ => Ok(()),
    }
}

fn required_str<'a>(object: &'a Object, path: &str, key: &str) -> Result<&'a str, TranslateError> {
    get_str(object, key).ok_or_else(|| invalid(field(path, key), "must be a string"))
}

fn required_object<'a>(
    object: &'a Object,
    path: &str,
    key: &str,
) -> Result<&'a Object, TranslateError> {
    get_object(object, key).ok_or_else(|| invalid(field(path, key), "must be an object"))
}

fn optional_str(object: &Object, path: &str, key: &str) -> Result<(), TranslateError> {
    match get(object, key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid(field(path, key), "must be a string")),
    }
}

fn optional_bool(object: &Object, path: &str, key: &str) -> Result<(), TranslateError> {
    match get(object, key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(invalid(field(path, key), "must be a boolean")),
    }
}

fn optional_positive_integer(object: &Object, path: &str, key: &str) -> Result<(), TranslateError> {
    match get(object, key) {
        None => Ok(()),
        Some(value) if value.as_u64().is_some_and(|number| number > 0) => Ok(()),
        Some(_) => Err(invalid(field(path, key), "must be a positive integer")),
    }
}

fn optional_number_within(
    object: &Object,
    path: &str,
    key: &str,
    low: f64,
    high: f64,
) -> Result<(), TranslateError> {
    match get(object, key).map(Value::as_f64) {
        None => Ok(()),
        Some(Some(number)) if (low..=high).contains(&number) => Ok(()),
        Some(_) => Err(invalid(
            field(path, key),
            format!("must be a number from {low} to {high}"),
        )),
    }
}

fn strings(values: &[Value], path: &str) -> Result<(), TranslateError> {
    match values.iter().position(|value| !value.is_string()) {
        Some(index) => Err(invalid(format!("{path}[{index}]"), "must be a string")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use serde_json::json;

    fn invalid_field(body: Value, format: Format) -> String {
        match validate(&body, format) {
            Err(TranslateError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?} for {body}"),
        }
    }

    #[test]
    fn the_providers_examples_are_valid() {
        for body in [
            fixtures::openai_basic_request(),
            fixtures::openai_tools_request(),
            fixtures::openai_vision_request(),
            fixtures::openai_tool_conversation(),
        ] {
            assert_eq!(validate(&body, Format::OpenAi), Ok(()), "{body}");
        }
        for body in [
            fixtures::anthropic_basic_request(),
            fixtures::anthropic_tools_request(),
            fixtures::anthropic_tool_conversation(),
        ] {
            assert_eq!(validate(&body, Format::Anthropic), Ok(()), "{body}");
        }
    }

    #[test]
    fn nulls_stand_for_absent_options() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
            "temperature": null, "stop": null, "tools": null, "stream": null});
        assert_eq!(validate(&body, Format::OpenAi), Ok(()));
    }

    #[test]
    fn shared_checks_name_their_field() {
        for format in [Format::OpenAi, Format::Anthropic] {
            assert_eq!(invalid_field(json!([1]), format), "body");
            assert_eq!(
                invalid_field(json!({"messages": [], "max_tokens": 1}), format),
                "model"
            );
            assert_eq!(
                invalid_field(json!({"model": 3, "messages": []}), format),
                "model"
            );
            assert_eq!(
                invalid_field(json!({"model": "m", "max_tokens": 1}), format),
                "messages"
            );
            assert_eq!(
                invalid_field(
                    json!({"model": "m", "messages": [], "max_tokens": 1}),
                    format
                ),
                "messages"
            );
            assert_eq!(
                invalid_field(
                    json!({"model": "m", "max_tokens": 1, "stream": "yes",
                        "messages": [{"role": "user", "content": "Hi"}]}),
                    format
                ),
                "stream"
            );
        }
    }

    #[test]
    fn openai_checks_name_their_field() {
        let with = |extra: Value| {
            let mut body = json!({"model": "gpt-4o", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}]});
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            invalid_field(body, Format::OpenAi)
        };
        let cases = [
            (json!({"messages": ["hi"]}), "messages[0]"),
            (json!({"messages": [{"content": "Hi"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}),
                "messages[1].role",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"messages": [{"role": "assistant"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": {}}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]}]}),
                "messages[0].tool_calls[0].id",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "42"}]}),
                "messages[0].tool_call_id",
            ),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"max_completion_tokens": -3}),
                "max_completion_tokens",
            ),
            (json!({"n": 1.5}), "n"),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": "high"}), "top_p"),
            (json!({"stop": 3}), "stop"),
            (json!({"stop": ["a", 3]}), "stop[1]"),
            (json!({"stream_options": true}), "stream_options"),
            (
                json!({"stream_options": {"include_usage": "yes"}}),
                "stream_options.include_usage",
            ),
            (json!({"tools": {}}), "tools"),
            (
                json!({"tools": [{"function": {"name": "f"}}]}),
                "tools[0].type",
            ),
            (
                json!({"tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
                "tools[0].function.parameters",
            ),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (
                json!({"tool_choice": {"type": "function", "function": {}}}),
                "tool_choice.function.name",
            ),
            (json!({"parallel_tool_calls": 1}), "parallel_tool_calls"),
            (json!({"user": 7}), "user"),
        ];
        for (extra, expected) in cases {
            assert_eq!(with(extra.clone()), expected, "{extra}");
        }
    }

    #[test]
    fn anthropic_checks_name_their_field() {
        let with = |extra: Value| {
            let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Hello, world"}]});
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            invalid_field(body, Format::Anthropic)
        };
        let cases = [
            (json!({"max_tokens": null}), "max_tokens"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": "1024"}), "max_tokens"),
            (
                json!({"messages": [{"role": "system", "content": "Hi"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source":
                    {"type": "base64", "data": "AAAA"}}]}]}),
                "messages[0].content[0].source.media_type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t",
                    "name": "f", "input": {}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content":
                    [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]}),
                "messages[1].content[0].input",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
                "messages[0].content[0].tool_use_id",
            ),
            (json!({"system": [{"type": "image"}]}), "system[0].type"),
            (json!({"system": 4}), "system"),
            (json!({"temperature": 1.5}), "temperature"),
            (json!({"top_k": -1}), "top_k"),
            (json!({"stop_sequences": "END"}), "stop_sequences"),
            (json!({"metadata": {"user_id": 5}}), "metadata.user_id"),
            (json!({"tools": [{"name": "f"}]}), "tools[0].input_schema"),
            (json!({"tool_choice": "auto"}), "tool_choice"),
            (json!({"tool_choice": {"type": "tool"}}), "tool_choice.name"),
            (json!({"tool_choice": {"type": "some"}}), "tool_choice.type"),
        ];
        for (extra, expected) in cases {
            assert_eq!(with(extra.clone()), expected, "{extra}");
        }
    }
}
