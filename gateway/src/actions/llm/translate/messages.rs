//! Conversations: OpenAI `messages` (system, developer, user, assistant with `tool_calls`, and
//! tool messages) ⇄ Anthropic's top-level `system` and alternating `messages` of content blocks
//! (text, image, tool_use, tool_result).

use super::fields::{get, get_array, get_object, get_str, invalid, untranslatable, Object};
use super::TranslateError;
use serde_json::{json, Value};

/// System text joins with a blank line, as separate system messages read as paragraphs.
const SYSTEM_SEPARATOR: &str = "\n\n";

/// The image types Anthropic accepts.
const ANTHROPIC_IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// An OpenAI conversation in Anthropic's terms.
pub(super) struct AnthropicConversation {
    pub system: Option<String>,
    pub messages: Vec<Value>,
}

/// A turn being built for Anthropic, which requires user and assistant turns to alternate:
/// consecutive OpenAI messages of one role (tool results count as the user's) join one turn.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
    /// The last OpenAI message joined, to name it in errors.
    last_source: usize,
}

pub(super) fn openai_to_anthropic(
    messages: &[Value],
) -> Result<AnthropicConversation, TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let path = format!("messages[{index}]");
        let message = message
            .as_object()
            .ok_or_else(|| invalid(&path, "must be an object"))?;
        let (role, blocks) =
            match get_str(message, "role").unwrap_or_default() {
                // Anthropic has one system prompt, before the conversation: a system message met
                // later in the conversation joins it there.
                "system" | "developer" => {
                    system.push(openai_system_text(message, &path)?);
                    continue;
                }
                "user" => ("user", openai_user_blocks(message, &path)?),
                "assistant" => ("assistant", openai_assistant_blocks(message, &path)?),
                "tool" => ("user", vec![openai_tool_result(message, &path)?]),
                "function" => return Err(untranslatable(
                    format!("{path}.role"),
                    "deprecated function messages have no Anthropic equivalent (tool messages do)",
                )),
                other => {
                    return Err(invalid(
                        format!("{path}.role"),
                        format!("unknown role `{other}`"),
                    ))
                }
            };
        // An assistant message with neither text nor calls says nothing, and Anthropic refuses
        // empty content.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(turn) if turn.role == role => {
                turn.blocks.extend(blocks);
                turn.last_source = index;
            }
            _ => turns.push(Turn {
                role,
                blocks,
                last_source: index,
            }),
        }
    }
    if let Some(last) = turns.last() {
        if last.role == "assistant" {
            return Err(final_assistant_message(last.last_source));
        }
    }
    let messages = turns
        .into_iter()
        .map(|turn| json!({"role": turn.role, "content": anthropic_content(turn.blocks)}))
        .collect();
    Ok(AnthropicConversation {
        system: (!system.is_empty()).then(|| system.join(SYSTEM_SEPARATOR)),
        messages,
    })
}

/// Anthropic continues a final assistant message (prefill) where OpenAI answers it with a new
/// one: the same conversation asks for different answers.
fn final_assistant_message(index: usize) -> TranslateError {
    untranslatable(
        format!("messages[{index}].role"),
        "a conversation ending with an assistant message is continued by Anthropic but answered \
         anew by OpenAI",
    )
}

/// One text block as a plain string, as the providers' own examples write it.
fn anthropic_content(blocks: Vec<Value>) -> Value {
    match blocks.as_slice() {
        [block] if block.get("type").and_then(Value::as_str) == Some("text") => {
            block.get("text").cloned().unwrap_or_default()
        }
        _ => Value::Array(blocks),
    }
}

fn openai_system_text(message: &Object, path: &str) -> Result<String, TranslateError> {
    match get(message, "content") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (index, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(text_of(part, "text")),
                    _ => {
                        return Err(untranslatable(
                            format!("{path}.content[{index}].type"),
                            "Anthropic's system prompt holds only text",
                        ))
                    }
                }
            }
            Ok(texts.join(SYSTEM_SEPARATOR))
        }
        _ => Err(invalid(format!("{path}.content"), "is required")),
    }
}

fn openai_user_blocks(message: &Object, path: &str) -> Result<Vec<Value>, TranslateError> {
    // `name` is dropped: Anthropic has no participant names, and it only labels the speaker.
    match get(message, "content") {
        Some(Value::String(text)) => Ok(vec![text_part(text)]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(index, part)| openai_user_part(part, &format!("{path}.content[{index}]")))
            .collect(),
        _ => Err(invalid(format!("{path}.content"), "is required")),
    }
}

