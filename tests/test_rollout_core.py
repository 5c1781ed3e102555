"""Config changes without an outage (issue #21), pure parts: a master never publishes an LSD it did not hear
(a fresh mastership holds while live switches report under another config), a client never programs an LSD
of a config it does not run."""

from __future__ import annotations

from controller.core import MasterCore
from proto.messages import LsdFull, LsdRequest
from tests.test_master_core import NO_GUARD, make_fabric, rejected, report, sends

OTHER = "0" * 64


def fresh_master(f, now: float = 0.0) -> MasterCore:
    """Every replica restarted: no valid LSD (the hold lasts switch_dead at most, unless ...)."""
    core = MasterCore(f, "m1")
    core.become_master(1, now)
    return core


def test_a_fresh_master_publishes_nothing_while_switches_report_another_config() -> None:
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    others = [s.name for s in f.switches if s.name != "leaf-1"]
    for i, sw in enumerate(others):
        assert rejected(core.handle(sw, report(f, sw, digest=OTHER), 0.01 * i)) == ["digest_mismatch"]
    assert core.other_config(0.1) == dict.fromkeys(others, OTHER)
    # leaf-1 restarted on our config: it reports and asks for the LSD holding none (-1) ...
    core.handle("leaf-1", report(f, "leaf-1"), 0.2)
    acts = core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 0.2)
    t, got = 0.2, list(acts)
    while t < f.timers.switch_dead * 1.5:         # well past the usual end of the hold
        t += 0.5
        for sw in others:                          # they stay alive, on their config
            core.handle(sw, report(f, sw, digest=OTHER, seq=int(t * 10)), t)
        got += core.handle("leaf-1", report(f, "leaf-1", seq=int(t * 10)), t)
        got += core.tick(t)
    # ... and gets nothing: its links are DOWN for want of a report we can read, and it would program that
    assert sends(got, "leaf-1", LsdFull) == [] and core.held
    assert core.next_deadline() is not None and core.next_deadline() > t      # no spinning timer
    # every switch on our config: the LSD is published, heard from both ends of every link
    for sw in others:
        core.handle(sw, report(f, sw, seq=10_000), t)
    assert not core.held and core.other_config(t) == {}
    got = []
    for k in range(1, 20):
        got += core.tick(t + 0.05 * k)
    full = sends(got, "leaf-1", LsdFull)
    assert len(full) == 1 and full[0].version > 0


def test_a_switch_on_another_config_that_goes_silent_stops_blocking() -> None:
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    core.handle("spine-1", report(f, "spine-1", digest=OTHER), 0.0)
    for sw in (s.name for s in f.switches if s.name != "spine-1"):
        core.handle(sw, report(f, sw), 0.0)
    dead = f.timers.switch_dead
    core.tick(dead * 0.9)
    assert core.held
    t = dead + 2 * f.timers.keepalive
    core.tick(t)
    assert not core.held and core.other_config(t) == {}


def test_a_replicated_mastership_is_not_blocked_by_another_config() -> None:
    """A new master with the replicated LSD publishes what clients already have: the old rule applies."""
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    core.end_hold(0.0)
    core.become_master(2, 1.0)                 # its LSD is valid (built in term 1)
    core.handle("spine-1", report(f, "spine-1", digest=OTHER, term=2), 1.0)
    core.tick(1.0 + f.timers.keepalive + 0.01)
    assert not core.held


def test_a_backup_does_not_serve_while_switches_report_another_config() -> None:
    f = make_fabric(NO_GUARD)
    b = MasterCore(f, "m2")
    b.become_backup(1, "m1", 0.0)
    leader = MasterCore(f, "m1")
    acts = leader.become_master(1, 0.0) + leader.tick(0.01)
    for m in sends(acts, "m2", LsdFull):
        b.handle("m1", m, 0.01)
    assert b.lsd_valid
    b.handle("spine-1", report(f, "spine-1", digest=OTHER), 0.1)
    assert rejected(b.handle("leaf-1", LsdRequest("leaf-1", 1, -1), 0.2)) == ["other_config"]
