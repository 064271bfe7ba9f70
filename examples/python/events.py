#!/usr/bin/env python3
"""A Holdfast Server-Sent Events client: `requests` and `sseclient-py`, resuming by Last-Event-ID.

It opens the channel of a `longpoll` route as an event stream (`Accept: text/event-stream`) and
prints each message as one JSON line. When the stream ends — the gateway restarts or is
upgraded, or the connection drops — it reconnects at once and sends the id of the last event it
saw as `Last-Event-ID`, so the messages published meanwhile still arrive, exactly once and in
order (on this instance, or on another one sharing the same Redis backplane).

    pip install requests sseclient-py
    python3 examples/python/events.py http://127.0.0.1:8080/poll
    # in another shell:
    curl -X POST http://127.0.0.1:8080/push -H 'content-type: application/json' -d '{"news":"hello"}'

Options: --last-event-id to resume where an earlier run stopped, --max N to stop after N
messages.
"""

import argparse
import json
import sys
import time

import requests
import sseclient


def stream_forever(url, last_event_id=None, max_messages=None, out=sys.stdout):
    """Streams `url`; prints each message as one JSON line; returns the last event id."""
    received = 0
    backoff = 0.5
    while max_messages is None or received < max_messages:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            # The read timeout only has to outlast the route's `keepalive` (15 s by default):
            # a quiet stream still gets a comment line that often.
            response = requests.get(url, headers=headers, stream=True, timeout=(5, 60))
        except requests.RequestException as error:
            print(f"connect failed: {error}; retrying in {backoff:.1f}s", file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)
            continue
        if response.status_code != 200:
            # A refusal (problem+json): a cap or the backplane says when to come back.
            print(f"refused {response.status_code}: {response.text}", file=sys.stderr)
            if response.status_code not in (429, 503):
                return last_event_id
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        backoff = 0.5
        try:
            for event in sseclient.SSEClient(response).events():
                if event.id:
                    last_event_id = event.id
                if event.event == "reset":
                    # The id was older than the channel's buffer: the stream goes on from the
                    # oldest message kept, and the ones before it are gone for good.
                    print(f"missed messages; resumed from {event.id}", file=sys.stderr)
                    continue
                try:
                    data = json.loads(event.data)
                except ValueError:
                    data = event.data
                print(json.dumps({"id": event.id, "data": data}), file=out, flush=True)
                received += 1
                if max_messages is not None and received >= max_messages:
                    break
        except requests.RequestException as error:
            print(f"stream broke: {error}; reconnecting", file=sys.stderr)
        finally:
            response.close()
    return last_event_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8080/poll")
    parser.add_argument("--last-event-id", help="resume after this event id (a cursor)")
    parser.add_argument("--max", type=int, dest="max_messages", help="stop after N messages")
    args = parser.parse_args()
    try:
        last = stream_forever(args.url, args.last_event_id, args.max_messages)
    except KeyboardInterrupt:
        return 130
    print(f"last event id: {last}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
