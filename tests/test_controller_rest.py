"""REST API of the master (controller.rest) against an in-process MasterServer (real sockets, loopback)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.rest import make_app
from controller.roles import SingleMasterDriver
from controller.server import MasterServer
from proto.auth import KeyRing, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import load_fabric

TOKEN = "tok-123"


class StayInactive(SingleMasterDriver):
    """A role driver that never promotes (the single-master driver would after master_dead)."""

    def tick(self, now: float) -> list:
        return []

    def next_deadline(self) -> float | None:
        return None


def make_server(tmp: Path, token: bool = True, master: bool = True) -> MasterServer:
    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=2, masters=2))
    if token:
        text = text.replace('  key_file: "fabric.key"\n', '  key_file: "fabric.key"\n  admin_token_file: admin.token\n')
        (tmp / "admin.token").write_text(TOKEN + "\n")
    write_secret_file(tmp / "fabric.key")
    (tmp / "f.yaml").write_text(text)
    fabric = load_fabric(tmp / "f.yaml")
    return MasterServer(fabric, "m1", KeyRing.load(tmp / "fabric.key"), tmp / "state", bind="127.0.0.1",
                        client_port=0, peer_port=0, rest_port=0,
                        driver_factory=None if master else (lambda core, store: StayInactive(core, 0)))


def run(tmp: Path, body: Callable[[MasterServer, TestClient], Awaitable[Any]], token: bool = True,
        master: bool = True) -> Any:
    async def main() -> Any:
        server = make_server(tmp, token, master)
        await server.start(rest=False)
        if master:
            server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
        client = TestClient(TestServer(make_app(server)))
        await client.start_server()
        try:
            return await body(server, client)
        finally:
            await client.close()
            await server.stop()

    return asyncio.run(main())


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_reads_need_no_token(tmp_path: Path) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        r = await c.get("/v1/lsd/version")
        assert r.status == 200
        assert await r.json() == {"master": "m1", "role": "master", "term": 1, "leader": "m1", "version": 0,
                                 "held": False, "persist_error": None, "guard_held": 0, "other_config": {}}
        lsd = await (await c.get("/v1/lsd")).json()
        assert lsd["full"] is True and set(lsd["links"].values()) == {"down"} and len(lsd["links"]) == 4
        topo = await (await c.get("/v1/topology")).json()
        layers = {s["name"]: (s["layer"], s["column"]) for s in topo["switches"]}
        assert layers == {"spine-1": (2, 0), "spine-2": (2, 1), "leaf-1": (0, 0), "leaf-2": (0, 1)}
        assert topo["links"][0] == {"index": 0, "name": "leaf-1:1-spine-1:1", "a": {"switch": "leaf-1", "port": 1},
                                    "b": {"switch": "spine-1", "port": 1}, "weight": 1, "state": "down"}
        clients = await (await c.get("/v1/clients")).json()
        assert [x["switch"] for x in clients["clients"]] == ["spine-1", "spine-2", "leaf-1", "leaf-2"]
        assert clients["clients"][0]["address"] is None and clients["clients"][0]["alive"] is False
        masters = await (await c.get("/v1/masters")).json()
        assert [r["id"] for r in masters["replicas"]] == ["m1", "m2"]
        metrics = await (await c.get("/metrics")).text()
        assert "firepath_master_lsd_version 0.0" in metrics and "firepath_master_term 1.0" in metrics

    run(tmp_path, body)


def test_lsd_since(tmp_path: Path) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        server.drain(link="leaf-1:1-spine-1:1", drained=True)
        server.drain(switch="leaf-2", drained=True)
        r = await (await c.get("/v1/lsd?since=1")).json()
        assert r["full"] is False and r["version"] == 2
        assert r["links"] == {"leaf-2:1-spine-1:2": "drained", "leaf-2:2-spine-2:2": "drained"}
        r = await (await c.get("/v1/lsd?since=2")).json()
        assert r["full"] is False and r["links"] == {}
        r = await (await c.get("/v1/lsd?since=9")).json()
        assert r["full"] is True and "history" in r["reason"] and len(r["links"]) == 4
        r = await c.get("/v1/lsd?since=x")
        assert r.status == 400 and "since" in (await r.json())["error"]

    run(tmp_path, body)


def test_lsd_since_takes_ascii_digits_only(tmp_path: Path) -> None:
    """Tester (F6): int() read `since=-1` (answered `since: -1`), Arabic-Indic digits (`%D9%A3` was version
    3), `1_0` (10), spaces and `+5`. Now anything but ASCII digits 0-9 within a version's range (0..2^63-1)
    is a 400 naming the parameter, the value quoted cut short."""
    async def body(server: MasterServer, c: TestClient) -> None:
        hostile = ["-1", "%D9%A3", "1_0", "%20%201", "1%20", "%2B5", "0x1", "", "%EF%BC%91",   # fullwidth 1
                   str(2**63), "9" * 5000]
        for raw in hostile:
            r = await c.get(f"/v1/lsd?since={raw}")
            error = (await r.json())["error"]
            assert r.status == 400 and error.startswith("since: ") and len(error) < 200, (raw, error)
        for ok in ("0", "00", str(2**63 - 1)):
            r = await c.get(f"/v1/lsd?since={ok}")
            assert r.status == 200 and (await r.json())["since"] == int(ok), ok

    run(tmp_path, body)


def test_drain_auth_and_validation(tmp_path: Path) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        link = {"link": "leaf-1:1-spine-1:1"}
        assert (await c.post("/v1/drain", json=link)).status == 401
        assert (await c.post("/v1/drain", json=link, headers={"Authorization": "Basic abc"})).status == 401
        assert (await c.post("/v1/drain", json=link, headers={"Authorization": "Bearer nope"})).status == 403
        for bad in ({}, {"link": "x", "switch": "y"}, {"port": 1}, {"link": 5}, [1]):
            r = await c.post("/v1/drain", json=bad, headers=AUTH)
            assert r.status == 400, bad
        r = await c.post("/v1/drain", data=b"{nope", headers=AUTH)
        assert r.status == 400 and "JSON" in (await r.json())["error"]
        r = await c.post("/v1/drain", json={"switch": "nosuch"}, headers=AUTH)
        assert r.status == 400 and "nosuch" in (await r.json())["error"]
        # Hostile bodies: nesting past the parser's recursion limit, numbers and ports of 5,000 digits,
        # bytes that are not UTF-8 -- each a 400 with an error, never a 500.
        hostile = [b"[" * 100_000 + b"]" * 100_000, b'{"link": ' + b"9" * 5000 + b"}",
                   b'{"link": "leaf-1:' + b"1" * 5000 + b'-spine-1:1"}', b'{"switch": "\xff\xfe"}',
                   b'{"link": "leaf-1:99999-spine-1:1"}']
        for raw in hostile:
            r = await c.post("/v1/drain", data=raw, headers=AUTH)
            assert r.status == 400 and "error" in await r.json(), raw[:40]
        r = await c.get("/v1/lsd", params={"since": "9" * 5000})
        assert r.status == 400
        assert server.core.version == 0
        r = await c.post("/v1/drain", json=link, headers=AUTH)
        assert r.status == 200 and (await r.json())["links"] == ["leaf-1:1-spine-1:1"]
        assert server.core.lsd.state(0) == 3            # DRAINED_DOWN: a link drain takes it out of use
        r = await c.delete("/v1/drain", json=link, headers=AUTH)
        assert r.status == 200 and server.core.lsd.state(0) == 0 and server.core.version == 2

    run(tmp_path, body)


def test_a_drain_the_master_cannot_save_says_so(tmp_path: Path) -> None:
    """Control-plane tester: with the master's disk full a drain answered 200 'drained' and only the log said
    the notes were not saved (in force and replicated, lost if every replica restarts)."""
    async def body(server: MasterServer, client: TestClient) -> tuple[dict, dict]:
        store = server.drain_store
        (tmp_path / "a-file").write_text("")
        store.dir = tmp_path / "a-file" / "state"               # every save fails (ENOTDIR), like a full disk
        r = await client.post("/v1/drain", json={"switch": "spine-1"}, headers=AUTH)
        failed = await r.json()
        store.dir = tmp_path / "state"
        r = await client.delete("/v1/drain", json={"switch": "spine-1"}, headers=AUTH)
        return failed, await r.json()

    failed, saved = run(tmp_path, body)
    assert failed["outcome"] == "drained" and "Not a directory" in failed["not_saved"], failed
    assert "not_saved" not in saved, saved                           # saved again: nothing to say


def test_drain_without_token_file_or_mastership(tmp_path: Path) -> None:
    async def no_token(server: MasterServer, c: TestClient) -> None:
        r = await c.post("/v1/drain", json={"switch": "leaf-1"}, headers=AUTH)
        assert r.status == 403 and "admin_token_file" in (await r.json())["error"]

    run(tmp_path, no_token, token=False)

    async def not_master(server: MasterServer, c: TestClient) -> None:
        r = await c.post("/v1/drain", json={"switch": "leaf-1"}, headers=AUTH)
        assert r.status == 409 and "not the master" in (await r.json())["error"]
        v = await (await c.get("/v1/lsd/version")).json()
        assert v["role"] == "inactive"

    (tmp_path / "second").mkdir()
    run(tmp_path / "second", not_master, master=False)


def test_guard_view_confirm_and_metrics(tmp_path: Path) -> None:
    """Issue #16: 4 links, default 25 % share -> one uncorroborated down is fine, leaf-1's two are held."""
    from tests.test_master_core import report

    async def body(server: MasterServer, c: TestClient) -> None:
        f, now = server.fabric, server.now()
        for sw in f.switches:
            server._run(server.core.handle(sw.name, report(f, sw.name, seq=1), now))
        server._run(server.core.handle("leaf-1", report(f, "leaf-1", usable=set(), seq=2), now + 0.01))
        g = await (await c.get("/v1/guard")).json()
        assert g["guard_held"] == 2 and g["link_budget"] == 1 and g["down_share"] == 0.25
        assert [h["link"] for h in g["held_links"]] == ["leaf-1:1-spine-1:1", "leaf-1:2-spine-2:1"]
        assert g["held_links"][0]["state"] == "up" and g["held_links"][0]["evidence"] == {"a": "down", "b": "up"}
        metrics = await (await c.get("/metrics")).text()
        assert "firepath_master_guard_held_links 2.0" in metrics
        assert 'firepath_master_guard_events_total{kind="hold",reason="uncorroborated"} 1.0' in metrics
        assert (await c.post("/v1/guard/confirm")).status == 401
        assert (await c.post("/v1/guard/confirm", headers={"Authorization": "Bearer nope"})).status == 403
        r = await c.post("/v1/guard/confirm", headers=AUTH, data=b"\xff\xfe not utf-8")
        assert r.status == 400 and len(server.core.guard_held()) == 2
        for bad in ({"links": []}, {"links": "leaf-1:1-spine-1:1"}, {"links": [1]}, {"link": "x"}, [1], "x"):
            r = await c.post("/v1/guard/confirm", headers=AUTH, json=bad)
            assert r.status == 400 and "links" in (await r.json())["error"], bad
        r = await c.post("/v1/guard/confirm", headers=AUTH, json={"links": ["leaf-1:1-spine-1:1", "leaf-2:1-spine-1:2"]})
        assert r.status == 409 and (await r.json())["not_held"] == ["leaf-2:1-spine-1:2"]
        assert len(server.core.guard_held()) == 2                  # all or nothing
        r = await c.post("/v1/guard/confirm", headers=AUTH, data=b" \r\n ")      # whitespace: no body, all
        assert r.status == 200 and (await r.json())["released"] == ["leaf-1:1-spine-1:1", "leaf-1:2-spine-2:1"]
        assert server.core.lsd.state(0) == 0 and server.core.guard_held() == {}
        metrics = await (await c.get("/metrics")).text()
        assert "firepath_master_guard_held_links 0.0" in metrics
        assert 'firepath_master_guard_events_total{kind="release",reason="confirmed"} 1.0' in metrics

    run(tmp_path, body)

    async def not_master(server: MasterServer, c: TestClient) -> None:
        r = await c.post("/v1/guard/confirm", headers=AUTH)
        assert r.status == 409 and "not the master" in (await r.json())["error"]

    run(tmp_path, not_master, master=False)


