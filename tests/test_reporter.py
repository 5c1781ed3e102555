"""Reporter: send on change, retransmit with backoff until acked, refresh, master/term selection."""

from __future__ import annotations

import math

import pytest

from client.reporter import Reporter, SendToMaster
from proto.clos import clos_fabric
from proto.messages import PortReport, PortStatus, ReportAck
from tests.fakes.clock import FakeClock, run_until

MASTERS = ("m1", "m2", "m3")


@pytest.fixture(scope="module")
def fabric():
    return clos_fabric(pods=0, leaves=2, spines=2, masters=3)


@pytest.fixture
def clock():
    return FakeClock(1000.0)


def ports(usable1: bool = True, usable2: bool = True) -> tuple[PortStatus, ...]:
    return (PortStatus(1, True, usable1, usable1, True, False, None),
            PortStatus(2, True, usable2, usable2, True, False, None))


def reports(actions) -> list[PortReport]:
    assert all(isinstance(a, SendToMaster) and isinstance(a.msg, PortReport) for a in actions)
    return [a.msg for a in actions]


def known_master(r: Reporter, clock: FakeClock, master: str = "m1", term: int = 5) -> None:
    r.on_master_heard(master, term, clock.now)


def with_keepalives(r: Reporter, master: str, term: int, start: float, interval: float):
    """(tick, next_deadline) for run_until: the reporter plus a master whose keepalives arrive (acks lost)."""
    nxt = [start + interval]

    def tick(now: float) -> list:
        if now >= nxt[0]:
            r.on_master_heard(master, term, now)
            nxt[0] += interval
        return r.tick(now)

    return tick, lambda: min(r.next_deadline(), nxt[0])


def times(events) -> list[float]:
    return sorted({round(t, 9) for t, _ in events})


def test_nothing_is_sent_before_the_first_update(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    assert r.tick(clock.now + 10) == [] and r.next_deadline() == math.inf
    assert r.on_master_heard("m1", 1, clock.now) == []


def test_first_report_goes_to_every_master_with_digest_and_seq(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now, initial_seq=41)
    out = r.update(ports(), clock.now)
    assert [a.master for a in out] == list(MASTERS)
    assert {a.msg for a in out} == {PortReport("leaf-1", fabric.digest, 42, 0, ports())}
    assert r.update(ports(), clock.now) == []        # unchanged: nothing new


def test_change_is_sent_at_once_with_the_next_seq(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock)
    r.update(ports(), clock.now)
    out = r.update(ports(usable1=False), clock.advance(0.001))
    assert [(a.master, a.msg.report_seq, a.msg.term, a.msg.ports) for a in out] == \
        [(m, 2, 5, ports(usable1=False)) for m in ("m1", "m2", "m3")]   # new reports go to every master


def test_retransmits_with_exponential_backoff_until_acked(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock)
    t0 = clock.now
    r.update(ports(), t0)

    tick, deadline = with_keepalives(r, "m1", 5, t0, fabric.timers.keepalive)
    sent = run_until(clock, t0 + 2.0, tick, deadline)
    gaps = [b - a for a, b in zip([t0, *times(sent)], times(sent), strict=False)]
    t = fabric.timers
    # 20, 40, 80, 160, 320 ms, then never less often than the refresh period (500 ms < retry_max 1 s).
    assert gaps[:6] == pytest.approx([t.report_retry_min * 2**i for i in range(5)] + [t.report_refresh])
    assert all(g == pytest.approx(t.report_refresh) for g in gaps[5:])
    assert {a.msg.report_seq for _, a in sent} == {1}     # retransmissions repeat the same report
    assert {a.master for _, a in sent} == {"m1"}
    assert r.retransmits == len(sent)


def test_backoff_caps_at_retry_max_when_refresh_is_longer(clock):
    fab = clos_fabric(pods=0, leaves=2, spines=2, masters=1, timers=(
        ("report_refresh_ms", 5000), ("switch_dead_ms", 15000), ("report_retry_max_ms", 200),
        ("keepalive_ms", 10000)))
    r = Reporter(fab, "leaf-1", now=clock.now)
    known_master(r, clock)
    t0 = clock.now
    r.update(ports(), t0)
    sent = run_until(clock, t0 + 1.45, r.tick, r.next_deadline)
    gaps = [b - a for a, b in zip([t0, *times(sent)], times(sent), strict=False)]
    assert gaps == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.2, 0.2, 0.2, 0.2, 0.2])


