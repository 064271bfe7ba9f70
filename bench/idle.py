#!/usr/bin/env python3
"""bench/idle.py — memory per idle keep-alive HTTP/1.1 connection (run by bench/idle.sh).

Opens N connections to URL's host, sends one request on each (keep-alive), reads its answer,
then leaves every connection open and idle. Prints the server's resident memory (VmRSS of
PID) before and after, and the difference per connection. Usage:

    idle.py PID N METHOD URL [BODY]
"""

import socket
import sys
import time
import urllib.parse


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def answer_complete(data):
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = data[:head_end].decode("latin-1").lower()
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            return len(data) >= head_end + 4 + int(value.strip())
    return True


def main():
    pid, n, method, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    body = sys.argv[5].encode() if len(sys.argv) > 5 else b""
    parts = urllib.parse.urlsplit(url)
    request = (
        f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    time.sleep(0.5)
    before = rss_kib(pid)
    sockets = []
    failed = 0
    for _ in range(n):
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.sendall(request)
        data = b""
        while not answer_complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"HTTP/1.1 2"):
            failed += 1
        sockets.append(sock)
    # Past the edge's one second with a head buffer: the connections are long idle now.
    time.sleep(2.5)
    after = rss_kib(pid)
    print(
        f"idle n={n} failed={failed} rss_before_kib={before} rss_after_kib={after} "
        f"kib_per_idle={(after - before) / n:.2f}"
    )
    for sock in sockets:
        sock.close()


if __name__ == "__main__":
    main()
