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
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from proto.config import Timers

__all__ = ["DampView", "FlapDamper"]

_MAX_HALVINGS = 64


@dataclass(frozen=True, slots=True)
class DampView:
    port: int
    damped: bool
    damped_until: float | None   # None when not damped
    level: float                 # current penalty (hold length of the latest damping), 0 = none
    recent_flaps: int            # flaps within flap_window before `now`
    total_flaps: int


class _Flaps:
    __slots__ = ("healthy", "last_flap", "level", "recent", "seen_up", "total", "until")

    def __init__(self) -> None:
        self.healthy = False
        self.seen_up = False
        self.recent: deque[float] = deque()   # times of recent down->up transitions (within flap_window)
        self.level = 0.0
        self.until = -math.inf                # damped while now < until
        self.last_flap = -math.inf
        self.total = 0


class FlapDamper:
    """Per-port flap history. `observe` every health change; ask `damped(port, now)`; `tick` on deadlines."""

    def __init__(self, timers: Timers) -> None:
        self.threshold = timers.flap_threshold
        self.window = timers.flap_window
        self.initial = timers.damp_initial
        self.maximum = max(timers.damp_max, timers.damp_initial)
        self._ports: dict[int, _Flaps] = {}
        self._expiry: list[tuple[float, int]] = []   # (until, port), lazily invalidated

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
            return False
        if not st.seen_up:
            st.seen_up = True
            return False
        # A down->up transition after the port had been up before: one flap.
        st.total += 1
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
