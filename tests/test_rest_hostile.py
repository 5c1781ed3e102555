"""Hostile input to the master's and the switch client's REST APIs (tester findings 3 and 5): every answer a
clean JSON 4xx, at most one short debug line in the log, and a JSON body with a key twice refused. Real
sockets on 127.0.0.1 (raw bytes: an HTTP library would not send most of these)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client.rest import RestServer
from controller import rest
from controller.restguard import DuplicateKey, loads_strict
from controller.server import MasterServer
from tests.test_controller_rest import TOKEN, make_server

BAD_BEARER = b"Authorization: Bearer \xff\xfe\r\n"


def raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as is on a new connection; (status, headers, body) of the answer (read to EOF or its
    Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "-1"))
        while (length < 0 or len(body) < length) and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def post(path: str, body: bytes, *extra: bytes, auth: bytes | None = None) -> bytes:
    auth = auth if auth is not None else f"Authorization: Bearer {TOKEN}\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode() + auth + b"".join(extra) \
        + b"\r\n" + body


def run_master(tmp: Path, body: Callable[[MasterServer, int], Any], **rest_args: Any) -> Any:
    """`body(server, rest_port)` in a thread, against a master replica serving `controller.rest.start_rest`
    (the production runner) on 127.0.0.1."""
    from tests.harness.loopcluster import free_ports

    (port,) = free_ports(1)

    async def main() -> Any:
        server = make_server(tmp)
        await server.start(rest=False)
        server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
        runner = await rest.start_rest(server, "127.0.0.1", port, **rest_args)
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, body, server, port), 60)
        finally:
            await runner.cleanup()
            await server.stop()

    return asyncio.run(main())


def _loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()[:200]}" for r in caplog.records
            if r.levelno >= logging.WARNING or r.exc_info]


# ------------------------------------------------------------------------------ finding 3: clean 4xx, quiet log
def test_master_hostile_requests_get_json_4xx_and_no_traceback(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    garbage = b"\x1f\x8bthis is not gzip at all" * 4

    def body(server: MasterServer, port: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # a non-ASCII bearer token, on every endpoint that checks one (drains, guard, rollout)
        for path in ("/v1/drain", "/v1/guard/confirm", "/v1/rollout/commit", "/v1/rollout/prepare", "/v1/reload"):
            out[f"bearer {path}"] = raw(port, post(path, b'{"switch": "spine-1"}', auth=BAD_BEARER))
        out["bearer delete"] = raw(port, post("/v1/drain", b'{"switch": "spine-1"}', auth=BAD_BEARER)
                                   .replace(b"POST", b"DELETE", 1))
        # a gzip body that is not gzip: with the token (the handler reads it) and without (aiohttp discards it)
        for path in ("/v1/drain", "/v1/rollout/prepare"):
            out[f"gzip {path}"] = raw(port, post(path, garbage, b"Content-Encoding: gzip\r\n"))
            out[f"gzip anon {path}"] = raw(port, post(path, garbage, b"Content-Encoding: gzip\r\n", auth=b""))
        # a request line over aiohttp's 8190 bytes, a header line over it, a bad method
        out["long line"] = raw(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        out["long header"] = raw(port, b"GET / HTTP/1.1\r\nX-A: " + b"b" * 9000 + b"\r\n\r\n")
        out["bad method"] = raw(port, b"G\x01T / HTTP/1.1\r\n\r\n")
        out["bad version"] = raw(port, b"GET /v1/lsd HTTP/9\r\n\r\n")
        out["drained"] = list(server.core.drains.notes)
        return out

    with caplog.at_level(logging.DEBUG):
        got = run_master(tmp_path, body)
    for key, (status, headers, raw_body) in ((k, v) for k, v in got.items() if k.startswith("bearer")):
        assert status == 401 and headers["content-type"].startswith("application/json"), (key, status, raw_body)
        assert "malformed Authorization" in json.loads(raw_body)["error"], key
    for path in ("/v1/drain", "/v1/rollout/prepare"):
        status, headers, raw_body = got[f"gzip {path}"]
        assert status == 400 and headers["content-type"].startswith("application/json"), (path, raw_body)
        assert "unreadable request body" in json.loads(raw_body)["error"]
        assert got[f"gzip anon {path}"][0] == 401
    for key in ("long line", "long header", "bad method", "bad version"):
        assert 400 <= got[key][0] < 500, (key, got[key])
    assert got["drained"] == []
    assert not _loud(caplog), _loud(caplog)              # no traceback, nothing at WARNING or above
    bad = [r for r in caplog.records if "rest_bad_request" in r.getMessage()]
    assert len(bad) >= 4 and all(len(r.getMessage()) < 300 for r in bad)


def test_two_hundred_bad_requests_add_no_error_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The tester's count: 200 unauthenticated requests grew the log by 200 KB of tracebacks."""
    def body(_server: MasterServer, port: int) -> list[int]:
        statuses = []
        for k in range(200):
            data = (post("/v1/drain", b"{}", auth=BAD_BEARER) if k % 2 else
                    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            statuses.append(raw(port, data)[0])
        return statuses

    with caplog.at_level(logging.INFO):
        statuses = run_master(tmp_path, body)
    assert set(statuses) <= {400, 401}, set(statuses)
    rest_lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "firepath.master.rest"))]
    assert not rest_lines, [r.getMessage()[:100] for r in rest_lines[:3]]


