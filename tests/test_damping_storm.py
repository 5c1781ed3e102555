"""Correlated drops are one event, not a flap of each link (client.damping, controller.damping): a stall that
drops every port of a switch (or links of many switches) at once must never damp them, while a single
flapping link is damped exactly as before. Fake clocks; the lab reproduction is tests/test_lab_storm.py."""

from __future__ import annotations

import dataclasses

import pytest

from client.damping import FlapDamper, storm_ports
from client.ports import PortChanged, PortTable
from proto.clos import clos_fabric
from proto.config import Timers
from tests.fakes.clock import FakeClock
from tests.test_ports import Pair

T = Timers()   # flap_threshold=3 within 10 s, holds 1 s .. 60 s
T5 = dataclasses.replace(T, damp_initial=5.0)    # a hold that outlasts the tests' stalls


def storm(d: FlapDamper, ports: list[int], clock: FakeClock, down_for: float = 1.0, skew: float = 0.05) -> None:
    """Every port in `ports` goes down within `skew` of the others, and comes back `down_for` later."""
    for p in ports:
        d.observe(p, False, clock.advance(skew / len(ports)))
    clock.advance(down_for)
    for p in ports:
        d.observe(p, True, clock.advance(skew / len(ports)))


def test_storm_size_is_half_the_ports_and_at_least_two():
    assert [storm_ports(n) for n in (1, 2, 3, 4, 64)] == [2, 2, 2, 2, 32]


def test_repeated_storms_never_damp_a_switch_whose_ports_drop_together():
    clock = FakeClock(100.0)
    d = FlapDamper(T, n_ports=4)
    for p in range(1, 5):
        d.observe(p, True, clock.now)                # bring-up
    for _ in range(3 * T.flap_threshold):            # 9 stalls within ~20 s: each port "flaps" 9 times
        storm(d, [1, 2, 3, 4], clock)
        clock.advance(1.0)
        assert not any(d.damped(p, clock.now) for p in range(1, 5))
    assert d.storm_flaps == 4 * 3 * T.flap_threshold and d.storms == 3 * T.flap_threshold
    assert all(d.view(p, clock.now).recent_flaps == 0 for p in range(1, 5))


def test_a_single_flapping_port_is_still_damped_next_to_quiet_ones():
    clock = FakeClock(100.0)
    d = FlapDamper(T, n_ports=4)
    for p in range(1, 5):
        d.observe(p, True, clock.now)
    started = []
    for _ in range(T.flap_threshold + 1):
        d.observe(1, False, clock.advance(0.1))
        started.append(d.observe(1, True, clock.advance(0.1)))
    assert started == [False] * T.flap_threshold + [True] and d.damped(1, clock.now)
    assert d.storm_flaps == 0 and d.storms == 0


def test_a_flap_charged_before_the_storm_was_seen_is_refunded_and_its_hold_cancelled():
    """The lab shows it: a ToR's port 2 went down and was back up before port 1 went down 75 ms later.
    Port 2's flap was charged (here: the one that damps it); port 1's down makes it a storm: refunded."""
    clock = FakeClock(100.0)
    d = FlapDamper(T, n_ports=2)
    for p in (1, 2):
        d.observe(p, True, clock.now)
    for _ in range(T.flap_threshold):                # port 2 flapped alone 3 times: charged, not damped
        d.observe(2, False, clock.advance(0.5))
        assert d.observe(2, True, clock.advance(0.5)) is False
    d.observe(2, False, clock.advance(0.5))
    assert d.observe(2, True, clock.advance(0.05)) is True and d.damped(2, clock.now)
    d.observe(1, False, clock.advance(0.025))        # the other port: a storm of both ports
    assert d.take_released() == [2] and not d.damped(2, clock.now)
    assert d.view(2, clock.now).recent_flaps == T.flap_threshold   # the earlier solo flaps still count
    assert d.take_released() == []


def leaf_with_two_uplinks(clock: FakeClock) -> Pair:
    """leaf-1's port table cabled to spine-1 (port 1) and spine-2 (port 2), every port up and ND settled."""
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    p = Pair(fabric, clock)
    p.tables["spine-2"] = PortTable(fabric, "spine-2", now=clock.now)
    p.cable.update({("leaf-1", 2): ("spine-2", 1), ("spine-2", 1): ("leaf-1", 2)})
    for sw, port in (("leaf-1", 1), ("spine-1", 1), ("leaf-1", 2), ("spine-2", 1)):
        p.phy(sw, port, True)
    p.run(0.1)
    return p