fn openai_user_part(part: &Value, path: &str) -> Result<Value, TranslateError> {
    match part.get("type").and_then(Value::as_str).unwrap_or_default() {
        "text" => Ok(text_part(&text_of(part, "text"))),
        "image_url" => openai_image(part, path),
        "input_audio" => Err(untranslatable(
            format!("{path}.type"),
            "Anthropic takes no audio input",
        )),
        "file" => Err(untranslatable(
            format!("{path}.type"),
            "file parts have no Anthropic equivalent",
        )),
        other => Err(untranslatable(
            format!("{path}.type"),
            format!("content parts of type `{other}` have no Anthropic equivalent"),
        )),
    }
}

/// An `image_url` part as an image block: a data URL's bytes travel inline, any other URL is
/// fetched by Anthropic. The part's `detail` (resolution hint) is dropped: Anthropic chooses
/// the resolution itself.
fn openai_image(part: &Value, path: &str) -> Result<Value, TranslateError> {
    let url_field = format!("{path}.image_url.url");
    let url = part
        .get("image_url")
        .and_then(|image| image.get("url"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&url_field, "must be a string"))?;
    let Some(data_url) = url.strip_prefix("data:") else {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    };
    let (header, data) = data_url
        .split_once(',')
        .ok_or_else(|| invalid(&url_field, "is not a data URL"))?;
    let media_type = header
        .strip_suffix(";base64")
        .ok_or_else(|| untranslatable(&url_field, "Anthropic takes only base64 data URLs"))?;
    if !ANTHROPIC_IMAGE_TYPES.contains(&media_type) {
        return Err(untranslatable(
            url_field,
            format!("Anthropic takes JPEG, PNG, GIF and WebP images, not `{media_type}`"),
        ));
    }
    Ok(
        json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
    )
}

fn openai_assistant_blocks(message: &Object, path: &str) -> Result<Vec<Value>, TranslateError> {
    for key in ["audio", "function_call"] {
        if get(message, key).is_some() {
            return Err(untranslatable(
                format!("{path}.{key}"),
                "has no Anthropic equivalent",
            ));
        }
    }
    let mut blocks = Vec::new();
    match get(message, "content") {
        Some(Value::String(text)) => blocks.push(text_part(text)),
        Some(Value::Array(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "text" => blocks.push(text_part(&text_of(part, "text"))),
                    "refusal" => blocks.push(text_part(&text_of(part, "refusal"))),
                    other => {
                        return Err(untranslatable(
                            format!("{path}.content[{index}].type"),
                            format!(
                                "assistant parts of type `{other}` have no Anthropic equivalent"
                            ),
                        ))
                    }
                }
            }
        }
        _ => {}
    }
    // A refusal the assistant gave earlier is what it said.
    if let Some(refusal) = get_str(message, "refusal") {
        blocks.push(text_part(refusal));
    }
    // Anthropic refuses empty text blocks; OpenAI clients send `""` beside tool calls.
    blocks.retain(|block| block.get("text").and_then(Value::as_str) != Some(""));
    for (index, call) in get_array(message, "tool_calls")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        blocks.push(openai_tool_call(
            call,
            &format!("{path}.tool_calls[{index}]"),
        )?);
    }
    Ok(blocks)
}

fn openai_tool_call(call: &Value, path: &str) -> Result<Value, TranslateError> {
    let call = call
        .as_object()
        .ok_or_else(|| invalid(path, "must be an object"))?;
    if get_str(call, "type").unwrap_or("function") != "function" {
        return Err(untranslatable(
            format!("{path}.type"),
            "only function calls have an Anthropic equivalent",
        ));
    }
    let function = get_object(call, "function")
        .ok_or_else(|| invalid(format!("{path}.function"), "must be an object"))?;
    let arguments = get_str(function, "arguments").unwrap_or_default();
    let input = arguments_object(arguments, &format!("{path}.function.arguments"))?;
    Ok(json!({
        "type": "tool_use",
        "id": get(call, "id").cloned().unwrap_or_default(),
        "name": get(function, "name").cloned().unwrap_or_default(),
        "input": input,
    }))
}

/// OpenAI's `arguments` string as the object Anthropic's `input` must be. A call without
/// arguments may send an empty string.
pub(super) fn arguments_object(arguments: &str, field: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        _ => Err(untranslatable(
            field,
            "Anthropic takes tool arguments only as a JSON object",
        )),
    }
}

