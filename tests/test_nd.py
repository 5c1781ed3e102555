"""Neighbor Discovery core: up, silent failure, one-way loss, miscabling, recovery, PHY reset — fake clock."""

from __future__ import annotations

import math
from collections import deque

import pytest

from client.nd import NdChanged, NdState, NeighborDiscovery, SendNd
from proto.clos import clos_fabric
from proto.config import Endpoint
from proto.messages import NdFrame
from tests.fakes.clock import FakeClock


@pytest.fixture(scope="module")
def fabric():
    # leaf-1:1-spine-1:1, leaf-1:2-spine-2:1, leaf-2:1-spine-1:2, leaf-2:2-spine-2:2
    return clos_fabric(pods=0, leaves=2, spines=2, masters=1)


def ep(text: str) -> Endpoint:
    switch, port = text.rsplit(":", 1)
    return Endpoint(switch, int(port))


class Wires:
    """Every switch's ND core, connected by cables (zero latency), with per-direction drops.

    `cables` maps an endpoint to the endpoint at the other end of its cable (kept symmetric). A frame
    sent out of `a` reaches `cables[a]` unless (a -> cables[a]) is in `dropped` or the receiver is `dead`.
    """

    def __init__(self, fabric, clock: FakeClock, switches=None) -> None:
        self.clock = clock
        names = switches or [s.name for s in fabric.switches]
        self.nd = {name: NeighborDiscovery(fabric, name, now=clock.now) for name in names}
        self.cables: dict[Endpoint, Endpoint] = {}
        for link in fabric.links:
            if link.a.switch in self.nd and link.b.switch in self.nd:
                self.plug(link.a, link.b)
        self.dropped: set[tuple[Endpoint, Endpoint]] = set()
        self.dead: set[str] = set()
        self.log: list[tuple[float, str, NdChanged]] = []
        self.sent: list[tuple[float, str, SendNd]] = []

    def plug(self, a: Endpoint, b: Endpoint) -> None:
        self.cables[a] = b
        self.cables[b] = a

    def unplug(self, a: Endpoint) -> None:
        b = self.cables.pop(a, None)
        if b is not None:
            self.cables.pop(b, None)

    def _handle(self, switch: str, actions) -> None:
        queue = deque((switch, a) for a in actions)
        for _ in range(10_000):
            if not queue:
                return
            sw, action = queue.popleft()
            now = self.clock.now
            if isinstance(action, NdChanged):
                self.log.append((now, sw, action))
                continue
            assert isinstance(action, SendNd)
            self.sent.append((now, sw, action))
            src = Endpoint(sw, action.port)
            dst = self.cables.get(src)
            if dst is None or (src, dst) in self.dropped or dst.switch in self.dead:
                continue
            more = self.nd[dst.switch].on_frame(dst.port, sw, action.frame, now)
            queue.extend((dst.switch, a) for a in more)
        raise AssertionError("ND ping-pong does not settle")

    def run(self, seconds: float) -> None:
        until = self.clock.now + seconds
        for _ in range(1_000_000):
            live = {n: c for n, c in self.nd.items() if n not in self.dead}
            deadline = min((c.next_deadline() for c in live.values()), default=math.inf)
            if deadline > until:
                self.clock.set(until)
                return
            self.clock.set(max(self.clock.now, deadline))
            for name, core in live.items():
                if core.next_deadline() <= self.clock.now:
                    self._handle(name, core.tick(self.clock.now))
        raise AssertionError("ND cores keep asking for ticks in the past")

    def state(self, endpoint: str) -> NdState:
        e = ep(endpoint)
        return self.nd[e.switch].state(e.port)

    def changed_at(self, endpoint: str, state: NdState, after: float) -> float:
        e = ep(endpoint)
        for t, sw, ch in self.log:
            if t >= after and sw == e.switch and ch.port == e.port and ch.state == state:
                return t
        raise AssertionError(f"{endpoint} never became {state} after {after}")


@pytest.fixture
def clock():
    return FakeClock(1000.0)


def test_expected_peers_and_initial_state(fabric, clock):
    nd = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    assert nd.ports == (1, 2)
    assert nd.expected(1) == ep("spine-1:1") and nd.expected(2) == ep("spine-2:1")
    assert nd.state(1) == NdState.DOWN and nd.discovered(1) is None
    sends = nd.tick(clock.now)
    assert [(a.port, a.frame) for a in sends] == [
        (1, NdFrame("leaf-1", 1, ep("spine-1:1"), None)),
        (2, NdFrame("leaf-1", 2, ep("spine-2:1"), None)),
    ]
    assert nd.next_deadline() == pytest.approx(clock.now + fabric.timers.nd_interval)