def test_client_rest_refuses_a_non_ascii_token_with_401() -> None:
    server = RestServer(lambda: {"switch": "leaf-1"}, "127.0.0.1", 0, reload=lambda: {"outcome": "unchanged"},
                        token="secret")
    server.start()
    try:
        status, _, body = raw(server.port, post("/v1/reload", b"", auth=BAD_BEARER))
        assert status == 401 and "malformed Authorization" in json.loads(body)["error"]
        status, _, body = raw(server.port, post("/v1/reload", b"", auth=b"Authorization: Bearer wrong\r\n"))
        assert status == 403
        status, _, body = raw(server.port, post("/v1/reload", b"", auth=b"Authorization: Bearer secret\r\n"))
        assert status == 200 and json.loads(body) == {"outcome": "unchanged"}
    finally:
        server.stop()


# ------------------------------------------------------------------------------ finding 5: duplicate keys
def test_loads_strict() -> None:
    assert loads_strict('{"a": {"b": 1}, "c": [{"d": 2}]}') == {"a": {"b": 1}, "c": [{"d": 2}]}
    for text, key in (('{"switch": "spine-1", "switch": "spine-2"}', "switch"), ('{"a": [{"x": 1, "x": 1}]}', "x")):
        with pytest.raises(DuplicateKey) as e:
            loads_strict(text)
        assert e.value.key == key and f"duplicate key {key!r}" in str(e.value)


def test_master_refuses_json_bodies_with_a_key_twice(tmp_path: Path) -> None:
    def body(server: MasterServer, port: int) -> dict[str, Any]:
        out = {}
        for path, doc in (("/v1/drain", b'{"switch": "spine-1", "switch": "spine-2"}'),
                          ("/v1/drain", b'{"link": "leaf-1:1-spine-1:1", "reason": "a", "reason": "b"}'),
                          ("/v1/rollout/prepare", b'{"config": "/nope.yaml", "config": "/etc/x.yaml"}')):
            out[(path, doc)] = raw(port, post(path, doc))
        out["delete"] = raw(port, post("/v1/drain", b'{"switch": "spine-1", "switch": "spine-2"}')
                            .replace(b"POST", b"DELETE", 1))
        out["drained"] = list(server.core.drains.notes)
        out["ok"] = raw(port, post("/v1/drain", b'{"switch": "spine-2"}'))
        return out

    got = run_master(tmp_path, body)
    assert got.pop("drained") == []
    assert got.pop("ok")[0] == 200
    for key, (status, headers, raw_body) in got.items():
        doc = json.loads(raw_body)
        assert status == 400 and headers["content-type"].startswith("application/json"), (key, raw_body)
        assert doc["error"].startswith("duplicate key") and doc["duplicate_key"] in ("switch", "reason", "config")


