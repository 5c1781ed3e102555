"""The config digest covers the config as written, not the timers the software derives from it (proto.budget).

A software upgrade that changes how timers are derived for a big fabric (last time: the first report retry went
from n / 10,000 to n / 5,000 s) must not change the digest of an unchanged file: masters and clients compare
digests (reports, LSD snapshots, the rollout), so during a rolling upgrade old and new nodes of the same file
would otherwise refuse each other's reports and snapshots (`digest_mismatch`, "holds another config").
"""

from __future__ import annotations

import dataclasses

import pytest

from client.replica import LsdReplica
from client.reporter import Reporter
from controller.actions import ReportAccepted
from controller.core import MasterCore
from proto import budget
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import Fabric, Timers, parse_fabric
from proto.messages import LsdFull
from tests.test_master_core import NO_GUARD, master, rejected, report

#: 2 pods of 150 ToRs: 306 switches, past the budget (keepalive, refresh, first retry ... are derived)
BIG = ClosParams(pods=2, spines=2, aggs_per_pod=2, tors_per_pod=150, hosts_per_tor=0, masters=3)


def big_text(timers: tuple[tuple[str, float], ...] = (), extra: str = "") -> str:
    return generate_clos_yaml(dataclasses.replace(BIG, timers=timers)) + extra


def load(text: str) -> Fabric:
    return parse_fabric(text, source="<big>")


def old_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The derivation of the previous firepath: the first report retry after n / 10,000 s (now n / 5,000)."""
    monkeypatch.setattr(budget, "INTAKE_RATE", 10_000.0)


def test_a_change_of_the_derivation_keeps_the_digest_of_an_unchanged_file(monkeypatch: pytest.MonkeyPatch) -> None:
    text = big_text()
    new = load(text)
    assert new.timers != Timers() == new.config_timers          # derived: the fabric is past the budget
    old_rule(monkeypatch)
    old = load(text)
    assert old.timers.report_retry_min < new.timers.report_retry_min    # the two versions run other timers ...
    assert old.digest == new.digest and old == new                       # ... of the same config


def test_any_derivation_rule_keeps_the_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    text = big_text(extra="distribution: {mode: multicast, group: 239.1.1.1, port: 7000}\n")
    before = load(text)
    real = budget.derive

    def doubled(timers: Timers, n: int, multicast: bool) -> Timers:
        t = real(timers, n, multicast)
        return dataclasses.replace(t, report_refresh=2 * t.report_refresh, switch_dead=2 * t.switch_dead)

    monkeypatch.setattr(budget, "derive", doubled)
    after = load(text)
    assert after.timers.report_refresh == 2 * before.timers.report_refresh
    assert after.digest == before.digest


def test_a_written_timer_changes_the_digest_even_when_the_derived_value_does_not() -> None:
    base = load(big_text())
    # 25 ms is below what the budget derives for 306 switches (n / 5,000 = 62 ms): the effective first retry
    # is the same, but the file says something else, and the digest says so
    edited = load(big_text(timers=(("report_retry_min_ms", 25),)))
    assert edited.timers == base.timers
    assert edited.config_timers.report_retry_min == 0.025
    assert edited.digest != base.digest
    # ... and writing a default out keeps it
    assert load(big_text(timers=(("report_retry_min_ms", 20), ("keepalive_ms", 100)))).digest == base.digest
    # a written timer above the derived one is both effective and in the digest
    slow = load(big_text(timers=(("keepalive_ms", 1000),)))
    assert slow.timers.keepalive == 1.0 and slow.digest != base.digest


def test_the_effective_timers_are_the_derivation_of_the_written_ones() -> None:
    text = big_text(timers=(("keepalive_ms", 150), ("report_retry_max_ms", 2000)))
    f = load(text)
    n = len(f.switches)
    assert f.config_timers == Timers(keepalive=0.150, report_retry_max=2.0)
    assert f.timers == budget.derive(f.config_timers, n, False)
    # a model built or copied in code derives the same way (one rule: Fabric.__post_init__)
    fewer = dataclasses.replace(f, switches=f.switches[:50], links=())
    assert fewer.config_timers == f.config_timers and fewer.timers == budget.derive(f.config_timers, 50, False)


def test_every_reader_gets_the_effective_timers() -> None:
    f = load(big_text())
    t = f.timers
    assert t != f.config_timers
    core = MasterCore(f, "m1")
    assert (core.dist.keepalive, core.deriver.switch_dead) == (t.keepalive, t.switch_dead)
    reporter = Reporter(f, "tor-1-1")
    assert (reporter.retry_min, reporter.refresh) == (t.report_retry_min, t.report_refresh)
    assert LsdReplica(f, "tor-1-1").master_silence == budget.master_silence(t, len(f.switches))


def test_a_mixed_version_fabric_agrees_on_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rolling upgrade that changes the derivation: a master on one version accepts the reports of a
    client on the other, and the client takes the master's LSD (today: digest_mismatch both ways)."""
    text = big_text(extra=NO_GUARD)
    upgraded = load(text)
    old_rule(monkeypatch)
    old = load(text)
    core = master(old)
    acts = core.handle("tor-1-1", report(upgraded, "tor-1-1"), 0.0)
    assert rejected(acts) == [] and any(isinstance(a, ReportAccepted) for a in acts)
    assert core.other_config(0.0) == {} and core.rollout.holds("tor-1-1") == upgraded.digest
    replica = LsdReplica(upgraded, "tor-1-1")
    full = LsdFull("m1", 1, 1, old.digest, core.lsd.snapshot())
    replica.on_full(full, 0.0)
    assert replica.has_data and replica.counters["refused_digest"] == 0 and replica.config_mismatch is None
