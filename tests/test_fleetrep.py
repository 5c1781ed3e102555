"""The fleet's version-pointer replica (tests.harness.fleetrep.Rep) follows client.replica.LsdReplica's rules,
and its `key()` is a real equivalence: the multicast fleet shares one Rep between every switch in step with the
group (issue #18), so two Reps with equal keys must behave identically from then on."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from client.replica import LsdReplica
from client.reporter import SendToMaster
from proto.clos import clos_fabric
from proto.lsd import LinkStateDB, encode_changes
from proto.messages import Keepalive, LsdDelta, LsdFull
from tests.harness.fleetrep import Rep, RepConfig, Request

FABRIC = clos_fabric(pods=0, leaves=4, spines=2, masters=3)    # 8 links
SWITCH = FABRIC.switches[0].name
MASTERS = tuple(m.id for m in FABRIC.masters)
SNAP = LinkStateDB(FABRIC.lsd_size).snapshot()
CHANGES = encode_changes({0: 1})
T0 = 1000.0

# one event: (kind, master index, term, a, b, flag, dt)
EVENT = st.tuples(st.sampled_from(["full", "delta", "keepalive", "tick", "bad_full", "bad_delta", "other_digest",
                                   "ack"]),
                  st.integers(0, 2), st.integers(0, 3), st.integers(0, 5), st.integers(1, 3), st.booleans(),
                  st.sampled_from([0.0, 0.01, 0.1, 0.35, 2.0]))


def _real() -> LsdReplica:
    return LsdReplica(FABRIC, SWITCH, now=T0)


def _rep() -> Rep:
    r = _real()
    return Rep(RepConfig(MASTERS, r.master_silence, r.request_interval), T0)


def _feed_real(r: LsdReplica, ev, now: float) -> list[tuple[tuple[str, ...], int, int]]:
    kind, mi, term, a, b, backup, _dt = ev
    m = MASTERS[mi]
    if kind == "tick":
        acts = r.tick(now)
    elif kind == "ack":
        acts = r.on_report_ack(m, term, backup, now)
    elif kind == "keepalive":
        acts = r.on_keepalive(Keepalive(m, term, a, backup=backup), now)
    elif kind in ("full", "bad_full", "other_digest"):
        digest = "0" * 64 if kind == "other_digest" else FABRIC.digest
        acts = r.on_full(LsdFull(m, term, a, digest, SNAP if kind != "bad_full" else b"\xff", backup=backup), now)
    else:
        acts = r.on_delta(LsdDelta(m, term, a, a + b, CHANGES if kind == "delta" else b"\xff\xff\xff", backup=backup),
                          now)
    sends = [x for x in acts if isinstance(x, SendToMaster)]
    return [(tuple(s.master for s in sends), sends[0].msg.term, sends[0].msg.version)] if sends else []


def _feed_rep(r: Rep, ev, now: float) -> list[tuple[tuple[str, ...], int, int]]:
    kind, mi, term, a, b, backup, _dt = ev
    m = MASTERS[mi]
    out: list[Request] = []
    if kind == "tick":
        r.tick(now, out)
    elif kind == "ack":
        r.on_report_ack(m, term, backup, now, out)
    elif kind == "keepalive":
        r.on_keepalive(m, term, a, backup, now, out)
    elif kind in ("full", "bad_full", "other_digest"):
        r.on_full(m, term, a, kind != "other_digest", kind != "bad_full", backup, now, out)
    else:
        r.on_delta(m, term, a, a + b, kind == "delta", backup, now, out)
    return [(q.targets, q.term, q.version) for q in out]


def _state(r) -> tuple:
    return (r.version, r.data_term if r.version >= 0 else None, r.term, r.master, r.fail_static, r.need_sync,
            r.server, r.next_deadline())


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=40))
def test_rep_follows_the_real_replica(events) -> None:
    real, rep = _real(), _rep()
    now = T0
    for ev in events:
        now += ev[-1]
        assert _feed_real(real, ev, now) == _feed_rep(rep, ev, now), ev
        assert _state(real) == _state(rep), ev


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=25), st.lists(EVENT, min_size=1, max_size=25), st.floats(0.0, 30.0),
       st.integers(0, 5))
@example(history=[("full", 0, 0, 0, 1, False, 0.0), ("full", 0, 0, 1, 1, False, 0.0), ("delta", 0, 1, 0, 1, False, 0.0)],
         future=[("full", 0, 1, 0, 1, False, 0.0)], back=0.0, lower=1)   # data of term 0, announced in term 1 (CI)
def test_equal_keys_behave_identically(history, future, back, lower) -> None:
    a = _rep()
    now = T0
    for ev in history:
        now += ev[-1]
        _feed_rep(a, ev, now)
    b = a.copy()
    # what key() normalises away: a request allowed since earlier, an older announcement than our version,
    # heard / master heard / server heard so long ago that it no longer counts
    b.next_request = min(b.next_request, now - back) if b.next_request <= now else b.next_request
    if b.announced <= b.version and b.version >= 0 and b.data_term == b.term:
        b.announced = min(b.announced, b.version - lower)
    s = a.cfg.silence
    for f in ("master_heard_at", "server_heard_at"):
        if getattr(b, f) <= now - s:
            setattr(b, f, now - s - back)
    if not b.fail_static and b.heard_at <= now - s:
        b.heard_at = now - s - back
    assert a.key(now) == b.key(now)
    for ev in future:
        now += ev[-1]
        assert _feed_rep(a, ev, now) == _feed_rep(b, ev, now), ev
        assert a.key(now) == b.key(now), ev
