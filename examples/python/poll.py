#!/usr/bin/env python3
"""A Holdfast long-poll client in the seeds' style: `requests`, 200 -> data, 204 -> poll again.

It sends back the `Poll-Cursor` header of every answer as `?cursor=`, so a message published
while this client was between two polls (or talking to another Holdfast instance sharing the
same Redis backplane) is still delivered, exactly once and in order.

    pip install requests
    python3 examples/python/poll.py http://127.0.0.1:8080/poll
    # in another shell:
    curl -X POST http://127.0.0.1:8080/push -H 'content-type: application/json' -d '{"news":"hello"}'

Options: --cursor to resume where an earlier run stopped, --max N to stop after N messages,
--wait SECONDS to ask for a shorter hold than the route's timeout.
"""

import argparse
import json
import sys
import time

import requests


def poll_forever(url, cursor=None, wait=None, max_messages=None, out=sys.stdout):
    """Long-polls `url`; prints each message as one JSON line; returns the last cursor."""
    session = requests.Session()  # keeps the connection alive between polls
    received = 0
    backoff = 0.5
    while max_messages is None or received < max_messages:
        params = {}
        if cursor:
            params["cursor"] = cursor
        if wait is not None:
            params["wait"] = wait
        try:
            # The read timeout must be longer than the route's hold (30 s for /poll).
            response = session.get(url, params=params, timeout=(5, 120))
        except requests.RequestException as error:
            print(f"poll failed: {error}; retrying in {backoff:.1f}s", file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)
            continue
        backoff = 0.5

        if response.status_code == 200:
            # The published body as-is; its cursor says where the next poll resumes.
            cursor = response.headers.get("Poll-Cursor", cursor)
            content_type = response.headers.get("Content-Type", "")
            if content_type.startswith("application/json"):
                data = response.json()
            else:
                data = response.text
            # A `format: batch` route answers {"messages": [...], "cursor": "..."}.
            if isinstance(data, dict) and "messages" in data and "cursor" in data:
                messages = [message["data"] for message in data["messages"]]
                cursor = data["cursor"] or cursor
            else:
                messages = [data]
            for message in messages:
                print(json.dumps({"cursor": cursor, "data": message}), file=out, flush=True)
                received += 1
        elif response.status_code == 204:
            # Nothing came before the hold ended: poll again with the unchanged cursor.
            cursor = response.headers.get("Poll-Cursor", cursor)
        elif response.status_code == 410:
            # The cursor is older than the channel's buffer: some messages are gone for good.
            oldest = response.json().get("oldest")
            print(f"missed messages; resuming from the oldest kept: {oldest}", file=sys.stderr)
            cursor = oldest
        elif response.status_code in (429, 502, 503, 504):
            # A cap, a restart or the backplane: wait as asked, then poll again.
            delay = float(response.headers.get("Retry-After", "1"))
            time.sleep(delay)
        else:
            print(f"unexpected {response.status_code}: {response.text}", file=sys.stderr)
            time.sleep(1)
    return cursor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8080/poll")
    parser.add_argument("--cursor", help="resume after this cursor")
    parser.add_argument("--wait", type=float, help="hold at most this many seconds per poll")
    parser.add_argument("--max", type=int, dest="max_messages", help="stop after N messages")
    args = parser.parse_args()
    try:
        cursor = poll_forever(args.url, args.cursor, args.wait, args.max_messages)
    except KeyboardInterrupt:
        return 130
    print(f"last cursor: {cursor}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
