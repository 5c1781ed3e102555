"""LSD replica: in-order apply, gap detection and resync, terms, refusals, fail-static — fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.nd import SendNd
from client.ports import PortChanged, PortTable
from client.replica import ConfigMismatchChanged, FailStaticChanged, LsdApplied, LsdReplica, ReplicaState
from client.reporter import Reporter, SendToMaster
from proto.clos import clos_fabric
from proto.config import Endpoint
from proto.lsd import LinkState, LinkStateDB, encode_changes
from proto.messages import Keepalive, LsdDelta, LsdFull, LsdRequest, ReportAck
from tests.fakes.clock import FakeClock, run_until

UP, DOWN, DRAINED = LinkState.UP, LinkState.DOWN, LinkState.DRAINED
MASTERS = ("m1", "m2", "m3")


@pytest.fixture(scope="module")
def fabric():
    return clos_fabric(pods=0, leaves=4, spines=2, masters=3)    # 8 links


@pytest.fixture
def clock():
    return FakeClock(1000.0)


class Master:
    """The master side of the protocol, as far as the replica can see it."""

    def __init__(self, fabric, name: str = "m1", term: int = 1) -> None:
        self.fabric = fabric
        self.name = name
        self.term = term
        self.db = LinkStateDB(len(fabric.links))

    def full(self, digest: str | None = None) -> LsdFull:
        return LsdFull(self.name, self.term, self.db.version, digest or self.fabric.digest, self.db.snapshot())

    def change(self, changes: dict) -> LsdDelta:
        before = self.db.version
        self.db.apply(changes)
        return self.delta_from(before)

    def delta_from(self, version: int) -> LsdDelta:
        return LsdDelta(self.name, self.term, version, self.db.version,
                        encode_changes(self.db.changes_since(version)))

    def keepalive(self) -> Keepalive:
        return Keepalive(self.name, self.term, self.db.version)


def requests(actions) -> list[tuple[str, LsdRequest]]:
    return [(a.master, a.msg) for a in actions if isinstance(a, SendToMaster)]


def applied(actions) -> list[LsdApplied]:
    return [a for a in actions if isinstance(a, LsdApplied)]


def synced_replica(fabric, clock, master: Master) -> LsdReplica:
    r = LsdReplica(fabric, "leaf-1", now=clock.now)
    master.change({0: UP, 1: UP, 2: UP})
    r.on_full(master.full(), clock.now)
    assert r.state == ReplicaState.SYNCED
    return r


def test_starts_empty_and_asks_every_master_rate_limited(fabric, clock):
    r = LsdReplica(fabric, "leaf-1", now=clock.now)
    assert (r.version, r.state, r.fail_static) == (-1, ReplicaState.EMPTY, False)
    # no master known: the first request waits for one (its ack or keepalive), at most request_interval
    assert r.next_deadline() == clock.now + fabric.timers.keepalive
    assert requests(r.tick(clock.now)) == []
    out = r.tick(clock.advance(fabric.timers.keepalive))
    assert requests(out) == [(m, LsdRequest("leaf-1", 0, -1)) for m in MASTERS]
    t0 = clock.now
    assert requests(r.tick(clock.set(t0 + 0.05))) == []            # one outstanding request per keepalive
    assert len(requests(r.tick(clock.set(t0 + fabric.timers.keepalive)))) == 3
    assert r.counters["requests"] == 2


def test_no_request_before_the_switch_is_read_back_then_it_says_whether_routes_were_kept(fabric, clock):
    """A -1 request is taken for a fabric bring-up's (a new master's unheard LSD goes to it at once): a
    restarted client whose switch forwards on kept routes says so (LsdRequest.kept), and says nothing before
    it knows (the daemon sets kept_routes None until the programmer has read the switch back)."""
    r = LsdReplica(fabric, "leaf-1", now=clock.now)
    r.kept_routes = None
    assert requests(r.tick(clock.advance(10 * fabric.timers.keepalive))) == []
    out = r.set_kept_routes(True, clock.now)
    assert requests(out) == [(m, LsdRequest("leaf-1", 0, -1, kept=True)) for m in MASTERS]
    fresh = LsdReplica(fabric, "leaf-2", now=clock.now)
    fresh.kept_routes = None
    out = fresh.set_kept_routes(False, clock.advance(fabric.timers.keepalive))
    assert requests(out) == [(m, LsdRequest("leaf-2", 0, -1, kept=False)) for m in MASTERS]


def test_full_then_deltas_in_order(fabric, clock):
    m = Master(fabric)
    r = LsdReplica(fabric, "leaf-1", now=clock.now)
    m.change({0: UP, 3: UP})
    m.change({5: DRAINED})
    out = r.on_full(m.full(), clock.now)
    assert applied(out) == [LsdApplied("m1", 1, 2, True, (0, 3, 5), m.db.states())]
    assert (r.version, r.term, r.master, r.state) == (2, 1, "m1", ReplicaState.SYNCED)
    out = r.on_delta(m.change({0: DOWN, 7: UP}), clock.advance(0.01))
    assert applied(out) == [LsdApplied("m1", 1, 3, False, (0, 7), m.db.states())]
    assert requests(out) == []
    assert r.states() == m.db.states()
    assert r.on_keepalive(m.keepalive(), clock.now) == []          # in sync: nothing to do


def test_gap_is_requested_and_the_answer_applied(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    v = r.version
    m.change({4: UP})                                               # this delta is lost
    out = r.on_delta(m.change({5: UP}), clock.advance(0.01))        # starts past our version
    assert applied(out) == [] and r.version == v and r.state == ReplicaState.RESYNCING
    assert requests(out) == [("m1", LsdRequest("leaf-1", 1, v))]
    assert r.counters["gaps"] == 1
    # More updates while the request is outstanding: no request storm.
    assert requests(r.on_delta(m.change({6: UP}), clock.advance(0.01))) == []
    # The master answers our request with a delta from our version: applied, in sync again.
    out = r.on_delta(m.delta_from(v), clock.advance(0.01))
    assert applied(out)[0].changed == (4, 5, 6)
    assert r.states() == m.db.states() and r.state == ReplicaState.SYNCED
    # The answer reset the rate limit: a new gap is asked for at once.
    m.change({7: UP})
    assert requests(r.on_delta(m.change({7: DOWN, 0: DOWN}), clock.advance(0.001))) == \
        [("m1", LsdRequest("leaf-1", 1, r.version))]


def test_unanswered_request_is_repeated_each_keepalive(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    m.change({4: UP})
    m.change({5: UP})
    t0 = clock.now
    r.on_keepalive(m.keepalive(), t0)                      # shows a newer version: gap

    sent = []
    for step in range(1, 6):                               # keepalives keep the master alive meanwhile
        clock.set(t0 + step * 0.05)
        sent += requests(r.on_keepalive(m.keepalive(), clock.now))
        sent += requests(r.tick(clock.now))
    assert len(sent) == 2                                  # at t0+0.1 and t0+0.2 (t0 was the first)
    assert r.counters["requests"] == 3


def test_duplicate_or_old_delta_is_ignored(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    d = m.change({4: UP})
    r.on_delta(d, clock.now)
    assert r.on_delta(d, clock.advance(0.001)) == []
    assert r.counters["ignored_stale"] == 1 and r.state == ReplicaState.SYNCED


def test_delta_starting_before_our_version_is_a_gap(fabric, clock):
    """A delta is net: a link that changed and changed back since its start is not in it. So a delta from an
    older version than ours (a multicast group's, to a client that took a newer unicast snapshot) cannot be
    applied on top of ours: link 1 would stay DOWN. It is a gap, and the replica asks."""
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    start = m.db.version
    m.change({1: DOWN})
    r.on_full(m.full(), clock.advance(0.001))            # a unicast snapshot, ahead of the group
    m.change({2: DOWN, 1: UP})
    group = m.delta_from(start)
    assert 1 not in m.db.changes_since(start)
    out = r.on_delta(group, clock.advance(1.0))
    assert not applied(out) and requests(out)
    assert r.states() != m.db.states()                   # untouched until the answer comes


def test_keepalive_with_newer_version_means_missed_update(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    m.change({6: UP})
    out = r.on_keepalive(m.keepalive(), clock.advance(0.1))
    assert requests(out) == [("m1", LsdRequest("leaf-1", 1, 1))]
    out = r.on_full(m.full(), clock.advance(0.001))       # the master chose a full: fine too
    assert applied(out)[0].changed == (6,) and r.state == ReplicaState.SYNCED


def test_higher_term_keeps_lsd_and_resyncs_with_a_full(fabric, clock):
    m1 = Master(fabric, "m1", 1)
    r = synced_replica(fabric, clock, m1)
    states_before = r.states()
    # m2 takes over in term 2 with the replicated LSD.
    m2 = Master(fabric, "m2", 2)
    m2.db.load_snapshot(m1.db.version, m1.db.snapshot())
    out = r.on_keepalive(m2.keepalive(), clock.advance(0.2))
    assert requests(out) == [("m2", LsdRequest("leaf-1", 1, 1))]    # the term of our data, our version
    assert r.states() == states_before and (r.term, r.master) == (2, "m2")
    assert r.state == ReplicaState.RESYNCING
    # A delta of the new term is not applied on top of data of the old term, even if the versions match:
    # versions of different masterships are not comparable.
    out = r.on_delta(m2.change({1: DOWN}), clock.advance(0.001))
    assert applied(out) == [] and r.states() == states_before
    out = r.on_full(m2.full(), clock.advance(0.001))                 # the master's answer
    assert applied(out) == [LsdApplied("m2", 2, 2, True, (1,), m2.db.states())]
    assert r.state == ReplicaState.SYNCED and r.data_term == 2
    out = r.on_delta(m2.change({2: DOWN}), clock.advance(0.001))
    assert applied(out)[0].changed == (2,)


def test_higher_term_full_with_lower_version_is_applied(fabric, clock):
    m1 = Master(fabric, "m1", 1)
    r = synced_replica(fabric, clock, m1)
    m1.change({7: UP})
    r.on_delta(m1.delta_from(1), clock.now)
    m3 = Master(fabric, "m3", 4)
    m3.change({0: UP})                                              # version 1 < ours (2), but term 4
    out = r.on_full(m3.full(), clock.advance(0.01))
    assert applied(out) == [LsdApplied("m3", 4, 1, True, (1, 2, 7), m3.db.states())]
    assert (r.version, r.term, r.data_term, r.state) == (1, 4, 4, ReplicaState.SYNCED)


def test_lower_term_is_ignored_entirely(fabric, clock):
    m1 = Master(fabric, "m1", 1)
    r = synced_replica(fabric, clock, m1)
    m2 = Master(fabric, "m2", 3)
    m2.db.load_snapshot(m1.db.version, m1.db.snapshot())
    r.on_full(m2.full(), clock.now)
    states = r.states()
    old = Master(fabric, "m1", 2)
    old.change({6: UP})
    assert r.on_full(old.full(), clock.now) == []
    assert r.on_delta(old.change({7: UP}), clock.now) == []
    assert r.on_keepalive(old.keepalive(), clock.now) == []
    assert r.counters["ignored_lower_term"] == 3
    assert r.states() == states and (r.term, r.master) == (3, "m2")
    # ...and a lower-term master does not keep us out of fail-static either.
    r.tick(clock.advance(0.31))
    assert r.fail_static
    assert r.on_keepalive(old.keepalive(), clock.now) == [] and r.fail_static


def test_new_master_id_in_the_same_term_is_a_resync(fabric, clock):
    m1 = Master(fabric, "m1", 5)
    r = synced_replica(fabric, clock, m1)
    other = Master(fabric, "m2", 5)
    other.db.load_snapshot(m1.db.version, m1.db.snapshot())
    out = r.on_keepalive(other.keepalive(), clock.advance(0.01))
    assert requests(out) == [("m2", LsdRequest("leaf-1", 5, 1))]
    assert r.master == "m2" and r.counters["master_changes"] == 1
    # m2 confirms the same version in the same term: in sync, nothing more is asked.
    r.on_keepalive(other.keepalive(), clock.advance(0.01))
    assert r.state == ReplicaState.SYNCED
    assert requests(r.tick(clock.advance(0.2))) == []


def test_digest_mismatch_is_refused_and_recorded(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    states, version = r.states(), r.version
    m.change({6: UP})
    out = r.on_full(m.full(digest="0" * 64), clock.advance(0.01))
    assert out == [ConfigMismatchChanged("0" * 64)]       # nothing to program, said once
    assert r.states() == states and r.version == version
    assert r.counters["refused_digest"] == 1 and "digest" in r.last_refusal
    assert r.config_mismatch == "0" * 64
    assert r.on_full(m.full(digest="0" * 64), clock.advance(0.01)) == []
    # the masters serve our config again: the snapshot is programmed and the mismatch ends
    out = r.on_full(m.full(), clock.advance(0.01))
    assert out[0] == ConfigMismatchChanged(None) and isinstance(out[1], LsdApplied)
    assert r.config_mismatch is None


def test_a_backups_snapshot_of_another_config_after_the_masters_of_ours_is_no_mismatch(fabric, clock):
    """Review 39 (a rare lab failure): a switch moved to a prepared next config asks every replica for the LSD;
    the master serves it its config's LSD, and a backup that had not read its report under that config yet
    answered with the running config's. That snapshot set `config_mismatch` after the master's had cleared it,
    and nothing cleared it again: the switch looked refused while it was served. A backup's snapshot of another
    config is refused and counted, but once ours is held it is no mismatch; the master's still is."""
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    states, version = r.states(), r.version
    theirs = m.full(digest="0" * 64)
    backup = LsdFull("m2", theirs.term, theirs.version, theirs.digest, theirs.snapshot, backup=True)
    assert r.on_full(backup, clock.advance(0.01)) == []
    assert r.config_mismatch is None and r.counters["refused_digest"] == 1
    assert (r.states(), r.version) == (states, version)
    assert r.on_full(m.full(digest="0" * 64), clock.advance(0.01)) == [ConfigMismatchChanged("0" * 64)]
    fresh = LsdReplica(fabric, "leaf-1", now=clock.now)     # holding nothing yet: a backup's word is all there is
    assert fresh.on_full(backup, clock.advance(0.01)) == [ConfigMismatchChanged("0" * 64)]


def test_undecodable_updates_leave_state_unchanged_and_resync(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    states, version = r.states(), r.version
    bad_full = LsdFull("m1", 1, 9, fabric.digest, b"S\x01garbage")
    out = r.on_full(bad_full, clock.advance(0.01))
    assert applied(out) == [] and requests(out) == [("m1", LsdRequest("leaf-1", 1, version))]
    bad_delta = LsdDelta("m1", 1, version, version + 1, encode_changes({len(fabric.links) + 5: UP}))
    out = r.on_delta(bad_delta, clock.advance(0.2))
    assert applied(out) == [] and len(requests(out)) == 1
    assert r.states() == states and r.version == version and r.counters["decode_errors"] == 2
    assert "out of range" in r.last_refusal
    out = r.on_full(m.full(), clock.advance(0.01))
    assert applied(out) and r.state == ReplicaState.SYNCED


def test_fail_static_keeps_the_lsd_probes_and_recovers(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    states = r.states()
    silence = 3 * fabric.timers.keepalive
    t_last = clock.now
    assert r.next_deadline() == pytest.approx(t_last + silence)
    events = run_until(clock, t_last + 1.0, r.tick, r.next_deadline)
    kinds = [(round(t - t_last, 6), a) for t, a in events]
    assert kinds[0] == (round(silence, 6), FailStaticChanged(True))
    assert r.fail_static and r.state == ReplicaState.FAIL_STATIC
    assert r.states() == states                                   # routes stay: the LSD is kept
    # While fail-static it probes every master, once per silence period.
    probes = [(round(t - t_last, 6), a.master) for t, a in events if isinstance(a, SendToMaster)]
    assert probes == [(round(silence * k, 6), mm) for k in (1, 2, 3) for mm in MASTERS]
    # A master is heard again: fail-static ends at once.
    out = r.on_keepalive(m.keepalive(), clock.advance(0.01))
    assert out == [FailStaticChanged(False)] and r.state == ReplicaState.SYNCED
    assert r.counters["fail_static_entered"] == 1


def test_fail_static_with_a_new_master_resyncs(fabric, clock):
    m1 = Master(fabric, "m1", 1)
    r = synced_replica(fabric, clock, m1)
    r.tick(clock.advance(0.5))
    assert r.fail_static
    m2 = Master(fabric, "m2", 2)
    m2.change({0: UP, 1: UP, 2: UP, 3: UP})
    out = r.on_full(m2.full(), clock.advance(0.01))
    assert out[0] == FailStaticChanged(False)
    assert applied(out)[0].changed == (3,) and r.state == ReplicaState.SYNCED


def test_requests_go_to_every_master_when_ours_is_silent(fabric, clock):
    m = Master(fabric)
    r = synced_replica(fabric, clock, m)
    m.change({4: UP})
    m.change({5: UP})
    clock.advance(0.35)            # master silent (no tick ran yet, so not yet flagged fail-static)
    out = r.on_delta(m.delta_from(2), clock.now)   # a delta that does not start at our version
    # hearing it made m1 alive again: the request goes to m1 only
    assert requests(out) == [("m1", LsdRequest("leaf-1", 1, 1))]
    r2 = LsdReplica(fabric, "leaf-2", now=clock.now)
    assert [mm for mm, _ in requests(r2.tick(clock.advance(fabric.timers.keepalive)))] == list(MASTERS)


def test_two_masters_alternating_in_one_term_do_not_cause_a_request_storm(fabric, clock):
    a = Master(fabric, "m1", 5)
    r = synced_replica(fabric, clock, a)
    b = Master(fabric, "m2", 5)
    b.db.load_snapshot(a.db.version, a.db.snapshot())
    sent = []
    for i in range(100):          # 1 s of both masters' keepalives every 10 ms
        clock.advance(0.01)
        sent += requests(r.on_keepalive((a if i % 2 else b).keepalive(), clock.now))
    assert len(sent) <= 1.0 / fabric.timers.keepalive + 1


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_lossy_reordered_stream_never_yields_a_wrong_lsd(fabric, data):
    """Whatever is lost, duplicated or reordered, the replica's states at version v are the master's at v,
    and once the network heals (requests answered) it converges to the master."""
    clock = FakeClock(0.0)
    m = Master(fabric, "m1", 1)
    history = {m.db.version: m.db.states()}
    msgs = [m.full()]
    n = len(fabric.links)
    for _ in range(data.draw(st.integers(1, 12), label="updates")):
        changes = data.draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from([UP, DOWN, DRAINED]),
                                            min_size=1, max_size=3), label="changes")
        before = m.db.version
        m.db.apply(changes)
        if m.db.version == before:
            continue
        history[m.db.version] = m.db.states()
        msgs.append(m.delta_from(before))
        older = data.draw(st.sampled_from(sorted(history)), label="older")    # a delta that overlaps
        if older < before:
            msgs.append(m.delta_from(older))
        msgs.append(m.keepalive())
    delivered = data.draw(st.lists(st.sampled_from(msgs), max_size=3 * len(msgs)), label="delivered")
    r = LsdReplica(fabric, "leaf-1", now=clock.now)
    handler = {LsdFull: r.on_full, LsdDelta: r.on_delta, Keepalive: r.on_keepalive}
    for msg in delivered:
        handler[type(msg)](msg, clock.advance(0.01))
        if r.version >= 0:
            assert r.states() == history[r.version]
    # The network heals: the master answers the replica's requests (delta if it can, else full).
    for _ in range(20):
        out = r.tick(clock.advance(0.1)) + r.on_keepalive(m.keepalive(), clock.now)
        for _, req in requests(out):
            if req.version >= 0 and m.db.changes_since(req.version) and req.term == m.term:
                answer = r.on_delta(m.delta_from(req.version), clock.now)
            else:
                answer = r.on_full(m.full(), clock.now)
            assert not requests(answer) or r.state != ReplicaState.SYNCED
        if r.state == ReplicaState.SYNCED:
            break
    assert r.state == ReplicaState.SYNCED
    assert r.version == m.db.version and r.states() == m.db.states()


# ------------------------------------------------------------------------------------------------------
# All client cores of every switch against the real master core (controller.core), zero-latency network.


class World:
    def __init__(self, fabric, clock: FakeClock) -> None:
        from controller.actions import Send
        from controller.core import MasterCore

        self._send_type = Send
        self.fabric = fabric
        self.clock = clock
        now = clock.now
        self.masters = {m.id: MasterCore(fabric, m.id) for m in fabric.masters}
        self.dead_masters: set[str] = set()
        self.ports = {s.name: PortTable(fabric, s.name, now=now) for s in fabric.switches}
        self.reporters = {s.name: Reporter(fabric, s.name, now=now) for s in fabric.switches}
        self.replicas = {s.name: LsdReplica(fabric, s.name, now=now) for s in fabric.switches}
        self.cables = {}
        for link in fabric.links:
            self.cables[link.a] = link.b
            self.cables[link.b] = link.a
        self.dropped: set = set()
        self.applied: list[tuple[float, str, LsdApplied]] = []

    def start(self) -> None:
        for name, table in self.ports.items():
            self.client_actions(name, table.on_port_desc(dict.fromkeys(table.ports, True), self.clock.now))
            self.client_actions(name, self.reporters[name].update(table.statuses(), self.clock.now))

    def client_actions(self, switch: str, actions) -> None:
        now = self.clock.now
        for a in actions:
            if isinstance(a, SendNd):
                src = Endpoint(switch, a.port)
                dst = self.cables.get(src)
                if dst is not None and (src, dst) not in self.dropped:
                    far = self.ports[dst.switch]
                    self.client_actions(dst.switch, far.on_nd_frame(dst.port, switch, a.frame, now))
            elif isinstance(a, PortChanged):
                self.client_actions(switch, self.reporters[switch].update(self.ports[switch].statuses(), now))
            elif isinstance(a, SendToMaster):
                if a.master not in self.dead_masters:
                    self.master_actions(a.master, self.masters[a.master].handle(switch, a.msg, now))
            elif isinstance(a, LsdApplied):
                self.applied.append((now, switch, a))

    def master_actions(self, master: str, actions) -> None:
        now = self.clock.now
        for a in actions:
            if not isinstance(a, self._send_type) or master in self.dead_masters:
                continue
            dest, msg = a.dest, a.msg
            if dest in self.masters:
                if dest not in self.dead_masters:
                    self.master_actions(dest, self.masters[dest].handle(master, msg, now))
                continue
            reporter, replica = self.reporters[dest], self.replicas[dest]
            if isinstance(msg, ReportAck):
                self.client_actions(dest, reporter.on_ack(msg, now))
                continue
            self.client_actions(dest, reporter.on_master_heard(msg.master, msg.term, now, msg.backup))
            handler = {LsdFull: replica.on_full, LsdDelta: replica.on_delta, Keepalive: replica.on_keepalive}
            self.client_actions(dest, handler[type(msg)](msg, now))

    def cores(self):
        for name in self.ports:
            yield "c", name, self.ports[name]
            yield "c", name, self.reporters[name]
            yield "c", name, self.replicas[name]
        for mid, core in self.masters.items():
            if mid not in self.dead_masters:
                yield "m", mid, core

    def run(self, seconds: float) -> None:
        until = self.clock.now + seconds
        for _ in range(200_000):
            deadlines = [c.next_deadline() for _, _, c in self.cores()]
            deadline = min(d for d in deadlines if d is not None)
            if deadline > until:
                self.clock.set(until)
                return
            self.clock.set(max(self.clock.now, deadline))
            for kind, name, core in list(self.cores()):
                d = core.next_deadline()
                if d is not None and d <= self.clock.now:
                    if kind == "c":
                        self.client_actions(name, core.tick(self.clock.now))
                    else:
                        self.master_actions(name, core.tick(self.clock.now))
        raise AssertionError("world does not settle")

    def all_replicas(self, states: bytes, version: int) -> bool:
        return all(r.states() == states and r.version == version for r in self.replicas.values())


def test_client_cores_against_the_real_master_core(clock):
    pytest.importorskip("controller.core")
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=2, liveness="nd")   # cables modelled by ND only
    w = World(fabric, clock)
    m1, m2 = w.masters["m1"], w.masters["m2"]
    w.master_actions("m1", m1.become_master(1, clock.now))
    w.master_actions("m2", m2.become_backup(1, "m1", clock.now))
    w.start()
    w.run(0.5)
    n = len(fabric.links)
    assert m1.lsd.states() == bytes([UP]) * n
    assert w.all_replicas(m1.lsd.states(), m1.version)
    assert all(r.state == ReplicaState.SYNCED and r.master == "m1" for r in w.replicas.values())
    assert all(rep.acked and rep.master == "m1" for rep in w.reporters.values())

    # A silent failure on link 0 (leaf-1:1 - spine-1:1): every replica has it DOWN well within 100 ms.
    link = fabric.links[0]
    w.dropped |= {(link.a, link.b), (link.b, link.a)}
    t_cut = clock.now
    w.run(0.3)
    assert m1.lsd.state(0) == DOWN
    assert w.all_replicas(m1.lsd.states(), m1.version)
    down_at = max(t for t, _, a in w.applied if t >= t_cut and 0 in a.changed)
    assert down_at - t_cut < 0.1

    # The master dies; after 3 keepalives of silence the clients probe every replica and the backup m2,
    # which holds m1's LSD of term 1, serves them (issue #16: this used to leave them fail-static until
    # a new master was elected); routes kept, the master in use is still m1 of term 1.
    w.dead_masters.add("m1")
    before = {name: r.states() for name, r in w.replicas.items()}
    w.run(0.5)
    assert all(r.server == "m2" and r.served(clock.now) and r.master == "m1" for r in w.replicas.values())
    assert not any(r.fail_static for r in w.replicas.values())
    assert {name: r.states() for name, r in w.replicas.items()} == before
    # m2 (which replicated m1's LSD) takes over in term 2: reports follow it, replicas resync to it.
    w.master_actions("m2", m2.become_master(2, clock.now))
    w.run(2.0)
    assert all(rep.term == 2 and rep.master == "m2" and rep.acked for rep in w.reporters.values())
    assert all(not r.fail_static and r.state == ReplicaState.SYNCED and r.term == 2 for r in w.replicas.values())
    assert m2.lsd.state(0) == DOWN and m2.lsd.count(UP) == n - 1
    assert w.all_replicas(m2.lsd.states(), m2.version)

    # The link heals: up everywhere again.
    w.dropped.clear()
    w.run(0.3)
    assert m2.lsd.states() == bytes([UP]) * n and w.all_replicas(m2.lsd.states(), m2.version)
