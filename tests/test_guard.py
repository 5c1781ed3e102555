"""The drastic-change guard (issue #16, controller.guard) inside the pure master core, default policy
(down_share 25 %): a 2-spine x 4-leaf fabric has 8 links and 6 switches, so at most 2 links / 1 switch may
go down on uncorroborated evidence within the window."""

from __future__ import annotations

import pytest

from controller.actions import GuardEvent, VersionChanged
from controller.core import MasterCore, NotMaster
from proto.clos import clos_fabric
from proto.config import Fabric
from proto.lsd import LinkState
from tests.test_master_core import all_up, master, report

UP, DOWN = LinkState.UP, LinkState.DOWN


@pytest.fixture
def fabric() -> Fabric:
    return clos_fabric(pods=0, spines=2, leaves=4, masters=2)


def ports_to(f: Fabric, switch: str, peer: str) -> set[int]:
    """`switch`'s ports whose link goes to `peer`."""
    out = set()
    for i in f.links_of(switch):
        link = f.links[i]
        if peer in (link.a.switch, link.b.switch):
            out.add(link.a.port if link.a.switch == switch else link.b.port)
    return out


def guard_events(acts: list, kind: str | None = None) -> list[GuardEvent]:
    return [a for a in acts if isinstance(a, GuardEvent) and (kind is None or a.kind == kind)]


def down_links(core: MasterCore) -> set[int]:
    return {i for i, s in enumerate(core.lsd.states()) if s == DOWN}


def test_uncorroborated_mass_down_is_held_then_released_by_corroboration(fabric: Fabric) -> None:
    core = master(fabric)
    all_up(core, fabric, 0.0)
    v = core.version
    # leaf-1 says both uplinks unusable, the spines still say usable: 2 of 8 links, within the budget
    core.handle("leaf-1", report(fabric, "leaf-1", usable=set(), seq=2), 0.1)
    assert down_links(core) == set(fabric.links_of("leaf-1")) and core.version == v + 1
    # leaf-2 says the same: 4 uncorroborated downs within the window > 25 % of 8 -> held, alarmed
    acts = core.handle("leaf-2", report(fabric, "leaf-2", usable=set(), seq=2), 0.2)
    held = guard_events(acts, "hold")
    assert len(held) == 1 and held[0].links == tuple(sorted(fabric.links_of("leaf-2")))
    assert "uncorroborated" in held[0].reason
    assert core.version == v + 1 and down_links(core) == set(fabric.links_of("leaf-1"))
    assert set(core.guard_held()) == set(fabric.links_of("leaf-2"))
    # spine-1 corroborates its side: that one link is published, the other stays held
    s1_port = ports_to(fabric, "spine-1", "leaf-2")
    acts = core.handle("spine-1", report(fabric, "spine-1", usable=set(fabric.fabric_ports("spine-1")) - s1_port,
                                         seq=2), 0.3)
    rel = guard_events(acts, "release")
    assert len(rel) == 1 and rel[0].reason == "corroborated" and len(rel[0].links) == 1
    assert core.version == v + 2 and len(core.guard_held()) == 1


def test_operator_confirm_publishes_what_is_held(fabric: Fabric) -> None:
    core = master(fabric)
    all_up(core, fabric, 0.0)
    for i, leaf in enumerate(("leaf-1", "leaf-2", "leaf-3")):
        core.handle(leaf, report(fabric, leaf, usable=set(), seq=2), 0.1 + i * 0.01)
    held = core.guard_held()
    assert len(held) == 4
    v = core.version
    acts = core.guard_confirm(0.5)
    assert guard_events(acts) == [GuardEvent("release", tuple(sorted(held)), "confirmed")]
    assert [e.cause for e in acts if isinstance(e, VersionChanged)] == ["guard"]
    assert core.version == v + 1 and set(held) <= down_links(core) and core.guard_held() == {}
    assert core.guard_confirm(0.6) == []                     # nothing held: nothing happens
    backup = MasterCore(fabric, "m2")
    with pytest.raises(NotMaster):
        backup.guard_confirm(0.0)


