"""Neighbor Discovery (ND): who is really at the far end of each fabric port, checked both ways (pure).

From the fabric config and its own name a switch knows the *expected* peer (switch, port) of each of
its fabric ports. Every `nd_interval` it sends one `NdFrame` out of each fabric port whose PHY is up,
carrying its own identity, the expected peer and the peer it currently *discovers* on that port (the
sender of the frames it hears there). The frames the port receives tell who is really there:

- ``UP``        frames from the expected peer arrived within `nd_dead`, and the latest one says the peer
                discovers *us* on the right port (and expects us): the link works in both directions.
- ``ONE_WAY``   we hear the expected peer but it does not (yet) hear us — one direction is broken (or the
                link is just coming up). Not usable. Because the peer's frames carry what it discovers,
                a failure of either direction takes the link down on *both* ends.
- ``MISCABLED`` a frame came from a switch/port other than the expected one (our own switch included: a
                cable looped back into it, whose frames the codec lets through for this; but not while
                the expected peer is heard: then our frame is a copy injected on the wire). Never usable;
                reported with the identity that was discovered (the expected one is in the config).
                Sticky: it clears only once the wrong frames have stopped for `nd_dead` *and* frames
                from the expected peer arrive again (or PHY goes down, which resets the port: re-cabling drops the link).
- ``DOWN``      silence for `nd_dead` (or PHY down, or nothing heard yet).

Two cadences per port: the *heartbeat* (`nd_interval` / `nd_dead`), when software ND is the port's liveness
check (`liveness: nd`, or OAM fell back), and the *identity* cadence (`nd_identity_interval` /
`nd_identity_dead`) when ovs-vswitchd's CFM checks liveness (client.oam): then ND only confirms who is at
the far end, both ways, and the port core sends a frame at once on every PHY or OAM change; a port that is
not UP keeps probing at the heartbeat cadence until it is.

Timing: a silent failure (PHY stays up, packets dropped) is detected `nd_dead` after the last frame
(default 30 ms) — the deadline is exact because `next_deadline()` includes every port's expiry, so the
link leaves routing in <= 50 ms with the default timers. Bring-up is fast too: whenever the discovered
peer of a port changes, the new frame is sent at once instead of waiting for the next interval.

Cost, and why the runtime must protect ND
-----------------------------------------
Per fabric port ND sends 1/nd_interval frames/s and receives as many (100 + 100 frames/s per port at the
10 ms default; a 32-port switch handles 6,400 frames/s). This core is cheap: frames and their `SendNd`
actions are precomputed per port and rebuilt only when the discovered peer changes; `tick` is O(ports);
`on_frame` is O(1) with a fast path for the steady state. The dominant cost is outside, in the runtime
(encoding and HMAC, os-ken's packet-out/packet-in, the userspace datapath): measured in BENCHMARKS.md, it
is why the lab runs software ND slower than the fabric default and why `liveness: oam` moves the
heartbeat into ovs-vswitchd. The runtime must run ND (and the port core it feeds) on its own thread / at
high priority, never queued behind route computation or flow programming: Firepath's whole-fabric reboot
outage was ND starving for CPU, missing heartbeats and flapping links. On a slow or large-radix switch
raise `nd_interval` and `nd_dead` together (keep nd_dead >= 3 x nd_interval; detection time is nd_dead).

All sends of one tick happen at the same instant for every port (one wake-up per interval, not one per
port). No sockets, threads or clocks here: `now` is passed in, actions are returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from proto.config import Endpoint, Fabric
from proto.messages import MAX_ND_HOLD_MS, NdFrame

__all__ = ["NdChanged", "NdPortView", "NdState", "NeighborDiscovery", "SendNd"]


class NdState(StrEnum):
    DOWN = "down"
    ONE_WAY = "one_way"
    UP = "up"
    MISCABLED = "miscabled"


@dataclass(frozen=True, slots=True)
class SendNd:
    """Send `frame` (to be encoded with the ND key and framed as Ethernet) out of OpenFlow port `port`."""

    port: int
    frame: NdFrame


@dataclass(frozen=True, slots=True)
class NdChanged:
    """The ND view of `port` changed (state, discovered peer or the identity it is miscabled to)."""

    port: int
    state: NdState
    discovered: Endpoint | None
    miscabled_by: Endpoint | None


@dataclass(frozen=True, slots=True)
class NdPortView:
    """Read-only snapshot of one port for REST/metrics."""

    port: int
    expected: Endpoint
    state: NdState
    discovered: Endpoint | None
    miscabled_by: Endpoint | None
    phy: bool
    since: float            # time of the last state change
    tx: int                 # frames handed out for sending
    rx: int                 # frames from the expected peer
    rx_wrong: int           # frames from an unexpected switch/port
    rx_ignored: int         # frames dropped: PHY down, or frame.switch != authenticated sender


class _Port:
    __slots__ = ("deadline", "discovered", "expected", "expected_until", "fast", "frame", "local", "miscabled_by",
                 "expected_key", "answered_until", "held", "hold_until", "peer_agrees", "phy", "port", "rx", "rx_ignored",
                 "rx_wrong", "send", "since", "state", "sticky_miscabled", "tx", "wrong_peer", "wrong_until")

    def __init__(self, port: int, local: Endpoint, expected: Endpoint, now: float, fast: bool = True) -> None:
        self.port = port
        self.fast = fast                    # heartbeat cadence (nd_interval); else identity cadence
        self.local = local
        self.expected = expected
        self.expected_key = (expected.switch, expected.port)   # compared without building an Endpoint
        self.phy = True
        self.expected_until = -math.inf     # frames from the expected peer are fresh while now < this
        self.peer_agrees = False            # latest expected frame: peer discovers and expects us
        self.wrong_until = -math.inf        # frames from a wrong peer are fresh while now < this
        self.wrong_peer: Endpoint | None = None
        self.sticky_miscabled = False       # MISCABLED holds until the expected peer is heard again
        self.hold_until = -math.inf         # graceful restart of the peer: keep UP until then (PHY up)
        self.held = 0                       # holds granted (metrics)
        self.answered_until = -math.inf     # last immediate answer to a peer that does not confirm us
        self.state = NdState.DOWN
        self.discovered: Endpoint | None = None
        self.miscabled_by: Endpoint | None = None
        self.deadline = math.inf            # next instant at which time alone changes this port's view
        self.since = now
        self.tx = self.rx = self.rx_wrong = self.rx_ignored = 0
        self.frame = NdFrame(switch=local.switch, port=port, expected=expected, discovered=None)
        self.send = SendNd(port, self.frame)   # the action itself is precomputed too


class NeighborDiscovery:
    """ND for all fabric ports of one switch. Feed it received frames and ticks; it returns actions.

    Ports start with PHY assumed up (frames are sent); the port core (`client.ports.PortTable`) tells it
    the real PHY state with `set_phy`.

    Two cadences, chosen per port (`set_fast`): *heartbeat* (nd_interval / nd_dead, software ND is the
    port's liveness check) and *identity* (nd_identity_interval / nd_identity_dead, when ovs-vswitchd's
    link OAM checks liveness, see client.oam). Ports start in heartbeat mode unless `fast=False`.
    """

    def __init__(self, fabric: Fabric, switch: str, now: float = 0.0, *, fast: bool = True) -> None:
        timers = fabric.timers
        if not 0 < timers.nd_interval < timers.nd_dead:
            raise ValueError(f"{fabric.source}: timers: need 0 < nd_interval ({timers.nd_interval}) "
                             f"< nd_dead ({timers.nd_dead})")
        fabric.switch(switch)  # KeyError for an unknown switch
        self.switch = switch
        self.interval = timers.nd_interval
        self.dead = timers.nd_dead
        self.identity_interval = timers.nd_identity_interval
        self.identity_dead = timers.nd_identity_dead
        self._ports: dict[int, _Port] = {}
        for port in fabric.fabric_ports(switch):
            peer = fabric.peer_of(switch, port)
            assert peer is not None, f"fabric port {switch}:{port} has no peer"
            self._ports[port] = _Port(port, Endpoint(switch, port), peer, now, fast)
        self._next_send = now               # heartbeat schedule
        self._next_identity = now           # identity schedule
        self.rx_unknown_port = 0   # frames received on a port that is not a fabric port
        self._due = math.inf                # when the last tick said it was due next
        self.stalled_s = 0.0                # time this process did not run, not counted against neighbours

    # ------------------------------------------------------------------------------------------ queries
    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(self._ports)

    def expected(self, port: int) -> Endpoint:
        return self._ports[port].expected

    def state(self, port: int) -> NdState:
        return self._ports[port].state

    def discovered(self, port: int) -> Endpoint | None:
        return self._ports[port].discovered

    def view(self, port: int) -> NdPortView:
        p = self._ports[port]
        return NdPortView(p.port, p.expected, p.state, p.discovered, p.miscabled_by, p.phy, p.since,
                          p.tx, p.rx, p.rx_wrong, p.rx_ignored)

    def fast(self, port: int) -> bool:
        return self._ports[port].fast

    def next_deadline(self) -> float:
        """When `tick` must be called next (the next send, or the next port expiry); inf if never."""
        deadline = math.inf
        for p in self._ports.values():
            if p.deadline < deadline:
                deadline = p.deadline
            if p.phy:
                send = self._next_send if p.fast or p.state is not NdState.UP else self._next_identity
                if send < deadline:
                    deadline = send
        return deadline

    # ------------------------------------------------------------------------------------------ inputs
    def tick(self, now: float) -> list[SendNd | NdChanged]:
        """Expire stale neighbours and, when due, send one frame out of every PHY-up fabric port.

        A tick later than due by more than a heartbeat interval means this process did not run (stopped,
        starved): the neighbours' frames of that time wait unread in its queues, so that time is not
        counted against them — their expiries move by it, and the queued frames are read before any
        expires (a client resumed after a 6 s stop took every port down, blaming its neighbours)."""
        late = now - self._due
        if late > self.interval:
            self._forgive(now - late, late)
        out: list[SendNd | NdChanged] = []
        send = now >= self._next_send
        if send:
            self._next_send += self.interval
            if self._next_send <= now:          # we were late (a stalled runtime): do not burst
                self._next_send = now + self.interval
        send_identity = now >= self._next_identity
        if send_identity:
            self._next_identity += self.identity_interval
            if self._next_identity <= now:
                self._next_identity = now + self.identity_interval
        for p in self._ports.values():
            # A port not (yet) UP probes at the heartbeat cadence even in identity mode: a first frame lost
            # (the peer's punt flow not installed yet, a repair racing the peer's PHY) must not cost a
            # whole identity interval of bring-up.
            due = send if p.fast or p.state is not NdState.UP else send_identity
            if now >= p.deadline:
                self._evaluate(p, now, out, send_on_change=not due)
            if due and p.phy:
                p.tx += 1
                out.append(p.send)
        self._due = self.next_deadline()
        return out

    def _forgive(self, since: float, gap: float) -> None:
        """Move every expiry still pending at `since` by `gap` (time this process did not run)."""
        self.stalled_s += gap
        for p in self._ports.values():
            if p.expected_until > since:
                p.expected_until += gap
            if p.wrong_until > since:
                p.wrong_until += gap
            if since < p.deadline < math.inf:
                p.deadline += gap

    def on_frame(self, port: int, sender_switch: str, frame: NdFrame, now: float) -> list[SendNd | NdChanged]:
        """A frame (already authenticated by the codec as coming from `sender_switch`) arrived on `port`."""
        p = self._ports.get(port)
        if p is None:
            self.rx_unknown_port += 1
            return []
        if not p.phy or frame.switch != sender_switch:
            p.rx_ignored += 1
            return []
        if (frame.switch, frame.port) == p.expected_key:
            p.rx += 1
            until = now + (self.dead if p.fast else self.identity_dead)
            d, e, local = frame.discovered, frame.expected, p.local
            agrees = (d is not None and d.port == local.port and d.switch == local.switch
                      and e.port == local.port and e.switch == local.switch)
            if (agrees and p.state is NdState.UP and now >= p.wrong_until and p.peer_agrees
                    and p.expected_until > now and not frame.hold_ms and p.hold_until == -math.inf):
                # Fast path, the steady state of a healthy link: only the expiry moves.
                p.expected_until = p.deadline = until
                return []
            p.expected_until = until
            p.peer_agrees = agrees
            if frame.hold_ms and agrees:
                p.hold_until = now + frame.hold_ms / 1000.0   # the peer's client restarts: hold the link
                p.held += 1
            elif agrees:
                p.hold_until = -math.inf                      # back to normal two-way operation
        elif frame.switch == p.local.switch and (p.expected_until > now or (p.hold_until > now and p.phy)):
            # Our own frame while the expected peer is heard (or holds the link for its restart): no loop (a
            # looped cable leaves no peer, and re-cabling drops PHY, which ends a hold), a copy injected on
            # the wire (review 38) — it must not take a healthy link down.
            p.rx_ignored += 1
            return []
        else:
            p.rx_wrong += 1
            p.wrong_until = now + (self.dead if p.fast else self.identity_dead)
            p.wrong_peer = Endpoint(frame.switch, frame.port)
        out: list[SendNd | NdChanged] = []
        self._evaluate(p, now, out, send_on_change=True)
        if (not p.peer_agrees and not p.fast and p.state is NdState.UP and p.send not in out
                and (frame.switch, frame.port) == p.expected_key):
            # The expected peer does not confirm us (its client just restarted, or lost our frames) while
            # this port, UP (or held for that restart), sends only at the identity cadence: answer at once
            # so its verification takes a round trip, not up to a whole nd_identity_interval.
            out.extend(self.answer(port, now))
        return out

    def answer(self, port: int, now: float) -> list[SendNd | NdChanged]:
        """One frame out of `port` at once, at most once per nd_interval: the answer to a peer that needs
        to hear us now (hitless restart: a restarted client's first frames, whose new incarnation the
        codec rejects as stale until our next frame reflects its challenge; client.core)."""
        p = self._ports.get(port)
        if p is None or not p.phy or now < p.answered_until:
            return []
        p.answered_until = now + self.interval
        p.tx += 1
        return [p.send]

    def set_phy(self, port: int, up: bool, now: float) -> list[SendNd | NdChanged]:
        """PHY went up (start sending, at once) or down (reset the port: forget all neighbours)."""
        p = self._ports.get(port)
        if p is None or p.phy == up:
            return []
        out: list[SendNd | NdChanged] = []
        if up:
            p.phy = True
            p.tx += 1
            out.append(p.send)
            if self._next_send <= now:   # the schedule idled while no port needed it (DOWN ports probe fast)
                self._next_send = now + self.interval
            if not p.fast and self._next_identity <= now:
                self._next_identity = now + self.identity_interval
        else:
            p.phy = False
            self._forget(p)
            self._evaluate(p, now, out, send_on_change=False)
        return out

    def send_now(self, port: int) -> list[SendNd | NdChanged]:
        """One frame out of `port` at once (PHY up): a liveness change re-checks identity without waiting."""
        p = self._ports[port]
        if not p.phy:
            return []
        p.tx += 1
        return [p.send]

    def set_fast(self, port: int, fast: bool, now: float) -> list[SendNd | NdChanged]:
        """Heartbeat (True) or identity (False) cadence for `port`.

        Going fast (OAM fell back to software ND) first shortens what is already heard to `nd_dead`: the
        port must not stay UP on the long identity deadline without a heartbeat. Sends a frame at once.
        """
        p = self._ports[port]
        if p.fast == fast:
            return []
        p.fast = fast
        out: list[SendNd | NdChanged] = []
        if fast:
            cap = now + self.dead
            p.expected_until = min(p.expected_until, cap)
            p.wrong_until = min(p.wrong_until, cap)
            if self._next_send <= now:
                self._next_send = now + self.interval
        elif self._next_identity <= now:
            self._next_identity = now + self.identity_interval
        self._evaluate(p, now, out, send_on_change=False)
        out.extend(self.send_now(port))
        return out

    def reset(self, port: int, now: float) -> list[SendNd | NdChanged]:
        """Forget everything heard on `port` (it goes DOWN; a miscabling is forgotten too)."""
        p = self._ports[port]
        self._forget(p)
        out: list[SendNd | NdChanged] = []
        self._evaluate(p, now, out, send_on_change=p.phy)
        return out

    def restart_frames(self, hold: float) -> list[SendNd]:
        """Graceful restart: one frame per UP port asking the peer to keep the link up for `hold` s.

        Sent by a client about to restart (SIGTERM): the switch keeps forwarding with its flows
        (fail_mode=secure), so the peers have no reason to route around it while its client restarts.
        The peer keeps the port UP until the hold expires, its PHY goes down, a wrong peer appears, or a
        normal two-way frame arrives from the restarted client. A client that never comes back costs
        at most `hold` of stale forwarding state.
        """
        hold_ms = max(1, min(int(hold * 1000), MAX_ND_HOLD_MS))
        out = []
        for p in self._ports.values():
            if p.phy and p.state == NdState.UP:
                frame = NdFrame(switch=p.local.switch, port=p.port, expected=p.expected,
                                discovered=p.discovered, hold_ms=hold_ms)
                p.tx += 1
                out.append(SendNd(p.port, frame))
        return out

    # ------------------------------------------------------------------------------------------ internals
    @staticmethod
    def _forget(p: _Port) -> None:
        p.expected_until = p.wrong_until = -math.inf
        p.peer_agrees = False
        p.wrong_peer = None
        p.sticky_miscabled = False          # re-cabling drops PHY: a miscabling is not sticky across a reset
        p.hold_until = -math.inf

    def _evaluate(self, p: _Port, now: float, out: list[SendNd | NdChanged], send_on_change: bool) -> None:
        expected_fresh = now < p.expected_until
        wrong_fresh = now < p.wrong_until
        if wrong_fresh:
            p.sticky_miscabled = True
        elif expected_fresh:
            p.sticky_miscabled = False      # wrong frames stopped for nd_dead and the expected peer is back
        held = now < p.hold_until and p.phy
        if p.sticky_miscabled:
            state = NdState.MISCABLED
        elif held:
            state = NdState.UP       # graceful restart: the peer asked us to keep the link while it restarts
        elif expected_fresh:
            state = NdState.UP if p.peer_agrees else NdState.ONE_WAY
        else:
            state = NdState.DOWN
        if wrong_fresh:
            discovered = p.wrong_peer
        elif expected_fresh:
            discovered = p.expected
        else:
            discovered = None
        miscabled_by = p.wrong_peer if state == NdState.MISCABLED else None
        deadline = math.inf
        if expected_fresh:
            deadline = p.expected_until
        if held and (not expected_fresh or p.hold_until > deadline):
            deadline = p.hold_until
        if wrong_fresh and p.wrong_until < deadline:
            deadline = p.wrong_until
        p.deadline = deadline
        discovered_changed = discovered != p.discovered
        if discovered_changed:
            p.discovered = discovered
            p.frame = NdFrame(switch=p.local.switch, port=p.port, expected=p.expected, discovered=discovered)
            p.send = SendNd(p.port, p.frame)
            if send_on_change and p.phy:   # tell the peer right away: brings the link up in one round trip
                p.tx += 1
                out.append(p.send)
        if state != p.state or miscabled_by != p.miscabled_by or discovered_changed:
            if state != p.state:
                p.since = now
            p.state = state
            p.miscabled_by = miscabled_by
            out.append(NdChanged(p.port, state, discovered, miscabled_by))
