#!/usr/bin/env python3
"""A test origin for bench/upstream_calls.sh: answers every path after a fixed delay, and counts
what it served, so the bench can say how many upstream requests the gateway made.

  /news      20 ms   {"headline": "..."}
  /ai        30 ms   {"answer": "..."}
  /weather   50 ms   {"sky": "..."}          (the slowest of the fan-in's three)
  any other  200 ms  {"version": N}          (the long-polled resource coalescing shares)
  /count     at once {"requests": N, "resource": M}

Standard library only (asyncio on raw sockets, HTTP/1.1 keep-alive), so it needs no install.
Usage: slow_origin.py PORT
"""
import asyncio
import json
import sys

DELAYS = {"/news": 0.020, "/ai": 0.030, "/weather": 0.050}
RESOURCE_DELAY = 0.200
BODIES = {"/news": {"headline": "holdfast ships"}, "/ai": {"answer": "42"}, "/weather": {"sky": "clear"}}
counts = {"requests": 0, "resource": 0}


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length:
                await reader.readexactly(length)
            if path == "/count":
                body = counts
            else:
                counts["requests"] += 1
                if path not in DELAYS:
                    counts["resource"] += 1
                await asyncio.sleep(DELAYS.get(path, RESOURCE_DELAY))
                body = BODIES.get(path, {"version": counts["resource"]})
            data = json.dumps(body).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(data)).encode() + b"\r\n\r\n" + data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, IndexError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