def test_ack_stops_retransmission_and_refresh_follows(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock)
    t0 = clock.now
    r.update(ports(), t0)
    assert r.on_ack(ReportAck("m1", 5, 0), clock.advance(0.005)) == []    # an older seq: not acked
    assert not r.acked
    r.on_ack(ReportAck("m1", 5, 1), clock.advance(0.005))
    assert r.acked and r.next_deadline() == pytest.approx(t0 + fabric.timers.report_refresh)
    tick, deadline = with_keepalives(r, "m1", 5, t0, fabric.timers.keepalive)
    out = run_until(clock, t0 + 0.51, tick, deadline)
    assert [(round(t - t0, 6), a.msg.report_seq, a.master) for t, a in out] == [(0.5, 2, m) for m in ("m1", "m2", "m3")]
    assert r.refreshes == 1 and not r.acked      # a refresh is a report like any other: acked or retried
    r.on_ack(ReportAck("m1", 5, 7), clock.now)   # a newer seq acks too
    assert r.acked


def test_new_term_resends_at_once_to_the_new_master(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock, "m1", 5)
    r.update(ports(), clock.now)
    r.on_ack(ReportAck("m1", 5, 1), clock.now)
    out = r.on_master_heard("m2", 6, clock.advance(0.01))
    assert [(a.master, a.msg.term, a.msg.report_seq) for a in out] == [(m, 6, 2) for m in ("m2", "m1", "m3")]
    assert (r.master, r.term, r.term_changes) == ("m2", 6, 2)
    # Older term: ignored entirely (no master switch, no send, ack not taken).
    assert r.on_master_heard("m1", 5, clock.now) == []
    assert r.on_ack(ReportAck("m1", 5, 2), clock.now) == [] and not r.acked
    # Same term, other master, while ours is alive: not followed.
    r.on_master_heard("m3", 6, clock.now)
    assert r.master == "m2"
    r.on_ack(ReportAck("m3", 6, 2), clock.now)
    assert not r.acked
    r.on_ack(ReportAck("m2", 6, 2), clock.now)
    assert r.acked


def test_ack_of_a_higher_term_adopts_the_master(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock, "m1", 5)
    r.update(ports(), clock.now)
    # it acks our current report: taken under its mastership, nothing to resend (issue #18)
    assert r.on_ack(ReportAck("m3", 7, 1), clock.now) == []
    assert (r.master, r.term, r.acked) == ("m3", 7, True)


def test_silent_master_means_sending_to_every_master(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock, "m1", 5)
    r.update(ports(), clock.now)
    r.on_ack(ReportAck("m1", 5, 1), clock.now)
    silence = 3 * fabric.timers.keepalive
    assert r.targets(clock.now + silence - 0.001) == ("m1",)
    assert r.targets(clock.now + silence + 1e-9) == MASTERS
    out = r.update(ports(usable1=False), clock.advance(silence + 1e-9))
    assert [a.master for a in out] == list(MASTERS)
    # An ack from any master (same term) is then taken, and that master is followed.
    r.on_ack(ReportAck("m2", 5, r.report_seq), clock.advance(0.01))
    assert r.acked and r.master == "m2"
    assert [a.master for a in r.update(ports(), clock.now)] == ["m2", "m1", "m3"]   # backups learn us too
    retries = r.tick(clock.advance(fabric.timers.report_retry_min))
    assert [a.master for a in retries] == ["m2"]          # but only the master in use gets retransmissions


