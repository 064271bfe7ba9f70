//! Tool definitions and the choice among them: OpenAI `tools` (functions), `tool_choice` and
//! `parallel_tool_calls` ⇄ Anthropic `tools` (custom tools) and `tool_choice` (with its
//! `disable_parallel_tool_use`).

use super::fields::{get, get_array, get_object, get_str, invalid, untranslatable, Object};
use super::TranslateError;
use serde_json::{json, Value};

/// Writes `client`'s tools, each translated by `tool` (given its index), into `provider`;
/// whether there were any.
fn translate_tools(
    client: &Object,
    provider: &mut Object,
    tool: fn(&Value, usize) -> Result<Value, TranslateError>,
) -> Result<bool, TranslateError> {
    let Some(tools) = get_array(client, "tools").filter(|tools| !tools.is_empty()) else {
        return Ok(false);
    };
    let tools = tools
        .iter()
        .enumerate()
        .map(|(index, definition)| tool(definition, index))
        .collect::<Result<Vec<_>, _>>()?;
    provider.insert("tools".into(), Value::Array(tools));
    Ok(true)
}

/// Writes the Anthropic equivalents of `client`'s OpenAI tool fields into `provider`.
pub(super) fn openai_to_anthropic(
    client: &Object,
    provider: &mut Object,
) -> Result<(), TranslateError> {
    let tools = translate_tools(client, provider, openai_tool)?;
    let mut choice = match get(client, "tool_choice") {
        Some(choice) => Some(openai_choice(choice)?),
        None => None,
    };
    let one_call_at_most =
        get(client, "parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    if one_call_at_most && tools {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(choice) = choice.as_object_mut() {
            // Anthropic refuses the flag beside `none`, where no tool is called anyway.
            if choice.get("type").and_then(Value::as_str) != Some("none") {
                choice.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
    }
    if let Some(choice) = choice {
        provider.insert("tool_choice".into(), choice);
    }
    Ok(())
}

fn openai_tool(tool: &Value, index: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{index}]");
    let tool = tool
        .as_object()
        .ok_or_else(|| invalid(&path, "must be an object"))?;
    if get_str(tool, "type") != Some("function") {
        return Err(untranslatable(
            format!("{path}.type"),
            "only function tools have an Anthropic equivalent",
        ));
    }
    let function = get_object(tool, "function")
        .ok_or_else(|| invalid(format!("{path}.function"), "must be an object"))?;
    let mut translated = Object::new();
    translated.insert(
        "name".into(),
        get(function, "name").cloned().unwrap_or_default(),
    );
    if let Some(description) = get(function, "description") {
        translated.insert("description".into(), description.clone());
    }
    // A function without parameters takes none; Anthropic requires the schema.
    let schema = get(function, "parameters")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    translated.insert("input_schema".into(), schema);
    // `strict` is dropped: the schema still reaches the model, only OpenAI's guarantee that the
    // arguments match it is lost.
    Ok(Value::Object(translated))
}

fn openai_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(invalid(
                "tool_choice",
                "must be `none`, `auto` or `required`",
            )),
        },
        Value::Object(choice) => match get_str(choice, "type") {
            Some("function") => {
                let name = get_object(choice, "function")
                    .and_then(|function| get_str(function, "name"))
                    .ok_or_else(|| invalid("tool_choice.function.name", "must be a string"))?;
                Ok(json!({"type": "tool", "name": name}))
            }
            _ => Err(untranslatable(
                "tool_choice.type",
                "only a choice of one function has an Anthropic equivalent",
            )),
        },
        _ => Err(invalid("tool_choice", "must be a string or an object")),
    }
}

