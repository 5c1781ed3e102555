"""Two-ended link-state derivation: what each link's state should be, given every switch's latest report.

**Silence is not evidence** (issue #16). Each end of a link is, from the master's point of view:

- ``up``: its switch is *live* (reported within `switch_dead`) and its latest report says the port usable
  (PHY up, ND two-way with the expected peer, not damped — the client folds all of that into `usable`);
- ``down``: its switch is live and its latest report says the port not usable, or omits it;
- ``unknown``: its switch is *silent* — no report under this mastership, or none for `switch_dead`.

A link is DOWN if either end is ``down`` (positive evidence: a switch says so); UP if both ends are ``up``;
otherwise (an end is silent, the other ``up`` or silent too) it **keeps its current state**. A switch
whose client cannot reach the master still forwards (fail-static), and its neighbours' ND — which needs
that client alive and two-way — keeps their side usable: the master must not take its links down for a
silence that may be the control network's fault. A switch that really died is taken out by its
neighbours' reports (their ND goes down within `nd_dead`). An operator drain wins over UP and over
silence (DRAINED); a drained link that an end reports down is DRAINED_DOWN — switches use a drained
switch's DRAINED links to reach it (soft drain, client.routes) and must never use a dead one, while the
failed link still counts towards its switch's drain; so is a link drained on its own (`drained_alone`: a
link drain takes the link out of service, and draining a switch's other links must not bring it back as
a way to that switch); a lifted drain on a link with a silent end falls back to DOWN (no evidence it is
usable).

`switch_dead` still decides what is *said about* a switch (live or silent in REST/metrics/logs, whether
its report_seq may restart) but never a link state. While the runtime knows it is dropping input (socket
receive-queue overflow), nobody becomes silent: `note_input_loss(now)` counts as hearing every switch.

Pure: `now` is passed in; no clock, no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto.config import Fabric
from proto.lsd import DRAINED_STATES, LinkState

_UP, _DOWN = LinkState.UP, LinkState.DOWN
_DRAINED_CODES = DRAINED_STATES          # IntEnum members: a byte state matches them too


@dataclass(slots=True)
class SwitchView:
    """The latest accepted report of one switch (reports are full, so this replaces the previous one)."""

    usable: frozenset[int]          # fabric ports the switch reports usable
    reported_at: float
    report_seq: int
    dark: frozenset[int] = frozenset()   # fabric ports it reports without carrier (PHY down)


class LinkStateDeriver:
    """Holds the switches' views and the operator drains; computes the desired state of links."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.switch_dead = fabric.timers.switch_dead
        self.views: dict[str, SwitchView] = {}
        self.drained: set[int] = set()
        #: drained links never used to reach a drained switch: drained on their own (a link drain, issue R1)
        self.drained_alone: set[int] = set()
        #: last time the runtime saw input dropped (socket overflow): silence before it is not silence
        self.input_loss_at = float("-inf")
        # (expiry time, switch) — lazily invalidated: an entry is live iff it matches the view's expiry.
        self._expiry: list[tuple[float, str]] = []
        self._fabric_ports: dict[str, frozenset[int]] = {
            s.name: frozenset(fabric.fabric_ports(s.name)) for s in fabric.switches
        }
        # (switch a, port a, switch b, port b) by link index: `changes` reads them per link of every report
        self._ends = [(lk.a.switch, lk.a.port, lk.b.switch, lk.b.port) for lk in fabric.links]

    # ----------------------------------------------------------------------------------------- inputs
    def fabric_ports(self, switch: str) -> frozenset[int]:
        return self._fabric_ports[switch]

    def set_report(self, switch: str, usable_ports: Iterable[int], report_seq: int, now: float,
                   dark: Iterable[int] = ()) -> None:
        """Replace `switch`'s view (`dark`: the ports it reports without carrier). Ports that are not fabric
        ports of the switch are ignored."""
        mine = self._fabric_ports[switch]
        ports = frozenset(usable_ports) & mine
        self.views[switch] = SwitchView(ports, now, report_seq, frozenset(dark) & mine if dark else frozenset())
        heapq.heappush(self._expiry, (now + self.switch_dead, switch))

    def start_mastership(self, now: float) -> None:
        """Forget all views (they belong to a previous mastership): every end is silent until it reports,
        so every link keeps its replicated state until evidence arrives."""
        self.views.clear()
        self._expiry.clear()

    def note_input_loss(self, now: float) -> None:
        """The runtime dropped input (receive queue overflow): a switch heard within `switch_dead` before
        `now` stays live for `switch_dead` after it — the master cannot tell whose datagram it lost."""
        if now > self.input_loss_at:
            self.input_loss_at = now
            # O(1) (issue #18: an overloaded master calls this every second): one entry stands for every
            # switch whose silence the loss extended; expire() looks at them all when it falls due
            heapq.heappush(self._expiry, (now + self.switch_dead, ""))

    def _last_heard(self, view: SwitchView) -> float:
        if self.input_loss_at - view.reported_at < self.switch_dead:
            return max(view.reported_at, self.input_loss_at)
        return view.reported_at

    def alive(self, switch: str, now: float) -> bool:
        view = self.views.get(switch)
        return view is not None and now - self._last_heard(view) < self.switch_dead

    # ----------------------------------------------------------------------------------------- derivation
    def _end(self, switch: str, port: int, now: float) -> str:
        """'up' / 'down' (live, and its latest report says usable / not usable) or 'unknown' (silent)."""
        view = self.views.get(switch)
        if view is None or now - self._last_heard(view) >= self.switch_dead:
            return "unknown"
        return "up" if port in view.usable else "down"

    def dark(self, switch: str, port: int, now: float) -> bool:
        """Whether live `switch` reports `port` without carrier (its PHY is down: the far end is dark)."""
        view = self.views.get(switch)
        return view is not None and now - self._last_heard(view) < self.switch_dead and port in view.dark

    def evidence(self, index: int, now: float) -> tuple[str, str]:
        """The two ends' evidence about link `index`: ('up'|'down'|'unknown', same) for ends a, b."""
        link = self.fabric.links[index]
        return self._end(link.a.switch, link.a.port, now), self._end(link.b.switch, link.b.port, now)

    def desired(self, index: int, current: LinkState, now: float) -> LinkState:
        a, b = self.evidence(index, now)
        down = a == "down" or b == "down"
        silent = a == "unknown" or b == "unknown"
        if index in self.drained:
            if (down or index in self.drained_alone
                    or (silent and current == LinkState.DRAINED_DOWN)):   # silence keeps a failed one failed
                return LinkState.DRAINED_DOWN
            return LinkState.DRAINED
        if down:
            return LinkState.DOWN
        if silent:
            # No evidence either way: keep the state — but a drain that the operator lifted must not linger.
            return LinkState.DOWN if current in DRAINED_STATES else current
        return LinkState.UP

    def changes(self, indices: Iterable[int], states: bytes | Mapping[int, int], now: float) -> dict[int, LinkState]:
        """Desired states that differ from `states` (the LSD's current byte-per-link states).

        `desired` for every index, computed inline for an undrained link (every report re-derives its
        switch's links: ~270,000 links in a Jupiter cold start, issue #18); a drained one goes through
        `desired`. `tests/test_linkstate_fast.py` checks both agree."""
        out: dict[int, LinkState] = {}
        views, ends, drained = self.views, self._ends, self.drained
        dead, loss = self.switch_dead, self.input_loss_at
        for i in indices:
            current = states[i]
            if i in drained:
                want = self.desired(i, LinkState(current), now)
                if want != current:
                    out[i] = want
                continue
            sa, pa, sb, pb = ends[i]
            # each end: 1 up, 0 down, -1 unknown (silent: no view, or not heard for switch_dead; _last_heard);
            # the two ends' blocks below are the same on purpose: a call per end was the cost removed here
            v = views.get(sa)
            if v is None:
                ea = -1
            else:
                heard = v.reported_at
                if heard < loss and loss - heard < dead:
                    heard = loss
                ea = -1 if now - heard >= dead else (1 if pa in v.usable else 0)
            if ea == 0:
                want = _DOWN
            else:
                v = views.get(sb)
                if v is None:
                    eb = -1
                else:
                    heard = v.reported_at
                    if heard < loss and loss - heard < dead:
                        heard = loss
                    eb = -1 if now - heard >= dead else (1 if pb in v.usable else 0)
                if eb == 0:
                    want = _DOWN
                elif ea == 1 and eb == 1:
                    want = _UP
                elif current in _DRAINED_CODES:      # silent: keep the state, but not a lifted drain
                    want = _DOWN
                else:
                    continue
            if want != current:
                out[i] = want
        return out

    # ----------------------------------------------------------------------------------------- time
    def expire(self, now: float) -> set[str]:
        """Switches that became silent (no report for `switch_dead`) since the last call. Their links are
        NOT re-derived: silence is not evidence (see the module docstring); this feeds logs and metrics."""
        dead: set[str] = set()
        while self._expiry and self._expiry[0][0] <= now:
            at, switch = heapq.heappop(self._expiry)
            if switch == "":
                if at == self.input_loss_at + self.switch_dead:     # the latest loss: whom it kept alive
                    dead.update(s for s, v in self.views.items() if self._last_heard(v) + self.switch_dead == at)
                continue
            view = self.views.get(switch)
            if view is not None and self._last_heard(view) + self.switch_dead == at:
                dead.add(switch)
        return dead

    def silent(self, now: float) -> list[str]:
        """Switches with a view under this mastership that are silent now (sorted)."""
        return sorted(s for s in self.views if not self.alive(s, now))

    def next_deadline(self) -> float | None:
        # Drop stale heap heads so the deadline is exact (avoids spurious wake-ups).
        while self._expiry:
            at, switch = self._expiry[0]
            if switch == "" and at == self.input_loss_at + self.switch_dead:
                break
            view = self.views.get(switch)
            if view is not None and self._last_heard(view) + self.switch_dead == at:
                break
            heapq.heappop(self._expiry)
        return self._expiry[0][0] if self._expiry else None