def test_port_table_storm_releases_a_port_at_once():
    """The same through PortTable: the refunded port becomes usable in the same call (a PortChanged)."""
    clock = FakeClock(1000.0)
    p = leaf_with_two_uplinks(clock)
    leaf = p.tables["leaf-1"]
    assert leaf.usable(1) and leaf.usable(2)
    for _ in range(T.flap_threshold + 1):            # port 1 alone: the 4th flap damps it
        p.phy("leaf-1", 1, False)
        p.run(0.1)
        p.phy("leaf-1", 1, True)
        p.run(0.1)
    assert leaf.status(1).damped and not leaf.usable(1)
    out = p.phy("leaf-1", 2, False)                  # within 1 s of port 1's last down: a storm
    assert PortChanged(1, True, True, leaf.status(1)) in out
    assert leaf.usable(1) and not leaf.status(1).damped


@pytest.mark.parametrize("skew", [0.0, 0.3, 0.9])
def test_storm_members_may_go_down_up_to_the_window_apart(skew):
    clock = FakeClock(0.0)
    d = FlapDamper(T, n_ports=2)
    for p in (1, 2):
        d.observe(p, True, clock.now)
    for _ in range(T.flap_threshold + 2):
        d.observe(1, False, clock.advance(0.5))
        d.observe(2, False, clock.advance(skew))
        d.observe(1, True, clock.advance(0.5))
        d.observe(2, True, clock.now)
    assert not d.damped(1, clock.now) and not d.damped(2, clock.now)


# ------------------------------------------------------------------------------------------ master side
from controller.actions import DampEvent  # noqa: E402
from controller.core import MasterCore  # noqa: E402
from proto.lsd import LinkState  # noqa: E402
from tests.test_master_core import all_up, master, report  # noqa: E402
from tests.test_master_damping import Flapper, fabric_with, link_of  # noqa: E402


class Fleet:
    """Every switch of the fabric reporting to one master core, report numbers per switch."""

    def __init__(self, core: MasterCore, f) -> None:
        self.core, self.f = core, f
        self.seq = {sw.name: 10 for sw in f.switches}

    def send(self, switch: str, usable: set[int] | None, now: float) -> list:
        self.seq[switch] += 1
        acts = self.core.handle(switch, report(self.f, switch, usable=usable, seq=self.seq[switch]), now)
        return acts + self.core.tick(now)

    def stall(self, t: float, down_for: float = 1.0) -> list:
        """Every switch reports all its ports down (5 ms apart), then all up `down_for` later."""
        acts: list = []
        for k, sw in enumerate(self.seq):
            acts += self.send(sw, set(), t + 0.005 * k)
        for k, sw in enumerate(self.seq):
            acts += self.send(sw, None, t + down_for + 0.005 * k)
        return acts


def test_master_repeated_fabric_wide_stalls_suppress_nothing_and_the_fabric_comes_back() -> None:
    f = fabric_with()                                      # the default policy: 4th flap suppresses
    core = master(f)
    all_up(core, f, 0.0)
    fleet = Fleet(core, f)
    acts: list = []
    for k in range(6):                                     # six 1 s stalls, 2 s apart: 6 "flaps" per link
        acts += fleet.stall(1.0 + 2.0 * k)
    kinds = [e.kind for e in acts if isinstance(e, DampEvent)]
    assert "suppress" not in kinds and kinds.count("storm") >= 6      # local storms first, then fabric-wide
    assert core.damper.suppressed_links() == []
    assert all(core.lsd.state(i) == LinkState.UP for i in range(len(f.links)))
    assert all(core.damper.penalty(i, 13.0) == 0.0 for i in range(len(f.links)))
    assert core.damper.storms >= 6 and core.damper.storm_flaps == 6 * len(f.links)


def test_master_one_switch_flapping_all_its_ports_is_not_a_storm() -> None:
    """A broken or hostile client flapping every port it has: one reporting switch, never a storm."""
    f = fabric_with()
    core = master(f)
    all_up(core, f, 0.0)
    fleet = Fleet(core, f)
    acts: list = []
    t = 1.0
    for _ in range(4):
        acts += fleet.send("leaf-1", set(), t)
        acts += fleet.send("leaf-1", None, t + 0.01)
        t += 0.02
    assert core.damper.storms == 0
    assert sorted(core.damper.suppressed_links()) == sorted(f.links_of("leaf-1"))


