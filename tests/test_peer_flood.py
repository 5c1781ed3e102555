"""A flood on the replicas' peer port must not cost the serving master its mastership (tester, stop 31).

Three real `firepath master` processes on loopback. Junk datagrams (no key needed) sent as fast as one
thread can to the serving master's peer port used to keep its reading loop busy: no hello went out, its
lease lapsed and the backups elected another master (three elections in 0.5 s at 50 k/s). Each peer now
has a queue of its own (controller.peerinput); junk lands in the strangers' queue, read within a budget.
What is asserted is behaviour: the same master in the same term through and after the flood, and the
junk counted as dropped.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.loopcluster import LoopCluster

pytestmark = pytest.mark.timeout(120)

TIMERS = (("hello_interval_ms", 100), ("master_dead_ms", 1000))   # a loaded CI host: a 1 s stall, no election
BRING_UP = 40.0
FLOOD_S = 3.0


def _flood(addr: tuple[str, int], seconds: float, stop: threading.Event) -> int:
    """Send junk to `addr` for `seconds` (bounded), as fast as one thread can; returns datagrams sent."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk = [os.urandom(n) for n in (1, 40, 200, 1200)]
    sent = 0
    end = time.monotonic() + seconds
    try:
        while not stop.is_set() and time.monotonic() < end:
            for j in junk:
                try:
                    tx.sendto(j, addr)
                    sent += 1
                except OSError:       # ENOBUFS under the flood: keep going
                    pass
    finally:
        tx.close()
    return sent


def test_junk_flood_on_the_peer_port_causes_no_election(tmp_path: Path) -> None:
    cluster = LoopCluster(tmp_path, masters=3, timers=TIMERS, name="flood")
    try:
        cluster.start_all()
        got = cluster.wait(lambda: cluster.single_master(), BRING_UP)
        assert got, cluster.versions()
        time.sleep(1.0)                               # backups settled behind it
        leader, before = cluster.single_master() or got
        m = next(m for m in cluster.fabric.masters if m.id == leader)
        stop = threading.Event()
        counts: list[int] = []
        flooder = threading.Thread(target=lambda: counts.append(_flood((str(m.address), m.peer_port), FLOOD_S, stop)))
        flooder.start()
        seen: list[tuple[str, int] | None] = []
        t_end = time.monotonic() + FLOOD_S + 1.5
        while time.monotonic() < t_end:             # watch through the flood and 1.5 s after it
            now = cluster.single_master()
            seen.append(None if now is None else (now[0], now[1]["term"]))
            time.sleep(0.1)
        stop.set()
        flooder.join(10)
        assert counts and counts[0] > 10_000, counts          # the flood really happened
        after = cluster.single_master()
        assert after is not None and after[0] == leader and after[1]["term"] == before["term"], \
            (leader, before["term"], cluster.versions())
        others = {s for s in seen if s is not None and s != (leader, before["term"])}
        assert not others, f"another master or term during the flood: {others}"
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.rest_port[leader]}/metrics", timeout=5) as r:
            text = r.read().decode()
        rejected = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("firepath_master_datagrams_rejected_total{"))
        assert rejected > 0, "the junk the master read was not counted as rejected"
        # and what it could not read is counted too: the kernel's drops on the peer sockets (once a second)
        dropped = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("firepath_master_peer_input_drops_total "))
        print(f"\nsent {counts[0]}, rejected {rejected:.0f}, kernel drops {dropped:.0f}")
        assert rejected + dropped >= 0.9 * counts[0], (rejected, dropped, counts[0])
    finally:
        cluster.stop_all()