fn openai_tool_result(message: &Object, path: &str) -> Result<Value, TranslateError> {
    let reason = "tool results translate only as text";
    let content = tool_result_content(get(message, "content"), path, reason)?;
    Ok(json!({
        "type": "tool_result",
        "tool_use_id": get(message, "tool_call_id").cloned().unwrap_or_default(),
        "content": content,
    }))
}

pub(super) fn anthropic_to_openai(
    system: Option<&Value>,
    messages: &[Value],
) -> Result<Vec<Value>, TranslateError> {
    let mut translated = Vec::new();
    match system {
        Some(Value::String(text)) if !text.is_empty() => {
            translated.push(json!({"role": "system", "content": text}));
        }
        Some(Value::Array(blocks)) if !blocks.is_empty() => {
            let mut texts = Vec::new();
            for (index, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(format!("system[{index}].type"), "must be `text`"));
                }
                // `cache_control` is dropped: caching changes the price, not the answer.
                texts.push(text_of(block, "text"));
            }
            translated.push(json!({"role": "system", "content": texts.join(SYSTEM_SEPARATOR)}));
        }
        _ => {}
    }
    for (index, message) in messages.iter().enumerate() {
        let path = format!("messages[{index}]");
        let message = message
            .as_object()
            .ok_or_else(|| invalid(&path, "must be an object"))?;
        match get_str(message, "role") {
            Some("user") => anthropic_user(message, &path, &mut translated)?,
            Some("assistant") => {
                if index + 1 == messages.len() {
                    return Err(final_assistant_message(index));
                }
                translated.push(anthropic_assistant(message, &path)?);
            }
            _ => {
                return Err(invalid(
                    format!("{path}.role"),
                    "must be `user` or `assistant`",
                ))
            }
        }
    }
    Ok(translated)
}

/// One Anthropic user message as OpenAI messages: its tool results as tool messages first (OpenAI
/// wants them right after the assistant's calls, as Anthropic wants them first in the turn),
/// then the rest as a user message.
fn anthropic_user(
    message: &Object,
    path: &str,
    translated: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let blocks = match get(message, "content") {
        Some(Value::String(text)) => {
            translated.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(invalid(format!("{path}.content"), "is required")),
    };
    let mut parts = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}.content[{index}]");
        match block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "text" => parts.push(text_part(&text_of(block, "text"))),
            "image" => parts.push(anthropic_image(block, &block_path)?),
            "tool_result" => translated.push(anthropic_tool_result(block, &block_path)?),
            other => return Err(unknown_block(other, &block_path)),
        }
    }
    if !parts.is_empty() {
        translated.push(json!({"role": "user", "content": openai_content(parts)}));
    }
    Ok(())
}

fn anthropic_assistant(message: &Object, path: &str) -> Result<Value, TranslateError> {
    let blocks = match get(message, "content") {
        Some(Value::String(text)) => return Ok(json!({"role": "assistant", "content": text})),
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(invalid(format!("{path}.content"), "is required")),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}.content[{index}]");
        match block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            // `citations` are dropped: they annotate the text, which is kept whole.
            "text" => parts.push(text_part(&text_of(block, "text"))),
            "tool_use" => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_default(),
                },
            })),
            other => return Err(unknown_block(other, &block_path)),
        }
    }
    let mut translated = Object::new();
    translated.insert("role".into(), json!("assistant"));
    let content = match (parts.is_empty(), calls.is_empty()) {
        (true, false) => Value::Null,
        _ => openai_content(parts),
    };
    translated.insert("content".into(), content);
    if !calls.is_empty() {
        translated.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(translated))
}

