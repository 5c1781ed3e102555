"""Issue #16, mastership follows reachability: the reach bitmap in client reports (client.reporter), the
replicas' view (controller.reach), the hand-over decision and the FMRP hand-over (controller.fmrp), and a
backup serving a switch that cannot hear its master (controller.core + client.replica)."""

from __future__ import annotations

import pytest

from client.replica import LsdReplica
from client.reporter import Reporter, SendToMaster
from controller.actions import Send
from controller.core import MasterCore
from controller.fmrp import BecomeMaster, FmrpState
from controller.reach import ReachTracker, handover_target, reach_margin
from proto.clos import clos_fabric
from proto.lsd import LinkState
from proto.messages import (
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    PortReport,
    PortStatus,
    RelayedReport,
    ReportAck,
    StepDown,
)
from tests.test_fmrp import Cluster, settled
from tests.test_master_core import all_up, master, report

FABRIC = clos_fabric(pods=0, spines=2, leaves=4, masters=3)


# ----------------------------------------------------------------------------------------- replicas' view
def test_tracker_counts_fresh_reports_per_replica_and_expires_them():
    t = ReachTracker(3, window=1.0)
    t.note("a", 0b111, 0.0)
    t.note("b", 0b110, 0.1)
    assert t.counts(0.2) == (1, 2, 2) and t.heard(0.2) == 2
    t.note("a", 0b100, 0.5)                 # a new report replaces the old bitmap
    assert t.counts(0.6) == (0, 1, 2)
    assert t.counts(1.1) == (0, 0, 1) and t.heard(1.1) == 1     # b expired (0.1 + 1.0), a is fresh
    assert t.counts(1.6) == (0, 0, 0) and t.heard(1.6) == 0
    with pytest.raises(ValueError):
        ReachTracker(0, 1.0)


def test_handover_target_rules():
    margin = reach_margin(0.05, 6)
    assert margin == 2 and reach_margin(0.05, 30_088) == 1505
    # deaf leader 0: its own view is stale (everyone equal); backups see it two-way with nobody
    assert handover_target(0, (6, 6, 6), {1: (0, 6, 6), 2: (0, 6, 6)}, margin) == 1
    # mute leader: its own view already shows it
    assert handover_target(0, (0, 6, 6), {1: (0, 6, 6), 2: (0, 6, 6)}, margin) == 1
    # the best advantage wins
    assert handover_target(0, (3, 3, 3), {1: (3, 5, 6), 2: (0, 5, 6)}, margin) == 2
    # one switch cut from the leader only: not a hand-over (a backup serves it)
    assert handover_target(0, (5, 6, 6), {1: (5, 6, 6), 2: (5, 6, 6)}, margin) is None
    # equally good replicas: sticky
    assert handover_target(0, (6, 6, 6), {1: (6, 6, 6), 2: (6, 6, 6)}, margin) is None
    # the leader's own view contradicts a backup that claims more (a deaf backup's stale view, say)
    assert handover_target(0, (6, 0, 6), {1: (0, 6, 6)}, margin) is None
    # malformed views (wrong length) are ignored
    assert handover_target(0, (6, 6, 6), {1: (0,)}, margin) is None


# ----------------------------------------------------------------------------------------- client side
def ports() -> tuple[PortStatus, ...]:
    return tuple(PortStatus(p, True, True, True, True, False) for p in FABRIC.fabric_ports("leaf-1"))


def test_reporter_reach_bits_rise_quietly_and_drop_loudly():
    r = Reporter(FABRIC, "leaf-1", initial_seq=10)
    r.on_master_heard("m1", 1, 0.0)
    t = 0.0
    sent = r.update(ports(), t)
    assert {s.master for s in sent} == {"m1", "m2", "m3"} and sent[0].msg.reach == 0
    seq = r.report_seq
    assert r.on_ack(ReportAck("m1", 1, seq), t + 0.001) == []
    assert r.on_ack(ReportAck("m2", 1, seq, backup=True), t + 0.001) == []
    assert r.on_ack(ReportAck("m3", 1, seq, backup=True), t + 0.001) == []
    assert r.reach == 0b111 and r.master == "m1"           # a backup's ack never makes it the master
    # refresh: the new report carries the bitmap; m1 (the master) stops acknowledging
    t = r.next_deadline()
    sent = r.tick(t)
    assert sent and all(s.msg.reach == 0b111 for s in sent)
    seq = r.report_seq
    r.on_ack(ReportAck("m2", 1, seq, backup=True), t + 0.001)
    r.on_ack(ReportAck("m3", 1, seq, backup=True), t + 0.001)
    out = []
    now = t
    while not out and now < t + 1.0:
        now = r.next_deadline()
        out = [s for s in r.tick(now) if s.msg.reach == 0b110]
    assert now == pytest.approx(t + r.reach_timeout)
    assert {s.master for s in out} == {"m1", "m2", "m3"}      # news: to every replica at once
    assert r.reach_bits(now) == 0b110


