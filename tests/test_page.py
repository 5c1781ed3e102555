"""The topology page without a browser: its model (controller.topoview) and its routes (controller.page)
against an in-process MasterServer on loopback, fed by signed port reports over real UDP."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from client.rest import RestServer as ClientRestServer
from controller.page import FEED_KEY, PageFeed
from controller.rest import make_app
from controller.server import MasterServer
from controller.topoview import DOWN, DRAINED, MISCABLED, ONE_WAY, UP, build_view, link_status
from proto.auth import KeyRing, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import Endpoint, Fabric, load_fabric
from proto.lsd import LinkState
from proto.messages import Codec, PortReport, PortStatus
from tests.harness.fresh import establish
from tests.harness.loopcluster import free_ports

TOKEN = "page-tok"


def _fabric(tmp: Path, params: ClosParams) -> Fabric:
    (tmp / "f.yaml").write_text(generate_clos_yaml(params))
    write_secret_file(tmp / "fabric.key")
    return load_fabric(tmp / "f.yaml")


# ------------------------------------------------------------------------------------------------ model
def test_groups_of_a_multi_plane_fabric_with_borders(tmp_path: Path) -> None:
    f = _fabric(tmp_path, ClosParams(spines=4, planes=2, pods=3, aggs_per_pod=2, tors_per_pod=3, border_pods=1,
                                     hosts_per_tor=0))
    v = build_view(f)
    names = [s.name for s in f.switches]
    groups = {g.name: (g.kind, sorted(names[i] for i in g.members)) for g in v.groups}
    assert groups["plane 1"] == ("plane", ["spine-1", "spine-2"])      # agg-*-1 and border-1-1 connect to these
    assert groups["plane 2"] == ("plane", ["spine-3", "spine-4"])
    assert groups["pod 2"] == ("pod", ["agg-2-1", "agg-2-2", "tor-2-1", "tor-2-2", "tor-2-3"])
    assert groups["borders"] == ("border", ["border-1-1", "border-1-2"])
    assert len(v.groups) == 2 + 3 + 1
    assert all(v.group_of[i] == k for k, g in enumerate(v.groups) for i in g.members)
    doc = v.to_json()
    assert len(doc["links"]["a"]) == len(f.links) == len(doc["links"]["bp"])
    link = f.links[7]
    assert (doc["switches"]["name"][doc["links"]["a"][7]], doc["links"]["ap"][7]) == (link.a.switch, link.a.port)
    assert [m["id"] for m in doc["masters"]] == ["m1", "m2", "m3"]


def test_two_tier_leaves_are_chunked(tmp_path: Path) -> None:
    f = _fabric(tmp_path, ClosParams(pods=0, spines=2, leaves=70, hosts_per_tor=0))
    v = build_view(f, leaf_chunk=32)
    assert [(g.name, g.kind, len(g.members)) for g in v.groups] == [
        ("plane 1", "plane", 2), ("leaf-1 … leaf-32", "pod", 32), ("leaf-33 … leaf-64", "pod", 32),
        ("leaf-65 … leaf-70", "pod", 6)]


def _ps(port: int = 1, phy: bool = True, nd: bool = True, admin: bool = True,
        miscabled_by: Endpoint | None = None) -> PortStatus:
    return PortStatus(port, phy, nd, phy and nd and admin, admin, False, miscabled_by)


def test_link_status() -> None:
    up, bad_nd = _ps(), _ps(nd=False)
    assert link_status(LinkState.UP, up, up) == UP
    assert link_status(LinkState.DRAINED, bad_nd, None) == DRAINED
    assert link_status(LinkState.DOWN, None, None) == DOWN                        # nothing known
    assert link_status(LinkState.DOWN, _ps(phy=False), up) == DOWN                # carrier down
    assert link_status(LinkState.DOWN, bad_nd, up) == ONE_WAY                     # PHY up, ND not two-way
    assert link_status(LinkState.DOWN, bad_nd, bad_nd) == ONE_WAY
    assert link_status(LinkState.DOWN, bad_nd, None) == DOWN                      # one end unknown
    assert link_status(LinkState.DOWN, bad_nd, _ps(admin=False)) == DOWN          # admin down is not one-way
    wrong = _ps(nd=False, miscabled_by=Endpoint("spine-2", 3))
    assert link_status(LinkState.DOWN, up, wrong) == MISCABLED


# ------------------------------------------------------------------------------------------------ routes
def _server(tmp: Path, rest_base_port: int | None = None) -> MasterServer:
    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=2, masters=2, rest_base_port=rest_base_port))
    text = text.replace('  key_file: "fabric.key"\n', '  key_file: "fabric.key"\n  admin_token_file: admin.token\n')
    (tmp / "admin.token").write_text(TOKEN + "\n")
    write_secret_file(tmp / "fabric.key")
    (tmp / "f.yaml").write_text(text)
    fabric = load_fabric(tmp / "f.yaml")
    return MasterServer(fabric, "m1", KeyRing.load(tmp / "fabric.key"), tmp / "state", bind="127.0.0.1",
                        client_port=0, peer_port=0, rest_port=0)


def _run(tmp: Path, body: Callable[[MasterServer, TestClient], Awaitable[Any]],
         rest_base_port: int | None = None) -> Any:
    async def main() -> Any:
        server = _server(tmp, rest_base_port)
        await server.start(rest=False)
        server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
        client = TestClient(TestServer(make_app(server)))
        await client.start_server()
        try:
            return await asyncio.wait_for(body(server, client), 30)
        finally:
            await client.close()
            await server.stop()

    return asyncio.run(main())


def _report(server: MasterServer, switch: str, ports: list[PortStatus], seq: int, source: str | None = None) -> None:
    """A real signed PortReport from `switch`, over UDP to the server's client port (from `source`, an
    address on lo, if given: a lab client's 127.1.0.<id>)."""
    import socket

    f = server.fabric
    codecs: dict[str, Codec] = server.__dict__.setdefault("_test_codecs", {})
    codec = codecs.get(switch)
    if codec is None:      # one incarnation per switch, verified by the master once (wire v2 freshness)
        keyring = KeyRing.load(f.security.key_file)
        codec = Codec(keyring.bundle_for_switch(switch), switch, frozenset(s.name for s in f.switches),
                      frozenset(m.id for m in f.masters))
        establish(server.codec, codec)
        codecs[switch] = codec
    data = codec.encode(PortReport(switch, f.digest, seq, server.core.term, tuple(ports)), to=server.id)
    assert server._client_sock is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if source is not None:
            s.bind((source, 0))
        s.sendto(data, server._client_sock.getsockname())