/// Writes the OpenAI equivalents of `client`'s Anthropic tool fields into `provider`.
pub(super) fn anthropic_to_openai(
    client: &Object,
    provider: &mut Object,
) -> Result<(), TranslateError> {
    let tools = translate_tools(client, provider, anthropic_tool)?;
    if let Some(choice) = get_object(client, "tool_choice") {
        let translated = match get_str(choice, "type") {
            Some("auto") => json!("auto"),
            Some("none") => json!("none"),
            Some("any") => json!("required"),
            Some("tool") => {
                let name = get_str(choice, "name")
                    .ok_or_else(|| invalid("tool_choice.name", "must be a string"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            _ => {
                return Err(invalid(
                    "tool_choice.type",
                    "must be `auto`, `any`, `tool` or `none`",
                ))
            }
        };
        provider.insert("tool_choice".into(), translated);
        let one_call_at_most =
            get(choice, "disable_parallel_tool_use").and_then(Value::as_bool) == Some(true);
        if one_call_at_most && tools {
            provider.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(())
}

fn anthropic_tool(tool: &Value, index: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{index}]");
    let tool = tool
        .as_object()
        .ok_or_else(|| invalid(&path, "must be an object"))?;
    // Anthropic's own tools (web search, code execution, bash, text editor, computer use) run
    // on Anthropic's side or follow Anthropic's schemas; OpenAI has no counterpart.
    let kind = get_str(tool, "type").unwrap_or("custom");
    if kind != "custom" {
        return Err(untranslatable(
            format!("{path}.type"),
            format!("Anthropic's `{kind}` tool has no OpenAI equivalent"),
        ));
    }
    let mut function = Object::new();
    function.insert(
        "name".into(),
        get(tool, "name").cloned().unwrap_or_default(),
    );
    if let Some(description) = get(tool, "description") {
        function.insert("description".into(), description.clone());
    }
    function.insert(
        "parameters".into(),
        get(tool, "input_schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    );
    // `cache_control` is dropped: caching changes the price, not the answer.
    Ok(json!({"type": "function", "function": function}))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn to_anthropic(client: Value) -> Result<Object, TranslateError> {
        let mut provider = Object::new();
        openai_to_anthropic(client.as_object().unwrap(), &mut provider)?;
        Ok(provider)
    }

    fn to_openai(client: Value) -> Result<Object, TranslateError> {
        let mut provider = Object::new();
        anthropic_to_openai(client.as_object().unwrap(), &mut provider)?;
        Ok(provider)
    }

    #[test]
    fn function_tools_become_custom_tools_and_back() {
        let openai = fixtures::openai_tools_request();
        let anthropic = to_anthropic(openai.clone()).unwrap();
        assert_eq!(
            anthropic["tools"],
            json!([{
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "input_schema": fixtures::weather_schema(),
            }])
        );
        assert_eq!(anthropic["tool_choice"], json!({"type": "auto"}));
        let back = to_openai(Value::Object(anthropic)).unwrap();
        assert_eq!(back["tools"], openai["tools"]);
        assert_eq!(back["tool_choice"], json!("auto"));
    }

    #[test]
    fn a_function_without_parameters_takes_an_empty_object() {
        let anthropic = to_anthropic(json!({"tools": [{"type": "function",
            "function": {"name": "now", "strict": true}}]}))
        .unwrap();
        assert_eq!(
            anthropic["tools"],
            json!([{"name": "now", "input_schema": {"type": "object", "properties": {}}}])
        );
    }

    #[test]
    fn every_tool_choice_maps_both_ways() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (openai, anthropic) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"type": "tool", "name": "f"}),
            ),
        ] {
            let translated =
                to_anthropic(json!({"tools": tools, "tool_choice": openai.clone()})).unwrap();
            assert_eq!(translated["tool_choice"], anthropic);
            let back = to_openai(json!({"tool_choice": anthropic})).unwrap();
            assert_eq!(back["tool_choice"], openai);
        }
    }

    #[test]
    fn one_call_at_a_time_maps_both_ways() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let anthropic =
            to_anthropic(json!({"tools": tools, "parallel_tool_calls": false})).unwrap();
        assert_eq!(
            anthropic["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        let anthropic = to_anthropic(
            json!({"tools": tools, "tool_choice": "required", "parallel_tool_calls": false}),
        )
        .unwrap();
        assert_eq!(
            anthropic["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        let back = to_openai(
            json!({"tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}),
        )
        .unwrap();
        assert_eq!(back["tool_choice"], json!("required"));
        assert_eq!(back["parallel_tool_calls"], json!(false));
        let no_tools = to_anthropic(json!({"parallel_tool_calls": false})).unwrap();
        assert!(no_tools.get("tool_choice").is_none());
    }

    #[test]
    fn tools_without_an_equivalent_are_refused() {
        assert_eq!(
            to_anthropic(json!({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]})),
            Err(untranslatable(
                "tools[0].type",
                "only function tools have an Anthropic equivalent"
            ))
        );
        assert!(matches!(
            to_anthropic(json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}})),
            Err(TranslateError::Untranslatable { field, .. }) if field == "tool_choice.type"
        ));
        assert!(matches!(
            to_openai(json!({"tools": [
                {"name": "f", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"}]})),
            Err(TranslateError::Untranslatable { field, .. }) if field == "tools[1].type"
        ));
    }
}
