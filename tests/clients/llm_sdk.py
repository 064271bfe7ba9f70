"""One chat through Holdfast with an official SDK, unmodified: prints what the SDK returned.

    python3 llm_sdk.py openai|anthropic BASE_URL MODEL stream|whole [tool]

Prints one JSON line: {"text", "finish", "input_tokens", "output_tokens", "model", "tool"};
on an API error: {"error_status", "error_message"} (exit 0, so the test reads it).
"""

import json
import sys


def with_openai(base_url, model, stream, tool):
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="holdfast-client", max_retries=0)
    kwargs = {}
    if tool:
        kwargs["tools"] = [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    try:
        if not stream:
            answer = client.chat.completions.create(model=model, messages=messages, **kwargs)
            choice = answer.choices[0]
            calls = choice.message.tool_calls or []
            return {
                "text": choice.message.content or "",
                "finish": choice.finish_reason,
                "input_tokens": answer.usage.prompt_tokens,
                "output_tokens": answer.usage.completion_tokens,
                "model": answer.model,
                "tool": [{"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in calls],
            }
        text, finish, usage, chunks, calls = "", None, None, 0, {}
        events = client.chat.completions.create(
            model=model, messages=messages, stream=True,
            stream_options={"include_usage": True}, **kwargs)
        for chunk in events:
            chunks += 1
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    if call.function and call.function.arguments:
                        entry["arguments"] += call.function.arguments
                finish = choice.finish_reason or finish
        return {
            "text": text, "finish": finish, "chunks": chunks,
            "input_tokens": usage.prompt_tokens if usage else None,
            "output_tokens": usage.completion_tokens if usage else None,
            "model": chunk.model if chunks else None,
            "tool": [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in calls.values()],
        }
    except openai.APIStatusError as error:
        return {"error_status": error.status_code, "error_message": str(error.message)}
    except openai.APIError as error:
        return {"error_status": None, "error_message": str(error)}


def with_anthropic(base_url, model, stream, tool):
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key="holdfast-client", max_retries=0)
    kwargs = {}
    if tool:
        kwargs["tools"] = [{"name": "get_weather", "description": "The weather in a city",
                            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    messages = [{"role": "user", "content": "Say hello."}]
    try:
        if not stream:
            answer = client.messages.create(model=model, max_tokens=256, system="You are terse.", messages=messages, **kwargs)
        else:
            with client.messages.stream(model=model, max_tokens=256, system="You are terse.", messages=messages, **kwargs) as events:
                for _ in events:
                    pass
                answer = events.get_final_message()
        text = "".join(block.text for block in answer.content if block.type == "text")
        return {
            "text": text,
            "finish": answer.stop_reason,
            "input_tokens": answer.usage.input_tokens,
            "output_tokens": answer.usage.output_tokens,
            "model": answer.model,
            "tool": [{"name": b.name, "arguments": b.input} for b in answer.content if b.type == "tool_use"],
        }
    except anthropic.APIStatusError as error:
        return {"error_status": error.status_code, "error_message": str(error.message)}
    except anthropic.APIError as error:
        return {"error_status": None, "error_message": str(error)}


def main():
    sdk, base_url, model, mode = sys.argv[1:5]
    tool = len(sys.argv) > 5 and sys.argv[5] == "tool"
    run = with_openai if sdk == "openai" else with_anthropic
    print(json.dumps(run(base_url, model, mode == "stream", tool)))


if __name__ == "__main__":
    main()
