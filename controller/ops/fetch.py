"""One HTTP request to a firepath REST API (a master's or a switch client's), as every operator command and
`firepath master --health` make it: whatever answers on the port, the command gets an answer or one
`AnswerError` (an OSError: callers report it as "unreachable"), never a traceback and never a hang.

- no proxy (`http_proxy` in the operator's environment would have carried the admin token to the proxy)
  and no redirect followed (a `302` to another host would have carried it there: urllib keeps the
  Authorization header on a redirect): a 3xx is an answer like any other status;
- a reply that is not HTTP (`BadStatusLine`, a header line over 64 KiB, over 100 headers, a body cut short)
  is an AnswerError naming it: these are `http.client.HTTPException`, not OSError, and went up as tracebacks;
- at most `limit` bytes of body (a `Content-Length: 99999999999` made `read()` allocate it all:
  MemoryError; an endless body filled the memory);
- `timeout` for the connection and each read, and `DEADLINE_FACTOR` x `timeout` for the whole request: a
  server that sends one byte every second kept a command waiting for ever;
- a JSON body nested too deep for the parser (RecursionError) is a ValueError, as any other bad JSON.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Any

#: bytes of an answer read at most (a Jupiter-size fabric's /v1/topology is a few tens of MB)
MAX_ANSWER = 256 << 20
#: the whole request (connect, headers, body) gets this many times the per-read timeout
DEADLINE_FACTOR = 3


class AnswerError(OSError):
    """No usable HTTP answer: why, in one line (`str(e)`)."""


def fetch(url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 2.0, limit: int = MAX_ANSWER) -> tuple[int, bytes]:
    """(status, body) of one request to `url` (http://host:port/path). Connection failures raise OSError,
    anything else wrong with the answer AnswerError (an OSError too)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise AnswerError(f"{url}: not an http://host:port URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + DEADLINE_FACTOR * timeout
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    expired = threading.Event()

    def cut() -> None:              # the deadline: a blocked read ends (EOF or an error) at once
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    late = f"no complete answer within {DEADLINE_FACTOR * timeout:g} s"
    timer = threading.Timer(DEADLINE_FACTOR * timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = resp.read1(min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise AnswerError(f"answer of more than {limit} bytes (refused)")
            if time.monotonic() > deadline:
                raise AnswerError(late)
        if expired.is_set():
            raise AnswerError(late)
        if resp.length:             # bytes of its Content-Length never sent: the connection closed
            raise AnswerError(f"answer cut short: {size} bytes of the {size + resp.length} announced")
        return resp.status, b"".join(chunks)
    except http.client.HTTPException as e:
        if expired.is_set():
            raise AnswerError(late) from None
        text = " ".join(str(e).split())[:120]
        raise AnswerError(f"not an HTTP answer ({type(e).__name__}: {text})") from None
    except OSError:
        if expired.is_set():
            raise AnswerError(late) from None
        raise
    finally:
        timer.cancel()
        conn.close()


def fetch_json(url: str, timeout: float = 1.0) -> Any:
    """The JSON a GET of `url` answers with 200; AnswerError for another status (a 3xx is not followed) or
    an answer that is not HTTP, too big or too slow (`fetch`), ValueError for bad JSON."""
    status, raw = fetch(url, timeout=timeout)
    if status != 200:
        raise AnswerError(f"{url}: HTTP {status}")
    return loads(raw)


def loads(raw: bytes) -> Any:
    """json.loads; nesting too deep is a ValueError like any other bad JSON."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None
