#!/usr/bin/env python3
"""A Holdfast WebSocket client: `websockets`, one frame per message, reconnecting on close 1001.

It opens the channel of a `longpoll` route as a WebSocket (the same URL as the poll; http:// is
taken as ws://, https:// as wss://) and prints each message as one JSON line. When the socket
ends — the gateway closes it with 1001 at shutdown or on an upgrade, or the connection drops —
it reconnects at once (backing off while the gateway cannot be reached).

On a raw route (the default, like conf/example.yaml's /poll) a frame is the body as published
and carries no cursor, so the client reconnects without one: it gets the messages published
after it is back, and the ones published while it was away are lost. For gap-free resume use a
route with `format: envelope` and pass --envelope: each frame is then a JSON
{"id","cursor","content_type","data"}, the client prints its `data`, and reconnects with the
cursor of the last message seen as `?cursor=`, so the messages published meanwhile still
arrive, exactly once and in order (on this instance, or on another one sharing the same Redis
backplane).

    pip install websockets
    python3 examples/python/websocket.py ws://127.0.0.1:8080/poll
    # in another shell:
    curl -X POST http://127.0.0.1:8080/push -H 'content-type: application/json' -d '{"news":"hello"}'

Options: --envelope on a `format: envelope` route, --cursor to resume where an earlier run
stopped (on a raw route it applies to the first connection only), --max N to stop after N
messages.
"""

import argparse
import base64
import json
import sys
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

GOING_AWAY = 1001  # the gateway shuts down or is upgraded: reconnect with the last cursor
SERVER_ERROR = 1011  # the backplane failed: try again a little later


def socket_url(url, cursor=None):
    """`url` as a ws:// or wss:// URL, with `?cursor=` set when there is a cursor."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "cursor"]
    if cursor:
        query.append(("cursor", cursor))
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def cursor_gone(frame):
    """The `oldest` of a {"type":"cursor-gone","oldest":...} frame, or None."""
    try:
        data = json.loads(frame)
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict) and data.get("type") == "cursor-gone":
        return data.get("oldest")
    return None


def read_frame(frame, envelope):
    """A frame as (cursor, line): the cursor is None for a raw frame (or a frame that was not
    an envelope), the line is what gets printed."""
    if isinstance(frame, bytes):
        # A body that is not UTF-8 comes as a binary frame (raw routes only).
        data = base64.b64encode(frame).decode()
        return None, {"cursor": None, "data": data, "encoding": "base64"}
    try:
        data = json.loads(frame)
    except ValueError:
        data = frame
    if envelope:
        if isinstance(data, dict) and "cursor" in data and "data" in data:
            return data["cursor"], {"cursor": data["cursor"], "data": data["data"]}
        print("not an envelope: is the route's format `envelope`?", file=sys.stderr)
    return None, {"cursor": None, "data": data}


def subscribe_forever(url, cursor=None, envelope=False, max_messages=None, out=sys.stdout):
    """Subscribes to `url`; prints each message as one JSON line; returns the last cursor."""
    received = 0
    backoff = 0.5
    while max_messages is None or received < max_messages:
        try:
            # The gateway pings a quiet socket every `keepalive` (15 s by default) and
            # `websockets` answers; its own pings (every 20 s) are answered by the gateway.
            # Bodies are capped by the publish route's `max_body`, frames here are not.
            ws = connect(socket_url(url, cursor), compression=None, max_size=None)
        except InvalidStatus as error:
            # A refusal (problem+json): a cap or the backplane says when to come back.
            response = error.response
            body = response.body.decode(errors="replace") if response.body else ""
            print(f"refused {response.status_code}: {body}", file=sys.stderr)
            if response.status_code not in (429, 503):
                return cursor
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        except (OSError, InvalidHandshake) as error:
            print(f"connect failed: {error}; retrying in {backoff:.1f}s", file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)
            continue
        backoff = 0.5
        # Only a socket opened with a cursor can be told that cursor is older than the buffer.
        resumed = cursor is not None
        with ws:
            try:
                while max_messages is None or received < max_messages:
                    frame = ws.recv()
                    if resumed:
                        resumed = False
                        oldest = cursor_gone(frame)
                        if oldest is not None:
                            # The socket goes on from the oldest message kept: the ones
                            # before it are gone for good.
                            print(f"missed messages; resumed from {oldest}", file=sys.stderr)
                            cursor = oldest if envelope else None
                            continue
                    message_cursor, line = read_frame(frame, envelope)
                    if envelope:
                        cursor = message_cursor or cursor
                    else:
                        # A raw frame has no cursor: the next socket starts at the next message.
                        cursor = None
                    print(json.dumps(line), file=out, flush=True)
                    received += 1
            except ConnectionClosed as error:
                code = error.rcvd.code if error.rcvd else None
                if code == GOING_AWAY:
                    print("the gateway is going away; reconnecting", file=sys.stderr)
                elif code == SERVER_ERROR:
                    print(f"closed: {error}; reconnecting in {backoff:.1f}s", file=sys.stderr)
                    time.sleep(backoff)
                elif code is not None and code != 1000:
                    # 1002, 1007, 1008, 1009: the gateway did not like what this client sent.
                    print(f"closed: {error}", file=sys.stderr)
                    return cursor
                else:
                    print(f"socket broke: {error}; reconnecting", file=sys.stderr)
    return cursor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/poll")
    parser.add_argument("--envelope", action="store_true",
                        help="the route has `format: envelope`: print `data`, resume by `cursor`")
    parser.add_argument("--cursor", help="resume after this cursor")
    parser.add_argument("--max", type=int, dest="max_messages", help="stop after N messages")
    args = parser.parse_args()
    try:
        cursor = subscribe_forever(args.url, args.cursor, args.envelope, args.max_messages)
    except KeyboardInterrupt:
        return 130
    print(f"last cursor: {cursor}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
