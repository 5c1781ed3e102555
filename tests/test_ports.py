"""Port core: PHY + ND + admin + damping -> usable, the local-repair trigger, and the report's ports."""

from __future__ import annotations

import math

import pytest

from client.nd import NdState, SendNd
from client.ports import PortChanged, PortTable
from proto.clos import clos_fabric
from proto.config import Endpoint
from proto.messages import NdFrame, PortStatus
from tests.fakes.clock import FakeClock


@pytest.fixture(scope="module")
def fabric():
    # leaf-1:1-spine-1:1, leaf-1:2-spine-2:1, leaf-2:1-spine-1:2, leaf-2:2-spine-2:2
    return clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")   # software ND mode


@pytest.fixture
def clock():
    return FakeClock(1000.0)


class Pair:
    """leaf-1 and spine-1 port tables joined by the cable leaf-1:1 <-> spine-1:1 (zero latency)."""

    def __init__(self, fabric, clock: FakeClock) -> None:
        self.clock = clock
        self.tables = {n: PortTable(fabric, n, now=clock.now) for n in ("leaf-1", "spine-1")}
        self.cable = {("leaf-1", 1): ("spine-1", 1), ("spine-1", 1): ("leaf-1", 1)}
        self.changes: list[tuple[float, str, PortChanged]] = []

    def handle(self, switch: str, actions) -> None:
        pending = [(switch, a) for a in actions]
        for _ in range(10_000):
            if not pending:
                return
            sw, action = pending.pop(0)
            if isinstance(action, PortChanged):
                self.changes.append((self.clock.now, sw, action))
            elif isinstance(action, SendNd):
                far = self.cable.get((sw, action.port))
                if far is not None:
                    more = self.tables[far[0]].on_nd_frame(far[1], sw, action.frame, self.clock.now)
                    pending.extend((far[0], a) for a in more)
        raise AssertionError("does not settle")

    def phy(self, switch: str, port: int, live: bool) -> list:
        out = self.tables[switch].on_phy(port, live, self.clock.now)
        self.handle(switch, out)
        return out

    def run(self, seconds: float) -> None:
        until = self.clock.now + seconds
        for _ in range(1_000_000):
            deadline = min(t.next_deadline() for t in self.tables.values())
            if deadline > until:
                self.clock.set(until)
                return
            self.clock.set(max(self.clock.now, deadline))
            for name, table in self.tables.items():
                if table.next_deadline() <= self.clock.now:
                    self.handle(name, table.tick(self.clock.now))
        raise AssertionError("stuck")

    def up(self) -> None:
        self.phy("leaf-1", 1, True)
        self.phy("spine-1", 1, True)
        self.run(0.05)


def test_initial_report_all_ports_down_and_no_frames(fabric, clock):
    t = PortTable(fabric, "leaf-1", now=clock.now)
    assert t.ports == (1, 2)
    assert t.statuses() == (
        PortStatus(port=1, phy=False, nd=False, usable=False, admin=True, damped=False, miscabled_by=None),
        PortStatus(port=2, phy=False, nd=False, usable=False, admin=True, damped=False, miscabled_by=None),
    )
    assert t.tick(clock.now) == []               # PHY unknown/down: nothing is sent
    assert t.next_deadline() == math.inf
    assert t.usable_ports() == frozenset()


def test_port_becomes_usable_when_phy_and_nd_are_up(fabric, clock):
    p = Pair(fabric, clock)
    out = p.tables["leaf-1"].on_phy(1, True, clock.now)
    changed = [a for a in out if isinstance(a, PortChanged)]
    assert [c.status.phy for c in changed] == [True] and not changed[0].usable
    assert SendNd(1, NdFrame("leaf-1", 1, Endpoint("spine-1", 1), None)) in out   # ND starts at once
    p.handle("leaf-1", out)
    p.phy("spine-1", 1, True)
    p.run(0.02)
    for sw in ("leaf-1", "spine-1"):
        table = p.tables[sw]
        assert table.usable(1) and table.usable_ports() == frozenset({1})
        assert table.status(1) == PortStatus(1, True, True, True, True, False, None)
        last = [c for _, s, c in p.changes if s == sw][-1]
        assert last.usable and last.usable_changed
        assert table.view(1, clock.now).nd == NdState.UP