def test_master_storm_refunds_a_flap_charged_just_before_it_and_reuses_the_link_at_once() -> None:
    f = fabric_with(half_life=20.0, max_suppress=60.0)     # slow decay: the arithmetic below is plain
    core = master(f)
    all_up(core, f, 0.0)
    flap = Flapper(core, f)                                # leaf-1 port 1, alone
    victim = link_of(f, "leaf-1", 1)
    for t in (1.0, 1.1, 1.2):                              # three solo flaps: ~3000, not above suppress
        flap.send(False, t)
        flap.send(True, t + 0.05)
    assert not core.damper.suppressed(victim)
    flap.send(False, 2.5)                                  # the 4th: suppressed
    flap.send(True, 2.55)
    assert core.damper.suppressed(victim) and core.lsd.state(victim) == LinkState.DOWN
    fleet = Fleet(core, f)
    fleet.seq["leaf-1"] = flap.seq
    acts = fleet.stall(2.6)                                # 0.1 s later a fabric-wide stall: the 4th is refunded
    assert "storm" in [e.kind for e in acts if isinstance(e, DampEvent)]
    assert not core.damper.suppressed(victim) and core.lsd.state(victim) == LinkState.UP
    assert 2500 < core.damper.penalty(victim, 4.0) < 3000  # the three solo flaps (1.0-1.2) still count
    flap.seq = fleet.seq["leaf-1"]
    flap.send(False, 4.0)                                  # the next solo flap suppresses it again
    flap.send(True, 4.05)
    assert core.damper.suppressed(victim)


def test_master_a_stalled_switch_seen_by_its_neighbours_is_a_local_storm() -> None:
    """One switch stalls (its CPU starved) again and again: its neighbours report its links down, so do
    its own reports when it runs again. Most of its links, several reporters: not charged."""
    f = fabric_with()
    core = master(f)
    all_up(core, f, 0.0)
    fleet = Fleet(core, f)
    spine = "spine-1"
    neighbours = sorted({f.peer_of(spine, p).switch for p in f.fabric_ports(spine)})
    acts: list = []
    t = 1.0
    for _ in range(6):
        for k, sw in enumerate(neighbours):                  # each reports its port to spine-1 down
            usable = {p for p in f.fabric_ports(sw) if f.peer_of(sw, p).switch != spine}
            acts += fleet.send(sw, usable, t + 0.01 * k)
        acts += fleet.send(spine, set(), t + 0.3)
        for k, sw in enumerate([spine, *neighbours]):
            acts += fleet.send(sw, None, t + 1.0 + 0.01 * k)
        t += 2.0
    storms = [e for e in acts if isinstance(e, DampEvent) and e.kind == "storm"]
    # the 2nd link of spine-1 makes it local (half of its 4); on 8 links the 3rd also passes the fabric-wide rule
    assert storms and storms[0].switch == spine and storms[0].links == tuple(sorted(storms[0].links))
    assert core.damper.suppressed_links() == [] and "suppress" not in [e.kind for e in acts if isinstance(e, DampEvent)]
    assert all(core.lsd.state(i) == LinkState.UP for i in range(len(f.links)))


def test_master_local_storm_of_one_leaf_on_a_larger_fabric() -> None:
    """4 spines x 16 leaves (64 links: the fabric-wide rule needs 7): leaf-1 stalls six times; its 4 links
    are reported down by the spines first, then by itself. Local storms only; nothing suppressed."""
    f = clos_fabric(pods=0, spines=4, leaves=16, masters=1)
    core = master(f)
    all_up(core, f, 0.0)
    fleet = Fleet(core, f)
    leaf = "leaf-1"
    spines = sorted({f.peer_of(leaf, p).switch for p in f.fabric_ports(leaf)})
    acts: list = []
    t = 1.0
    for _ in range(6):
        for k, sw in enumerate(spines):
            usable = {p for p in f.fabric_ports(sw) if f.peer_of(sw, p).switch != leaf}
            acts += fleet.send(sw, usable, t + 0.01 * k)
        acts += fleet.send(leaf, set(), t + 0.3)
        for k, sw in enumerate([leaf, *spines]):
            acts += fleet.send(sw, None, t + 1.0 + 0.01 * k)
        t += 2.0
    storms = [e for e in acts if isinstance(e, DampEvent) and e.kind == "storm"]
    assert len(storms) == 6 and all(e.switch == leaf for e in storms), storms
    assert core.damper.suppressed_links() == [] and all(core.lsd.state(i) == LinkState.UP for i in range(len(f.links)))
    # the same leaf flapping its own ports on its own word (the spines keep saying usable): damped
    for k in range(4):
        acts = fleet.send(leaf, set(), t + 0.02 * k)
        acts += fleet.send(leaf, None, t + 0.02 * k + 0.01)
    assert sorted(core.damper.suppressed_links()) == sorted(f.links_of(leaf))