def test_operator_confirms_only_the_named_held_links_all_or_nothing(fabric: Fabric) -> None:
    """Review 38: a confirmation released every link held at that moment, also links held after the operator
    looked. Named links are released alone; a named link not held refuses the whole confirmation."""
    from controller.guard import NotHeld
    core = master(fabric)
    all_up(core, fabric, 0.0)
    for i, leaf in enumerate(("leaf-1", "leaf-2", "leaf-3")):
        core.handle(leaf, report(fabric, leaf, usable=set(), seq=2), 0.1 + i * 0.01)
    held = sorted(core.guard_held())
    assert len(held) == 4
    first, rest = held[0], held[1:]
    not_held = next(i for i in range(len(fabric.links)) if i not in held)
    v, states = core.version, core.lsd.states()
    with pytest.raises(NotHeld) as e:
        core.guard_confirm(0.5, [first, not_held])
    assert e.value.links == (not_held,)
    assert core.version == v and core.lsd.states() == states and sorted(core.guard_held()) == held
    acts = core.guard_confirm(0.5, [first])
    assert guard_events(acts) == [GuardEvent("release", (first,), "confirmed")]
    assert core.version == v + 1 and first in down_links(core)
    assert sorted(core.guard_held()) == rest and not set(rest) & down_links(core)


def test_held_change_is_withdrawn_when_the_witness_recants(fabric: Fabric) -> None:
    core = master(fabric)
    all_up(core, fabric, 0.0)
    core.handle("leaf-1", report(fabric, "leaf-1", usable=set(), seq=2), 0.1)
    core.handle("leaf-2", report(fabric, "leaf-2", usable=set(), seq=2), 0.2)
    v = core.version
    acts = core.handle("leaf-2", report(fabric, "leaf-2", seq=3), 0.3)
    assert [e.kind for e in guard_events(acts)] == ["withdraw"] and core.guard_held() == {}
    assert core.version == v


def test_a_dead_switch_is_corroborated_by_its_neighbours(fabric: Fabric) -> None:
    """spine-1 dies: its client is silent and all four leaves report their link to it unusable (four
    independent witnesses, none contradicting): published at once although it is 50 % of the links."""
    core = master(fabric)
    all_up(core, fabric, 0.0)
    dead = fabric.timers.switch_dead
    t = 0.0
    seq = 2
    while t < dead + 0.5:                      # everyone but spine-1 keeps reporting, all usable
        t += 0.5
        for sw in fabric.switches:
            if sw.name != "spine-1":
                core.handle(sw.name, report(fabric, sw.name, seq=seq), t)
        core.tick(t)
        seq += 1
    assert core.silent_switches(t) == ["spine-1"] and set(core.lsd.states()) == {UP}
    acts = []
    for leaf in ("leaf-1", "leaf-2", "leaf-3", "leaf-4"):
        keep = set(fabric.fabric_ports(leaf)) - ports_to(fabric, leaf, "spine-1")
        acts += core.handle(leaf, report(fabric, leaf, usable=keep, seq=seq), t + 0.1)
    assert not guard_events(acts, "hold") or guard_events(acts, "release")
    assert down_links(core) == set(fabric.links_of("spine-1")) and core.guard_held() == {}


def test_both_ends_down_is_never_held(fabric: Fabric) -> None:
    """A real multi-link failure seen by both ends of every link is published whatever its size."""
    core = master(fabric)
    all_up(core, fabric, 0.0)
    for sw in fabric.switches:
        keep = set(fabric.fabric_ports(sw.name)) - ports_to(fabric, sw.name, "spine-2")
        if sw.name == "spine-2":
            keep = set()
        core.handle(sw.name, report(fabric, sw.name, usable=keep, seq=2), 0.1)
    assert down_links(core) == set(fabric.links_of("spine-2")) and core.guard_held() == {}


