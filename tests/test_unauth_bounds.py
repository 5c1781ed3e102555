"""What an attacker without the fabric key can make a Codec remember, log or send is bounded, and cannot
starve a genuine peer (proto.bounded; tester report: two ways to disturb the masters without the key).

1. Header-only frames claiming every configured sender under key ids 2-255 (bad HMAC): before, each
   (claimed sender, key id) pair got a row in ``Codec.rejected_key_ids`` for ever and its own log limit
   (1st, 2nd, 4th, ... frame): 18,288 datagrams wrote 4,572 WARNING lines. Now the table keeps the 256 most
   recently seen pairs, the totals stay exact, and one line budget covers every pair.
2. A switch's captured frames replayed at 600/s from the attacker's address used up the master's one
   Challenge per peer per 50 ms, so the restarted switch's own frames went unanswered (fail-static 5.7 s).
   Now the allowance is per (peer, source address).

Pure Codec tests (no network) and, at the end, both attacks against a real master process on loopback.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proto.auth import KeyKind, KeyRing, KeySet
from proto.bounded import AnswerBudget, KeyIdRejections, LogBudget
from proto.config import load_fabric
from proto.messages import (
    _FIXED,
    MAGIC,
    WIRE_VERSION,
    Challenge,
    Codec,
    DecodeError,
    Keepalive,
    PortReport,
    PortStatus,
)
from tests.harness.fresh import establish

RING = KeyRing.from_secret(bytes(range(7, 39)))
NEW_RING = KeyRing.from_secret(bytes(range(40, 72)))
SWITCHES = tuple(f"tor-{i}" for i in range(1, 61))
MASTERS = ("m1", "m2", "m3")
DIGEST = "cd" * 32
ATTACKER = ("192.0.2.66", 40000)
GENUINE = ("10.0.0.1", 50000)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def codec(local: str, ring: KeyRing | KeySet = RING, **kw) -> Codec:
    if isinstance(ring, KeyRing) and local not in MASTERS:
        ring = ring.bundle_for_switch(local)
    return Codec(ring, local, SWITCHES, MASTERS, **kw)


def reason(c: Codec, data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        c.decode(data)
    return info.value.reason


def forged(sender: str, key_id: int) -> bytes:
    """A header-only frame claiming `sender` under `key_id`, with a tag of zeros (no key needed)."""
    kind = KeyKind.MASTER if sender in MASTERS else KeyKind.SWITCH
    name = sender.encode()
    return (_FIXED.pack(MAGIC, WIRE_VERSION, Challenge.TYPE, kind, key_id, 7, 1, 0, 0, 0)
            + bytes((len(name),)) + name + bytes((len(name),)) + name + bytes(32))


def report(sender: str, seq: int) -> PortReport:
    return PortReport(sender, DIGEST, seq, 1, (PortStatus(1, True, True, True, True, False),))


def key_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=key_id_rejected" in r.getMessage()]


# ------------------------------------------------------------------------------------------ 1: key ids

def test_an_unknown_key_id_flood_is_bounded_in_memory_and_log_lines(caplog) -> None:
    """The tester's flood: every configured sender x key ids 2-255, four frames each (62 x 254 x 4 =
    62,992 datagrams). Before: 15,748 table rows and 47,244 log lines (count 1, 2, 4: 5.5 MB)."""
    clock = Clock()
    m = codec("m1", clock=clock)
    caplog.set_level(logging.WARNING, logger="proto.messages")
    senders = [*SWITCHES, "m2", "m3"]
    sent = 0
    for _ in range(4):
        for key_id in range(2, 256):
            for s in senders:
                assert reason(m, forged(s, key_id)) == "unknown_key_id"
                sent += 1
        clock.t += 1.0                                    # the flood lasts 4 s
    table = m.rejected_key_ids
    assert len(table) == table.capacity == 256                              # was 15,748 rows
    assert m.rejected["unknown_key_id"] == table.total == sent               # counters exact
    assert table.by_key_id == {k: 4 * len(senders) for k in range(2, 256)}
    assert sum(table.values()) + table.evicted_frames == sent
    lines = key_lines(caplog)
    assert len(lines) == m.key_log.burst == 20, len(lines)                  # was 47,244
    assert m.key_log.suppressed > 40_000     # would-be lines (an evicted pair that returns counts from 1)
    assert sum(len(line) for line in lines) < 6_000
    assert "suppressed=" not in "".join(lines)
    # once the budget refills, the next line says how many were suppressed before it
    caplog.clear()
    clock.t += 60.0
    suppressed = m.key_log.suppressed
    reason(m, forged("tor-1", 77))
    assert key_lines(caplog)[0].endswith(f"count=1 accepted=1 send_key=1 total={sent + 1} suppressed={suppressed}")
    for s in senders:
        reason(m, forged(s, 78))
    assert len(key_lines(caplog)) == 6                 # 60 s at one line per 10 s


def test_a_peer_under_a_key_id_we_lack_stays_visible_through_a_flood(caplog) -> None:
    """Key rollover: tor-1 already signs with key 2, m1 accepts only 1. Amid a flood of forged pairs, tor-1's
    pair stays in the table (it keeps sending: most recently seen), its key id's total is exact, and its
    first frame is logged."""
    clock = Clock()
    m = codec("m1", clock=clock)
    tor1 = codec("tor-1", KeySet({1: RING.bundle_for_switch("tor-1"), 2: NEW_RING.bundle_for_switch("tor-1")}, 2))
    caplog.set_level(logging.WARNING, logger="proto.messages")
    for key_id in range(3, 256):                       # the attacker starts first and uses up the line budget
        for s in SWITCHES[:10]:
            reason(m, forged(s, key_id))
    assert m.key_log.suppressed > 0
    clock.t += 10.0                                    # one line's worth of budget back
    genuine = 0
    for i in range(50):
        assert reason(m, tor1.encode(report("tor-1", i + 1), to="m1")) == "unknown_key_id"
        genuine += 1
        for s in SWITCHES[10:]:                        # 50 forged pairs between two genuine frames
            reason(m, forged(s, 3 + i))
        assert m.rejected_key_ids[("tor-1", 2)] == genuine
    assert m.rejected_key_ids.by_key_id[2] == genuine
    assert any("peer=tor-1 key_id=2 why=unknown" in line for line in key_lines(caplog))


def test_key_id_rejections_table() -> None:
    t = KeyIdRejections(capacity=3)
    for pair in [("a", 2), ("b", 2), ("a", 2), ("c", 3), ("d", 4)]:
        t.note(*pair)
    assert t == {("a", 2): 2, ("c", 3): 1, ("d", 4): 1}              # b (least recently seen) evicted
    assert list(t) == [("a", 2), ("c", 3), ("d", 4)]
    assert (t.total, t.evicted_pairs, t.evicted_frames, t.by_key_id) == (5, 1, 1, {2: 3, 3: 1, 4: 1})
    assert t.note("c", 3) == 2 and list(t) == [("a", 2), ("d", 4), ("c", 3)]      # seen again: newest
    assert t.note("b", 2) == 1 and ("a", 2) not in t                             # a is the oldest now
    assert t.note("a", 2) == 1 and list(t) == [("c", 3), ("b", 2), ("a", 2)]      # a returning pair: from 1
    assert (t.total, t.evicted_pairs, t.evicted_frames) == (8, 3, 4)
    assert t.total == sum(t.values()) + t.evicted_frames
    with pytest.raises(ValueError):
        KeyIdRejections(capacity=0)


def test_log_budget() -> None:
    b = LogBudget(rate=0.5, burst=2)
    assert [b.take(0.0), b.take(0.0), b.take(0.0), b.take(1.0)] == [0, 0, None, None]
    assert b.take(2.0) == 2 and b.suppressed == 2     # one token back after 2 s: says 2 were suppressed
    assert b.take(2.0) is None and b.take(1.0) is None   # time going back refills nothing
    assert b.take(100.0) == 2 and b.take(100.0) == 0 and b.take(100.0) is None   # refilled to burst only


# ------------------------------------------------------------------------------------------ 2: answers

def test_answer_budget_is_per_peer_and_address_and_bounded() -> None:
    b = AnswerBudget(0.05, per_peer=2, capacity=5)
    assert b.allow("tor-1", ATTACKER, 0.0) and not b.allow("tor-1", ATTACKER, 0.01)
    assert b.allow("tor-1", GENUINE, 0.01) and not b.allow("tor-1", GENUINE, 0.02)   # its own allowance
    assert b.allow("tor-2", ATTACKER, 0.02)                                            # and each peer's
    # a third address of tor-1 takes the place of the one answered longest ago (ATTACKER, at 0.0)
    assert b.allow("tor-1", ("192.0.2.67", 1), 0.03) and b.evicted == 1
    # a peer's frames from more addresses than that: each still draws at most one answer per datagram
    assert b.allow("tor-1", ATTACKER, 0.031) and b.evicted == 2          # GENUINE (0.01) made way
    assert not b.allow("tor-1", ("192.0.2.67", 1), 0.04) and not b.allow("tor-1", ATTACKER, 0.05)
    assert b.allow("tor-1", ATTACKER, 0.081)            # its interval passed
    # entries older than the interval are dropped as time passes; the table never exceeds `capacity`
    for i in range(20):
        assert b.allow(f"tor-{i}", GENUINE, 1.0)
        assert len(b) <= 5
    assert b.allow("tor-1", GENUINE, 2.0) and len(b) == 1
    # a configured-address answer (None): one allowance per peer
    assert b.allow("m2", None, 3.0) and not b.allow("m2", None, 3.01) and b.allow("m2", None, 3.06)
    with pytest.raises(ValueError):
        AnswerBudget(0.05, per_peer=0)


def _replay_storm(m: Codec, captured: bytes, restarted: Codec, rate: float = 600.0,
                  until: float = 1.0) -> tuple[float | None, int]:
    """The master runtime (controller.server: stale -> Codec.answer(peer, now, source)) fed by an attacker
    replaying `captured` from ATTACKER at `rate`/s while the restarted switch reports from GENUINE every
    0.2 s from t=0.01 (a Challenge makes it re-send at once, as client.core does). Returns (when the
    master accepted the restarted switch's report, the Challenges sent to the attacker)."""
    events = [(i / rate, "attack") for i in range(int(until * rate))]
    events += [(0.01 + 0.2 * i, "switch") for i in range(int(until / 0.2))]
    to_attacker, seq = 0, 100
    for t, who in sorted(events):
        frame, addr = captured, ATTACKER
        if who == "switch":
            seq += 1
            frame, addr = restarted.encode(report("tor-1", seq), to="m1"), GENUINE
        while True:
            try:
                m.decode(frame)
            except DecodeError as e:
                assert e.reason in ("stale", "replay")
                answer = m.answer(e.sender, t, addr) if e.reason == "stale" else None
                if answer is None:
                    break
                if addr == ATTACKER:
                    to_attacker += 1
                    break
                restarted.decode(answer)                 # the restarted switch accepts the master ...
                seq += 1                                 # ... and re-sends its report at once
                frame = restarted.encode(report("tor-1", seq), to="m1")
                continue
            if addr == GENUINE:
                return t, to_attacker
            break
    return None, to_attacker


def test_replays_from_one_address_do_not_starve_a_restarted_switch() -> None:
    """The tester's second case on Codecs: tor-1's frames captured in an earlier life (stale at the master:
    not of the incarnation it accepted), tor-1 restarted, the capture replayed at 600/s from another
    address. The restarted switch is accepted at its first report (before: only once a report landed in the
    ~2 ms after an allowance ran out, seconds later)."""
    m, earlier = codec("m1"), codec("tor-1")
    establish(earlier, m)
    captured = earlier.encode(report("tor-1", 1), to="m1")
    assert m.decode(captured)[0] == "tor-1"
    establish(codec("tor-1"), m)                      # tor-1 restarted since: the capture is stale
    assert reason(m, captured) == "stale"
    restarted = codec("tor-1")                        # and restarts again, under the storm
    accepted_at, to_attacker = _replay_storm(m, captured, restarted)
    assert accepted_at == pytest.approx(0.01)
    assert m.established("tor-1") and restarted.established("m1")
    # anti-amplification: the attacker's address drew at most one Challenge per 50 ms
    assert 0 < to_attacker <= 1 + 0.01 / 0.05 + 1
    assert m.rejected["answer_limited"] > 0


def test_the_attackers_own_answers_stay_rate_limited_per_address() -> None:
    m, sw = codec("m1"), codec("tor-1")
    establish(sw, m)
    captured = sw.encode(report("tor-1", 1), to="m1")
    m2 = codec("m1")                                       # the master restarted: every replay is stale
    answers = {a: 0 for a in (ATTACKER, GENUINE)}
    for i in range(600):
        for addr in answers:
            with pytest.raises(DecodeError) as info:
                m2.decode(captured)
            answers[addr] += m2.answer(info.value.sender, i / 600, addr) is not None
    assert answers == {ATTACKER: 20, GENUINE: 20}          # one per 50 ms per address, over 1 s
    assert len(m2.answers) <= 2


def test_a_client_answering_replays_of_a_dead_master_still_rejoins_the_restarted_one() -> None:
    """The client direction: a client answers a master at its configured address, so its allowance is per
    master; a Challenge drawn by a replay of the dead master's frames still goes to the live master, and
    one exchange later both sides are verified whatever the replays did in between."""
    sw, m1 = codec("tor-1"), codec("m1")
    establish(sw, m1)
    captured = m1.encode(Keepalive("m1", 1, 1), to="tor-1")
    assert sw.decode(captured)[0] == "m1"
    live = codec("m1")                                  # the master restarted
    done_at = None
    events = sorted([(i / 600, "attack") for i in range(600)] + [(0.005 + 0.1 * i, "master") for i in range(10)])
    for t, who in events:
        frame = captured if who == "attack" else live.encode(Keepalive("m1", 1, 1), to="tor-1")
        try:
            sw.decode(frame)
            continue
        except DecodeError as e:
            answer = sw.answer(e.sender, t) if e.reason == "stale" else None
        while answer is not None:                       # to m1's configured address: the live master
            try:
                live.decode(answer)
                answer = None
            except DecodeError as e:                    # it reflected a replay's offer: the master answers
                back = live.answer(e.sender, t, GENUINE)
                answer = None
                if back is not None:
                    sw.decode(back)                     # tor-1 accepts the live master's incarnation
                    answer = sw.encode(report("tor-1", 1), to="m1")   # and re-sends its report at once
        if live.established("tor-1") and sw.established("m1") and done_at is None:
            done_at = t
            assert sw.decode(live.encode(Keepalive("m1", 1, 2), to="tor-1"))[0] == "m1"
    assert done_at is not None and done_at < 0.06, done_at


# ------------------------------------------------------------------------------- a real master process

#: The replaying attacker, a process of its own (a thread would share our GIL and send in bursts): sends
#: argv[1] (hex) to 127.0.0.1:argv[2] at argv[3]/s for argv[4] s, then prints the count sent and the
#: message types of what came back.
_ATTACKER = r"""
import socket, sys, time
frame, port, rate, duration = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.setblocking(False)
got, i, t0 = [], 0, time.monotonic()
while time.monotonic() < t0 + duration:
    s.sendto(frame, ("127.0.0.1", port))
    i += 1
    try:
        while True:
            got.append(s.recv(65535)[3])
    except BlockingIOError:
        pass
    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
print(i, *got)
"""


def test_against_a_master_process_floods_are_bounded_and_replays_do_not_delay_a_restart(tmp_path: Path) -> None:
    from tests.harness.simclient import SimFleet
    from tests.test_freshness_loopback import _wait_master
    from tests.test_master_integration import Master, converge, write_config

    m = Master(write_config(tmp_path), tmp_path / "state", tmp_path / "master.log")
    fabric = load_fabric(m.cfg)
    keyring = KeyRing.load(fabric.security.key_file)
    attacker: subprocess.Popen[str] | None = None
    try:
        m.start()
        _wait_master(m)
        # 1. the key-id flood: every configured sender x key ids 2..255, four frames each
        flood = [forged(s.name, key_id) for key_id in range(2, 256) for s in fabric.switches]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(4):
            for frame in flood:
                s.sendto(frame, ("127.0.0.1", m.client_port))
            time.sleep(0.05)
        s.close()
        sent = 4 * len(flood)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            keys = m.get("/v1/keys")
            if sum(r["count"] for r in keys["rejected_key_id_totals"]) >= sent:
                break
            time.sleep(0.1)
        assert sum(r["count"] for r in keys["rejected_key_id_totals"]) == sent
        assert len(keys["rejected_key_ids"]) <= 256
        assert keys["rejected_key_ids_evicted"]["frames"] + sum(r["count"] for r in keys["rejected_key_ids"]) == sent
        warnings = [line for line in m.log.read_text().splitlines() if "event=key_id_rejected" in line]
        assert len(warnings) <= 21, len(warnings)               # was 3 x 2,032 here
        # 2. a switch restart under a storm of its frames (of an earlier life: stale) from another address
        fleet = SimFleet(fabric, keyring, {"m1": ("127.0.0.1", m.client_port)}, n_sockets=len(fabric.switches),
                         report_retry=0.2)                # a socket per switch: a restart changes its port
        names_links = [link.name for link in fabric.links]
        fleet.report()
        converge(fleet, m, dict.fromkeys(names_links, "up"))
        sw = fleet.switches["leaf-1"]
        ports = tuple(PortStatus(p, True, True, True, True, False) for p in fabric.fabric_ports("leaf-1"))
        earlier = Codec(keyring.bundle_for_switch("leaf-1"), "leaf-1", sw.codec.switches, sw.codec.masters)
        captured = earlier.encode(PortReport("leaf-1", fabric.digest, sw.report_seq, sw.term, ports), to="m1")
        attacker = subprocess.Popen([sys.executable, "-c", _ATTACKER, captured.hex(), str(m.client_port), "1000",
                                     "1.5"], stdout=subprocess.PIPE, text=True)
        _restart(fleet, sw, Codec(keyring.bundle_for_switch("leaf-1"), "leaf-1", sw.codec.switches,
                                  sw.codec.masters))
        time.sleep(0.3)                                   # the storm is on
        t0 = time.monotonic()
        fleet.report(["leaf-1"])                          # the restarted leaf-1's first report
        ok = fleet.pump(1.0, until=lambda: sw.acked_seq == sw.report_seq)
        elapsed = time.monotonic() - t0
        out, _ = attacker.communicate(timeout=10)
        sent, *got = map(int, out.split())
        print(f"restarted switch acked {elapsed * 1000:.0f} ms after its first report under a replay storm of "
              f"{sent} datagrams in 1.5 s; {len(got)} challenge(s) to the attacker")
        assert ok and elapsed < 0.5, elapsed              # was seconds (fail-static 5.7 s on the lab)
        assert sent > 1000 and got and set(got) == {Challenge.TYPE}
        assert len(got) <= 1.5 / 0.05 + 2                 # one per 50 ms to the attacker's address
        fleet.close()
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
            attacker.wait(5)
        m.stop(signal.SIGKILL)


def _restart(fleet, sw, codec: Codec) -> None:
    """A new client process: a new incarnation on a new UDP port (the master's keepalives still go to the
    old one, as they did on the lab, so only the switch's own reports can start the handshake)."""
    old = fleet.socks[sw.sock]
    fleet.sel.unregister(old)
    old.close()
    new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new.bind(("127.0.0.1", 0))
    new.setblocking(False)
    fleet.socks[sw.sock] = new
    fleet.sel.register(new, selectors.EVENT_READ, sw.sock)
    sw.codec = codec
