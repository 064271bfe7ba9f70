"""A streamed chat through Holdfast with the official OpenAI SDK, unmodified, cut short and
resumed: reads CUT chunks, closes the connection, then resumes the stream at
RESUME_URL/v1/streams/<id> after the chunks it had, with the SDK's own client.

    python3 llm_resume.py BASE_URL RESUME_URL API_KEY MODEL CUT

Prints one JSON line: {"stream", "resume", "before", "after", "text", "chunks"}: the stream's
id and resume path (from the answer's head), the text read before the cut and after it, the
whole text, and how many chunks were read in all; on an API error: {"error_status",
"error_message"}.
"""

import json
import sys

import openai
from openai.types.chat import ChatCompletionChunk


def text_of(chunk):
    return "".join(choice.delta.content or "" for choice in chunk.choices)


def main(base_url, resume_url, api_key, model, cut):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0)
    messages = [{"role": "user", "content": "Tell me a long story."}]
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=True)
        stream_id = raw.headers.get("holdfast-stream")
        resume_path = raw.headers.get("holdfast-resume")
        events = raw.parse()
        before, chunks = "", 0
        for chunk in events:
            chunks += 1
            before += text_of(chunk)
            if chunks == cut:
                break
        # The connection goes, halfway through the answer.
        events.close()

        resumer = openai.OpenAI(base_url=resume_url + "/v1", api_key=api_key, max_retries=0)
        rest = resumer.get(
            f"/streams/{stream_id}",
            cast_to=ChatCompletionChunk,
            stream=True,
            stream_cls=openai.Stream[ChatCompletionChunk],
            options={"headers": {"Last-Event-ID": str(chunks), "Accept": "text/event-stream"}},
        )
        after = ""
        for chunk in rest:
            chunks += 1
            after += text_of(chunk)
        return {"stream": stream_id, "resume": resume_path, "before": before, "after": after,
                "text": before + after, "chunks": chunks}
    except openai.APIStatusError as error:
        return {"error_status": error.status_code, "error_message": str(error.message)}


if __name__ == "__main__":
    base_url, resume_url, api_key, model, cut = sys.argv[1:6]
    print(json.dumps(main(base_url, resume_url, api_key, model, int(cut))))