def test_guard_config_is_validated() -> None:
    from proto.clos import ClosParams, generate_clos_yaml
    from proto.config import ConfigError, parse_fabric

    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=4, masters=2))
    assert parse_fabric(text, source="<t>").guard.down_share == 0.25
    f = parse_fabric(text + "guard: {down_share: 0.5, window_ms: 2000, reach_margin: 0.1, reach_dwell_ms: 500}\n",
                     source="<t>")
    assert (f.guard.down_share, f.guard.window, f.guard.reach_margin, f.guard.reach_dwell) == (0.5, 2.0, 0.1, 0.5)
    for bad, why in (("down_share: 0", r"share in \(0, 1\]"), ("window_ms: -1", "must be positive"),
                     ("reach_margin: 2", r"share in \(0, 1\]"), ("nope: 1", "unknown key")):
        with pytest.raises(ConfigError, match=why) as e:
            parse_fabric(text + f"guard: {{{bad}}}\n", source="<t>")
        assert "guard." in str(e.value)


def test_a_switch_live_on_a_stale_report_is_corroborated_down_by_its_neighbours(fabric: Fabric) -> None:
    """Tester (R2, power loss): spine-1's client dies, then its links lose carrier. Its last report (all
    usable) keeps it live for switch_dead; the four leaves report their link to it unusable. Every live
    neighbour says so: published at once (was: two published, two held until switch_dead — a black hole
    wherever a held link was the only way on)."""
    core = master(fabric)
    all_up(core, fabric, 0.0)
    assert core.silent_switches(0.5) == []
    acts = []
    for i, leaf in enumerate(("leaf-1", "leaf-2", "leaf-3", "leaf-4")):
        keep = set(fabric.fabric_ports(leaf)) - ports_to(fabric, leaf, "spine-1")
        acts += core.handle(leaf, report(fabric, leaf, usable=keep, seq=2), 0.5 + i * 0.01)
    assert core.silent_switches(0.6) == []                    # spine-1 is still live on its stale word
    assert down_links(core) == set(fabric.links_of("spine-1")) and core.guard_held() == {}, guard_events(acts)


def test_one_neighbour_contradicting_keeps_the_switch_not_corroborated(fabric: Fabric) -> None:
    """Three leaves say their link to a live spine-1 is unusable, leaf-4 still says usable: spine-1 is not
    corroborated down, so the third uncorroborated down is over the budget and held."""
    core = master(fabric)
    all_up(core, fabric, 0.0)
    for i, leaf in enumerate(("leaf-1", "leaf-2", "leaf-3")):
        keep = set(fabric.fabric_ports(leaf)) - ports_to(fabric, leaf, "spine-1")
        core.handle(leaf, report(fabric, leaf, usable=keep, seq=2), 0.5 + i * 0.01)
    assert len(down_links(core)) == 2 and len(core.guard_held()) == 1


def test_a_live_switch_is_not_outvoted_without_carrier_loss(fabric: Fabric) -> None:
    """The other side of the power-loss rule: all four leaves say their link to spine-1 is unusable while
    their carrier stays up (an ND or liveness failure — or a bug of the whole leaf tier) and spine-1, live,
    says usable. Only hardware (carrier loss at every neighbour) outvotes a live switch's word: beyond the
    budget these downs are held, so a tier that reports wrongly cannot take the tier above it out."""
    from proto.messages import PortReport, PortStatus

    core = master(fabric)
    all_up(core, fabric, 0.0)
    for i, leaf in enumerate(("leaf-1", "leaf-2", "leaf-3", "leaf-4")):
        cut = ports_to(fabric, leaf, "spine-1")
        ports = tuple(PortStatus(p, True, p not in cut, p not in cut, True, False) for p in fabric.fabric_ports(leaf))
        core.handle(leaf, PortReport(leaf, fabric.digest, 2, 1, ports), 0.5 + i * 0.01)
    assert len(down_links(core)) == 2 and len(core.guard_held()) == 2
