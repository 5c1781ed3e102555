"""Issue #18, stop 27: work a cold start no longer does at the master — a request that crossed the snapshot it
asks for (it waited in the input queue while the snapshot went out) costs no second snapshot, unicast or
group (the master tells by each datagram's kernel receive time: `read_one_at`, tested in
tests/test_budget.py)."""

from __future__ import annotations

from controller.actions import GROUP
from controller.distribution import Distributor
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



def test_a_new_term_from_the_master_holding_our_request_asks_nothing_more() -> None:
    """Issue #18: a cold-started switch asks for the LSD (to every replica: no master known yet); the master's
    first keepalive (its term is news) used to make it ask again at once, while the first request still waited
    in that master's queue: ~25,000 extra requests in a Jupiter cold start."""
    from client.replica import LsdReplica
    from client.reporter import SendToMaster
    from proto.clos import clos_fabric
    from proto.messages import Keepalive

    f = clos_fabric(pods=0, leaves=4, spines=2, masters=3)
    r = LsdReplica(f, "leaf-1", now=0.0, request_interval=5.0, master_silence=100.0)
    first = r.tick(5.0)          # no master heard within request_interval: every replica is asked
    assert [a.master for a in first if isinstance(a, SendToMaster)] == ["m1", "m2", "m3"]
    assert r.on_keepalive(Keepalive("m2", 1, 0), 5.5) == []              # m2 has our request: no second one
    assert (r.term, r.master, r.need_sync) == (1, "m2", True)
    later = r.tick(10.0)                                                 # unanswered: asked again, to m2
    assert [(a.master, a.msg.term, a.msg.version) for a in later] == [("m2", 1, -1)]
    # a newer term from a master our last request did not go to: asked at once, as before
    out = r.on_keepalive(Keepalive("m3", 2, 0), 10.5)
    assert [(a.master, a.msg.term) for a in out if isinstance(a, SendToMaster)] == [("m3", 2)]


def test_a_replica_keeps_the_word_of_a_switch_without_lsd_so_its_mastership_sends_it_at_once() -> None:
    """The other half of the rule above: a switch at -1 whose request a replica read before its mastership
    (as a backup, or between roles) does not ask again when that replica becomes master — it gets the LSD
    at once, not after the failover hold; a switch that holds an LSD is held as before."""
    from controller.core import MasterCore
    from proto.messages import LsdRequest
    from tests.test_master_core import NO_GUARD, make_fabric, sends

    f = make_fabric(NO_GUARD)
    for backup in (True, False):
        core = MasterCore(f, "m2")
        if backup:
            core.become_backup(1, "m1", 0.0)
        core.handle("leaf-1", LsdRequest("leaf-1", 1, -1), 0.1)         # nothing to serve yet
        core.handle("leaf-2", LsdRequest("leaf-2", 1, 3), 0.1)          # it holds an LSD: held below
        acts = core.become_master(2, 1.0) + core.tick(1.0)
        assert core.held
        assert len(sends(acts, "leaf-1", LsdFull)) == 1, backup
        assert sends(acts, "leaf-2", LsdFull) == [], backup


def test_a_fan_out_over_many_ticks_builds_the_snapshot_and_the_too_big_delta_once() -> None:
    """Issue #18: a cold start's fan-out of 30,088 snapshots spans ~60 ticks; each tick rebuilt the snapshot
    message and, for clients at an older version, the delta of ~100,000 changes only to find it bigger than
    the snapshot. Both now last as long as the LSD content (an amend of the newest version is new content)."""
    d = Distributor("m1", "0" * 64, pacing=0.0, max_update_rate=1000.0, keepalive=10.0, client_dead=100.0,
                    max_per_tick=2)
    d.activate(1, 0.0)
    calls: list[int] = []

    class Counting(LinkStateDB):
        def changes_since(self, version: int):  # type: ignore[no-untyped-def]
            calls.append(version)
            return super().changes_since(version)

    lsd = Counting(64, history=16)
    peers = [d.peer(f"s{i}", False, 0.0) for i in range(6)]
    d.tick(lsd, 0.0)                                               # everyone at version 0 (empty LSD)
    lsd.apply({i: LinkState.UP for i in range(64)})               # a delta bigger than the snapshot
    d.on_version(0.1)
    sent = [s.msg for t in (0.2, 0.3, 0.4) for s in d.tick(lsd, t)]
    assert len(sent) == 6 and all(isinstance(m, LsdFull) for m in sent)
    assert all(m is sent[0] for m in sent) and calls == [0]        # one message, one delta computed
    assert all((p.sent_version == lsd.version) for p in peers)
    lsd.amend({0: LinkState.DOWN})                                 # same version, new content
    for p in peers:
        d.on_request(p, 1, 0, lsd.version, 0.5)                    # each asks from version 0 again
    again = [s.msg for t in (0.6, 0.7, 0.8) for s in d.tick(lsd, t)]
    assert len(again) == 6 and again[0] is not sent[0] and again[0].snapshot == lsd.snapshot()
    assert calls == [0, 0]