def test_udp_stats_reads_the_sockets_row(tmp_path: Path) -> None:
    import os
    import socket

    from controller.intake import udp_stats

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        inode = os.fstat(sock.fileno()).st_ino
        row = "  {n}: 0100007F:1F90 00000000:0000 07 00000000:{q:08X} 00:00000000 00000000     0        0 {ino} 2 00000000a76585bb {d}"
        table = tmp_path / "udp"
        table.write_text("  sl  local_address rem_address ...\n" + row.format(n=0, q=1, ino=inode + 1, d=9) + "\n"
                         + row.format(n=1, q=0x1234, ino=inode, d=42) + "\n")
        assert udp_stats(sock, str(table)) == (0x1234, 42)
        table.write_text("header\n")
        assert udp_stats(sock, str(table)) is None
        assert udp_stats(sock, str(tmp_path / "missing")) is None
    finally:
        sock.close()


def test_unknown_paths_and_methods_answer_json(tmp_path: Path) -> None:
    """docs/API.md: every body is JSON, errors included (aiohttp's own 404/405 were plain text)."""
    async def body(server: MasterServer, c: TestClient) -> None:
        r = await c.get("/v1/nosuch")
        assert r.status == 404 and r.content_type == "application/json" and "error" in await r.json()
        r = await c.get("/v1/drain")
        assert r.status == 405 and r.content_type == "application/json" and "error" in await r.json()
        assert "POST" in r.headers.get("Allow", "")

    run(tmp_path, body)


