"""Master-side damping (issue #19 item 5, controller.damping): pure damper and the master core with a fake
clock. A 2-spine x 4-leaf fabric: leaf-1 flaps port 1 (its link to spine-1)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from controller.actions import DampEvent, VersionChanged
from controller.core import MasterCore
from controller.damping import Damper
from proto.clos import ClosParams, clos_fabric, generate_clos_yaml
from proto.config import ConfigError, Damping, Fabric, parse_fabric
from proto.lsd import LinkState
from tests.test_master_core import all_up, master, report

UP, DOWN, DRAINED = LinkState.UP, LinkState.DOWN, LinkState.DRAINED


def fabric_with(**damping: float) -> Fabric:
    f = clos_fabric(pods=0, spines=2, leaves=4, masters=1)
    return dataclasses.replace(f, damping=Damping(**damping)) if damping else f


def link_of(f: Fabric, switch: str, port: int) -> int:
    return next(i for i in f.links_of(switch) if (f.links[i].a.switch, f.links[i].a.port) == (switch, port)
                or (f.links[i].b.switch, f.links[i].b.port) == (switch, port))


class Flapper:
    """leaf-1's reports, alternating port 1 unusable / usable."""

    def __init__(self, core: MasterCore, f: Fabric, switch: str = "leaf-1", port: int = 1) -> None:
        self.core, self.f, self.switch, self.port = core, f, switch, port
        self.seq = 10
        self.all = set(f.fabric_ports(switch))

    def send(self, up: bool, now: float) -> list:
        self.seq += 1
        usable = self.all if up else self.all - {self.port}
        acts = self.core.handle(self.switch, report(self.f, self.switch, usable=usable, seq=self.seq), now)
        return acts + self.core.tick(now)


def versions(acts: list) -> list[VersionChanged]:
    return [a for a in acts if isinstance(a, VersionChanged)]


# ------------------------------------------------------------------------------------------ pure damper
def test_penalty_decays_by_half_life_and_suppresses_above_threshold() -> None:
    d = Damper(Damping(half_life=2.0, penalty=1000, suppress=2500, reuse=800, max_suppress=10.0))
    states = {0: UP}
    ev: list[DampEvent] = []
    for k, t in enumerate((0.0, 0.1, 0.2)):
        ev += d.observe([0], states, {0: DOWN}, t)            # evidence UP -> DOWN: a flap
        ev += d.observe([0], states, {}, t + 0.05)           # back to UP (the LSD state is UP)
        assert d.links[0].flaps == k + 1
    # 1000 at 0.0 + 1000 at 0.1 + 1000 at 0.2, each decayed: above 2500 at the third flap only
    expected = 1000 * (2 ** (-0.2 / 2) + 2 ** (-0.1 / 2) + 1)
    assert d.penalty(0, 0.2) == pytest.approx(expected)
    assert [e.kind for e in ev] == ["suppress"] and d.suppressed(0)
    assert d.penalty(0, 2.2) == pytest.approx(expected / 2)
    # reused exactly when the penalty reaches `reuse`
    reuse_at = 0.2 + 2.0 * math.log2(expected / 800)
    assert d.next_deadline() == pytest.approx(reuse_at)
    assert d.tick(reuse_at - 0.01)[0] == []
    reused, due, events = d.tick(d.next_deadline())
    assert reused == [0] and due == [] and [e.kind for e in events] == ["reuse"] and not d.suppressed(0)


def test_penalty_ceiling_bounds_the_hold_after_the_last_flap() -> None:
    p = Damping(half_life=1.0, penalty=1000, suppress=2000, reuse=500, max_suppress=3.0)
    d = Damper(p)
    for k in range(2000):                                    # a flap every ms for 2 s
        t = k * 0.001
        d.observe([7], {7: UP}, {7: DOWN}, t)
        d.observe([7], {7: UP}, {}, t + 0.0005)
    last = 1.999
    assert d.penalty(7, last) == pytest.approx(p.ceiling) == pytest.approx(500 * 2 ** 3)
    assert d.next_deadline() == pytest.approx(last + p.max_suppress)