# ------------------------------------------------------------------------------------------------------------
# Stop 35: three replicas. Before, a cold-started switch asked every replica for the LSD (no master known: its
# replica learnt the master only from an LSD message), so each backup read and rejected 30,088 requests
# (`not_master`) and, once it held the LSD, answered the later ones with ~27 KB snapshots the master was
# sending too; a retry of the first report went to every replica, also to the backups that had acked it; and
# the cold hold's master sent every client that reported a keepalive its ack had already made redundant.


def _replica3(**kw: float):
    from client.replica import LsdReplica
    from proto.clos import clos_fabric

    f = clos_fabric(pods=0, leaves=4, spines=2, masters=3)
    return LsdReplica(f, "leaf-1", now=0.0, request_interval=5.0, master_silence=100.0, **kw)


def test_the_first_request_waits_for_the_masters_ack_and_goes_to_it_alone() -> None:
    from client.reporter import SendToMaster

    r = _replica3()
    assert r.tick(0.0) == [] and r.tick(4.9) == []                       # nobody named a master yet
    assert r.on_report_ack("m2", 1, True, 1.0) == []                     # a backup's ack names none
    out = r.on_report_ack("m1", 1, False, 1.2)                            # the master's own ack does
    assert [(a.master, a.msg.term, a.msg.version) for a in out if isinstance(a, SendToMaster)] == [("m1", 1, -1)]
    assert (r.master, r.term, r.master_alive(1.2)) == ("m1", 1, True)
    assert r.on_report_ack("m1", 1, False, 1.5) == []                    # rate-limited as any request
    later = r.tick(6.2)                                                   # unanswered: asked again, to m1 only
    assert [a.master for a in later if isinstance(a, SendToMaster)] == ["m1"]


def test_with_no_master_heard_the_first_request_goes_to_every_replica_after_request_interval() -> None:
    from client.reporter import SendToMaster

    r = _replica3()
    out = r.tick(5.0)
    assert [a.master for a in out if isinstance(a, SendToMaster)] == ["m1", "m2", "m3"]


def test_a_client_core_asks_the_master_its_ack_named_and_no_backup() -> None:
    from client.core import ClientCore, SendDatagram
    from proto.auth import KeyRing
    from proto.clos import clos_fabric
    from proto.messages import Codec, LsdRequest, ReportAck
    from tests.harness.fresh import establish

    f = clos_fabric(pods=0, leaves=2, spines=2, masters=3)
    ring = KeyRing.from_secret(bytes(range(32)))
    core = ClientCore(f, "leaf-1", ring.bundle_for_switch("leaf-1"), now=0.0)
    names = [s.name for s in f.switches]
    masters = {m.id: Codec(ring, m.id, names, [x.id for x in f.masters]) for m in f.masters}
    for c in masters.values():
        establish(c, core.codec)
    assert [a for a in core.tick(0.0) if isinstance(a, SendDatagram)] == []
    backup_ack = masters["m2"].encode(ReportAck("m2", 1, 0, backup=True), to="leaf-1")
    assert [a for a in core.on_datagram(backup_ack, 0.1) if isinstance(a, SendDatagram)] == []
    out = core.on_datagram(masters["m1"].encode(ReportAck("m1", 1, 0), to="leaf-1"), 0.2)
    sent = [a for a in out if isinstance(a, SendDatagram)]
    assert [a.master for a in sent] == ["m1"]
    assert isinstance(masters["m1"].decode(sent[0].data)[1], LsdRequest)
    assert core.replica.master == "m1"


