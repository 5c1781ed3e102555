"""Two client processes for one switch (tester bb40 F17): the master says so once per episode, naming both
sources, counts it, shows it in /v1/clients, keeps the newer client and refuses the older while the newer
is live (controller.dupclients on real Codecs, then a MasterServer's intake)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from controller.dupclients import DuplicateClients
from controller.server import MasterServer
from proto.auth import KeyRing
from proto.messages import Codec, DecodeError, LsdRequest, PortReport, PortStatus
from tests.test_controller_rest import run

RING = KeyRing.from_secret(bytes(range(7, 39)))
SWITCHES = ("tor-1", "tor-2")
MASTERS = ("m1",)
DIGEST = "cd" * 32
ADDR_A, ADDR_B = ("127.1.0.3", 40001), ("127.1.0.99", 40002)


def _codec(local: str, **kw) -> Codec:
    return Codec(RING if local in MASTERS else RING.bundle_for_switch(local), local, SWITCHES, MASTERS, **kw)


def _dup_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("event=duplicate_client") and r.levelno == logging.WARNING]


class _Intake:
    """A master Codec with DuplicateClients on a settable clock, fed as controller.server feeds them: a
    stale frame is answered at its source (the client takes the Challenge), an accepted one is `heard`."""

    def __init__(self) -> None:
        self.now = 100.0
        self.master = _codec("m1")
        self.dup = DuplicateClients(1.5, 15.0, "m1", SWITCHES)
        self.dup.attach(self.master, lambda: self.now)
        self.seq = 0

    def send(self, client: Codec, addr: tuple[str, int], dt: float = 0.1) -> str:
        """One report of `client` from `addr`, `dt` s after the previous frame: "ok" or the reason."""
        self.now += dt
        self.seq += 1
        data = client.encode(PortReport("tor-1", DIGEST, self.seq, 1, (PortStatus(1, True, True, True, True,
                                                                                   False),)), to="m1")
        try:
            self.master.decode(data, source=addr)
        except DecodeError as e:
            if e.reason == "stale":
                answer = self.master.answer(e.sender, self.now, addr)
                assert answer is not None
                client.decode(answer)
            return e.reason
        self.dup.heard("tor-1", self.master.incarnation_of("tor-1"), addr, self.now)
        return "ok"

    def until_ok(self, client: Codec, addr: tuple[str, int]) -> list[str]:
        got = [self.send(client, addr)]
        while got[-1] == "stale":
            got.append(self.send(client, addr))
        return got


def test_two_live_incarnations_are_said_once_the_older_refused_while_the_newer_is_live(caplog) -> None:
    caplog.set_level(logging.INFO)
    m = _Intake()
    a, b = _codec("tor-1", incarnation=0xA), _codec("tor-1", incarnation=0xB)
    assert m.until_ok(a, ADDR_A) == ["stale", "ok"]
    # B starts: a restart as far as anyone can tell (its first frame stale, then accepted)
    assert m.until_ok(b, ADDR_B) == ["stale", "ok"]
    assert not _dup_lines(caplog) and m.dup.view("tor-1", m.now) is None
    # A speaks again: stale (B took over), answered; its next frame reflects the challenge drawn after B
    # was accepted, so A runs beside B: refused, and said once
    assert m.until_ok(a, ADDR_A) == ["stale", "duplicate"]
    # each refusal draws a new challenge (a recording of A's frames must never start A later): A's next
    # frame is stale, answered, and the one after it refused again
    got = [m.send(a, ADDR_A) for _ in range(5)]
    assert got == ["stale", "duplicate", "stale", "duplicate", "stale"]
    for _ in range(3):              # B is served all along (A's frames changed nothing)
        assert m.send(b, ADDR_B) == "ok"
        got.append(m.send(a, ADDR_A))
    assert got[5:] == ["duplicate", "stale", "duplicate"]
    refused = 1 + got.count("duplicate")
    lines = _dup_lines(caplog)
    assert lines == ["event=duplicate_client local=m1 switch=tor-1 "
                     "sources=127.1.0.3:40001(inc:000000000000000a),127.1.0.99:40002(inc:000000000000000b) "
                     "kept=127.1.0.99:40002 refused=127.1.0.3:40001 hint=two_client_processes_for_one_switch"]
    assert not [r for r in caplog.records if "datagram_rejected" in r.getMessage()
                and "reason=duplicate" in r.getMessage()]          # that line says it all, once
    assert m.dup.episodes == {"tor-1": 1} and m.master.rejected["duplicate"] == refused == 5
    view = m.dup.view("tor-1", m.now)
    assert view is not None and view["active"] and view["episodes"] == 1 and view["refused"] == refused
    assert view["serving"]["address"] == "127.1.0.99:40002" and view["serving"]["incarnation"] == "000000000000000b"
    assert [o["address"] for o in view["others"]] == ["127.1.0.3:40001"]
    # B is stopped: once it has been silent for `live`, A takes over as after a restart (same episode)
    m.now += 1.6
    assert m.until_ok(a, ADDR_A)[-1] == "ok"
    assert m.master.incarnation_of("tor-1") == 0xA and len(_dup_lines(caplog)) == 1
    # long quiet, then B again: a new episode, a new line (B is refused now: A is live)
    assert m.send(a, ADDR_A, dt=14.0) == "ok" and m.send(a, ADDR_A, dt=1.2) == "ok"
    assert m.until_ok(b, ADDR_B) == ["stale", "duplicate"]
    assert m.dup.episodes == {"tor-1": 2} and len(lines := _dup_lines(caplog)) == 2
    assert "kept=127.1.0.3:40001 refused=127.1.0.99:40002" in lines[1]


def test_a_restart_and_replays_of_the_old_incarnation_are_no_duplicate(caplog) -> None:
    caplog.set_level(logging.INFO)
    m = _Intake()
    old = _codec("tor-1", incarnation=0xA)
    assert m.until_ok(old, ADDR_A) == ["stale", "ok"]
    captured = old.encode(LsdRequest("tor-1", 1, 1), to="m1")
    new = _codec("tor-1", incarnation=0xC)        # restarted on another source port
    assert m.until_ok(new, ("127.1.0.3", 40009)) == ["stale", "ok"]
    for _ in range(3):
        with pytest.raises(DecodeError, match="stale"):
            m.master.decode(captured, source=ADDR_A)
    assert m.send(new, ("127.1.0.3", 40009)) == "ok"
    assert not _dup_lines(caplog) and not m.dup.episodes and m.dup.view("tor-1", m.now) is None


def test_each_switch_episode_is_one_line_within_one_budget(caplog) -> None:
    """Many switches misdeployed at once: one line each within the shared LogBudget, the next line says how
    many were suppressed; the counter is exact."""
    caplog.set_level(logging.INFO)
    names = [f"s{i}" for i in range(30)]
    dup = DuplicateClients(1.5, 15.0, "m1", names)
    for i, name in enumerate(names):
        dup.heard(name, 1, ("10.0.0.1", i), 0.0)
        dup.heard(name, 2, ("10.0.0.2", i), 0.1)
        assert not dup.admit(name, 1, 2, ("10.0.0.1", i), 0.2)
        assert not dup.admit(name, 1, 2, ("10.0.0.1", i), 0.3)     # same episode: no line
    assert len(_dup_lines(caplog)) == 20 and sum(dup.episodes.values()) == 30
    assert dup.admit("m2", 5, 4, None, 0.4)          # not a switch: never judged
    dup.heard("s0", 2, ("10.0.0.2", 0), 20.0)
    assert not dup.admit("s0", 1, 2, ("10.0.0.1", 0), 20.0)       # a new episode of s0, after 2 tokens came back
    assert _dup_lines(caplog)[-1].endswith("suppressed=10")


# ------------------------------------------------------------------------------------------ the runtime

def test_the_master_intake_logs_counts_and_shows_two_clients_of_one_switch(tmp_path: Path, caplog) -> None:
    """MasterServer._on_datagram with two incarnations of leaf-1 from two addresses (real sockets there, so
    the Challenges come back): one line, the counter, /v1/clients; the acks go to the newer client."""
    caplog.set_level(logging.INFO)

    async def body(server: MasterServer, c: TestClient) -> None:
        f = server.fabric
        ring = KeyRing.load(f.security.key_file)
        socks = []
        for host in ("127.0.0.2", "127.0.0.3"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.setblocking(False)
            socks.append(s)
        try:
            clients = [Codec(ring.bundle_for_switch("leaf-1"), "leaf-1", server.codec.switches,
                             server.codec.masters, incarnation=inc) for inc in (0xA1, 0xB2)]
            ports = tuple(PortStatus(p, True, True, True, True, False) for p in f.fabric_ports("leaf-1"))
            seq = [0]

            async def send(i: int) -> list:
                """One report of client i through the intake; the Challenges and acks that came back to it."""
                seq[0] += 1
                data = clients[i].encode(PortReport("leaf-1", f.digest, seq[0], server.core.term, ports), to="m1")
                server._on_datagram(data, socks[i].getsockname())
                await asyncio.sleep(0.05)
                got = []
                while True:
                    try:
                        raw = socks[i].recv(65535)
                    except BlockingIOError:
                        return got
                    try:
                        kind = type(clients[i].decode(raw)[1]).__name__
                    except DecodeError as e:
                        kind = e.reason
                    if kind in ("Challenge", "ReportAck"):      # not the keepalives and LSD updates
                        got.append(kind)

            assert await send(0) == ["Challenge"]
            assert await send(0) == ["ReportAck"]
            assert await send(1) == ["Challenge"]
            assert await send(1) == ["ReportAck"]
            assert await send(0) == ["Challenge"]         # A is stale now (B took over) ...
            assert await send(0) == []                    # ... and refused once it proves it runs
            for _ in range(3):                            # refused, each time after a new challenge
                assert await send(1) == ["ReportAck"] and await send(0) == ["Challenge"]
                assert await send(0) == []
            a_addr, b_addr = (f"{h}:{p}" for h, p in (s.getsockname() for s in socks))
            lines = _dup_lines(caplog)
            assert len(lines) == 1 and f"switch=leaf-1 sources={a_addr}(inc:00000000000000a1),{b_addr}" \
                                       f"(inc:00000000000000b2) kept={b_addr} refused={a_addr}" in lines[0]
            doc = await (await c.get("/v1/clients")).json()
            row = next(r for r in doc["clients"] if r["switch"] == "leaf-1")
            assert doc["duplicate_clients"] == ["leaf-1"] and row["address"] == b_addr
            dup = row["duplicate"]
            assert dup["active"] and dup["episodes"] == 1 and dup["refused"] == 4
            assert dup["serving"]["address"] == b_addr and dup["serving"]["incarnation"] == "00000000000000b2"
            assert [o["address"] for o in dup["others"]] == [a_addr]
            other = next(r for r in doc["clients"] if r["switch"] == "leaf-2")
            assert other["duplicate"] is None
            text = await (await c.get("/metrics")).text()
            assert 'firepath_master_duplicate_clients_total{switch="leaf-1"} 1.0' in text
            assert 'firepath_master_datagrams_rejected_total{reason="duplicate"} 4.0' in text
        finally:
            for s in socks:
                s.close()

    run(tmp_path, body)


def test_recorded_frames_of_the_refused_process_never_take_the_switch_over() -> None:
    """Review: every frame of the older process during an episode reflected the master's one challenge, which
    stayed valid while the newer client was accepted; replayed once the newer one was quiet 1.5 s (a blip, a
    master stall), they took the switch over and locked the genuine client out. A refusal redraws the
    challenge: a recording is stale, the newer client keeps the switch."""
    m = _Intake()
    a, b = _codec("tor-1", incarnation=0xA), _codec("tor-1", incarnation=0xB)
    m.until_ok(a, ADDR_A)
    m.until_ok(b, ADDR_B)                        # the newer process takes over
    assert m.send(a, ADDR_A) == "stale"          # the older one is answered: it holds the live challenge
    recorded = []
    for i in range(10):                          # the older one keeps sending beside it; an attacker records
        m.now += 0.1
        data = a.encode(PortReport("tor-1", DIGEST, 1000 + i, 1, (PortStatus(1, True, True, True, True, False),)),
                        to="m1")
        recorded.append(data)
        try:
            m.master.decode(data, source=ADDR_A)
        except DecodeError as e:
            assert e.reason in ("duplicate", "stale")
        m.send(b, ADDR_B)
    for _ in range(20):                          # the older process is stopped; the newer goes on
        m.send(b, ADDR_B, dt=0.5)
    m.now += 2.0                                 # then is quiet past `live`
    attacker = ("127.66.6.6", 666)
    for data in recorded:
        m.now += 0.3
        with pytest.raises(DecodeError) as got:
            m.master.decode(data, source=attacker)
        assert got.value.reason in ("stale", "replay")
        assert m.send(b, ADDR_B, dt=0.0) == "ok"
    assert m.master.incarnation_of("tor-1") == 0xB


def test_the_switches_judged_are_the_codecs_as_a_rollout_changes_them() -> None:
    """Review: the tracker kept the switch list it started with; a switch added by a rollout (the codec
    learns it at prepare) was never judged. Attached, it judges the codec's switches; a commit's timers apply."""
    m = _Intake()
    assert "tor-9" not in m.dup.switches
    m.master.switches = m.master.switches | {"tor-9"}
    assert "tor-9" in m.dup.switches
    m.dup.heard("tor-9", 0xA, ADDR_A, m.now)
    m.dup.heard("tor-9", 0xB, ADDR_B, m.now)
    assert m.dup.admit("tor-9", 0xA, 0xB, ADDR_A, m.now + 0.1) is False      # judged: the older refused
    m.dup.set_timers(0.05, 15.0)
    assert m.dup.admit("tor-9", 0xA, 0xB, ADDR_A, m.now + 0.2) is True       # the newer quiet past 50 ms