async def _until(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return got


def test_page_and_assets_are_served(tmp_path: Path) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        r = await c.get("/")
        html = await r.text()
        assert r.status == 200 and 'src="page/page.js"' in html and "http" not in html.replace(
            'xmlns="http://www.w3.org/2000/svg"', "")                                # nothing from the internet
        for asset in ("page/page.js", "page/page.css"):
            r = await c.get("/" + asset)
            assert r.status == 200 and len(await r.read()) > 1000
        r = await c.get("/v1/view", headers={"Accept-Encoding": "gzip"})
        doc = await r.json()                                            # aiohttp's client inflates it
        assert r.headers["Content-Encoding"] == "gzip"
        assert doc["digest"] == server.fabric.digest and doc["switches"]["name"] == [
            "spine-1", "spine-2", "leaf-1", "leaf-2"]
        assert [g["kind"] for g in doc["groups"]] == ["plane", "pod"]
        r = await c.get("/v1/view", headers={"If-None-Match": f'"{server.fabric.digest}"'})
        assert r.status == 304

    _run(tmp_path, body)


async def _read_events(c: TestClient, out: list[tuple[str, dict[str, Any]]]) -> None:
    """Append every non-ping event of a fresh /v1/events stream to `out` (until cancelled)."""
    r = await c.get("/v1/events")
    assert r.headers["Content-Type"] == "text/event-stream"
    name = None
    try:
        while True:
            line = (await r.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name != "ping":
                out.append((name or "", json.loads(line[6:])))
    finally:
        r.close()


def _folded(events: list[tuple[str, dict[str, Any]]]) -> tuple[dict[int, int], dict[int, int]]:
    """Link and switch states after hello + updates."""
    (name, hello), *updates = events
    assert name == "hello"
    links = {i: int(ch) for i, ch in enumerate(hello["links"])}
    alive = {i: int(ch) for i, ch in enumerate(hello["alive"])}
    for name, ev in updates:
        assert name == "update"
        links.update(ev["links"])
        alive.update(ev["alive"])
    return links, alive


def test_events_push_report_derived_states(tmp_path: Path) -> None:
    """hello carries every link's state and every switch's liveness; port reports then make links up,
    one-way and miscabled on the page, and a drain makes one drained — each pushed as an update."""

    async def body(server: MasterServer, c: TestClient) -> None:
        f = server.fabric
        idx = {link.name: link.index for link in f.links}
        events: list[tuple[str, dict[str, Any]]] = []
        reader = asyncio.create_task(_read_events(c, events))
        await _until(lambda: events)
        hello = events[0][1]
        assert events[0][0] == "hello" and hello["digest"] == f.digest
        assert hello["links"] == "0000" and hello["alive"] == "2222" and hello["header"]["role"] == "master"
        for seq, sw in enumerate(("spine-1", "spine-2")):
            _report(server, sw, [_ps(p) for p in f.fabric_ports(sw)], seq + 1)
        # leaf-1: port 1 (to spine-1) hears spine-1 but is not heard back; port 2 (to spine-2) sees leaf-2
        _report(server, "leaf-1", [_ps(1, nd=False), _ps(2, nd=False, miscabled_by=Endpoint("leaf-2", 2))], 1)
        _report(server, "leaf-2", [_ps(p) for p in f.fabric_ports("leaf-2")], 1)
        await _until(lambda: _folded(events)[0][idx["leaf-2:1-spine-1:2"]] == UP)
        server.drain(link="leaf-2:2-spine-2:2", drained=True)
        expected = {"leaf-1:1-spine-1:1": ONE_WAY, "leaf-1:2-spine-2:1": MISCABLED,
                    "leaf-2:1-spine-1:2": UP, "leaf-2:2-spine-2:2": DRAINED}
        await _until(lambda: {n: _folded(events)[0][i] for n, i in idx.items()} == expected)
        assert _folded(events)[1] == {0: 1, 1: 1, 2: 1, 3: 1}
        reader.cancel()
        # details of a link: both ends' reports and when it changed
        d = await (await c.get("/v1/link/leaf-1:2-spine-2:1")).json()
        assert d["state"] == "miscabled" and d["lsd_state"] == "down" and d["changed_at"] is not None
        assert d["a"]["report"]["miscabled_by"] == "leaf-2:2" and d["b"]["report"]["usable"] is True
        assert (await c.get(f"/v1/link/{idx['leaf-2:2-spine-2:2']}")).status == 200
        r = await c.get("/v1/link/leaf-9:1-spine-1:1")
        assert r.status == 404 and "no such link" in (await r.json())["error"]
        r = await c.get("/v1/switch/nope")
        assert r.status == 404 and "no such switch" in (await r.json())["error"]

    _run(tmp_path, body)


def test_switch_details_include_the_client_state(tmp_path: Path) -> None:
    """The master reads the switch client's own REST (/v1/state) at the address its reports come from."""
    port = free_ports(1)[0]
    leaf1_id = 3                                        # spine-1, spine-2, leaf-1: rest_port = base + id
    state = {"switch": "leaf-1", "term": 1, "lsd_version": 7, "ports": [{"port": 1, "nd": "one_way"}]}

    async def body(server: MasterServer, c: TestClient) -> None:
        d = await (await c.get("/v1/switch/leaf-1")).json()
        assert d["client"] == {"error": "this replica has not heard from the switch: its address is unknown"}
        _report(server, "leaf-1", [_ps(p) for p in server.fabric.fabric_ports("leaf-1")], 1)
        await _until(lambda: "leaf-1" in server.addresses)
        d = await (await c.get("/v1/switch/leaf-1")).json()
        assert "Connect" in d["client"]["error"] and d["client"]["url"].endswith(f":{port}/v1/state")
        rest = ClientRestServer(lambda: state, "127.0.0.1", port)
        rest.start()
        try:
            d = await (await c.get("/v1/switch/leaf-1")).json()
        finally:
            rest.stop()
        assert d["client"]["state"] == state
        assert d["liveness"] == "alive" and [x["peer"] for x in d["links"]] == ["spine-1:1", "spine-2:1"]

    _run(tmp_path, body, rest_base_port=port - leaf1_id)


def test_a_link_ref_of_non_ascii_digits_is_a_404_and_a_handler_bug_a_json_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'²' and '①' pass str.isdigit() but not int(): GET /v1/link/² answered aiohttp's plain-text 500."""
    async def body(server: MasterServer, c: TestClient) -> None:
        for ref in ("%C2%B2", "%E2%91%A0", "%D9%A3", "1%C2%B2", "9" * 5000):     # 5000 digits: int() raised
            r = await c.get(f"/v1/link/{ref}")
            assert r.status == 404 and "no such link" in (await r.json())["error"], ref[:20]
        monkeypatch.setattr(PageFeed, "link_details", lambda *_: 1 / 0)
        r = await c.get("/v1/link/0")
        assert r.status == 500 and r.content_type == "application/json"
        assert "ZeroDivisionError" in (await r.json())["error"]

    _run(tmp_path, body)


def test_cors(tmp_path: Path) -> None:
    """Reads answer any origin; a drain is allowed from a page served by a configured replica only."""

    async def body(server: MasterServer, c: TestClient) -> None:
        other = f"http://127.0.0.1:{server.fabric.master('m2').rest_port}"
        r = await c.get("/v1/lsd/version", headers={"Origin": "http://example.test"})
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        r = await c.options("/v1/drain", headers={"Origin": other, "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "authorization,content-type"})
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == other
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        r = await c.options("/v1/drain", headers={"Origin": "http://example.test",
                                                   "Access-Control-Request-Method": "POST"})
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        r = await c.post("/v1/drain", json={"switch": "leaf-1"},
                         headers={"Origin": other, "Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == other
        r = await c.post("/v1/drain", json={"switch": "leaf-1"},
                         headers={"Origin": "http://example.test", "Authorization": f"Bearer {TOKEN}"})
        assert "Access-Control-Allow-Origin" not in r.headers   # the browser withholds the answer

    _run(tmp_path, body)


def test_a_stuck_subscriber_is_dropped(tmp_path: Path) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        feed: PageFeed = c.server.app[FEED_KEY]  # type: ignore[assignment]
        feed.queue_size = 8
        q = feed.subscribe()
        for k in range(feed.queue_size + 5):
            server.drain(link=server.fabric.links[0].name, drained=k % 2 == 0)
            await asyncio.sleep(0)
            # once dropped, no stream is open and the feed stops following (it catches up for the next one)
            await _until(lambda k=k: q not in feed.subscribers or feed.status[0] == (DRAINED if k % 2 == 0
                                                                                     else DOWN), 2)
        assert q not in feed.subscribers and q.qsize() == 1 and q.get_nowait() is None

    _run(tmp_path, body)


@pytest.mark.parametrize("accept", ["gzip, deflate", ""])
def test_view_encoding(tmp_path: Path, accept: str) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        r = await c.get("/v1/view", headers={"Accept-Encoding": accept}, auto_decompress=False)
        raw = await r.read()
        doc = json.loads(gzip.decompress(raw) if accept else raw)
        assert doc["fabric"] == server.fabric.name

    _run(tmp_path, body)


def test_feed_stops_even_when_woken_at_the_same_time(tmp_path: Path) -> None:
    """The master's last batch of actions wakes the feed just before the app stops it: stop() still ends
    its task and every stream (a master must exit on SIGTERM)."""

    async def body(server: MasterServer, c: TestClient) -> None:
        feed: PageFeed = c.server.app[FEED_KEY]  # type: ignore[assignment]
        q = feed.subscribe()
        for _ in range(20):
            feed.changed()
            await asyncio.sleep(0)
        feed.changed()
        await asyncio.wait_for(feed.stop(), 3)
        assert feed._task is not None and feed._task.done()
        assert q.get_nowait() is None and not feed.subscribers and feed not in server.observers

    _run(tmp_path, body)


def test_event_streams_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each /v1/events stream holds a REST connection for as long as it lasts: at most MAX_STREAMS at once, the
    next one 503 (Retry-After), and a closed one makes room."""
    from controller import page

    monkeypatch.setattr(page, "MAX_STREAMS", 3)

    async def body(server: MasterServer, c: TestClient) -> None:
        streams = [await c.get("/v1/events") for _ in range(3)]
        assert all(r.status == 200 for r in streams)
        extra = await c.get("/v1/events")
        assert extra.status == 503 and extra.headers["Retry-After"] == "1"
        assert "too many event streams" in (await extra.json())["error"]
        assert (await c.get("/v1/lsd/version")).status == 200
        streams[0].close()
        await _until(lambda: len(server_feed(c).subscribers) < 3)
        again = await c.get("/v1/events")
        assert again.status == 200
        for r in (*streams[1:], again):
            r.close()

    _run(tmp_path, body)


def server_feed(c: TestClient) -> PageFeed:
    return c.server.app[FEED_KEY]  # type: ignore[return-value]


def test_nothing_is_followed_while_no_page_is_open(tmp_path: Path) -> None:
    """Issue #18: with no event stream open the feed does no work for the master's reports and versions (a
    Jupiter cold start spent ~8 % of the master's CPU on it); a details request or a new stream catches up,
    and a change made meanwhile is said to be before the catch-up, time unknown."""

    async def body(server: MasterServer, c: TestClient) -> None:
        feed = server_feed(c)
        f = server.fabric
        refreshes = []
        real = feed._refresh
        feed._refresh = lambda *a, **k: refreshes.append(k) or real(*a, **k)   # type: ignore[method-assign]
        await asyncio.sleep(0.1)                       # the feed's task is waiting for a stream
        t_before = time.time()
        for sw in ("spine-1", "spine-2", "leaf-1", "leaf-2"):
            _report(server, sw, [_ps(p) for p in f.fabric_ports(sw)], 1)
        await _until(lambda: server.core.lsd.states() == bytes([LinkState.UP]) * len(f.links))
        await asyncio.sleep(3 * feed.min_interval)     # the master's batches called changed() meanwhile
        assert refreshes == [] and feed.status == bytearray(len(f.links))    # not followed: still all down
        d = await (await c.get("/v1/link/leaf-1:1-spine-1:1")).json()
        assert d["state"] == "up" and d["changed_at"] is None and d["changed_before"] >= t_before
        d = await (await c.get("/v1/switch/leaf-1")).json()
        assert d["liveness"] == "alive" and d["changed_at"] is None and d["changed_before"] >= t_before
        assert len(refreshes) == 2 and all(k == {"unknown_time": True} for k in refreshes)
        # a stream: its hello is current; while it is open, changes are followed and timed again
        events: list[tuple[str, dict[str, Any]]] = []
        reader = asyncio.create_task(_read_events(c, events))
        await _until(lambda: events)
        assert events[0][1]["links"] == "1111" and events[0][1]["alive"] == "1111"
        t_drain = time.time()
        server.drain(link="leaf-2:2-spine-2:2", drained=True)
        idx = f.links.index(next(link for link in f.links if link.name == "leaf-2:2-spine-2:2"))
        await _until(lambda: _folded(events)[0][idx] == DRAINED)
        d = await (await c.get(f"/v1/link/{idx}")).json()
        assert d["state"] == "drained" and d["changed_at"] >= t_drain and d["changed_before"] is None
        reader.cancel()

    _run(tmp_path, body)