def test_a_new_report_goes_to_the_master_in_use_first(fabric, clock):
    """issue #20: the master in use acts on a report (a link down becomes an LSD version there): it gets the
    datagram before the backups' copies are sent; with no master alive, the configured order."""
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock, "m3", 5)
    out = r.update(ports(), clock.now)
    assert [a.master for a in out] == ["m3", "m1", "m2"]
    out = r.update(ports(usable1=False), clock.advance(3 * fabric.timers.keepalive + 0.001))   # m3 went quiet
    assert [a.master for a in out] == ["m1", "m2", "m3"]


def test_before_any_master_is_known_the_first_ack_picks_it(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    r.update(ports(), clock.now)
    r.on_ack(ReportAck("m3", 1, 1), clock.advance(0.002))
    assert r.master == "m3" and r.term == 1
    # the term went 0 -> 1 with an ack of our report: m3 took it as master, nothing is re-sent (issue #18)
    assert r.acked and r.report_seq == 1


def test_unknown_master_is_ignored(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    r.update(ports(), clock.now)
    assert r.on_master_heard("mx", 9, clock.now) == []
    assert r.term == 0 and r.master is None


def test_non_urgent_change_rides_on_the_next_refresh(fabric, clock):
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock)
    t0 = clock.now
    r.update(ports(), t0)
    r.on_ack(ReportAck("m1", 5, 1), clock.advance(0.001))
    damped = (PortStatus(1, True, False, False, True, True, None), ports()[1])
    assert r.update(damped, clock.advance(0.001), send_now=False) == []      # no usable bit changed
    assert r.report_seq == 1 and r.acked
    tick, deadline = with_keepalives(r, "m1", 5, t0, fabric.timers.keepalive)
    out = run_until(clock, t0 + fabric.timers.report_refresh + 0.001, tick, deadline)
    assert out and all(a.msg.ports == damped and a.msg.report_seq == 2 for _, a in out)


def test_a_challenge_brings_the_open_report_to_the_challenger_alone(fabric, clock):
    """Issue #18: before a master is known a report goes to every replica, and each answers a switch's first
    frame with a Challenge. The copy each Challenge calls for goes to that replica only (it used to go to all
    three: ~8 copies per replica per switch in a cold start); the next retry waits the doubled back-off from that
    copy (it is the report's second attempt, queued behind every switch's first frame), doubled once however many
    replicas challenge it."""
    r = Reporter(fabric, "leaf-1", now=clock.now)
    first = r.update(ports(), clock.now)
    assert sorted(a.master for a in first) == list(MASTERS)
    backoff = fabric.timers.report_retry_min
    clock.advance(backoff / 2)
    resent_at = clock.now
    for m in MASTERS:
        again = r.retransmit_now(clock.now, m)
        assert [a.master for a in again] == [m] and reports(again)[0].report_seq == reports(first)[0].report_seq
    seq = r.report_seq

    def retried(until: float) -> list[float]:
        times = []
        while clock.now < until:
            clock.advance(backoff / 50)
            if [a for a in r.tick(clock.now) if isinstance(a.msg, PortReport) and a.msg.report_seq == seq]:
                times.append(clock.now)
        return times
    assert retried(resent_at + 2 * backoff * 0.98) == []    # not a back-off after the stale first copy
    again = retried(resent_at + 2 * backoff * 1.05)         # the doubled back-off from the copy that counts,
    assert len(again) == 1
    assert retried(again[0] + 4 * backoff * 0.98) == []     # then doubling on as before: 3 Challenges doubled
    assert retried(again[0] + 4 * backoff * 1.05)           # the back-off once, not three times
    assert r.retransmit_now(clock.now, "not-a-master") == []
    r.on_master_heard("m2", 3, clock.now)                      # a new term: a new report to every replica
    r.on_ack(ReportAck("m2", 3, r.report_seq), clock.now)
    assert r.retransmit_now(clock.now, "m1") == []             # acked by the master: nothing open


def test_an_ack_from_the_master_of_a_new_term_is_followed_without_a_new_report(fabric, clock):
    """Issue #18: in a cold start each switch learns the master's term from the ack of its first report. That
    master took the report under its mastership: a new report to every replica would only double their
    intake."""
    r = Reporter(fabric, "leaf-1", now=clock.now)
    r.update(ports(), clock.now)                            # term 0: no master known yet
    assert r.on_ack(ReportAck("m1", 1, 1), clock.advance(0.01)) == []
    assert (r.master, r.term, r.acked, r.report_seq) == ("m1", 1, True, 1)
    assert r.next_deadline() == pytest.approx(clock.now - 0.01 + fabric.timers.report_refresh)
    # an ack of an older report in a new term: the current one (seq 2) is on its way to that master, or lost
    # and then retried to it — not re-sent at once to everyone
    sent_at = clock.advance(0.01)
    r.update(ports(usable1=False), sent_at)                 # seq 2, unacked
    assert r.on_ack(ReportAck("m2", 2, 1), clock.advance(0.01)) == []
    assert (r.master, r.term, r.acked, r.report_seq) == ("m2", 2, False, 2)
    retry = r.tick(sent_at + fabric.timers.report_retry_min)
    assert [(a.master, a.msg.term, a.msg.report_seq) for a in retry] == [("m2", 2, 2)]
    r.on_ack(ReportAck("m2", 2, 2), clock.now)
    assert r.acked


def test_a_new_term_heard_while_the_report_is_outstanding(fabric, clock):
    """Issue #18: a Keepalive of a new term (a multicast cold start: the group's first keepalive) while the
    first report waits in that master's queue costs no second report; a master that acked it as a backup
    (a failover: it took it before its mastership) gets a new one at once."""
    r = Reporter(fabric, "leaf-1", now=clock.now)
    t0 = clock.now
    r.update(ports(), t0)                                   # seq 1 to every replica, term 0
    assert r.on_master_heard("m1", 1, clock.advance(0.1)) == []
    assert (r.master, r.term, r.acked) == ("m1", 1, False)
    assert [(a.master, a.msg.report_seq) for a in r.tick(t0 + fabric.timers.report_retry_min)] == [("m1", 1)]
    r.on_ack(ReportAck("m2", 1, 1, backup=True), clock.now)   # m2 took it as a backup
    out = r.on_master_heard("m2", 2, clock.advance(0.01))
    assert [(a.master, a.msg.term, a.msg.report_seq) for a in out] == [(m, 2, 2) for m in ("m2", "m1", "m3")]
    # acked: a Keepalive of a new term brings a new report (the new master needs one under its mastership)
    r.on_ack(ReportAck("m2", 2, 2), clock.now)
    out = r.on_master_heard("m3", 3, clock.advance(0.01))
    assert [(a.master, a.msg.term, a.msg.report_seq) for a in out] == [(m, 3, 3) for m in ("m3", "m1", "m2")]


@pytest.fixture(scope="module")
def big_fabric():
    """Past proto.budget.SETTLE_MIN_SWITCHES: derived timers, refresh and retry jitter."""
    return clos_fabric(pods=4, spines=4, aggs_per_pod=2, tors_per_pod=300, hosts_per_tor=0, masters=3)


def _first_retry(r: Reporter, start: float, step: float, limit: float) -> float | None:
    t = start
    while t < limit:
        t += step
        if any(isinstance(a.msg, PortReport) for a in r.tick(t)):
            return t
    return None


def test_a_big_fabrics_switches_that_reported_together_do_not_retry_together(big_fabric):
    """Issue #18: a cold start's first reports all leave at once; with one back-off for all, every switch whose
    report the replicas had not read by then retried in the same instant (stop 37: 25,604 retries in one burst,
    converged 17.3 s). Each wait is stretched by up to the refresh jitter, per switch and attempt."""
    from proto.budget import refresh_jitter
    t = big_fabric.timers
    jitter = refresh_jitter(len(big_fabric.switches))
    assert jitter > 0
    step = t.report_retry_min / 400
    firsts, copies = [], []
    for sw in big_fabric.switches[:150]:
        r = Reporter(big_fabric, sw.name, now=0.0)
        assert len(r.update(ports(), 0.0)) == len(MASTERS)
        at = _first_retry(r, 0.0, step, 3 * t.report_retry_min)
        assert at is not None
        firsts.append(at)
        # a replica's Challenge arrives: the copy's retry waits the doubled back-off, jittered too
        r2 = Reporter(big_fabric, sw.name, now=0.0)
        r2.update(ports(), 0.0)
        challenged = t.report_retry_min / 2
        assert len(r2.retransmit_now(challenged, "m1")) == 1
        at2 = _first_retry(r2, challenged, step, challenged + 5 * t.report_retry_min)
        assert at2 is not None
        copies.append(at2 - challenged)
    lo = t.report_retry_min
    for waits, base in ((firsts, lo), (copies, 2 * lo)):
        assert min(waits) >= base and max(waits) <= base * (1 + jitter) + step
        assert max(waits) - min(waits) > 0.8 * jitter * base      # spread over the jitter's range
        assert len({round(w / step) for w in waits}) > 60           # not a few lumps


def test_a_big_fabrics_retry_waits_at_the_cap_stay_within_retry_max_and_spread():
    """Review 38: the jitter stretched a wait already at `report_retry_max` by up to 25 % past it. Waits at the
    cap now spread below it, over [retry_max / (1 + jitter), retry_max], so they neither exceed the configured
    bound nor fall back into one burst."""
    from proto.budget import refresh_jitter
    # the refresh well past the cap, so that the waits measured are retries, not refreshes
    big_fabric = clos_fabric(pods=4, spines=4, aggs_per_pod=2, tors_per_pod=300, hosts_per_tor=0, masters=3,
                             timers=(("report_refresh_ms", 20_000), ("switch_dead_ms", 60_000)))
    t = big_fabric.timers
    jitter = refresh_jitter(len(big_fabric.switches))
    assert jitter > 0 and t.report_retry_max < t.report_refresh
    step = t.report_retry_max / 500
    capped = []
    for sw in big_fabric.switches[:120]:
        r = Reporter(big_fabric, sw.name, now=0.0)
        r.update(ports(), 0.0)
        at, waits = 0.0, []
        for _ in range(6):                          # 0.24, 0.49, 0.97 s, then the 1 s cap three times
            nxt = _first_retry(r, at, step, at + 2 * t.report_retry_max)
            assert nxt is not None
            waits.append(nxt - at)
            at = nxt
        assert max(waits) <= t.report_retry_max + step
        capped.extend(waits[3:])
    assert min(capped) >= t.report_retry_max / (1 + jitter) - step
    assert max(capped) - min(capped) > 0.6 * (t.report_retry_max - t.report_retry_max / (1 + jitter))
    assert len({round(w / step) for w in capped}) > 60


def test_a_backups_challenge_does_not_postpone_the_masters_retry(fabric, clock):
    """Review 38: a Challenge from a replica that is not the master in use (a backup that restarted: a new
    incarnation challenges the report every replica got) brings that backup its copy, but the master's ack is
    what ends the retries: if the master's copy was lost, its retry is still due one back-off after the report,
    not the doubled back-off after the backup's Challenge (the copy went to the backup, not to the master)."""
    r = Reporter(fabric, "leaf-1", now=clock.now)
    known_master(r, clock, "m1", 5)
    r.update(ports(), clock.now)
    r.on_ack(ReportAck("m1", 5, r.report_seq), clock.now)
    sent_at = clock.advance(1.0)
    r.on_master_heard("m1", 5, sent_at)                       # its keepalive: the master in use is alive
    assert r.master_alive(sent_at)
    out = r.update(ports(usable1=False), sent_at)            # a link down: to every replica; m1's copy is lost
    assert [a.master for a in out] == ["m1", "m2", "m3"]
    seq = r.report_seq
    backoff = r.retry_min
    challenged = clock.advance(backoff / 4)
    copy = r.retransmit_now(challenged, "m2")
    assert [(a.master, a.msg.report_seq) for a in copy] == [("m2", seq)]
    retry = None
    t = challenged
    while t < sent_at + 3 * backoff and retry is None:
        t += backoff / 200
        if [a for a in r.tick(t) if a.msg.report_seq == seq and a.master == "m1"]:
            retry = t
    assert retry is not None and retry <= sent_at + backoff * 1.01, (retry, sent_at, backoff)
