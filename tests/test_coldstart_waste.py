"""Issue #18, stop 27: work a cold start no longer does at the master — a request that crossed the snapshot it
asks for (it waited in the input queue while the snapshot went out) costs no second snapshot, unicast or
group; the client socket gives every datagram's receive time so the master can tell."""

from __future__ import annotations

import socket
import time

from controller.actions import GROUP
from controller.distribution import Distributor
from controller.intake import enable_timestamps, read_one_at
from proto.lsd import LinkState, LinkStateDB
from proto.messages import LsdFull


def _dist(multicast: bool = False) -> tuple[Distributor, LinkStateDB]:
    d = Distributor("m1", "0" * 64, pacing=0.002, max_update_rate=200.0, keepalive=10.0, client_dead=100.0,
                    multicast=multicast)
    d.activate(1, 0.0)
    lsd = LinkStateDB(64)
    lsd.apply({0: LinkState.UP})
    return d, lsd


def _fulls(d: Distributor, lsd: LinkStateDB, now: float, dest: str) -> list[int]:
    return [s.msg.version for s in d.tick(lsd, now) if s.dest == dest and isinstance(s.msg, LsdFull)]


def test_a_request_that_crossed_its_snapshot_gets_no_second_one() -> None:
    d, lsd = _dist()
    p = d.peer("s1", False, 0.0)
    d.on_request(p, 0, -1, lsd.version, 0.0, arrived=0.0)
    assert _fulls(d, lsd, 1.0, "s1") == [lsd.version]             # the snapshot leaves at t=1
    # the client asked again at t=0.9 (its request interval): the request waited in the queue until t=1.5
    d.on_request(p, 0, -1, lsd.version, 1.5, arrived=0.9)
    assert _fulls(d, lsd, 2.0, "s1") == [] and d.crossed_requests == 1
    # a request that arrived after the snapshot left says it was lost: answered
    d.on_request(p, 0, -1, lsd.version, 3.0, arrived=2.5)
    assert _fulls(d, lsd, 3.0, "s1") == [lsd.version]
    # without a receive time (simulator, or a kernel without timestamps): answered, as before
    d.on_request(p, 0, -1, lsd.version, 4.0)
    assert _fulls(d, lsd, 4.0, "s1") == [lsd.version] and d.crossed_requests == 1


def test_a_crossed_request_for_a_newer_version_than_sent_is_still_answered() -> None:
    d, lsd = _dist()
    p = d.peer("s1", False, 0.0)
    d.on_request(p, 0, -1, lsd.version, 0.0)
    d.tick(lsd, 1.0)
    lsd.apply({1: LinkState.UP})
    d.on_version(1.1)
    # in our term, at a version above what we sent it: nothing we know of covers it (reset to a full)
    d.on_request(p, 1, lsd.version + 5, lsd.version, 1.2, arrived=0.5)
    assert _fulls(d, lsd, 2.0, "s1") == [lsd.version] and d.crossed_requests == 0


def test_a_request_that_crossed_a_group_snapshot_gets_no_unicast_one() -> None:
    d, lsd = _dist(multicast=True)
    d.tick(lsd, 0.0)                                              # the group's first update: a snapshot
    p = d.peer("s1", False, 0.5)
    d.on_request(p, 0, -1, lsd.version, 0.5, arrived=0.5)
    lsd.apply({i: LinkState.UP for i in range(1, 64)})            # bigger than the snapshot as a delta
    d.on_version(0.9)
    out = d.tick(lsd, 1.0)
    assert [type(s.msg) for s in out if s.dest == GROUP] == [LsdFull]
    assert [s for s in out if s.dest == "s1"] == []               # it rode along the group's snapshot
    assert (p.sent_term, p.sent_version, p.synced_at) == (1, lsd.version, 1.0)
    d.on_request(p, 0, -1, lsd.version, 1.2, arrived=0.95)        # asked before the group snapshot came
    assert _fulls(d, lsd, 1.5, "s1") == [] and d.crossed_requests == 1


def test_read_one_at_gives_the_receive_time_on_the_callers_clock() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        assert enable_timestamps(rx)
        tx.sendto(b"x", rx.getsockname())
        sent = time.monotonic()
        time.sleep(0.05)
        got = read_one_at(rx, time.monotonic() - time.time())
        assert got is not None and got[0] == b"x"
        assert got[2] is not None and abs(got[2] - sent) < 0.02      # received when sent, not when read
        assert read_one_at(rx, 0.0) is None
    finally:
        rx.close()
        tx.close()


def test_the_core_answers_a_crossed_request_or_old_term_report_with_no_second_snapshot() -> None:
    from proto.messages import LsdRequest
    from tests.test_master_core import NO_GUARD, make_fabric, master, report, sends

    f = make_fabric(NO_GUARD)
    core = master(f)
    core.handle("leaf-1", report(f, "leaf-1"), 0.0, arrived=0.0)
    core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 0.0, arrived=0.0)
    assert len(sends(core.tick(1.0), "leaf-1", LsdFull)) == 1             # sent at t=1
    # queued since t=0.5 and read at t=2: a request and a retransmitted report of the old term (0)
    core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 2.0, arrived=0.5)
    core.handle("leaf-1", report(f, "leaf-1", term=0), 2.0, arrived=0.5)
    assert sends(core.tick(3.0), "leaf-1", LsdFull) == []
    # the same, heard after the snapshot left: it was lost, sent again
    core.handle("leaf-1", report(f, "leaf-1", term=0), 4.0, arrived=4.0)
    assert len(sends(core.tick(5.0), "leaf-1", LsdFull)) == 1