def test_master_a_flapping_link_stays_suppressed_next_to_a_coincidental_failure() -> None:
    """leaf-1 flaps its port 1 every ms; mid-storm leaf-2's link to spine-1 fails once (spine-1 then has two
    of its four links reported down by neighbours). The flapper is still suppressed: a link that flaps more
    than twice within the window is never part of a storm (found by tests/test_master_damping_loopback.py)."""
    f = fabric_with()
    core = master(f)
    all_up(core, f, 0.0)
    flap = Flapper(core, f)
    victim, other = link_of(f, "leaf-1", 1), link_of(f, "leaf-2", 1)
    fleet = Fleet(core, f)
    v0 = core.version
    t = 1.0
    for k in range(400):
        flap.send(k % 2 == 1, t)
        if k == 200:
            fleet.send("leaf-2", set(f.fabric_ports("leaf-2")) - {1}, t)
        t += 0.001
    assert core.damper.suppressed(victim) and core.lsd.state(victim) == LinkState.DOWN
    assert core.lsd.state(other) == LinkState.DOWN
    assert core.version - v0 <= 10


# --- the client's own stalls (client.stallwatch): time it did not run does not separate two drops ------------

def straddled_storm(d: FlapDamper, clock: FakeClock, stall_first: bool | None) -> None:
    """What tests/test_lab_storm.py's CI failure showed on a 2-port leaf: both links lose carrier, the
    client handles port 1's drop, then is stopped for 1 s; after it resumes it handles port 2's drop, 1.05 s
    later in its clock. `stall_first`: the stall watch's report reaches the damper before port 2's drop
    (True), after it (False), or never (None: the damper cannot know)."""
    d.observe(1, False, clock.advance(0.01))
    start = clock.advance(0.01)
    end = clock.advance(1.0)
    if stall_first:
        d.note_stall(start, end, clock.now)
    d.observe(2, False, clock.advance(0.04))
    if stall_first is False:
        d.note_stall(start, end, clock.advance(0.005))
    clock.advance(0.2)                       # carrier back, CFM and ND up again
    d.observe(1, True, clock.advance(0.01))
    d.observe(2, True, clock.advance(0.01))


@pytest.mark.parametrize("stall_first", [True, False])
def test_drops_on_both_sides_of_a_client_stall_are_one_storm(stall_first: bool):
    clock = FakeClock(100.0)
    d = FlapDamper(T, n_ports=2)
    d.observe(1, True, clock.now)
    d.observe(2, True, clock.now)
    for _ in range(2 * T.flap_threshold):        # six stalls ~2.3 s apart, as the lab test does
        straddled_storm(d, clock, stall_first)
        clock.advance(1.0)
        assert not d.damped(1, clock.now) and not d.damped(2, clock.now)
    assert d.storms == 2 * T.flap_threshold and d.storm_flaps == 2 * 2 * T.flap_threshold
    assert d.view(1, clock.now).recent_flaps == 0


def test_without_the_stall_the_same_drops_are_a_flap_of_the_port_handled_first():
    """The control: the damper's clock alone puts 1.05 s between the drops; each is charged as a flap."""
    clock = FakeClock(100.0)
    d = FlapDamper(T5, n_ports=2)
    d.observe(1, True, clock.now)
    d.observe(2, True, clock.now)
    for _ in range(T.flap_threshold + 1):
        straddled_storm(d, clock, None)
        clock.advance(1.0)
    assert d.damped(1, clock.now) and d.damped(2, clock.now) and d.storms == 0


