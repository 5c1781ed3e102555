"""Link-flap damping with exponential backoff, Open/R style (pure).

A flapping port costs the whole fabric: each flap is a report, an LSD version, a route computation on
every switch. So a port whose *health* (PHY up and ND up with the expected peer) goes down->up more than
`flap_threshold` times within `flap_window` is held down ("damped") for `damp_initial`; every further
flap while it is penalised doubles the hold, up to `damp_max`. The hold is measured from the latest up
transition, so a port that keeps flapping stays damped.

Decay: once a hold has run out, the penalty level halves for every full `flap_window` without a flap;
when it falls below `damp_initial` the port is forgiven completely (the threshold applies again). With
the defaults (3 flaps in 10 s, 1 s .. 60 s) a port damped at the maximum is forgiven after about a minute
of quiet.

The very first up of a port (since the damper was created) is bring-up, not a flap. Admin changes are
not flaps: the port core feeds only the health bit. Timers come from `Fabric.timers`.

**Correlated drops are one local event, not a flap of each port.** When at least `storm_ports(n)` (half of
the switch's fabric ports, at least 2) go down within `STORM_WINDOW` of each other, the cause is shared —
the switch or its host stalled (CPU starvation, a paused process), not each link's optics — so none of
those down->up cycles is charged as a flap, and a flap charged just before the storm was recognised (a port
that was back up before the others went down) is refunded, its hold cancelled (`take_released`). This is
how link-state damping is meant to be read (RFC 2439's penalty is per route because each route's instability
is its own; IS-IS / interface dampening likewise per interface): it suppresses *a* flapping link, and a
stall that drops every port at once says nothing about any one of them. The master's damper applies the
same rule fabric-wide (controller.damping). A single flapping link is never part of such a set, so it is
damped exactly as before. A refund that gives a port back the hold it had before its last flap keeps that
hold's end due (`tick` reports it).

**Time the client did not run does not count toward the window** (`note_stall`). Events are timed when the
client handles them: when its process is stopped or starved for a second, a port whose drop it handled just
before and the ports whose drops it finds queued after are a second apart in its clock, though they fell
together. So the distance between two downs is their clock distance minus the client's stalls between them
(the runtime's stall watch reports each stall it sees; client.stallwatch).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from proto.config import Timers

__all__ = ["DampView", "FlapDamper"]

_MAX_HALVINGS = 64

#: Downs of several ports within this many seconds of each other are one correlated event (a local stall).
STORM_WINDOW = 1.0
#: ... when they are at least this share of the switch's fabric ports (and at least 2 ports).
STORM_SHARE = 0.5
#: Stalls are remembered this long (seconds): longer than any window they can shorten.
STALL_MEMORY = 120.0


def storm_ports(n_ports: int) -> int:
    """How many ports of a switch with `n_ports` fabric ports must go down together to be a local storm."""
    return max(2, math.ceil(STORM_SHARE * n_ports))


@dataclass(frozen=True, slots=True)
class DampView:
    port: int
    damped: bool
    damped_until: float | None   # None when not damped
    level: float                 # current penalty (hold length of the latest damping), 0 = none
    recent_flaps: int            # flaps within flap_window before `now`
    total_flaps: int


class _Flaps:
    __slots__ = ("charged", "down_at", "healthy", "last_flap", "level", "recent", "seen_up", "total", "until")

    def __init__(self) -> None:
        self.healthy = False
        self.seen_up = False
        self.recent: deque[float] = deque()   # times of recent down->up transitions (within flap_window)
        self.level = 0.0
        self.until = -math.inf                # damped while now < until
        self.last_flap = -math.inf
        self.total = 0
        self.down_at = -math.inf              # the latest up->down transition
        #: the last charged flap, refundable if its down turns out to be part of a storm:
        #: (down_at, level, until, last_flap before it, time of the flap)
        self.charged: tuple[float, float, float, float, float] | None = None


class FlapDamper:
    """Per-port flap history. `observe` every health change; ask `damped(port, now)`; `tick` on deadlines."""

    def __init__(self, timers: Timers, n_ports: int | None = None) -> None:
        self.n_ports = n_ports                 # the switch's fabric ports (None: the ports seen so far)
        self.storm_flaps = 0                   # down->up cycles not charged: part of a correlated storm
        self.storms = 0                        # correlated storms recognised
        self._released: list[int] = []        # ports whose hold a storm refund cancelled (take_released)
        self.threshold = timers.flap_threshold
        self.window = timers.flap_window
        self.initial = timers.damp_initial
        self.maximum = max(timers.damp_max, timers.damp_initial)
        self._ports: dict[int, _Flaps] = {}
        self._expiry: list[tuple[float, int]] = []   # (until, port), lazily invalidated
        self._stalls: deque[tuple[float, float]] = deque()   # (start, end) of the client's own stalls
        self._last_storm_down = -math.inf            # the latest down of the latest storm (counting storms)

    def _get(self, port: int) -> _Flaps:
        st = self._ports.get(port)
        if st is None:
            st = self._ports[port] = _Flaps()
        return st

    def _decayed(self, st: _Flaps, now: float) -> float:
        """The penalty level at `now`: halved per full flap_window of quiet after the hold ran out."""
        if st.level <= 0.0:
            return 0.0
        quiet = now - st.until
        if quiet <= 0.0 or self.window <= 0.0:
            return st.level
        halvings = min(int(quiet // self.window), _MAX_HALVINGS)
        level = st.level / (1 << halvings)
        return level if level >= self.initial else 0.0

    def observe(self, port: int, healthy: bool, now: float) -> bool:
        """Record the port's health at `now` (repeats are ignored). Returns True iff this up transition
        (re)started a hold, i.e. the port is damped from now on."""
        st = self._get(port)
        if healthy == st.healthy:
            return False
        st.healthy = healthy
        if not healthy:
            if st.seen_up:
                st.down_at = now
                self._check_storm(now, now)
            return False
        if not st.seen_up:
            st.seen_up = True
            return False
        # A down->up transition after the port had been up before: one flap, unless its down was one of
        # a correlated set (a local stall).
        st.total += 1
        if self._in_storm(st.down_at):
            self.storm_flaps += 1
            return False
        st.charged = (st.down_at, st.level, st.until, st.last_flap, now)
        recent = st.recent
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        level = self._decayed(st, now)
        if level > 0.0:
            level = min(level * 2.0, self.maximum)
        elif len(recent) > self.threshold:
            level = self.initial
        st.level = level
        st.last_flap = now
        if level > 0.0:
            st.until = now + level
            heapq.heappush(self._expiry, (st.until, port))
            return True
        return False

    # ------------------------------------------------------------------------------------------ storms
    def note_stall(self, start: float, end: float, now: float) -> None:
        """The client's process did not run from `start` to `end` (seconds, the damper's clock): stopped,
        or starved of CPU. Downs on either side of it count as that much closer (storm window). A down
        handled after the stall may now make a storm with downs handled before it: their flaps are refunded
        as `_check_storm` does (`take_released` names holds this cancelled)."""
        if not end > start:
            return
        self._stalls.append((start, end))
        while self._stalls and self._stalls[0][1] < now - STALL_MEMORY:
            self._stalls.popleft()
        later = [st.down_at for st in self._ports.values() if st.down_at >= start]
        if later:
            self._check_storm(max(later), now)

    def _apart(self, a: float, b: float) -> float:
        """Seconds between `a` and `b` during which the client ran (clock distance minus its stalls)."""
        lo, hi = (a, b) if a <= b else (b, a)
        gap = hi - lo
        for s, e in self._stalls:
            if e > lo and s < hi:
                gap -= min(e, hi) - max(s, lo)
        return gap

    def _storm_size(self) -> int:
        return storm_ports(self.n_ports if self.n_ports is not None else len(self._ports))

    def _together(self, at: float) -> list[int]:
        """Ports whose latest down is within STORM_WINDOW of `at` (in the client's running time)."""
        return [p for p, st in self._ports.items()
                if st.down_at > -math.inf and self._apart(st.down_at, at) <= STORM_WINDOW]

    def _in_storm(self, down_at: float) -> bool:
        return down_at > -math.inf and len(self._together(down_at)) >= self._storm_size()

    def _check_storm(self, at: float, now: float) -> None:
        """A port went down at `at`: if that makes a storm, refund the flaps its members were charged for."""
        together = self._together(at)
        if len(together) < self._storm_size():
            return
        downs = [self._ports[p].down_at for p in together]
        if min(downs) > self._last_storm_down:     # not the same storm seen again (or grown)
            self.storms += 1
        self._last_storm_down = max(self._last_storm_down, *downs)
        for p in together:
            st = self._ports[p]
            c = st.charged
            if c is None or self._apart(c[0], at) > STORM_WINDOW:
                continue
            down_at, level, until, last_flap, flap_at = c
            damped_before = now < st.until
            st.charged = None
            st.level, st.until, st.last_flap = level, until, last_flap
            if flap_at in st.recent:
                st.recent.remove(flap_at)
            self.storm_flaps += 1
            if now < st.until:
                # the hold this flap had extended is back: its end must be reported by `tick` again (its
                # heap entry may be gone: tester, a damped port refunded by a storm stayed out past damp_max)
                heapq.heappush(self._expiry, (st.until, p))
            elif damped_before:
                self._released.append(p)

    def take_released(self) -> list[int]:
        """Ports whose hold was cancelled by a storm refund since the last call (recompute them)."""
        out, self._released = self._released, []
        return out

    def damped(self, port: int, now: float) -> bool:
        st = self._ports.get(port)
        return st is not None and now < st.until

    def damped_until(self, port: int, now: float) -> float | None:
        st = self._ports.get(port)
        return st.until if st is not None and now < st.until else None

    def tick(self, now: float) -> list[int]:
        """Ports whose hold ran out at or before `now` (each reported once per hold)."""
        ended: list[int] = []
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            at, port = heapq.heappop(expiry)
            st = self._ports.get(port)
            if st is not None and st.until == at:
                ended.append(port)
        return ended

    def next_deadline(self) -> float:
        """The end of the earliest running hold; inf if none."""
        expiry = self._expiry
        while expiry:
            at, port = expiry[0]
            st = self._ports.get(port)
            if st is not None and st.until == at:
                break
            heapq.heappop(expiry)   # superseded by a longer hold, or the port was reset
        return expiry[0][0] if expiry else math.inf

    def reset(self, port: int) -> None:
        """Forget a port's history (operator action)."""
        self._ports.pop(port, None)

    def view(self, port: int, now: float) -> DampView:
        st = self._ports.get(port) or _Flaps()
        recent = sum(1 for t in st.recent if t > now - self.window)
        until = st.until if now < st.until else None
        return DampView(port, until is not None, until, self._decayed(st, now), recent, st.total)
