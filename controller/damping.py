"""Master-side damping (issue #19): one switch must not be able to make the whole fabric churn.

Each client damps its own flapping ports (client.damping), but a broken or hostile client with a valid key
could report a port down and up every millisecond: without a bound at the master that is ~1,000 LSD
versions per second and every other switch reprogramming at the distribution's rate limit. This pure object,
owned by `MasterCore`, bounds it per link and per switch. Policy: `proto.config.Damping` (YAML `damping:`).

**Per link: exponential penalty** (RFC 2439 section 4.2, as IS-IS/OSPF interface dampening does it). A
link's *evidence* (what the two-ended derivation wants, before damping and before the guard) going from UP
to DOWN is one flap: the link's penalty grows by `penalty`, capped at `ceiling` (= reuse x 2^(max_suppress /
half_life), so a hold ends at most `max_suppress` after the last flap). The penalty decays exponentially,
halving every `half_life`: p(t) = p(t0) x 2^(-(t - t0) / half_life). When it exceeds `suppress` the link is
**suppressed**: it stays DOWN in the LSD — an UP it would get is removed from the batch; when the penalty
falls below `reuse` it is **reused**: `tick` returns it and the core re-derives it (published UP if its
evidence says so). A DOWN is never removed: damping never delays a failure.

**Per switch: a token bucket on UPs.** The reports of one switch may bring links UP in at most `up_rate`
LSD versions per second (burst `up_burst`); a batch caused by that switch's report with UPs and no token
loses its UPs (its DOWNs stay), and the switch is due again when a token is back (`tick` returns it; the
core re-derives its links then). A link must be UP before it can go DOWN, so a switch causes at most about
2 x up_rate versions per second however many ports it flaps, and a single link at most a few versions
before it is suppressed.

Decisions come back as `DampEvent`s (logs and metrics: `controller.server`). Pure: `now` in, no clock.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.actions import DampEvent
from proto.config import Damping
from proto.lsd import LinkState

__all__ = ["DampEvent", "Damper", "LinkDamping", "SwitchLimit"]

_UP = LinkState.UP
_DOWN = LinkState.DOWN


@dataclass(slots=True)
class LinkDamping:
    """One link's penalty: `penalty` as of `at` (decays from there), flaps counted, suppression."""

    penalty: float
    at: float
    flaps: int = 0
    suppressed_since: float | None = None
    reuse_at: float | None = None          # while suppressed: when the penalty falls to `reuse`


@dataclass(slots=True)
class SwitchLimit:
    """One switch's token bucket for UP batches (`tokens` as of `at`) and its deferred UPs, if any."""

    tokens: float
    at: float
    due: float | None = None               # deferred UPs: re-derive this switch's links at `due`
    deferred: int = 0                      # batches whose UPs waited (counter)