def test_link_comes_up_both_ways_within_one_interval(fabric, clock):
    w = Wires(fabric, clock)
    t0 = clock.now
    w.run(0.001)
    for end in ("leaf-1:1", "spine-1:1", "leaf-2:2", "spine-2:2"):
        assert w.state(end) == NdState.UP
        assert w.changed_at(end, NdState.UP, t0) - t0 <= fabric.timers.nd_interval
    assert w.nd["leaf-1"].discovered(1) == ep("spine-1:1")
    assert w.nd["spine-1"].discovered(1) == ep("leaf-1:1")
    w.run(1.0)   # and it stays up: no state change after the first second
    assert all(t - t0 < 0.01 for t, _, _ in w.log)


def test_frames_are_precomputed_and_sent_every_interval(fabric, clock):
    w = Wires(fabric, clock, switches=["leaf-1", "spine-1"])
    w.run(0.05)
    start = clock.now
    w.sent.clear()
    w.run(1.0)
    from_leaf_port1 = [s for t, sw, s in w.sent if sw == "leaf-1" and s.port == 1]
    per_second = len(from_leaf_port1)
    assert per_second == pytest.approx(1.0 / fabric.timers.nd_interval, abs=1)
    assert len({id(s.frame) for s in from_leaf_port1}) == 1      # built once, reused
    assert from_leaf_port1[0].frame == NdFrame("leaf-1", 1, ep("spine-1:1"), ep("spine-1:1"))
    # leaf-1:2's peer (spine-2) is not running: that port stays down but keeps sending discovery frames.
    assert w.state("leaf-1:2") == NdState.DOWN
    assert clock.now - start == pytest.approx(1.0)


def test_silent_failure_takes_both_ends_down_within_50ms(fabric, clock):
    w = Wires(fabric, clock)
    w.run(0.1)
    a, b = ep("leaf-1:1"), ep("spine-1:1")
    w.dropped |= {(a, b), (b, a)}
    t_cut = clock.now
    w.run(0.2)
    for end in ("leaf-1:1", "spine-1:1"):
        assert w.state(end) == NdState.DOWN
        assert w.changed_at(end, NdState.DOWN, t_cut) - t_cut <= 0.050
        assert w.changed_at(end, NdState.DOWN, t_cut) - t_cut <= fabric.timers.nd_dead + 1e-9
    assert w.state("leaf-1:2") == NdState.UP          # other links unaffected
    w.dropped.clear()
    w.run(0.05)
    assert w.state("leaf-1:1") == w.state("spine-1:1") == NdState.UP


@pytest.mark.parametrize("lost", ["leaf->spine", "spine->leaf"])
def test_one_way_loss_takes_the_link_down_on_both_sides(fabric, clock, lost):
    w = Wires(fabric, clock, switches=["leaf-1", "spine-1"])
    w.run(0.1)
    leaf, spine = ep("leaf-1:1"), ep("spine-1:1")
    src, dst = (leaf, spine) if lost == "leaf->spine" else (spine, leaf)
    w.dropped.add((src, dst))
    t_cut = clock.now
    w.run(0.2)
    deaf, hearing = dst, src   # dst hears nothing; src still hears dst but is no longer seen
    assert w.nd[deaf.switch].state(deaf.port) == NdState.DOWN
    assert w.nd[hearing.switch].state(hearing.port) == NdState.ONE_WAY
    # The hearing side learns it from the peer's frames: at most one interval after the deaf side.
    t_deaf = w.changed_at(str(deaf), NdState.DOWN, t_cut)
    t_hearing = w.changed_at(str(hearing), NdState.ONE_WAY, t_cut)
    assert t_deaf - t_cut <= fabric.timers.nd_dead + 1e-9
    assert t_hearing - t_deaf <= fabric.timers.nd_interval + 1e-9
    assert t_hearing - t_cut <= 0.050
    w.dropped.clear()
    w.run(0.05)
    assert w.nd[deaf.switch].state(deaf.port) == w.nd[hearing.switch].state(hearing.port) == NdState.UP


def test_peer_software_dies(fabric, clock):
    w = Wires(fabric, clock)
    w.run(0.1)
    w.dead.add("spine-1")
    t = clock.now
    w.run(0.1)
    assert w.state("leaf-1:1") == NdState.DOWN and w.state("leaf-2:1") == NdState.DOWN
    assert w.changed_at("leaf-1:1", NdState.DOWN, t) - t <= fabric.timers.nd_dead + 1e-9
    assert w.nd["leaf-1"].discovered(1) is None
    assert w.state("leaf-1:2") == NdState.UP