def test_a_stall_late_in_the_report_refunds_a_flap_already_charged_and_cancels_its_hold():
    """Port 1 flapped three times alone (charged), then dropped and came back just before the client
    stalled: the fourth flap damps it. Port 2's drop is handled after the stall; the stall's report comes
    last and makes the two drops one storm: the fourth flap is refunded, its hold cancelled."""
    clock = FakeClock(100.0)
    d = FlapDamper(T5, n_ports=2)
    d.observe(1, True, clock.now)
    d.observe(2, True, clock.now)
    for _ in range(T.flap_threshold):
        d.observe(1, False, clock.advance(0.5))
        assert not d.observe(1, True, clock.advance(0.1))
    d.observe(1, False, clock.advance(0.5))
    assert d.observe(1, True, clock.advance(0.05))          # the fourth flap starts a hold
    start, end = clock.advance(0.01), clock.advance(1.5)
    d.observe(2, False, clock.advance(0.02))
    assert d.damped(1, clock.now) and d.storms == 0
    d.note_stall(start, end, clock.advance(0.01))
    assert not d.damped(1, clock.now) and d.take_released() == [1] and d.storms == 1


def test_a_stall_does_not_join_drops_further_apart_than_the_window_in_running_time():
    clock = FakeClock(100.0)
    d = FlapDamper(T, n_ports=2)
    d.observe(1, True, clock.now)
    d.observe(2, True, clock.now)
    d.observe(1, False, clock.advance(0.1))
    start, end = clock.advance(0.6), clock.advance(1.0)       # 0.6 s of running time, a 1 s stall,
    d.observe(2, False, clock.advance(0.6))                     # 0.6 s more: 1.2 s apart while running
    d.note_stall(start, end, clock.now)
    assert d.storms == 0 and not d._in_storm(clock.now)


def test_the_port_table_recomputes_a_port_whose_hold_a_late_stall_cancelled():
    """Through PortTable: port 1 is damped by its fourth lone flap; port 2's drop is handled 1.05 s after
    port 1's last drop (the client stalled in between); the stall's report comes last and releases port 1
    in the same call (a PortChanged)."""
    clock = FakeClock(1000.0)
    p = leaf_with_two_uplinks(clock)
    leaf = p.tables["leaf-1"]
    for _ in range(T.flap_threshold + 1):
        p.phy("leaf-1", 1, False)
        down = clock.now
        p.run(0.1)
        p.phy("leaf-1", 1, True)
        p.run(0.1)
    assert leaf.status(1).damped
    start = clock.advance(0.01)
    end = clock.set(down + 1.04)
    clock.set(down + 1.05)
    out = p.phy("leaf-1", 2, False)                 # 1.05 s after port 1's drop by the clock: no storm yet
    assert leaf.status(1).damped and not any(isinstance(a, PortChanged) and a.port == 1 for a in out)
    out = leaf.on_stall(start, end, clock.advance(0.01))
    assert PortChanged(1, True, True, leaf.status(1)) in out
    assert leaf.usable(1) and not leaf.status(1).damped


def _run_ticks(d: FlapDamper, clock: FakeClock, until: float) -> list[int]:
    """Tick at every deadline (as the runtime does) up to `until`; the ports whose hold `tick` ended."""
    ended: list[int] = []
    for _ in range(10_000):
        nxt = min(d.next_deadline(), until)
        if nxt > clock.now:
            clock.advance(nxt - clock.now)
        ended += d.tick(clock.now)
        if clock.now >= until:
            break
    return ended


def test_a_damped_port_next_to_a_storm_is_released_by_damp_max():
    """Tester (lab, spine-1 of a 2 x 4): leaf-4:1 flapped 30 times (0.2 s down, 0.2 s up), then spine-1's other
    ports dropped together 10 times; spine-1:4 stayed damped > 110 s (damp_max 60 s) and `lab heal` promised
    at most 60 s. Whatever a storm refunds, the hold ends in time."""
    clock = FakeClock(100.0)
    d = FlapDamper(T, n_ports=4)
    for p in range(1, 5):
        d.observe(p, True, clock.now)
    for _ in range(30):
        d.observe(4, False, clock.advance(0.2))
        d.observe(4, True, clock.advance(0.2))
        d.next_deadline()                        # the runtime asks after every input (drops superseded holds)
    last_flap = clock.now
    assert d.damped(4, clock.now)
    for _ in range(10):
        storm(d, [1, 2, 3], clock, down_for=0.2)
        clock.advance(0.2)
        d.next_deadline()
    assert d.storms >= 1 and not any(d.damped(p, clock.now) for p in (1, 2, 3))
    ended = _run_ticks(d, clock, last_flap + T.damp_max + 0.5)
    assert 4 in ended and not d.damped(4, clock.now), d.view(4, clock.now)

