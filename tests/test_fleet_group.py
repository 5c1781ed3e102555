"""The fleet worker's multicast path (issue #18), driven in-process with decoded messages: switches in step
with the group share one Rep (a group keepalive costs nothing per switch), a unicast message makes a switch
diverge, the next group datagram brings it back; a group datagram the worker missed is repaired by unicast
like the real client does (deltas are net: only from_version == ours applies) and the shared state follows
the majority; a silent group makes every switch fail-static and probe."""

from __future__ import annotations

import pytest

from proto.auth import KeyRing
from proto.clos import clos_fabric
from proto.lsd import LinkState, LinkStateDB, encode_changes
from proto.messages import Keepalive, LsdDelta, LsdFull
from tests.harness.fleet import _Worker

UP, DOWN = LinkState.UP, LinkState.DOWN


@pytest.fixture()
def world():
    fabric = clos_fabric(spines=2, pods=2, aggs_per_pod=2, tors_per_pod=6, hosts_per_tor=0, masters=1)
    keyring = KeyRing.from_secret(b"k" * 32)
    m = fabric.masters[0].id
    # the worker sends to a loopback port nobody listens on (UDP: nothing comes back)
    w = _Worker(fabric, keyring, {m: ("127.0.0.1", 9)}, [s.name for s in fabric.switches], 2, None, "127.0.0.1")
    kept = w.stats

    def checked() -> dict:        # every stats() of these tests is checked against a count of every switch
        s = kept()
        assert (s["complete"], s["acked"], s["versions"], set(s["terms"])) == _scan(w)
        return s
    w.stats = checked
    db = LinkStateDB(fabric.lsd_size)
    db.apply({i: UP for i in range(len(fabric.links))})
    yield fabric, w, m, db
    for s in w.socks:
        s.close()


def _scan(w: _Worker) -> tuple[int, int, dict, set]:
    """What stats() says, counted switch by switch: (complete, acked, versions, terms). The worker keeps
    these counts up to date as they change (the bench polls it every 100 ms)."""
    full_refs = {t: r.version for t, r in w.ref.items() if r.count(UP) >= w.n_links}
    versions: dict = {}
    complete = 0
    for sw in w.swl:
        rep = sw.rep
        key = (rep.data_term if rep.has_data else -1, rep.version)
        versions[key] = versions.get(key, 0) + 1
        complete += rep.has_data and full_refs.get(rep.data_term) == rep.version
    return complete, sum(sw.acked for sw in w.swl), versions, {sw.rep.term for sw in w.swl}


def _full(fabric, m, db, term=1) -> LsdFull:
    return LsdFull(m, term, db.version, fabric.digest, db.snapshot())


def _delta(m, db, frm, term=1) -> LsdDelta:
    return LsdDelta(m, term, frm, db.version, encode_changes(db.changes_since(frm)))


def test_group_traffic_is_shared_and_unicast_divergence_rejoins(world) -> None:
    fabric, w, m, db = world
    n = len(w.sw)
    w.cold_start()
    now = w.g.heard_at
    out0 = w.counts["out"]
    assert out0 == n                                       # every switch reported once
    w._group(m, Keepalive(m, 1, db.version), now + 0.01)   # a new term, no LSD yet: every switch asks
    assert w.counts["requests"] == n and not w.diverged
    w._group(m, _full(fabric, m, db), now + 0.02)
    s = w.stats()
    assert s["complete"] == s["in_step"] == n and not w.diverged
    # a group keepalive in step: no per-switch work, nothing sent
    sent = w.counts["out"]
    for k in range(50):
        w._group(m, Keepalive(m, 1, db.version), now + 0.03 + k * 0.001)
    assert w.counts["out"] == sent and not w.diverged
    # one switch gets its own (same) snapshot by unicast: it differs (heard later) until the next group datagram
    a = w.swl[3]
    w._lsd(a, m, _full(fabric, m, db), now + 0.1)
    assert a.name in w.diverged and w.stats()["complete"] == n
    w._group(m, Keepalive(m, 1, db.version), now + 0.12)
    assert not w.diverged and w.counts["rejoined"] >= 1
    # the group moves on: a link down and back (two deltas); everyone follows, complete again at the end
    v = db.version
    db.apply({0: DOWN})
    w._group(m, _delta(m, db, v), now + 0.2)
    assert w.stats()["complete"] == 0
    v = db.version
    db.apply({0: UP})
    w._group(m, _delta(m, db, v), now + 0.3)
    assert w.stats()["complete"] == n and not w.diverged


def _started(world) -> tuple[int, float]:
    """Cold-start the worker and hand it the group's first snapshot: (its switches, the time of that)."""
    fabric, w, m, db = world
    w.cold_start()
    now = w.g.heard_at + 0.01
    w._group(m, _full(fabric, m, db), now)
    return len(w.sw), now


def test_missed_group_delta_repairs_by_unicast_and_the_shared_state_follows(world) -> None:
    fabric, w, m, db = world
    n, now = _started(world)
    v1 = db.version
    db.apply({1: DOWN})                     # v1 -> v2: the worker misses this group delta
    v2 = db.version
    db.apply({1: UP})                       # v2 -> v3 arrives: a gap (from v2, we are at v1)
    req = w.counts["requests"]
    w._group(m, _delta(m, db, v2), now + 0.1)
    assert w.counts["requests"] == req + n and w.g.version == v1      # every switch asks, nothing applied
    # the master repairs each switch by unicast (net delta v1 -> v3: empty here, the link is back up)
    for i, sw in enumerate(w.swl):
        w._lsd(sw, m, _delta(m, db, v1), now + 0.2 + i * 1e-4)
    w._group(m, Keepalive(m, 1, db.version), now + 0.3)
    s = w.stats()
    assert s["in_step"] == n and s["complete"] == n and w.g.version == db.version
    assert w.counts["rebased"] == 1
    # the repaired switches follow the group again
    v = db.version
    db.apply({2: DOWN})
    w._group(m, _delta(m, db, v), now + 0.4)
    assert w.stats()["versions"] == {(1, db.version): n} and not w.diverged


def test_a_silent_group_makes_every_switch_probe_until_heard(world) -> None:
    fabric, w, m, db = world
    n, now = _started(world)
    w._group(m, Keepalive(m, 1, db.version), now + 0.05)
    req = w.counts["requests"]
    silence = w.silence
    w.timers(now + 0.05 + silence)                        # fail-static: probe every master
    assert w.g.fail_static and w.counts["requests"] == req + n
    w.timers(now + 0.05 + silence + silence / 2)          # probes are paced by master_silence
    assert w.counts["requests"] == req + n
    w.timers(now + 0.06 + 2 * silence)
    assert w.counts["requests"] == req + 2 * n
    w._group(m, Keepalive(m, 1, db.version), now + 0.07 + 2 * silence)
    assert not w.g.fail_static and w.stats()["complete"] == n
