"""Freshness of authenticated datagrams (issue #19 items 1-4): incarnations, challenges, per-stream windows.

Each of the issue's cases is a test on real Codec pairs; the fuzz checks that no stale, replayed or
forged frame changes a Codec's freshness state (only the offer it reflects next may change)."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import messages
from proto.auth import KeyKind, KeyRing
from proto.config import Endpoint
from proto.messages import (
    Challenge,
    Codec,
    DecodeError,
    Hello,
    Keepalive,
    LsdRequest,
    NdFrame,
    PortReport,
    PortStatus,
)
from tests.harness.fresh import establish, establish_nd

RING = KeyRing.from_secret(bytes(range(7, 39)))
SWITCHES = ("tor-1", "tor-2", "tor-3")
MASTERS = ("m1", "m2", "m3")
DIGEST = "cd" * 32


def codec(local: str, **kw) -> Codec:
    ring = RING if local in MASTERS else RING.bundle_for_switch(local)
    return Codec(ring, local, SWITCHES, MASTERS, **kw)


def reason(c: Codec, data: bytes, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        c.decode(data, **kw)
    return info.value.reason


def report(seq: int, up: bool = True) -> PortReport:
    return PortReport("tor-1", DIGEST, seq, 1, (PortStatus(1, up, up, up, True, False),))


def state(c: Codec) -> dict:
    """Everything that decides what a Codec accepts (not the offers it reflects, nor counters)."""
    return {k: (s.inc, s.peer, s.chal, s.win.top, s.win._bitmap, s.gwin.top, s.gwin._bitmap)
            for k, s in c._sessions.items()}


# --------------------------------------------------------------------------------------- issue cases

def test_case1_a_report_captured_before_the_master_restarted_is_stale_after():
    sw, m = codec("tor-1"), codec("m1")
    establish(sw, m)
    captured = sw.encode(report(5, up=False), to="m1")
    assert m.decode(captured)[1] == report(5, up=False)
    restarted = codec("m1")
    assert reason(restarted, captured) == "stale"
    assert not restarted.established("tor-1")
    # the real switch is heard again within one exchange: its next report is stale too, the master's
    # answer (a Challenge) reflects the switch's offer, the switch's retransmission reflects the master's
    assert reason(restarted, sw.encode(report(6), to="m1")) == "stale"
    answer = restarted.answer("tor-1", now=0.0)
    assert sw.decode(answer) == ("m1", Challenge("m1")) and sw.last_new_peer == "m1"
    assert restarted.decode(sw.encode(report(6), to="m1"))[1] == report(6)
    assert reason(restarted, captured) == "replay"  # below the frame that proved freshness: stays dead


def test_case1_a_frame_captured_before_the_receiver_restarted_and_replayed_to_the_switch():
    m, sw = codec("m1"), codec("tor-1")
    establish(m, sw)
    captured = m.encode(Keepalive("m1", 3, 9), to="tor-1")
    sw.decode(captured)
    restarted = codec("tor-1")
    assert reason(restarted, captured) == "stale"
    assert not restarted.established("m1")


def test_case2_hellos_replayed_to_a_restarted_replica_are_stale():
    dead, replica = codec("m1"), codec("m2")
    establish(dead, replica)
    hellos = [dead.encode(Hello("m1", "master", 4, 10, 100, "m1"), to="m2") for _ in range(3)]
    for h in hellos:
        replica.decode(h)
    after_restart = codec("m2")
    assert all(reason(after_restart, h) == "stale" for h in hellos)
    # the replica answers (rate-limited), but a dead master never reflects: nothing is ever accepted
    assert after_restart.answer("m1", 0.0) is not None and after_restart.answer("m1", 0.01) is None
    assert all(reason(after_restart, h) == "stale" for h in hellos)
    assert after_restart.accepted == {} and not after_restart.established("m1")


def test_case3_a_sender_restarted_with_its_clock_stepped_back_is_heard_within_one_exchange(monkeypatch):
    sw, m = codec("tor-1"), codec("m1")
    establish(sw, m)
    for i in range(100):
        m.decode(sw.encode(report(i + 1), to="m1"))
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)  # an hour back
    restarted = codec("tor-1")
    first = restarted.encode(report(1), to="m1")
    assert reason(m, first) == "stale"                   # unverified, not "replay"
    restarted.decode(m.answer("tor-1", 0.0))             # the master's challenge...
    assert m.decode(restarted.encode(report(2), to="m1"))[1] == report(2)   # ...and it is heard again
    assert m.new_incarnations["tor-1"] == 2


def test_case4_reordering_tolerance_is_per_peer_not_shared_with_the_fanout():
    m, sw = codec("m1"), codec("tor-1")
    establish(m, sw)
    other = codec("tor-2")
    establish(m, other)
    early = m.encode(Keepalive("m1", 1, 1), to="tor-1")
    for v in range(200):                                    # a big fan-out to someone else in between
        m.encode(Keepalive("m1", 1, v), to="tor-2")
    late = m.encode(Keepalive("m1", 1, 2), to="tor-1")
    assert sw.decode(late)[1].version == 2
    assert sw.decode(early)[1].version == 1                 # reordered by one frame of ITS stream: fine


# --------------------------------------------------------------------------------------- mechanics

def test_both_restart_at_once_and_reestablish_with_challenges():
    m, sw = codec("m1"), codec("tor-1")
    establish(m, sw)
    m2, sw2 = codec("m1"), codec("tor-1")
    establish(m2, sw2)
    assert m2.decode(sw2.encode(report(1), to="m1"))[0] == "tor-1"


def test_a_challenge_is_only_good_once_per_incarnation():
    """A frame that reflected a challenge cannot start an incarnation again once another was accepted."""
    sw, m = codec("tor-1"), codec("m1")
    reason(m, sw.challenge("m1"))
    sw.decode(m.challenge("tor-1"))
    opener = sw.encode(report(1), to="m1")              # reflects m's current challenge
    assert m.decode(opener)[0] == "tor-1"
    sw_b = codec("tor-1")                               # tor-1 restarts
    reason(m, sw_b.challenge("m1"))
    sw_b.decode(m.challenge("tor-1"))
    assert m.decode(sw_b.encode(report(1), to="m1"))[0] == "tor-1"
    assert reason(m, opener) == "stale"                 # the old incarnation cannot come back


def test_group_frames_need_an_established_incarnation():
    m, sw = codec("m1"), codec("tor-1")
    early = m.encode(Keepalive("m1", 1, 1), key=KeyKind.GROUP)
    assert reason(sw, early) == "stale"
    establish(m, sw)
    assert sw.decode(m.encode(Keepalive("m1", 1, 2), key=KeyKind.GROUP))[1].version == 2
    assert reason(sw, early) == "replay"  # sent before the incarnation was verified: may predate our restart
    later = m.encode(Keepalive("m1", 1, 3), key=KeyKind.GROUP)
    assert sw.decode(m.encode(Keepalive("m1", 1, 4), key=KeyKind.GROUP))[1].version == 4
    assert sw.decode(later)[1].version == 3  # reordered within the group window
    assert reason(sw, later) == "replay"
    assert reason(codec("tor-1"), m.encode(Keepalive("m1", 1, 5), key=KeyKind.GROUP)) == "stale"


def test_nd_sessions_are_per_local_port_and_work_when_miscabled():
    a, b, c = codec("tor-1"), codec("tor-2"), codec("tor-3")
    establish_nd(a, 1, b, 4)
    frame = a.encode(NdFrame("tor-1", 1, Endpoint("tor-2", 4)))
    assert b.decode(frame, port=4)[0] == "tor-1"
    assert reason(b, a.encode(NdFrame("tor-1", 1, Endpoint("tor-2", 4))), port=5) == "stale"  # another port
    # tor-1 port 2 expects tor-2 but is cabled to tor-3 port 7: the periodic frames still establish it
    establish_nd(a, 2, c, 7)
    got = c.decode(a.encode(NdFrame("tor-1", 2, Endpoint("tor-2", 3))), port=7)
    assert got[1].expected == Endpoint("tor-2", 3)
    # a restarted neighbour on a link: stale until its next frames reflect
    b2 = codec("tor-2")
    assert reason(a, b2.encode(NdFrame("tor-2", 4, Endpoint("tor-1", 1))), port=1) == "stale"
    establish_nd(b2, 4, a, 1)


def test_answers_are_rate_limited_per_peer_and_only_to_unicast_peers():
    m = codec("m1", answer_interval=0.1)
    assert m.answer("tor-1", 5.0) is not None
    assert m.answer("tor-1", 5.05) is None
    assert m.answer("tor-2", 5.05) is not None
    assert m.answer("tor-1", 5.2) is not None
    assert m.answer(None, 9.0) is None and m.answer("ghost", 9.0) is None and m.answer("m1", 9.0) is None
    assert codec("tor-1").answer("tor-2", 0.0) is None  # switches talk unicast only to masters
    assert m.rejected["answer_limited"] == 1


def test_incarnation_and_wire_version_checks():
    with pytest.raises(ValueError, match="incarnation"):
        codec("m1", incarnation=0)
    sw = codec("tor-1", incarnation=42)
    assert sw.incarnation == 42
    data = sw.encode(LsdRequest("tor-1", 1, 1), to="m1")
    assert data[2] == 5 and data[5] == 1             # wire v5: key id 1 (the single-secret form)
    assert int.from_bytes(data[6:14], "big") == 42
    assert int.from_bytes(data[14:22], "big") == 1   # per-stream seq starts at 1
    assert int.from_bytes(data[30:38], "big") == 0   # nothing to reflect yet


# --------------------------------------------------------------------------------------- fuzz

@settings(max_examples=120, deadline=None)
@given(script=st.lists(st.tuples(st.sampled_from(["send", "restart_sw", "restart_m", "replay", "answer"]),
                                 st.integers(0, 10**6)), min_size=1, max_size=40))
def test_fuzz_no_stale_or_replayed_frame_changes_freshness_state(script):
    """Random sends, restarts (losing memory) and replays of any frame ever seen: a rejected frame never
    changes what a Codec accepts, and an accepted frame always belongs to the live incarnation."""
    nodes = {"tor-1": codec("tor-1"), "m1": codec("m1")}
    seen: list[tuple[str, bytes]] = []
    for op, n in script:
        if op.startswith("restart"):
            name = "tor-1" if op == "restart_sw" else "m1"
            nodes[name] = codec(name)
            continue
        if op == "replay":
            if not seen:
                continue
            dst, data = seen[n % len(seen)]
        else:
            src = "tor-1" if n % 2 else "m1"
            dst = "m1" if src == "tor-1" else "tor-1"
            c = nodes[src]
            if op == "answer":
                data = c.challenge(dst)
            elif src == "tor-1":
                data = c.encode(report(n + 1), to="m1")
            else:
                data = c.encode(Keepalive("m1", 1, n), to="tor-1")
            seen.append((dst, data))
        receiver = nodes[dst]
        before = state(receiver)
        try:
            sender, _ = receiver.decode(data)
        except DecodeError as e:
            assert e.reason in ("stale", "replay")
            after = state(receiver)
            assert {k: after[k] for k in before} == before
            assert all(after[k][0] is None for k in after.keys() - before.keys())  # first contact: no inc
        else:
            inc = int.from_bytes(data[6:14], "big")
            assert inc == nodes[sender].incarnation, "accepted a frame of a dead incarnation"


def test_a_frame_of_one_stream_cannot_be_replayed_into_another():
    """Found by the simulator: the MASTER key (and a switch's own key) signs frames to several peers, so
    the tag covers the destination; ND sessions are bound to the sender's port."""
    sw, m1, m2 = codec("tor-1"), codec("m1"), codec("m2")
    establish(sw, m1)
    establish(sw, m2)
    for _ in range(5):
        to_m1 = sw.encode(report(1), to="m1")
    assert reason(m2, to_m1) == "bad_hmac"                       # valid only at m1
    h = m1.encode(Hello("m1", "master", 1, 1, 1, "m1"), to="m3")
    m3 = codec("m3")
    establish(m1, m3)
    establish(m1, m2)
    assert reason(m2, h) == "bad_hmac"
    # ND: tor-1 has two links to tor-2 (its ports 1 and 2 -> tor-2 ports 5 and 6)
    a, b = codec("tor-1"), codec("tor-2")
    establish_nd(a, 1, b, 5)
    establish_nd(a, 2, b, 6)
    for _ in range(5):
        on_port1 = a.encode(NdFrame("tor-1", 1, Endpoint("tor-2", 5)))
    assert b.decode(on_port1, port=5)[0] == "tor-1"
    before = state(b)
    assert reason(b, on_port1, port=6) == "stale"                # replayed onto the other link
    assert state(b) == before


def test_nonces_are_drawn_in_batches_and_never_shared_with_a_forked_child() -> None:
    """Challenges and incarnations come from a batch of OS random bytes (one getrandom per 256 nonces, issue
    #18): a process forked mid-batch (the fleet harness's workers, a daemon) must not reuse the parent's."""
    drawn = [messages._nonce() for _ in range(3 * messages._NONCE_BATCH)]
    assert len(set(drawn)) == len(drawn) and min(drawn) > 0
    messages._nonce()                                      # mid-batch
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # pragma: no cover - the child
        os.write(w, b",".join(str(messages._nonce()).encode() for _ in range(8)))
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = {int(x) for x in os.read(r, 4096).split(b",")}
    os.close(r)
    parent = {messages._nonce() for _ in range(8)}
    assert len(child) == 8 and not child & parent