def test_drains_survive_a_restart_of_every_replica(tmp_path: Path) -> None:
    """A tester drained spine-1, killed every master and healed: the drain was gone and spine-1 carried
    traffic again (only the term was on disk). The replica now saves its notes (state dir) and a cold
    mastership (no replicated LSD) puts them back in force; a corrupt file refuses the start, named."""
    from controller.durable import DRAINS_FILE, DurableStateError

    async def first() -> None:
        server = make_server(tmp_path)
        await server.start(rest=False)
        try:
            server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
            server.drain(switch="spine-1", drained=True, who="ops@example", reason="optics")
            server.drain(link="leaf-2:2-spine-2:2", drained=True, who="ops@example", reason="flaky")
            server.drain(link="leaf-2:2-spine-2:2", drained=False)
        finally:
            await server.stop()

    async def second() -> tuple[set[int], list[tuple[str, str, str | None]], bytes]:
        server = make_server(tmp_path)
        await server.start(rest=False)
        try:
            server._run(server.core.become_master(2, server.now()))
            core = server.core
            notes = [(n.kind, n.target, n.reason) for n in core.drains.notes]
            return core.deriver.drained, notes, core.lsd.states()
        finally:
            await server.stop()

    asyncio.run(first())
    assert (tmp_path / "state" / DRAINS_FILE).exists()
    drained, notes, _states = asyncio.run(second())
    fabric = load_fabric(tmp_path / "f.yaml")
    assert notes == [("switch", "spine-1", "optics")]                  # the lifted link drain stays lifted
    assert drained == set(fabric.links_of("spine-1"))
    (tmp_path / "state" / DRAINS_FILE).write_bytes(b"\xc1garbage")
    try:
        asyncio.run(second())
    except DurableStateError as e:
        assert DRAINS_FILE in str(e) and "move the file away" in str(e)
    else:
        raise AssertionError("a corrupt drains file was accepted")