def test_filter_never_withholds_a_down_and_turns_a_held_undrain_into_down() -> None:
    d = Damper(Damping(half_life=5.0, penalty=1000, suppress=1500, reuse=500, max_suppress=10.0))
    for t in (0.0, 0.01):
        d.observe([1], {1: UP}, {1: DOWN}, t)
        d.observe([1], {1: UP}, {}, t + 0.001)
    assert d.suppressed(1)
    changes = {1: UP, 2: DOWN, 3: UP}
    d.filter(changes, {1: DOWN, 2: UP, 3: DOWN}, "leaf-1", 0.1)
    assert changes == {2: DOWN, 3: UP}                       # only the suppressed UP is withheld
    changes = {1: UP}
    d.filter(changes, {1: DRAINED}, None, 0.1)               # undrain of a held link: DOWN, not DRAINED
    assert changes == {1: DOWN}


def test_switch_rate_limit_defers_ups_not_downs() -> None:
    d = Damper(Damping(up_rate=10.0, up_burst=2, suppress=1e6, reuse=1.0, max_suppress=1000.0))
    for t in (0.0, 0.001):
        changes = {5: UP}
        assert d.filter(changes, {5: DOWN}, "leaf-1", t) == [] and changes == {5: UP}
    changes = {5: UP, 6: DOWN}
    ev = d.filter(changes, {5: DOWN, 6: UP}, "leaf-1", 0.002)
    assert changes == {6: DOWN} and ev == [DampEvent("defer", (5,), "leaf-1", 0)]
    changes = {9: UP}
    assert d.filter(changes, {9: DOWN}, "spine-1", 0.002) == [] and changes == {9: UP}   # per switch
    due_at = d.next_deadline()
    assert due_at == pytest.approx(0.1)                      # the bucket refills at 10/s since t=0
    assert d.tick(due_at)[1] == ["leaf-1"]
    changes = {5: UP}
    assert d.filter(changes, {5: DOWN}, "leaf-1", due_at) == [] and changes == {5: UP}


# ------------------------------------------------------------------------------------------ in the core
def test_one_ms_flap_storm_makes_a_bounded_number_of_versions_and_the_link_returns() -> None:
    f = fabric_with(half_life=0.5, suppress=3000, reuse=1000, max_suppress=2.0)
    core = master(f)
    all_up(core, f, 0.0)
    victim = link_of(f, "leaf-1", 1)
    v0 = core.version
    flap = Flapper(core, f)
    acts: list = []
    t = 1.0
    for k in range(2000):                                    # down/up every 1 ms for 2 s
        acts += flap.send(k % 2 == 1, t)
        t += 0.001
    made = versions(acts)
    # down, up, down, up, down, up, down (4th flap: suppressed) -> 7 versions, then nothing
    assert len(made) == core.version - v0 == 7, made
    assert [e.kind for e in acts if isinstance(e, DampEvent)] == ["suppress"]
    assert core.lsd.state(victim) == DOWN and core.damper.suppressed(victim)
    # a down is published at once, even while another link of the same switch is suppressed
    other = link_of(f, "leaf-1", 2)
    acts = core.handle("leaf-1", report(f, "leaf-1", usable=set(f.fabric_ports("leaf-1")) - {1, 2},
                                        seq=flap.seq + 1), t)
    assert core.lsd.state(other) == DOWN and len(versions(acts)) == 1
    acts = core.handle("leaf-1", report(f, "leaf-1", seq=flap.seq + 2), t + 0.001)
    assert core.lsd.state(other) == UP and core.lsd.state(victim) == DOWN
    # quiet now (port usable): released when the penalty decays to reuse, within max_suppress
    reuse_at = core.damper.links[victim].reuse_at
    assert reuse_at is not None and reuse_at <= t + 2.0 + 1e-9
    assert core.next_deadline() is not None and core.next_deadline() <= reuse_at
    assert versions(core.tick(reuse_at - 0.01)) == []
    acts = core.tick(reuse_at)
    assert [e.kind for e in acts if isinstance(e, DampEvent)] == ["reuse"]
    assert [v.cause for v in versions(acts)] == ["damping"] and core.lsd.state(victim) == UP


def test_default_policy_lets_an_ordinary_failure_and_repair_through() -> None:
    f = fabric_with()
    core = master(f)
    all_up(core, f, 0.0)
    victim = link_of(f, "leaf-1", 1)
    flap = Flapper(core, f)
    for k, t in enumerate((1.0, 1.5, 3.0, 3.5, 6.0, 6.5)):     # three failures and repairs in 5 s
        assert len(versions(flap.send(k % 2 == 1, t))) == 1
    assert core.lsd.state(victim) == UP and not core.damper.suppressed(victim)