# ----------------------------------------------------------------------------------------- FMRP hand-over
def test_leader_that_reaches_fewer_switches_hands_over_once():
    c = Cluster(3)
    c.run(1.0, until=lambda: settled(c))
    assert settled(c)
    leader = c.masters_now()[0]
    others = [i for i in c.nodes if i != leader]
    idx = {m.id: i for i, m in enumerate(c.cfg)}
    mute = tuple(0 if m.id == leader else 6 for m in c.cfg)
    for f in c.nodes.values():
        f.set_reach(mute)
    c.run(0.1)
    assert c.masters_now() == [leader]                      # the dwell time: not yet
    c.run(1.0, until=lambda: settled(c) and c.masters_now()[0] != leader)
    assert settled(c)
    new = c.masters_now()[0]
    assert new == min(others, key=lambda i: idx[i])          # equal advantage: the lower index
    terms = [term for _, _, term in c.elected()]
    assert len(terms) == len(set(terms))                     # one master per term
    assert c.nodes[leader].handovers == 1 and c.nodes[leader].state is FmrpState.BACKUP
    # the old leader stays deaf/mute: no hand-back; once everyone is equal again: sticky, no change
    c.run(1.0)
    assert c.masters_now() == [new]
    for f in c.nodes.values():
        f.set_reach((6, 6, 6))
    n = len(c.elected())
    c.run(1.0)
    assert c.masters_now() == [new] and len(c.elected()) == n


def test_step_down_naming_a_successor_makes_the_others_stand_aside():
    c = Cluster(3)
    c.run(1.0, until=lambda: settled(c))
    leader = c.masters_now()[0]
    backup = [i for i in c.nodes if i != leader][0]
    third = [i for i in c.nodes if i not in (leader, backup)][0]
    acts = c.nodes[third].on_message(leader, StepDown(leader, c.nodes[leader].term, successor=backup), c.now)
    assert c.nodes[third].state is FmrpState.ELECTING
    assert not any(isinstance(a, BecomeMaster) for a in acts)
    assert c.nodes[third]._cand.at is None or c.nodes[third]._cand.at > c.now + c.nodes[third]._cfg.round_first