def _reporter3():
    from client.reporter import Reporter
    from proto.clos import clos_fabric
    from proto.messages import PortStatus

    f = clos_fabric(pods=0, leaves=4, spines=2, masters=3)
    rep = Reporter(f, "leaf-1", now=0.0, master_silence=10.0)
    ports = tuple(PortStatus(p, True, True, True, True, False) for p in f.fabric_ports("leaf-1"))
    first = rep.update(ports, 0.0)
    assert [a.master for a in first] == ["m1", "m2", "m3"]
    return rep


def test_a_cold_start_retry_skips_the_replicas_that_acked_it_as_backups() -> None:
    from proto.messages import ReportAck

    rep = _reporter3()
    seq = rep.report_seq
    rep.on_ack(ReportAck("m2", 1, seq, backup=True), 0.5)
    rep.on_ack(ReportAck("m3", 1, seq, backup=True), 0.6)
    retry = rep.tick(rep.next_deadline())
    assert [a.master for a in retry] == ["m1"]                            # only the master's ack ends retries
    rep.on_ack(ReportAck("m1", 1, seq, backup=True), 1.0)                # nobody is master yet: all backups
    assert rep.tick(rep.next_deadline()) == []                            # everyone has it: nothing to resend


def test_a_retry_while_a_known_master_is_silent_still_goes_to_every_replica() -> None:
    """Issue #16's hand-over (tests/test_gray_loopback.py): a switch that heard its master and no longer does
    sends its retries to every replica, also to the backups that acked it."""
    from proto.messages import ReportAck

    rep = _reporter3()
    rep.on_ack(ReportAck("m1", 1, rep.report_seq), 0.1)                 # m1 is the master in use
    rep.on_ack(ReportAck("m2", 1, rep.report_seq, backup=True), 0.1)
    out = rep.tick(rep.next_deadline())                                   # the refresh: a new report
    assert [a.master for a in out] == ["m1", "m2", "m3"]
    at = rep.next_deadline() - 1e-3
    rep.on_ack(ReportAck("m2", 1, rep.report_seq, backup=True), at)    # the backups have it, m1 stays silent
    rep.on_ack(ReportAck("m3", 1, rep.report_seq, backup=True), at)
    retry: list = []
    t = at
    while not retry or rep.master_alive(t):
        t = rep.next_deadline()
        retry = rep.tick(t)
    assert [a.master for a in retry] == ["m1", "m2", "m3"]             # m1 silent: to every replica


def test_a_held_client_whose_report_we_acked_gets_no_keepalive_until_keepalive_passes() -> None:
    from controller.core import MasterCore
    from proto.messages import Keepalive, LsdRequest, ReportAck
    from tests.test_master_core import NO_GUARD, make_fabric, report, sends

    f = make_fabric(NO_GUARD)
    core = MasterCore(f, "m1")
    core.become_master(1, 0.0)                                            # no LSD: the cold hold
    assert core.held
    acts = core.handle("leaf-1", report(f, "leaf-1"), 0.1) + core.tick(0.1)
    assert len(sends(acts, "leaf-1", ReportAck)) == 1
    assert sends(acts, "leaf-1", Keepalive) == []                         # the ack named us
    ka = f.timers.keepalive
    acts = core.handle("leaf-2", LsdRequest("leaf-2", 0, 3), 0.1 + ka / 2) + core.tick(0.1 + ka / 2)
    assert len(sends(acts, "leaf-2", Keepalive)) == 1                     # asked, never acked: told at once
    assert sends(acts, "leaf-1", Keepalive) == []
    acts = core.tick(0.1 + ka)
    assert len(sends(acts, "leaf-1", Keepalive)) == 1                     # the keepalive clock ran
