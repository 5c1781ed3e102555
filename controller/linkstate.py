"""Two-ended link-state derivation: what each link's state should be, given every switch's latest report.

A link is UP only when the latest report of *both* of its switches says the port is usable (PHY up, ND up
with the expected peer, not damped — the client folds all of that into `usable`). It is DOWN if either end
says not usable, omits the port, or has been silent for longer than `switch_dead`. An operator drain wins
over everything (DRAINED).

After a mastership change the new master starts with the LSD replicated from the previous one, but has
heard no report yet. For a grace period (`switch_dead`), a link whose end switches have not reported under
this mastership keeps its replicated state instead of flapping DOWN; after the grace period silence means
DOWN as usual. A reported "not usable" always takes effect at once.

Pure: `now` is passed in; no clock, no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.config import Fabric
from proto.lsd import LinkState


@dataclass(slots=True)
class SwitchView:
    """The latest accepted report of one switch (reports are full, so this replaces the previous one)."""

    usable: frozenset[int]          # fabric ports the switch reports usable
    reported_at: float
    report_seq: int


class LinkStateDeriver:
    """Holds the switches' views and the operator drains; computes the desired state of links."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.switch_dead = fabric.timers.switch_dead
        self.views: dict[str, SwitchView] = {}
        self.drained: set[int] = set()
        self.grace_until: float | None = None
        # (expiry time, switch) — lazily invalidated: an entry is live iff it matches the view's expiry.
        self._expiry: list[tuple[float, str]] = []
        self._fabric_ports: dict[str, frozenset[int]] = {
            s.name: frozenset(fabric.fabric_ports(s.name)) for s in fabric.switches
        }

    # ----------------------------------------------------------------------------------------- inputs
    def fabric_ports(self, switch: str) -> frozenset[int]:
        return self._fabric_ports[switch]

    def set_report(self, switch: str, usable_ports: Iterable[int], report_seq: int, now: float) -> None:
        """Replace `switch`'s view. Ports that are not fabric ports of the switch are ignored."""
        ports = frozenset(usable_ports) & self._fabric_ports[switch]
        self.views[switch] = SwitchView(ports, now, report_seq)
        heapq.heappush(self._expiry, (now + self.switch_dead, switch))

    def start_mastership(self, now: float, grace: bool = True) -> None:
        """Forget all views (they belong to a previous mastership) and open the grace period."""
        self.views.clear()
        self._expiry.clear()
        self.grace_until = now + self.switch_dead if grace else None

    def alive(self, switch: str, now: float) -> bool:
        view = self.views.get(switch)
        return view is not None and now - view.reported_at < self.switch_dead

    # ----------------------------------------------------------------------------------------- derivation
    def _end(self, switch: str, port: int, now: float) -> str:
        """'up', 'down' (alive and says not usable, or dead), or 'unknown' (not reported, in grace)."""
        view = self.views.get(switch)
        if view is None:
            in_grace = self.grace_until is not None and now < self.grace_until
            return "unknown" if in_grace else "down"
        if now - view.reported_at >= self.switch_dead:
            return "down"
        return "up" if port in view.usable else "down"

    def desired(self, index: int, current: LinkState, now: float) -> LinkState:
        if index in self.drained:
            return LinkState.DRAINED
        link = self.fabric.links[index]
        a = self._end(link.a.switch, link.a.port, now)
        b = self._end(link.b.switch, link.b.port, now)
        if a == "down" or b == "down":
            return LinkState.DOWN
        if a == "unknown" or b == "unknown":
            # Keep the replicated state — but a drain that the operator lifted must not linger.
            return LinkState.DOWN if current == LinkState.DRAINED else current
        return LinkState.UP

    def changes(self, indices: Iterable[int], states: bytes | Mapping[int, int], now: float) -> dict[int, LinkState]:
        """Desired states that differ from `states` (the LSD's current byte-per-link states)."""
        out: dict[int, LinkState] = {}
        for i in indices:
            current = LinkState(states[i])
            want = self.desired(i, current, now)
            if want != current:
                out[i] = want
        return out

    # ----------------------------------------------------------------------------------------- time
    def expire(self, now: float) -> set[str]:
        """Switches whose silence crossed `switch_dead` since the last call (their links must be re-derived)."""
        dead: set[str] = set()
        while self._expiry and self._expiry[0][0] <= now:
            at, switch = heapq.heappop(self._expiry)
            view = self.views.get(switch)
            if view is not None and view.reported_at + self.switch_dead == at:
                dead.add(switch)
        return dead

    def grace_over(self, now: float) -> bool:
        """True once (the first call at/after the grace deadline); closes the grace period."""
        if self.grace_until is not None and now >= self.grace_until:
            self.grace_until = None
            return True
        return False

    def next_deadline(self) -> float | None:
        # Drop stale heap heads so the deadline is exact (avoids spurious wake-ups).
        while self._expiry:
            at, switch = self._expiry[0]
            view = self.views.get(switch)
            if view is not None and view.reported_at + self.switch_dead == at:
                break
            heapq.heappop(self._expiry)
        candidates = [t for t in (self._expiry[0][0] if self._expiry else None, self.grace_until) if t is not None]
        return min(candidates) if candidates else None
