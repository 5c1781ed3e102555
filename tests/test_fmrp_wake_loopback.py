"""Tester F8 with three real `firepath master` processes on loopback: the serving master SIGSTOPped past
`master_dead`, then SIGCONTed. A backup takes over (one term: the failover); the woken replica rejoins as
its backup without a term of its own, and the new master stays master in its term (before the fix the
woken one re-anchored in the next term and the new master had to re-anchor above it: two more terms).
Twice, so that each of the woken master's peer queues (read in configured order) comes first once or more.
The pure test of the same wake-up, in every input order, is tests/test_fmrp_wake.py."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.harness.loopcluster import LoopCluster

pytestmark = pytest.mark.timeout(150)

TIMERS = (("hello_interval_ms", 50), ("master_dead_ms", 400))
BRING_UP = 40.0
FAILOVER = 15.0
STALL = 2.0           # 5 x master_dead: well past it, like the tester's 5 s
REJOIN = 10.0         # behaviour bound on a loaded 2-core machine
QUIET = 2.0           # after the rejoin: nobody stands again
_PERSISTED = re.compile(r"event=term_persisted term=(\d+)")


def _persisted_terms(cluster: LoopCluster) -> dict[str, int]:
    """The highest term each replica wrote durably (its log)."""
    out = {}
    for mid in cluster.ids:
        terms = [int(t) for t in _PERSISTED.findall(cluster.log_path(mid).read_text(errors="replace"))]
        out[mid] = max(terms, default=0)
    return out


def _backup_of(cluster: LoopCluster, mid: str, leader: str, term: int) -> bool:
    v = cluster.get(mid, "/v1/lsd/version", 0.5)
    return isinstance(v, dict) and v["role"] == "backup" and v["leader"] == leader and v["term"] == term


def _stall_and_wake(cluster: LoopCluster, leader: str, term: int, stopped: list[str]) -> str:
    """SIGSTOP `leader` (master of `term`) for STALL, then SIGCONT; returns the new master after checking
    that the woken replica follows it and that nobody wrote a term above the failover's."""
    others = [m for m in cluster.ids if m != leader]
    t0 = time.monotonic()
    cluster.kill(leader, signal.SIGSTOP)
    stopped.append(leader)
    got = cluster.wait(lambda: cluster.single_master(others, above_term=term), FAILOVER)
    assert got, f"no failover from the stopped {leader}: {cluster.versions(others)}"
    new, v = got
    failover_term = v["term"]
    time.sleep(max(0.0, STALL - (time.monotonic() - t0)))
    cluster.kill(leader, signal.SIGCONT)
    stopped.remove(leader)
    t1 = time.monotonic()
    assert cluster.wait(lambda: _backup_of(cluster, leader, new, failover_term), REJOIN), cluster.versions()
    rejoin = time.monotonic() - t1
    time.sleep(QUIET)
    after = cluster.versions()
    assert [m for m, _ in cluster.masters_now()] == [new], after
    assert all(isinstance(x, dict) and x["term"] == failover_term for x in after.values()), after
    assert max(_persisted_terms(cluster).values()) == failover_term, \
        f"a term above the failover's {failover_term}: {_persisted_terms(cluster)}"
    print(f"{leader} stopped {STALL:.1f} s in term {term}: {new} master in term {failover_term}; "
          f"{leader} backup of it {rejoin * 1000:.0f} ms after SIGCONT, no further term")
    return new


def test_a_master_woken_from_sigstop_rejoins_as_backup_without_a_new_term(tmp_path: Path) -> None:
    cluster = LoopCluster(tmp_path, masters=3, timers=TIMERS)
    stopped: list[str] = []
    try:
        cluster.start_all()
        got = cluster.wait(lambda: cluster.single_master(), BRING_UP)
        assert got, cluster.versions()
        leader = got[0]
        for _ in range(2):
            view = cluster.versions([leader])[leader]
            assert isinstance(view, dict), view
            leader = _stall_and_wake(cluster, leader, view["term"], stopped)
    finally:
        for mid in stopped:
            cluster.kill(mid, signal.SIGCONT)
        cluster.stop_all()