def test_a_drain_past_the_drain_books_limit_is_refused_as_such(tmp_path: Path, monkeypatch) -> None:
    """A tester: a drain the master refuses because its drain book is full (128 notes) came back as a plain 400,
    and `firepath drain` exited 1 ("bad news") instead of 6 ("refused"). The answer now says `refused`, the
    LSD does not move, and the CLI's mapping of it is exit 6."""
    import controller.drains
    import controller.ops.api as api

    monkeypatch.setattr(controller.drains, "MAX_NOTES", 2)

    async def body(server: MasterServer, c: TestClient) -> None:
        for link in ("leaf-1:1-spine-1:1", "leaf-1:2-spine-2:1"):
            assert (await c.post("/v1/drain", json={"link": link}, headers=AUTH)).status == 200
        version = server.core.version
        r = await c.post("/v1/drain", json={"switch": "spine-2"}, headers=AUTH)
        answer = await r.json()
        assert r.status == 400 and answer.get("refused") is True and "limit" in answer["error"], answer
        assert not answer.get("unknown") and server.core.version == version
        return answer

    answer = run(tmp_path, body)
    monkeypatch.setattr(api, "request", lambda *a, **k: (400, answer))
    masters = api.Masters(load_fabric(tmp_path / "f.yaml"))
    monkeypatch.setattr(masters, "serving", lambda: "m1")
    with pytest.raises(api.OpsError) as e:
        masters.write("POST", "/v1/drain", {"switch": "spine-2"}, TOKEN)
    assert e.value.code == api.REFUSED and "limit" in str(e.value)
    monkeypatch.setattr(api, "request", lambda *a, **k: (400, {"error": "bad body"}))   # not refused: bad news
    with pytest.raises(api.OpsError) as e:
        masters.write("POST", "/v1/drain", {"switch": "spine-2"}, TOKEN)
    assert e.value.code == api.BAD_NEWS