# ----------------------------------------------------------------------------------------- backup serves
def test_backup_serves_a_switch_that_cannot_hear_its_master():
    """m1 master, m2 backup in sync. leaf-1 hears nothing from m1: after master_silence it probes every
    replica; m2 answers from its replicated LSD under m1's term; leaf-1 polls m2 and follows a change
    within one poll — and is not fail-static, and m2 never becomes its master in use."""
    m1 = master(FABRIC)
    m2 = MasterCore(FABRIC, "m2")
    m2.become_backup(1, "m1", 0.0)
    acts = all_up(m1, FABRIC, 0.0) + m1.tick(0.0) + m1.tick(0.01)

    def wire(acts: list, now: float) -> list:
        """Deliver m1's sends to m2 (replication) and return what went to leaf-1."""
        to_leaf = []
        pending = list(acts)
        while pending:
            a = pending.pop(0)
            if not isinstance(a, Send):
                continue
            if a.dest == "m2":
                pending += [(x) for x in m2.handle("m1", a.msg, now) if isinstance(x, Send)]
            elif a.dest == "m1":
                pending += m1.handle("m2", a.msg, now)
            elif a.dest == "leaf-1":
                to_leaf.append(a.msg)
        return to_leaf

    wire(acts, 0.01)
    wire(m1.tick(0.02), 0.02)                  # m2's ack of the stream it could not place: a snapshot
    assert m2.lsd.states() == m1.lsd.states() and m2.lsd_term == 1
    replica = LsdReplica(FABRIC, "leaf-1", now=0.0)
    full = LsdFull("m1", 1, m1.version, FABRIC.digest, m1.lsd.snapshot())
    replica.on_full(full, 0.02)
    assert replica.master == "m1" and replica.version == m1.version
    # from now on m1 -> leaf-1 is cut. master_silence later, the replica probes everyone
    t = 0.02 + replica.master_silence
    probes = [a for a in replica.tick(t) if isinstance(a, SendToMaster)]
    assert {p.master for p in probes} == {"m1", "m2", "m3"} and replica.fail_static
    answer = [a.msg for a in m2.handle("leaf-1", probes[0].msg, t + 0.001) if isinstance(a, Send)]
    assert answer == [Keepalive("m2", 1, m1.version, backup=True)]
    replica.on_keepalive(answer[0], t + 0.002)
    assert not replica.fail_static and replica.server == "m2" and replica.master == "m1"
    # a real failure now: leaf-2 reports a port down to m1, which replicates to m2
    wire(m1.handle("leaf-2", report(FABRIC, "leaf-2", usable={2}, seq=2), t + 0.01) + m1.tick(t + 0.02), t + 0.02)
    assert m2.version == m1.version and m2.lsd.states() == m1.lsd.states()
    poll_at = replica.next_deadline()
    assert poll_at <= t + 0.002 + replica.request_interval + 1e-9
    polls = [a for a in replica.tick(poll_at) if isinstance(a, SendToMaster)]
    assert [p.master for p in polls] == ["m2"] and isinstance(polls[0].msg, LsdRequest)
    answer = [a.msg for a in m2.handle("leaf-1", polls[0].msg, poll_at + 0.001) if isinstance(a, Send)]
    assert len(answer) == 1 and isinstance(answer[0], LsdDelta) and answer[0].backup and answer[0].term == 1
    replica.on_delta(answer[0], poll_at + 0.002)
    assert replica.states() == m1.lsd.states() and replica.version == m1.version
    assert replica.states()[FABRIC.link_at("leaf-2", 1).index] == LinkState.DOWN
    assert replica.counters["served_by_backup"] == 1 and not replica.fail_static
    # m1 is heard again: the replica is back on its master and stops polling m2
    replica.on_keepalive(Keepalive("m1", 1, m1.version), poll_at + 0.01)
    assert replica.server is None and not replica.served(poll_at + 0.01)


def test_backup_relays_the_report_of_a_switch_that_does_not_hear_the_master():
    """leaf-1 hears m2 and m3 two-way but not m1: m2 relays its report to m1, which applies it (a real
    failure seen only by leaf-1's report) without acknowledging it; duplicates are ignored."""
    m1 = master(FABRIC)
    m2 = MasterCore(FABRIC, "m2")
    m2.become_backup(1, "m1", 0.0)
    all_up(m1, FABRIC, 0.0)
    port = FABRIC.fabric_ports("leaf-1")[0]
    r = report(FABRIC, "leaf-1", usable=set(FABRIC.fabric_ports("leaf-1")) - {port}, seq=5)
    r = PortReport(r.switch, r.digest, r.report_seq, r.term, r.ports, reach=0b110)
    acts = m2.handle("leaf-1", r, 0.1)
    relays = [a for a in acts if isinstance(a, Send) and isinstance(a.msg, RelayedReport)]
    assert [a.dest for a in relays] == ["m1"] and relays[0].msg.report() == r
    out = m1.handle("m2", relays[0].msg, 0.11)
    assert m1.lsd.state(FABRIC.link_at("leaf-1", port).index) == LinkState.DOWN
    assert not [a for a in out if isinstance(a, Send) and isinstance(a.msg, ReportAck)]     # never acked
    assert m1.handle("m3", relays[0].msg, 0.12) != []       # m3 is not the relayer: rejected (sender mismatch)
    assert m1.handle("m2", relays[0].msg, 0.12) == []       # a duplicate: nothing
    # a switch that hears the master (its bit set) or nobody yet (reach 0) is not relayed
    for reach in (0b111, 0):
        r2 = PortReport(r.switch, r.digest, r.report_seq + 1, r.term, r.ports, reach=reach)
        assert not [a for a in m2.handle("leaf-1", r2, 0.2) if isinstance(a, Send) and isinstance(a.msg, RelayedReport)]
