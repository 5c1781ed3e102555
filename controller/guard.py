"""The drastic-change guard (issue #16): the master must never be the single cause of a fabric-wide outage.

A pure object owned by `MasterCore`. Each batch of link changes the derivation wants (one future LSD
version) passes through `filter()` first. A link the batch takes from UP to DOWN is either

- **corroborated** (the core's `corroborated(index, now)`, see `controller.core`): both ends are live and
  report the port not usable; or one end says so and the other end's switch is *corroborated down* — at
  least two of its neighbours are live and every live neighbour reports its link to it not usable — the
  switch silent, or still live on a last report saying usable while all those neighbours lost carrier to
  it (its client died just before its links went dark: a power loss). Independent switches say so:
  published at once and never counted; or
- **uncorroborated**: a single live witness (the other end silent or saying usable, without such
  agreement of its neighbours). These are counted: if the distinct links taken down without corroboration within
  `window`, with the ones already held and this batch's, would exceed `down_share` of the fabric's links — or would
  leave more than `down_share` of its switches with every link down — this batch's uncorroborated downs
  are **held**: not published, the LSD keeps their current state, an alarm is raised (events for the
  log/metrics, `held` for REST).

A held link is released (published DOWN) when it becomes corroborated, or when an operator confirms
(`confirm()`, REST with the admin token); it is withdrawn (forgotten, nothing published) when the
derivation no longer wants it DOWN. Operator drains and UP changes never pass through the guard.

Pure: `now` is passed in; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from controller.actions import GuardEvent
from proto.config import Fabric
from proto.lsd import LinkState

__all__ = ["Guard", "GuardEvent"]



class NotHeld(ValueError):
    """An operator confirmed links the guard does not hold (`links`: their indices); nothing was released."""

    def __init__(self, links: tuple[int, ...]) -> None:
        super().__init__(f"not held by the guard: link index(es) {list(links)}")
        self.links = links

class Guard:
    def __init__(self, fabric: Fabric) -> None:
        g = fabric.guard
        self.share = g.down_share
        self.window = g.window
        self.n_links = len(fabric.links)
        self.n_switches = len(fabric.switches)
        self.link_budget = math.floor(self.share * self.n_links)
        self.switch_budget = math.floor(self.share * self.n_switches)
        self._links_of = {s.name: fabric.links_of(s.name) for s in fabric.switches}
        self._ends = [(link.a.switch, link.b.switch) for link in fabric.links]
        #: link index -> time it was first held
        self.held: dict[int, float] = {}
        # Distinct links published DOWN without corroboration within `window`: link -> last time.
        self._recent: dict[int, float] = {}
        self._recent_q: deque[tuple[float, int]] = deque()
        self.holds = 0          # batches held (counter)

    def reset(self) -> None:
        """A mastership change: nothing is held (the new master derives from its own reports)."""
        self.held.clear()
        self._recent.clear()
        self._recent_q.clear()

    def recent(self, now: float) -> set[int]:
        """Links published DOWN without corroboration within `window` before `now`."""
        q, recent = self._recent_q, self._recent
        while q and q[0][0] <= now - self.window:
            t, i = q.popleft()
            if recent.get(i) == t:
                del recent[i]
        return set(recent)

    def _published(self, links: list[int] | tuple[int, ...], now: float) -> None:
        for i in links:
            self._recent[i] = now
            self._recent_q.append((now, i))

    def filter(self, changes: dict[int, LinkState], before: Mapping[int, int] | bytes,
               all_states: Callable[[], bytes], corroborated: Callable[[int], bool],
               indices: list[int] | tuple[int, ...] | range, now: float) -> list[GuardEvent]:
        """Remove from `changes` (in place) what must be held; returns the events. `before`: current
        states of at least the changed links; `all_states()`: every link's state (only called when a
        batch may isolate switches); `indices`: the links re-derived in this pass (a held link among them
        that is not in `changes` is no longer wanted DOWN)."""
        events: list[GuardEvent] = []
        held = self.held
        if held:
            withdrawn = [i for i in indices if i in held and changes.get(i) != LinkState.DOWN]
            for i in withdrawn:
                del held[i]
            if withdrawn:
                events.append(GuardEvent("withdraw", tuple(sorted(withdrawn)), "no longer wanted down"))
        released: list[int] = []
        fresh: list[int] = []
        for i, s in changes.items():
            if s != LinkState.DOWN or before[i] != LinkState.UP:
                continue
            if corroborated(i):
                if i in held:
                    del held[i]
                    released.append(i)
            elif i in held:
                pass                                    # still held: dropped from changes below
            else:
                fresh.append(i)
        if released:
            events.append(GuardEvent("release", tuple(sorted(released)), "corroborated"))
        for i in held:
            if changes.get(i) == LinkState.DOWN:
                del changes[i]
        if not fresh:
            return events
        pending = len(self.recent(now) | held.keys() | set(fresh))
        reason = ""
        if pending > self.link_budget:
            reason = (f"{pending} uncorroborated link downs within {self.window:g} s > {self.share:.0%} of "
                      f"{self.n_links} links")
        else:
            isolated = self._isolated(changes, fresh, all_states())
            if isolated > self.switch_budget:
                reason = (f"{isolated} switches would lose every link > {self.share:.0%} of "
                          f"{self.n_switches} switches")
        if reason:
            for i in fresh:
                held[i] = now
                changes.pop(i, None)
            self.holds += 1
            events.append(GuardEvent("hold", tuple(sorted(fresh)), reason))
        else:
            self._published(fresh, now)
        return events

    def _isolated(self, changes: Mapping[int, LinkState], fresh: list[int], states: bytes) -> int:
        """Switches left with every link down by this batch (+ what is held) that an uncorroborated
        down contributes to."""
        touched = {sw for i in fresh for sw in self._ends[i]} | {sw for i in self.held for sw in self._ends[i]}
        n = 0
        for sw in touched:
            links = self._links_of[sw]
            if links and all(
                i in self.held or changes.get(i, LinkState(states[i])) != LinkState.UP for i in links
            ):
                n += 1
        return n

    def confirm(self, now: float, links: Iterable[int] | None = None) -> tuple[int, ...]:
        """An operator confirmed: the held links named by `links` (link indices; None: every held link) are
        to be published DOWN (returns them, sorted; they leave `held`). They count against the window like
        any published uncorroborated down. Raises NotHeld naming the indices not held (then nothing
        changes): a confirmation is of what the operator saw held, never of a link held after."""
        if links is None:
            out = tuple(sorted(self.held))
        else:
            out = tuple(sorted(set(links)))
            missing = [i for i in out if i not in self.held]
            if missing:
                raise NotHeld(tuple(missing))
        for i in out:
            del self.held[i]
        self._published(out, now)
        return out