def test_the_guard_and_damping_commands_show_and_confirm_what_the_master_holds(tmp_path: Path, capsys) -> None:
    """A tester: confirming the links the guard holds, or reading what damping holds, needed curl with a bearer
    token. `firepath guard [--confirm]` and `firepath damping` ask the serving master (a real MasterServer's
    REST here, m2 unreachable) and print what it holds; --confirm publishes the held links DOWN."""
    import json as jsonlib

    from proto.cli import main as cli_main
    from tests.harness.loopcluster import free_ports
    from tests.test_master_core import report

    rest, dead = free_ports(2)
    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=2, masters=2))
    m = re.search(r"id: m1, .*rest_port: (\d+)", text)
    m2 = re.search(r"id: m2, .*rest_port: (\d+)", text)
    assert m and m2
    text = text.replace(f"rest_port: {m.group(1)}}}", f"rest_port: {rest}}}").replace(
        f"rest_port: {m2.group(1)}}}", f"rest_port: {dead}}}")
    text = text.replace('  key_file: "fabric.key"\n', '  key_file: "fabric.key"\n  admin_token_file: admin.token\n')
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    write_secret_file(tmp_path / "fabric.key")
    (tmp_path / "f.yaml").write_text(text)
    fabric = load_fabric(tmp_path / "f.yaml")
    cfg = ["--config", str(tmp_path / "f.yaml"), "--timeout", "1"]

    async def main() -> None:
        server = MasterServer(fabric, "m1", KeyRing.load(tmp_path / "fabric.key"), tmp_path / "state",
                              bind="127.0.0.1", client_port=0, peer_port=0, rest_port=0)
        await server.start(rest=False)
        server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
        client = TestClient(TestServer(make_app(server), host="127.0.0.1", port=rest))
        await client.start_server()
        loop = asyncio.get_running_loop()

        async def cli(*argv: str) -> tuple[int, str]:
            capsys.readouterr()
            code = await loop.run_in_executor(None, cli_main, [*argv, *cfg])
            return code, capsys.readouterr().out

        try:
            code, out = await cli("guard")
            assert code == 0 and "0 link(s) held" in out and "--confirm" not in out, out
            now = server.now()
            for sw in fabric.switches:
                server._run(server.core.handle(sw.name, report(fabric, sw.name, seq=1), now))
            server._run(server.core.handle("leaf-1", report(fabric, "leaf-1", usable=set(), seq=2), now + 0.01))
            code, out = await cli("guard")
            assert code == 0 and "2 link(s) held" in out, out
            assert "leaf-1:1-spine-1:1" in out and "leaf-1:2-spine-2:1" in out and "down/up" in out, out
            code, out = await cli("guard", "--json")
            assert code == 0 and len(jsonlib.loads(out)["held_links"]) == 2
            code, out = await cli("damping")
            assert code == 0 and "0 link(s) held down" in out, out
            code, out = await cli("guard", "--confirm", "--token-file", str(tmp_path / "nope"))
            assert code == 2 and server.core.guard_held(), out            # no token: usage, nothing released
            tok = ["--token-file", str(tmp_path / "admin.token")]
            code, out = await cli("guard", "leaf-1:1-spine-1:1")
            assert code == 2 and len(server.core.guard_held()) == 2, out  # names without --confirm: usage
            # review 38: confirm only what was seen held; a link not held refuses them all (exit 6)
            code, out = await cli("guard", "--confirm", "leaf-1:1-spine-1:1", "leaf-2:1-spine-1:2", *tok)
            assert code == 6 and len(server.core.guard_held()) == 2, out
            code, out = await cli("guard", "--confirm", "leaf-9:1-spine-1:1", *tok)
            assert code == 5 and len(server.core.guard_held()) == 2, out  # no such link
            code, out = await cli("guard", "--confirm", "spine-1:1-leaf-1:1", *tok)     # either orientation
            assert code == 0 and "released 1 held link(s) as DOWN" in out and "leaf-1:1-spine-1:1" in out, out
            assert len(server.core.guard_held()) == 1 and server.core.lsd.state(0) == 0
            code, out = await cli("guard", "--confirm", *tok)
            assert code == 0 and "released 1 held link(s) as DOWN: " in out and "leaf-1:2-spine-2:1" in out, out
            assert server.core.guard_held() == {}                          # published DOWN
        finally:
            await client.close()
            await server.stop()

    asyncio.run(main())