def swap_cables(w: Wires) -> None:
    """leaf-1:1 and leaf-2:1 swap their spine-1 ports (a classic patching error)."""
    w.unplug(ep("leaf-1:1"))
    w.unplug(ep("leaf-2:1"))
    w.plug(ep("leaf-1:1"), ep("spine-1:2"))
    w.plug(ep("leaf-2:1"), ep("spine-1:1"))


def test_miscabled_on_both_ends_with_both_identities(fabric, clock):
    w = Wires(fabric, clock)
    swap_cables(w)
    w.run(0.1)
    for end, actual in [("leaf-1:1", "spine-1:2"), ("spine-1:2", "leaf-1:1"),
                        ("leaf-2:1", "spine-1:1"), ("spine-1:1", "leaf-2:1")]:
        e = ep(end)
        view = w.nd[e.switch].view(e.port)
        assert view.state == NdState.MISCABLED, end
        assert view.miscabled_by == ep(actual)
        assert view.discovered == ep(actual)
        assert view.expected == fabric.peer_of(e.switch, e.port)
        assert view.rx_wrong > 0 and view.rx == 0
    # the frames a miscabled port sends say whom it really sees, so the far end can report it too
    frame = next(s.frame for t, sw, s in reversed(w.sent) if sw == "leaf-1" and s.port == 1)
    assert frame.discovered == ep("spine-1:2") and frame.expected == ep("spine-1:1")
    assert w.state("leaf-1:2") == NdState.UP


def test_miscabled_recovers_only_after_wrong_frames_stop_and_expected_peer_returns(fabric, clock):
    w = Wires(fabric, clock)
    swap_cables(w)
    w.run(0.1)
    # Fix the cabling without any PHY event (the cores are not told): the wrong frames stop now.
    w.unplug(ep("leaf-1:1"))
    w.unplug(ep("leaf-2:1"))
    w.plug(ep("leaf-1:1"), ep("spine-1:1"))
    w.plug(ep("leaf-2:1"), ep("spine-1:2"))
    t_fix = clock.now
    w.run(fabric.timers.nd_dead - 0.005)
    assert w.state("leaf-1:1") == NdState.MISCABLED    # wrong frames are still fresh
    w.run(0.05)
    assert w.state("leaf-1:1") == w.state("spine-1:1") == NdState.UP
    assert w.changed_at("leaf-1:1", NdState.UP, t_fix) - t_fix <= fabric.timers.nd_dead + 0.011


def test_miscabled_is_sticky_through_silence(fabric, clock):
    w = Wires(fabric, clock)
    swap_cables(w)
    w.run(0.1)
    w.unplug(ep("leaf-1:1"))       # the wrong peer vanishes, nobody is heard on the port
    w.run(0.5)
    view = w.nd["leaf-1"].view(1)
    assert view.state == NdState.MISCABLED and view.miscabled_by == ep("spine-1:2")
    assert view.discovered is None
    assert w.nd["leaf-1"].next_deadline() > clock.now   # nothing left to expire on that port


def test_phy_down_resets_port_and_phy_up_sends_at_once(fabric, clock):
    w = Wires(fabric, clock)
    swap_cables(w)
    w.run(0.1)
    nd = w.nd["leaf-1"]
    out = nd.set_phy(1, False, clock.now)
    assert [a for a in out if isinstance(a, NdChanged)] == [NdChanged(1, NdState.DOWN, None, None)]
    assert not any(isinstance(a, SendNd) for a in out)
    w.sent.clear()
    w.run(0.1)
    assert not any(sw == "leaf-1" and s.port == 1 for _, sw, s in w.sent)   # no frames on a dead port
    # Re-cabled correctly, PHY comes back: a frame goes out at once and ND comes up without the sticky state.
    w.unplug(ep("leaf-1:1"))
    w.unplug(ep("spine-1:1"))
    w.plug(ep("leaf-1:1"), ep("spine-1:1"))
    out = nd.set_phy(1, True, clock.now)
    assert out == [SendNd(1, NdFrame("leaf-1", 1, ep("spine-1:1"), None))]
    w._handle("leaf-1", out)
    w.run(0.05)
    assert w.state("leaf-1:1") == NdState.UP