class Damper:
    """Feed every re-derivation through `observe` (evidence) then `filter` (what may be published)."""

    def __init__(self, policy: Damping) -> None:
        self.policy = policy
        self.ceiling = policy.ceiling
        self._ln2_per_half_life = math.log(2.0) / policy.half_life
        #: last evidence (UP/DOWN/DRAINED as derived, before damping) of links where it differs from the LSD
        self._evidence: dict[int, int] = {}
        self.links: dict[int, LinkDamping] = {}
        self.switches: dict[str, SwitchLimit] = {}
        self._reuse_heap: list[tuple[float, int]] = []     # (reuse_at, link), lazily invalidated
        self._due_heap: list[tuple[float, str]] = []       # (due, switch), lazily invalidated
        self.flaps = 0                                      # counters for metrics
        self.suppressions = 0
        self.n_suppressed = 0                               # links suppressed now

    def reset(self) -> None:
        """A mastership change: start from nothing (the new master derives from its own reports)."""
        self._evidence.clear()
        self.links.clear()
        self.switches.clear()
        self._reuse_heap.clear()
        self._due_heap.clear()
        self.n_suppressed = 0

    # ------------------------------------------------------------------------------------ penalty
    def penalty(self, index: int, now: float) -> float:
        """The link's penalty at `now` (0 if it never flapped)."""
        st = self.links.get(index)
        if st is None:
            return 0.0
        return st.penalty * math.exp(-(now - st.at) * self._ln2_per_half_life)

    def suppressed(self, index: int) -> bool:
        st = self.links.get(index)
        return st is not None and st.suppressed_since is not None

    def suppressed_links(self) -> list[int]:
        return sorted(i for i, st in self.links.items() if st.suppressed_since is not None)

    def _reuse_time(self, penalty: float, at: float) -> float:
        """When a penalty of `penalty` at `at` has decayed to `reuse`."""
        return at + self.policy.half_life * math.log2(max(penalty, self.policy.reuse) / self.policy.reuse)

    def _flap(self, index: int, now: float, out: list[DampEvent]) -> None:
        st = self.links.get(index)
        p = self.penalty(index, now) + self.policy.penalty
        if st is None:
            st = self.links[index] = LinkDamping(0.0, now)
        st.penalty, st.at = min(p, self.ceiling), now
        st.flaps += 1
        self.flaps += 1
        if st.suppressed_since is None and st.penalty > self.policy.suppress:
            st.suppressed_since = now
            self.suppressions += 1
            self.n_suppressed += 1
            out.append(DampEvent("suppress", (index,), None, round(st.penalty)))
        if st.suppressed_since is not None:
            st.reuse_at = self._reuse_time(st.penalty, now)
            heapq.heappush(self._reuse_heap, (st.reuse_at, index))

    # ------------------------------------------------------------------------------------ decisions
    def observe(self, indices: Iterable[int], states: Mapping[int, int] | bytes,
                changes: Mapping[int, LinkState], now: float) -> list[DampEvent]:
        """The derivation looked at `indices`: `states` are their LSD states, `changes` what it wants to change
        (before the guard and damping), so the evidence of link i is changes.get(i, states[i]). An evidence
        going UP -> DOWN is a flap. Returns "suppress" events.

        Only links whose evidence differs from their LSD state (a change wanted but withheld or held) are
        remembered; any other link's previous evidence is its LSD state. So a report costs O(its changes),
        not O(its links)."""
        if not self.policy.enabled:
            return []
        out: list[DampEvent] = []
        ev = self._evidence
        todo = list(changes)
        if ev:
            idx = indices if isinstance(indices, list | tuple | range | set | frozenset) else list(indices)
            if len(idx) < len(ev):
                # issue #18: during a cold start `ev` holds thousands of withheld links; a report looks at
                # its own few (sorted: the same order as walking `ev` would not matter, events are per link)
                todo += [i for i in idx if i in ev and i not in changes]
            else:
                look = idx if isinstance(idx, range | set | frozenset) else set(idx)
                todo += [i for i in ev if i in look and i not in changes]
        for i in todo:
            state = int(states[i])
            now_ev = int(changes.get(i, state))
            before = ev.get(i, state)
            if now_ev != state:
                ev[i] = now_ev
            else:
                ev.pop(i, None)
            if before == _UP and now_ev == _DOWN:
                self._flap(i, now, out)
        return out

    def filter(self, changes: dict[int, LinkState], states: Mapping[int, int] | bytes, switch: str | None,
               now: float) -> list[DampEvent]:
        """Withhold from `changes` (in place) the UPs that may not be published now: those of suppressed
        links, and, if `switch` (whose report caused this batch) has no token left, all of them (deferred:
        the switch is due again when a token is back). A withheld UP keeps the link DOWN: removed from the
        batch, or turned into DOWN when the link is DRAINED (`states`: current LSD states; an undrained link
        that is held must not stay drained). DOWNs and drains are never withheld."""
        if not self.policy.enabled:
            return []
        ups = [i for i, s in changes.items() if s == _UP]
        if not ups:
            return []
        out: list[DampEvent] = []
        held = [i for i in ups if self.suppressed(i)]
        self._withhold(changes, states, held)
        if switch is None or len(held) == len(ups):
            return out
        lim = self._bucket(switch, now)
        if lim.tokens >= 1.0:
            lim.tokens -= 1.0
            return out
        rest = [i for i in ups if changes.get(i) == _UP]
        self._withhold(changes, states, rest)
        due = now + (1.0 - lim.tokens) / self.policy.up_rate
        if lim.due is None or due < lim.due:
            lim.due = due
            heapq.heappush(self._due_heap, (due, switch))
        lim.deferred += 1
        out.append(DampEvent("defer", tuple(sorted(rest)), switch, 0))
        return out

    @staticmethod
    def _withhold(changes: dict[int, LinkState], states: Mapping[int, int] | bytes, links: list[int]) -> None:
        for i in links:
            if states[i] == LinkState.DRAINED:
                changes[i] = _DOWN
            else:
                del changes[i]

    def _bucket(self, switch: str, now: float) -> SwitchLimit:
        p = self.policy
        lim = self.switches.get(switch)
        if lim is None:
            lim = self.switches[switch] = SwitchLimit(float(p.up_burst), now)
        elif now > lim.at:
            lim.tokens = min(float(p.up_burst), lim.tokens + (now - lim.at) * p.up_rate)
            lim.at = now
        return lim

    # ------------------------------------------------------------------------------------ time
    def tick(self, now: float) -> tuple[list[int], list[str], list[DampEvent]]:
        """(links reused at `now`: re-derive them; switches whose deferred UPs are due: re-derive their
        links with `filter(..., switch, now)`; "reuse" events)."""
        reused: list[int] = []
        heap = self._reuse_heap
        while heap and heap[0][0] <= now:
            at, i = heapq.heappop(heap)
            st = self.links.get(i)
            if st is None or st.suppressed_since is None or st.reuse_at != at:
                continue
            st.suppressed_since = st.reuse_at = None
            self.n_suppressed -= 1
            reused.append(i)
        due: list[str] = []
        dheap = self._due_heap
        while dheap and dheap[0][0] <= now:
            at, sw = heapq.heappop(dheap)
            lim = self.switches.get(sw)
            if lim is not None and lim.due == at:
                lim.due = None
                due.append(sw)
        events = [DampEvent("reuse", (i,), None, round(self.penalty(i, now))) for i in sorted(reused)]
        self._forget(now)
        return sorted(reused), due, events

    def _forget(self, now: float) -> None:
        """Drop links whose penalty decayed to almost nothing (memory stays bounded by the flapping set)."""
        if len(self.links) < 1024:
            return
        floor = self.policy.penalty / 64.0
        for i in [i for i, st in self.links.items()
                  if st.suppressed_since is None and self.penalty(i, now) < floor]:
            del self.links[i]

    def next_deadline(self) -> float | None:
        heap = self._reuse_heap
        while heap:
            at, i = heap[0]
            st = self.links.get(i)
            if st is not None and st.suppressed_since is not None and st.reuse_at == at:
                break
            heapq.heappop(heap)
        dheap = self._due_heap
        while dheap:
            at, sw = dheap[0]
            lim = self.switches.get(sw)
            if lim is not None and lim.due == at:
                break
            heapq.heappop(dheap)
        times = [h[0][0] for h in (heap, dheap) if h]
        return min(times) if times else None

    def deferred_switches(self) -> dict[str, float]:
        """Switch -> when its deferred UPs are due."""
        return {sw: lim.due for sw, lim in self.switches.items() if lim.due is not None}