def test_gzip_body_that_is_gzip_still_works(tmp_path: Path) -> None:
    def body(server: MasterServer, port: int) -> int:
        return raw(port, post("/v1/drain", gzip.compress(b'{"switch": "spine-1"}'), b"Content-Encoding: gzip\r\n"))[0]

    assert run_master(tmp_path, body) == 200


# ------------------------------------------------------------------------------ connection flood
def test_master_rest_bounds_its_connections_and_evicts_idle_ones(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that opens connections and sends nothing (or a request line a byte at a time) held a descriptor
    of the master each, without bound: thousands of them ran the master out of descriptors (accept failing,
    the state file unopenable). Now at most max_connections; more are answered 503 JSON and closed; a new
    connection takes the place of one that has waited EVICT_AFTER for a request; a request being handled
    (a drain whose body is late) is never cut."""
    limit = 8

    def body(server: MasterServer, port: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)   # a drain whose body comes late
        slow.sendall(post("/v1/drain", b'{"switch": "spine-1"}')[:-5])
        time.sleep(0.2)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(limit - 1)]
        idle[0].sendall(b"GET /v1/lsd/version HTTP/1.1\r\nHo")            # a request line, never finished
        time.sleep(0.2)
        over = [raw(port, b"GET /v1/lsd/version HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(5)]
        out["over"] = over
        time.sleep(1.2)                      # the idle ones have waited EVICT_AFTER: a newcomer gets in
        out["after"] = [raw(port, b"GET /v1/lsd/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        for _ in range(limit + 4)]
        slow.sendall(b'e-1"}')              # the rest of its body: spine-1 drained
        out["slow"] = slow.recv(65536)
        out["oldest idle closed"] = idle[0].recv(100) == b""     # the first evicted (the server closed it)
        out["metrics"] = raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[2].decode()
        gate = server_gate[0]
        out["refused"], out["evicted"], out["open"] = gate.refused, gate.evicted, gate.open_connections
        for s in [slow, *idle]:
            s.close()
        return out

    server_gate: list[Any] = []
    orig = rest.GatedSite.start

    async def start(site: rest.GatedSite) -> None:
        server_gate.append(site.gate)
        await orig(site)

    monkeypatch.setattr(rest.GatedSite, "start", start)
    got = run_master(tmp_path, body, max_connections=limit)
    for status, headers, raw_body in got["over"]:
        assert status == 503 and headers["retry-after"] == "1", raw_body
        assert "too many connections" in json.loads(raw_body)["error"]
    assert [a[0] for a in got["after"]] == [200] * (limit + 4), got["after"]
    assert got["refused"] == 5 and got["evicted"] >= 1 and got["oldest idle closed"], got
    assert got["open"] <= limit
    assert 'firepath_master_rest_connections_dropped_total{reason="refused"} 5.0' in got["metrics"]
    assert 'firepath_master_rest_connections_dropped_total{reason="evicted"}' in got["metrics"]
    assert got["slow"].startswith(b"HTTP/1.1 200"), got["slow"][:200]       # the request in progress: not cut


def test_a_huge_drain_target_or_since_is_not_echoed_back(tmp_path: Path) -> None:
    """A 100,000-character switch name came back whole in the 400 (an error answer as big as any request)."""
    def body(server: MasterServer, port: int) -> list[tuple[int, bytes]]:
        return [raw(port, post("/v1/drain", b'{"switch": "' + b"a" * 100_000 + b'"}')),
                raw(port, post("/v1/drain", b'{"link": "' + b"a" * 100_000 + b':1-b:2"}')),
                raw(port, b"GET /v1/lsd?since=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")]

    for status, _headers, answer in run_master(tmp_path, body):
        assert status == 400 and len(answer) < 400, (status, answer[:200])
        assert "characters, longer than any" in json.loads(answer)["error"] or "since" in json.loads(answer)["error"]


def test_a_repeated_since_or_a_long_page_name_is_refused_briefly(tmp_path: Path) -> None:
    """Tester: `/v1/lsd?since=1&since=2` answered for the first silently, and the page's `/v1/switch/NAME` and
    `/v1/link/REF` quoted a 5,000-character name whole in their 404."""
    long = b"a" * 5000

    def body(server: MasterServer, port: int) -> list[tuple[int, bytes]]:
        return [raw(port, b"GET /v1/lsd?since=1&since=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                raw(port, b"GET /v1/switch/" + long + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                raw(port, b"GET /v1/link/" + long + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")]

    (s1, _h1, a1), (s2, _h2, a2), (s3, _h3, a3) = run_master(tmp_path, body)
    assert (s1, json.loads(a1)["error"]) == (400, "since: given more than once")
    for status, answer, kind in ((s2, a2, "switch"), (s3, a3, "link")):
        error = json.loads(answer)["error"]
        assert status == 404 and len(answer) < 300 and error.startswith(f"{kind} '{'a' * 40}'... (5000 characters)")


def test_requests_aiohttp_refuses_get_a_json_error(tmp_path: Path) -> None:
    """What aiohttp's parser refuses before any handler came back text/plain; docs/API.md: every error is JSON."""
    bad = [b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
           b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
           b"G\x01T / HTTP/1.1\r\n\r\n",
           b"GET /v1/lsd HTTP/9\r\n\r\n"]

    def body(_server: MasterServer, port: int) -> list[tuple[int, dict[str, str], bytes]]:
        return [raw(port, data) for data in bad]

    for status, headers, answer in run_master(tmp_path, body):
        assert 400 <= status < 500 and headers["content-type"].startswith("application/json"), (status, answer)
        assert json.loads(answer)["error"]


def test_every_kind_of_answer_through_the_connection_gate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The production runner (controller.restgate) sends plain answers itself: static files, 304s, HEAD,
    /metrics and JSON still come out whole, with nothing logged at ERROR (a FileResponse prepared twice was
    an AssertionError traceback)."""
    def body(server: MasterServer, port: int) -> list[tuple[int, dict[str, str], bytes]]:
        close = b"Host: x\r\nConnection: close\r\n"
        return [raw(port, b"GET / HTTP/1.1\r\n" + close + b"\r\n"),
                raw(port, b"GET /page/page.js HTTP/1.1\r\n" + close + b"\r\n"),
                raw(port, b"HEAD /v1/lsd HTTP/1.1\r\n" + close + b"\r\n"),
                raw(port, b"GET /metrics HTTP/1.1\r\n" + close + b"\r\n"),
                raw(port, b"GET /v1/view HTTP/1.1\r\n" + close + b'If-None-Match: "' + server.fabric.digest.encode()
                    + b'"\r\n\r\n'),
                raw(port, b"GET /v1/lsd/version HTTP/1.1\r\n" + close + b"\r\n")]

    with caplog.at_level(logging.DEBUG):
        got = run_master(tmp_path, body)
    assert [g[0] for g in got] == [200, 200, 200, 200, 304, 200]
    assert got[0][1]["content-type"] == "text/html" and b"<html" in got[0][2].lower()
    assert len(got[1][2]) == int(got[1][1]["content-length"]) > 0
    assert json.loads(got[5][2])["role"] == "master"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], _loud(caplog)


def test_a_client_that_does_not_read_its_answer_is_closed() -> None:
    """A request in progress is never evicted, so a client that asked for a big answer and stopped reading
    held its connection for ever (256 of them: the API); now WRITE_TIMEOUT to take it, then closed."""
    from types import SimpleNamespace

    from aiohttp import web

    from controller.restgate import ConnectionGate

    class Stuck(web.Response):
        async def prepare(self, request: Any) -> Any:
            await asyncio.sleep(30)             # the socket buffers are full: the write never completes

    closed: list[bool] = []

    class Proto:
        def force_close(self) -> None:
            closed.append(True)

    request = SimpleNamespace(protocol=Proto(), path="/v1/topology")
    gate = ConnectionGate({}, limit=4, write_timeout=0.2)

    async def handler(_request: Any) -> web.Response:
        return Stuck(text="x" * 100)

    async def main() -> float:
        t0 = time.monotonic()
        await gate.middleware(request, handler)     # type: ignore[arg-type]
        return time.monotonic() - t0

    took = asyncio.run(main())
    assert took < 2.0 and closed == [True] and gate.slow_readers == 1