fn anthropic_image(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let source = block
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("{path}.source"), "must be an object"))?;
    let url = match get_str(source, "type") {
        Some("base64") => format!(
            "data:{};base64,{}",
            get_str(source, "media_type").unwrap_or_default(),
            get_str(source, "data").unwrap_or_default()
        ),
        Some("url") => get_str(source, "url").unwrap_or_default().to_owned(),
        _ => {
            return Err(untranslatable(
                format!("{path}.source.type"),
                "only base64 and URL images have an OpenAI equivalent",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool_result block as an OpenAI tool message. `is_error` is dropped: OpenAI has no such flag,
/// and the error's text, which is what the model reads, is kept.
fn anthropic_tool_result(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let reason = "OpenAI tool messages hold only text";
    let content = match tool_result_content(block.get("content"), path, reason)? {
        Value::Array(texts) => openai_content(texts),
        other => other,
    };
    Ok(json!({
        "role": "tool",
        "tool_call_id": block.get("tool_use_id").cloned().unwrap_or_default(),
        "content": content,
    }))
}

/// A tool result's content in the other format: a string as it is, or its text parts (the
/// only parts both formats share; any other is refused with `reason`), or empty text.
fn tool_result_content(
    content: Option<&Value>,
    path: &str,
    reason: &str,
) -> Result<Value, TranslateError> {
    match content {
        Some(Value::String(text)) => Ok(Value::String(text.clone())),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (index, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(text_part(&text_of(part, "text"))),
                    _ => {
                        return Err(untranslatable(
                            format!("{path}.content[{index}].type"),
                            reason,
                        ))
                    }
                }
            }
            Ok(Value::Array(texts))
        }
        _ => Ok(Value::String(String::new())),
    }
}

fn unknown_block(kind: &str, path: &str) -> TranslateError {
    let reason = match kind {
        "thinking" | "redacted_thinking" => {
            "extended thinking has no OpenAI Chat Completions equivalent".to_owned()
        }
        "document" => "documents (PDF, plain text) have no OpenAI equivalent".to_owned(),
        _ => format!("`{kind}` blocks have no OpenAI equivalent"),
    };
    untranslatable(format!("{path}.type"), reason)
}

/// One text part as a plain string, as OpenAI's own examples write it.
fn openai_content(parts: Vec<Value>) -> Value {
    match parts.as_slice() {
        [part] if part.get("type").and_then(Value::as_str) == Some("text") => {
            part.get("text").cloned().unwrap_or_default()
        }
        [] => Value::String(String::new()),
        _ => Value::Array(parts),
    }
}

fn text_of(part: &Value, key: &str) -> String {
    part.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A text part (OpenAI) or text block (Anthropic): the two formats write it alike.
fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn to_anthropic(messages: Value) -> Result<AnthropicConversation, TranslateError> {
        openai_to_anthropic(messages.as_array().unwrap())
    }

    fn untranslatable_field<T>(result: Result<T, TranslateError>) -> String {
        match result {
            Err(TranslateError::Untranslatable { field, .. }) => field,
            Err(other) => panic!("expected Untranslatable, got {other:?}"),
            Ok(_) => panic!("expected Untranslatable, got a translation"),
        }
    }

    #[test]
    fn system_and_developer_messages_join_the_system_prompt() {
        let conversation = to_anthropic(json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello!"},
        ]))
        .unwrap();
        assert_eq!(
            conversation.system.as_deref(),
            Some("You are a helpful assistant.\n\nAnswer in French.")
        );
        assert_eq!(
            conversation.messages,
            vec![json!({"role": "user", "content": "Hello!"})]
        );
        let back = anthropic_to_openai(
            Some(
                &json!([{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Two."}]),
            ),
            &[json!({"role": "user", "content": "Hi"})],
        )
        .unwrap();
        assert_eq!(
            back[0],
            json!({"role": "system", "content": "One.\n\nTwo."})
        );
    }

    #[test]
    fn multi_turn_text_keeps_its_turns() {
        let openai = json!([
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi, I'm Claude. How can I help you?"},
            {"role": "user", "content": [{"type": "text", "text": "Can you explain LLMs in plain English?"}]},
        ]);
        let conversation = to_anthropic(openai).unwrap();
        assert_eq!(conversation.system, None);
        let expected = json!([
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi, I'm Claude. How can I help you?"},
            {"role": "user", "content": "Can you explain LLMs in plain English?"},
        ]);
        assert_eq!(Value::Array(conversation.messages), expected);
        let back = anthropic_to_openai(None, expected.as_array().unwrap()).unwrap();
        assert_eq!(Value::Array(back), expected);
    }

    #[test]
    fn consecutive_messages_of_one_role_merge_for_anthropic() {
        let conversation = to_anthropic(json!([
            {"role": "user", "content": "First."},
            {"role": "user", "content": [{"type": "text", "text": "Second."}]},
            {"role": "assistant", "content": "A."},
            {"role": "assistant", "content": "B."},
            {"role": "user", "content": "Third."},
        ]))
        .unwrap();
        assert_eq!(
            Value::Array(conversation.messages),
            json!([
                {"role": "user", "content": [{"type": "text", "text": "First."},
                    {"type": "text", "text": "Second."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A."},
                    {"type": "text", "text": "B."}]},
                {"role": "user", "content": "Third."},
            ])
        );
    }

    #[test]
    fn images_translate_both_ways() {
        let conversation =
            to_anthropic(fixtures::openai_vision_request()["messages"].clone()).unwrap();
        let expected = json!([{"role": "user", "content": [
            {"type": "text", "text": "What's in this image?"},
            {"type": "image", "source": {"type": "url", "url": fixtures::IMAGE_URL}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                "data": "iVBORw0KGgo="}},
        ]}]);
        assert_eq!(Value::Array(conversation.messages), expected);
        let back = anthropic_to_openai(None, expected.as_array().unwrap()).unwrap();
        assert_eq!(
            Value::Array(back),
            json!([{"role": "user", "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": fixtures::IMAGE_URL}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]}])
        );
    }

    #[test]
    fn tool_calls_and_results_translate_both_ways() {
        let conversation =
            to_anthropic(fixtures::openai_tool_conversation()["messages"].clone()).unwrap();
        let anthropic = fixtures::anthropic_tool_conversation();
        assert_eq!(Value::Array(conversation.messages), anthropic["messages"]);
        let back = anthropic_to_openai(None, anthropic["messages"].as_array().unwrap()).unwrap();
        assert_eq!(
            Value::Array(back),
            fixtures::openai_tool_conversation()["messages"]
        );
    }

    #[test]
    fn tool_results_come_before_the_users_text() {
        let back = anthropic_to_openai(
            None,
            &[
                json!({"role": "user", "content": "Weather?"}),
                json!({"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]}),
                json!({"role": "user", "content": [
                    {"type": "text", "text": "Here you go."},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true,
                        "content": [{"type": "text", "text": "timeout"}]}]}),
            ],
        )
        .unwrap();
        assert_eq!(
            back[1],
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1",
                "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]})
        );
        assert_eq!(
            back[2],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "timeout"})
        );
        assert_eq!(back[3], json!({"role": "user", "content": "Here you go."}));
    }

    #[test]
    fn arguments_that_are_not_an_object_are_refused() {
        for arguments in ["[1, 2]", "not json", "\"text\""] {
            let messages = json!([
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": arguments}},
                ]},
                {"role": "tool", "tool_call_id": "a", "content": "1"},
                {"role": "tool", "tool_call_id": "b", "content": "2"},
            ]);
            assert_eq!(
                untranslatable_field(to_anthropic(messages)),
                "messages[1].tool_calls[1].function.arguments"
            );
        }
        let empty = arguments_object("", "x").unwrap();
        assert_eq!(empty, json!({}));
    }

    #[test]
    fn what_has_no_anthropic_equivalent_is_refused() {
        let cases = [
            (
                json!([{"role": "user", "content": [{"type": "input_audio",
                    "input_audio": {"data": "AAAA", "format": "wav"}}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "hologram"}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "system", "content": [{"type": "image_url",
                    "image_url": {"url": "https://x"}}]}, {"role": "user", "content": "Hi"}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "data:image/svg+xml,<svg/>"}}]}]),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant",
                    "audio": {"id": "audio_1"}}, {"role": "user", "content": "Again"}]),
                "messages[1].audio",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null,
                    "function_call": {"name": "f", "arguments": "{}"}},
                    {"role": "function", "name": "f", "content": "1"}]),
                "messages[1].function_call",
            ),
            (
                json!([{"role": "user", "content": "Hi"},
                    {"role": "function", "name": "f", "content": "1"}]),
                "messages[1].role",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}]),
                "messages[1].role",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "g", "input": "x"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "1"}]),
                "messages[1].tool_calls[0].type",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url",
                        "image_url": {"url": "https://x"}}]}]),
                "messages[2].content[0].type",
            ),
        ];
        for (messages, expected) in cases {
            assert_eq!(
                untranslatable_field(to_anthropic(messages.clone())),
                expected,
                "{messages}"
            );
        }
    }

    #[test]
    fn what_has_no_openai_equivalent_is_refused() {
        let cases = [
            (
                json!([{"role": "user", "content": [{"type": "document", "source": {"type": "base64",
                    "media_type": "application/pdf", "data": "JVBERi0="}}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Hmm", "signature": "sig"},
                    {"type": "text", "text": "Hello"}]}, {"role": "user", "content": "More"}]),
                "messages[1].content[0].type",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [
                    {"type": "redacted_thinking", "data": "x"}]}, {"role": "user", "content": "More"}]),
                "messages[1].content[0].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image", "source":
                    {"type": "file", "file_id": "file_1"}}]}]),
                "messages[0].content[0].source.type",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                        "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}]}]),
                "messages[2].content[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]),
                "messages[1].role",
            ),
        ];
        for (messages, expected) in cases {
            let result = anthropic_to_openai(None, messages.as_array().unwrap());
            assert_eq!(untranslatable_field(result), expected, "{messages}");
        }
    }
}