def test_phy_down_is_an_immediate_local_repair_trigger_and_resets_nd(fabric, clock):
    p = Pair(fabric, clock)
    p.up()
    out = p.tables["leaf-1"].on_phy(1, False, clock.now)
    changed = [a for a in out if isinstance(a, PortChanged)]
    assert len(changed) == 1                   # one change carrying PHY and ND down together
    c = changed[0]
    assert c.port == 1 and not c.usable and c.usable_changed
    assert c.status == PortStatus(1, False, False, False, True, False, None)
    assert p.tables["leaf-1"].nd.state(1) == NdState.DOWN
    assert p.tables["leaf-1"].nd.discovered(1) is None
    # The far end loses ND within nd_dead (our frames stop: PHY down sends nothing).
    p.handle("leaf-1", out)
    p.run(0.05)
    assert not p.tables["spine-1"].usable(1)
    assert p.tables["spine-1"].status(1).phy     # (its PHY is still up in this simulation)


def test_admin_down_makes_unusable_without_counting_a_flap(fabric, clock):
    p = Pair(fabric, clock)
    p.up()
    t = p.tables["leaf-1"]
    for _ in range(10):
        out = t.set_admin(1, False, clock.now)
        assert out == [PortChanged(1, False, True, PortStatus(1, True, True, False, False, False, None))]
        out = t.set_admin(1, True, clock.now)
        assert [a.usable for a in out] == [True]
    assert t.set_admin(1, True, clock.now) == []
    assert not t.status(1).damped
    assert PortTable(fabric, "leaf-1", admin_down={2}).status(2).admin is False


def test_miscabled_port_reports_who_is_there(fabric, clock):
    t = PortTable(fabric, "leaf-1", now=clock.now)
    t.on_phy(1, True, clock.now)
    wrong = NdFrame("spine-2", 1, Endpoint("leaf-1", 2), None)
    out = t.on_nd_frame(1, "spine-2", wrong, clock.now)
    changed = [a for a in out if isinstance(a, PortChanged)]
    assert changed == [PortChanged(1, False, False, PortStatus(1, True, False, False, True, False,
                                                               Endpoint("spine-2", 1)))]
    assert t.view(1, clock.now).nd == NdState.MISCABLED
    assert t.view(1, clock.now).expected == Endpoint("spine-1", 1)


def test_flapping_port_is_damped_then_released(fabric, clock):
    p = Pair(fabric, clock)
    p.up()
    timers = fabric.timers
    for _ in range(timers.flap_threshold + 1):
        p.phy("leaf-1", 1, False)
        p.run(0.1)
        p.phy("leaf-1", 1, True)
        p.run(0.1)
    t = p.tables["leaf-1"]
    status = t.status(1)
    assert status.phy and status.nd and status.damped and not status.usable
    view = t.view(1, clock.now)
    assert view.damped_until is not None and view.damped_until > clock.now
    # The hold ends on a tick: the port becomes usable without any other event.
    p.changes.clear()
    p.run(timers.damp_initial)
    assert t.usable(1) and not t.status(1).damped
    ends = [(at, c) for at, sw, c in p.changes if sw == "leaf-1"]
    assert len(ends) == 1 and ends[0][1].usable_changed
    assert ends[0][0] == pytest.approx(view.damped_until)


def test_port_desc_sets_every_fabric_port_and_ignores_others(fabric, clock):
    t = PortTable(fabric, "leaf-1", now=clock.now)
    out = t.on_port_desc({1: True, 100: True}, clock.now)     # port 2 missing -> down; 100 is a host port
    assert [a.port for a in out if isinstance(a, PortChanged)] == [1]
    assert t.status(1).phy and not t.status(2).phy
    assert t.on_phy(100, False, clock.now) == []
    assert t.on_phy(1, True, clock.now) == []                  # no change, no action
    assert t.on_nd_frame(100, "spine-1", NdFrame("spine-1", 1, Endpoint("leaf-1", 1), None), clock.now) == []


def test_statuses_follow_changes(fabric, clock):
    t = PortTable(fabric, "leaf-1", now=clock.now)
    before = t.statuses()
    assert t.statuses() is before            # cached while nothing changes
    t.on_phy(2, True, clock.now)
    after = t.statuses()
    assert after != before and after[1].phy and [s.port for s in after] == [1, 2]