def test_frames_on_phy_down_port_or_with_forged_sender_are_ignored(fabric, clock):
    nd = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    good = NdFrame("spine-1", 1, ep("leaf-1:1"), ep("leaf-1:1"))
    assert nd.on_frame(1, "spine-2", good, clock.now) == []        # frame.switch != authenticated sender
    assert nd.view(1).rx_ignored == 1
    assert nd.on_frame(99, "spine-1", good, clock.now) == []       # not a fabric port
    assert nd.rx_unknown_port == 1
    nd.set_phy(1, False, clock.now)
    assert nd.on_frame(1, "spine-1", good, clock.now) == []
    assert nd.state(1) == NdState.DOWN


def test_peer_that_expects_someone_else_is_not_up(fabric, clock):
    """A peer whose config disagrees (expects another port) never makes the link two-way."""
    nd = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    odd = NdFrame("spine-1", 1, ep("leaf-2:1"), ep("leaf-1:1"))
    out = nd.on_frame(1, "spine-1", odd, clock.now)
    assert nd.state(1) == NdState.ONE_WAY
    # discovered changed -> the new frame is sent at once
    assert SendNd(1, NdFrame("leaf-1", 1, ep("spine-1:1"), ep("spine-1:1"))) in out
    nd.on_frame(1, "spine-1", NdFrame("spine-1", 1, ep("leaf-1:1"), ep("leaf-1:1")), clock.now + 0.001)
    assert nd.state(1) == NdState.UP


def test_deadline_is_exact_and_late_ticks_do_not_burst(fabric, clock):
    nd = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    t = clock.now
    nd.tick(t)
    nd.on_frame(1, "spine-1", NdFrame("spine-1", 1, ep("leaf-1:1"), ep("leaf-1:1")), t + 0.001)
    assert nd.state(1) == NdState.UP
    assert nd.next_deadline() == pytest.approx(t + fabric.timers.nd_interval)
    # Let the next send go; the expiry of port 1 is then the earliest deadline after the next sends.
    nd.tick(t + 0.010)
    nd.tick(t + 0.020)
    assert nd.next_deadline() == pytest.approx(t + 0.030)
    out = nd.tick(t + 0.031)   # t+0.001+nd_dead has passed: port 1 expires at this tick
    assert NdChanged(1, NdState.DOWN, None, None) in out
    # A runtime stalled for a second gets one frame per port, not a burst of a hundred.
    out = nd.tick(t + 1.5)
    assert sum(isinstance(a, SendNd) for a in out) == 2
    assert nd.next_deadline() == pytest.approx(t + 1.5 + fabric.timers.nd_interval)


def test_time_the_process_did_not_run_is_not_counted_against_its_neighbours(fabric, clock):
    """Control-plane tester: a client resumed after a 6 s SIGSTOP took every port down at its first tick,
    before reading the ND frames waiting in its queues (local repair took them all out of its groups)."""
    nd = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    t = clock.now
    nd.tick(t)
    frame = NdFrame("spine-1", 1, ep("leaf-1:1"), ep("leaf-1:1"))
    nd.on_frame(1, "spine-1", frame, t + 0.001)
    assert nd.state(1) == NdState.UP
    nd.tick(nd.next_deadline())
    resumed = t + 6.0                                  # stopped right after that tick, for ~6 s
    out = nd.tick(resumed)
    assert not [a for a in out if isinstance(a, NdChanged)] and nd.state(1) == NdState.UP
    assert nd.stalled_s == pytest.approx(6.0, abs=0.05)
    nd.on_frame(1, "spine-1", frame, resumed + 0.002)  # the queued frame, read right after
    nd.tick(resumed + 0.02)
    assert nd.state(1) == NdState.UP
    # a neighbour really silent since: it expires exactly nd_dead after its last frame, the process on time
    last, went_down = resumed + 0.002, None
    for _ in range(20):
        at = nd.next_deadline()
        if any(isinstance(a, NdChanged) and a.state is NdState.DOWN for a in nd.tick(at)):
            went_down = at
            break
    assert went_down == pytest.approx(last + fabric.timers.nd_dead)


def test_bad_timers_rejected(fabric):
    """The config loader already refuses nd_dead <= nd_interval; the core checks again for hand-built fabrics."""
    from dataclasses import replace
    from types import SimpleNamespace

    bad = SimpleNamespace(timers=replace(fabric.timers, nd_dead=fabric.timers.nd_interval), source="<test>")
    with pytest.raises(ValueError, match="nd_interval"):
        NeighborDiscovery(bad, "leaf-1")  # type: ignore[arg-type]