def test_switch_flapping_many_ports_is_rate_limited() -> None:
    f = fabric_with(up_rate=5.0, up_burst=2, suppress=1e6, reuse=1.0, max_suppress=1000.0, half_life=1.0)
    core = master(f)
    all_up(core, f, 0.0)
    spine = "spine-1"
    ports = sorted(f.fabric_ports(spine))
    seq = 10
    acts: list = []
    t = 1.0
    for k in range(1000):                                   # 1 s: every ms a different port goes down or up
        seq += 1
        down = {ports[k // 2 % len(ports)]} if k % 2 == 0 else set()
        acts += core.handle(spine, report(f, spine, usable=set(ports) - down, seq=seq), t)
        acts += core.tick(t)
        t += 0.001
    ups = [v for v in versions(acts) if v.cause == "report"]
    # UP versions <= burst + rate x 1 s; downs <= ups + one per link (a link must be UP to go down again)
    assert sum(1 for a in acts if isinstance(a, DampEvent) and a.kind == "defer") > 0
    assert len(ups) <= 2 * (2 + 5 * 1.0) + len(ports), len(ups)
    # quiet: the deferred UPs are published within 1/up_rate
    for _ in range(5):
        t += 0.2
        core.tick(t)
    assert all(core.lsd.state(i) == UP for i in f.links_of(spine))


def test_damping_can_be_turned_off() -> None:
    f = clos_fabric(pods=0, spines=2, leaves=4, masters=1, damping=(("enabled", False),))
    assert f.damping == Damping(enabled=False)
    core = master(f)
    all_up(core, f, 0.0)
    flap = Flapper(core, f)
    acts: list = []
    for k in range(100):
        acts += flap.send(k % 2 == 1, 1.0 + k * 0.001)
    assert len(versions(acts)) == 100 and core.damper.suppressed_links() == []


def test_damping_state_is_reset_on_mastership_change() -> None:
    f = fabric_with(half_life=0.5, suppress=1500, reuse=1000, max_suppress=2.0)
    core = master(f)
    all_up(core, f, 0.0)
    flap = Flapper(core, f)
    for k in range(10):
        flap.send(k % 2 == 1, 1.0 + k * 0.001)
    assert core.damper.suppressed_links()
    core.become_inactive(2)
    assert core.damper.suppressed_links() == [] and core.damper.next_deadline() is None


# ------------------------------------------------------------------------------------------ config
def _yaml(section: str) -> str:
    return generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=2, masters=1)) + section


def test_config_damping_section_parsed_and_in_the_digest() -> None:
    base = parse_fabric(_yaml(""), source="x.yaml")
    f = parse_fabric(_yaml("damping:\n  half_life_ms: 200\n  suppress: 2500\n  up_burst: 7\n"), source="x.yaml")
    assert f.damping == Damping(half_life=0.2, suppress=2500.0, up_burst=7)
    assert base.damping == Damping() and f.digest != base.digest
    # the default policy leaves the digest as it was before the section existed (mixed-version upgrades)
    assert parse_fabric(_yaml("damping: {}\n"), source="x.yaml").digest == base.digest


@pytest.mark.parametrize(("section", "field", "words"), [
    ("damping:\n  reuse: 3000\n", "damping.reuse", "below suppress"),
    ("damping:\n  max_suppress_ms: 1000\n", "damping.max_suppress_ms", "nothing would be suppressed"),
    ("damping:\n  half_life_ms: 1\n  max_suppress_ms: 1001\n", "damping.max_suppress_ms", "at most 1000"),
    ("damping:\n  half_life_ms: -5\n", "damping.half_life_ms", "must be positive"),
    ("damping:\n  up_burst: 0\n", "damping.up_burst", "out of range"),
    ("damping:\n  penalty: fast\n", "damping.penalty", "expected a number"),
    ("damping:\n  halflife_ms: 5\n", "damping", "unknown key"),
])
def test_config_damping_errors_name_the_field(section: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_fabric(_yaml(section), source="x.yaml")
    msg = str(e.value)
    assert field in msg and words in msg and "x.yaml" in msg, msg