def test_phy_up_after_idle_restarts_the_schedule_without_a_double_send(fabric, clock):
    nd = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    nd.set_phy(1, False, clock.now)
    nd.set_phy(2, False, clock.now)
    assert nd.tick(clock.now) == [] and nd.next_deadline() == math.inf
    clock.advance(5.0)
    out = nd.set_phy(1, True, clock.now)
    assert [a.port for a in out] == [1]
    assert nd.next_deadline() == pytest.approx(clock.now + fabric.timers.nd_interval)
    assert nd.tick(clock.now) == []         # nothing more is due right now


def test_graceful_restart_hold_keeps_the_link_up_while_the_peer_client_restarts(fabric, clock):
    w = Wires(fabric, clock, switches=["leaf-1", "spine-1"])
    w.run(0.05)
    assert w.state("spine-1:1") == NdState.UP
    # leaf-1's client announces a restart (hold 2 s) and goes silent.
    w._handle("leaf-1", w.nd["leaf-1"].restart_frames(2.0))
    w.dead.add("leaf-1")
    t0 = clock.now
    w.run(1.0)                                   # far past nd_dead: still held UP
    assert w.state("spine-1:1") == NdState.UP
    assert not [c for t, sw, c in w.log if t > t0 and sw == "spine-1"]
    # A new client process starts: it does not see spine-1 yet (discovered None), the hold survives that.
    w.nd["leaf-1"] = NeighborDiscovery(fabric, "leaf-1", now=clock.now)
    w.dead.discard("leaf-1")
    w.run(0.05)
    assert w.state("spine-1:1") == NdState.UP and w.state("leaf-1:1") == NdState.UP
    assert not [c for t, sw, c in w.log if t > t0 and sw == "spine-1" and c.state != NdState.UP]
    # Back to normal two-way operation: the hold is cleared, so silence is detected at nd_dead again.
    w.dead.add("leaf-1")
    t1 = clock.now
    w.run(0.2)
    assert w.state("spine-1:1") == NdState.DOWN
    assert w.changed_at("spine-1:1", NdState.DOWN, t1) - t1 <= fabric.timers.nd_dead + 0.011


def test_graceful_restart_hold_expires_when_the_client_never_returns(fabric, clock):
    w = Wires(fabric, clock, switches=["leaf-1", "spine-1"])
    w.run(0.05)
    w._handle("leaf-1", w.nd["leaf-1"].restart_frames(0.5))
    w.dead.add("leaf-1")
    t0 = clock.now
    w.run(1.0)
    assert w.state("spine-1:1") == NdState.DOWN
    assert 0.5 <= w.changed_at("spine-1:1", NdState.DOWN, t0) - t0 <= 0.5 + 0.011


def test_identity_cadence_peer_answers_a_restarted_client_at_once(fabric, clock):
    """With link OAM the ports run ND at the identity cadence (1 s). A port that is UP (here: held for the
    peer's graceful restart) answers a frame of the expected peer that does not confirm it at once, so the
    restarted client verifies the link in a round trip, not at the holder's next identity tick (up to
    1 s later: longer than the restarted client's first-report hold used to be)."""
    w = Wires(fabric, clock, switches=["leaf-1", "spine-1"])
    for name in w.nd:
        w.nd[name] = NeighborDiscovery(fabric, name, now=clock.now, fast=False)
    w.run(0.05)
    assert w.state("spine-1:1") == NdState.UP and w.state("leaf-1:1") == NdState.UP
    w.run(0.3)                                   # the identity tick is now 0.65 s away
    w._handle("leaf-1", w.nd["leaf-1"].restart_frames(5.0))
    w.dead.add("leaf-1")
    w.run(0.2)
    w.nd["leaf-1"] = NeighborDiscovery(fabric, "leaf-1", now=clock.now, fast=False)
    w.dead.discard("leaf-1")
    t0 = clock.now
    w.run(0.05)
    assert w.state("leaf-1:1") == NdState.UP
    assert w.changed_at("leaf-1:1", NdState.UP, t0) - t0 <= 0.001
    assert w.state("spine-1:1") == NdState.UP
    assert not [c for t, sw, c in w.log if t > t0 and sw == "spine-1" and c.state != NdState.UP]
    # Steady state afterwards: no extra frames, identity cadence only (a frame a second per side).
    n = len(w.sent)
    w.run(3.0)
    link = [a for _, sw, a in w.sent[n:] if (sw, a.port) in (("leaf-1", 1), ("spine-1", 1))]
    assert 4 <= len(link) <= 8
