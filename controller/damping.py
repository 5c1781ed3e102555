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

**Correlated storms are one event, not a flap of each link.** A stall of the switches' CPUs (a power event,
CPU starvation, a paused hypervisor) drops the links of many switches within a moment and brings them back
a second later; charged per link, three such stalls suppress every link of the fabric for up to
`max_suppress`, a fabric-wide outage made by the protection. Damping is meant for *a* link whose own
instability repeats (RFC 2439 penalises each route for its own flaps); a shared cause says nothing about any
one link — the same reasoning as the drastic-change guard (controller.guard), which looks at how many links
change together rather than at each one. So flaps (evidence UP -> DOWN) of at least max(3, `storm_share` x
links) distinct links, reported by at least `storm_switches` different switches, within `storm_window`, are a
**storm**: none of them is charged, and the flaps charged earlier in that window (before the storm was
recognised) are refunded — a link suppressed by such a flap is reused at once. One switch flapping its own
ports (a broken or hostile client) is never a storm (one reporting switch), nor is a single flapping link
(one link), so the per-link penalty and the per-switch UP rate bound them as before. A **local storm** is the
same for one switch: at least half of its links (at least 2) flap within `storm_window` on its
neighbours' reports (they saw the drop: that switch stalled, e.g. its CPU starved; a switch cannot make
one by its own reports); its links' flaps in the window are not charged. A link that flaps more than twice within the window flaps on its own
(a stall drops it once, maybe twice): its flaps are charged and never refunded, whatever else happens.
Event `storm` (once per storm, with its links; `switch` set for a local
one), counter `storm_flaps`.

Decisions come back as `DampEvent`s (logs and metrics: `controller.server`). Pure: `now` in, no clock.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.actions import DampEvent
from proto.config import Damping
from proto.lsd import DRAINED_STATES, LinkState

__all__ = ["DampEvent", "Damper", "LinkDamping", "SwitchLimit"]

_UP = LinkState.UP
_DOWN = LinkState.DOWN
#: a link with more flaps than this within the storm window flaps on its own: never part of a storm
_STORM_FLAPS = 2


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

    def __init__(self, policy: Damping, n_links: int = 0, ends: Sequence[tuple[str, str]] = ()) -> None:
        self.policy = policy
        #: distinct flapped links within storm_window that make a storm
        self.storm_links = max(3, math.ceil(policy.storm_share * n_links))
        #: per link, the switches at its ends (a local storm: most links of one switch, seen by several)
        self._ends = tuple(ends)
        degree: Counter[str] = Counter(sw for a, b in self._ends for sw in {a, b})
        self._local_need = {sw: max(2, math.ceil(d / 2)) for sw, d in degree.items()}
        #: switch -> flaps of its links in the window that its neighbours (the far ends) reported
        self._by_end: dict[str, Counter[int]] = {}
        self._local_until: dict[str, float] = {}
        #: recent flaps: (time, link, reporting switch, penalty added), with running counts per link/switch
        self._recent: deque[tuple[float, int, str | None, float]] = deque()
        self._recent_links: Counter[int] = Counter()
        self._recent_switches: Counter[str] = Counter()
        self._storm_until = -math.inf                       # a storm recognised: flaps before this are free
        self.storms = 0
        self.storm_flaps = 0                                # flaps not charged (or refunded): part of a storm
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
        self._recent.clear()
        self._recent_links.clear()
        self._recent_switches.clear()
        self._storm_until = -math.inf
        self._by_end.clear()
        self._local_until.clear()

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

    def _flap(self, index: int, now: float, out: list[DampEvent]) -> float:
        """Charge one flap; returns the penalty actually added (the ceiling may cut it)."""
        st = self.links.get(index)
        before = self.penalty(index, now)
        p = before + self.policy.penalty
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
        return st.penalty - before

    # ------------------------------------------------------------------------------------ storms
    def _note_flap(self, index: int, switch: str | None, now: float, out: list[DampEvent]) -> None:
        """A flap of `index` reported by `switch`: charge it, unless it is (or makes) a correlated storm:
        fabric-wide (many links, several reporting switches) or local to one switch (at least half of its
        links reported down by its neighbours: they saw it, so it is not that switch's own word)."""
        p = self.policy
        recent = self._recent
        while recent and recent[0][0] < now - p.storm_window:
            _, i, sw, _ = recent.popleft()
            self._count(i, sw, -1)
        self._count(index, switch, +1)
        if self._recent_links[index] > _STORM_FLAPS:
            # this link flaps on its own (more than a stall makes it): charged, storm or not
            recent.append((now, index, switch, self._flap(index, now, out)))
            return
        if len(self._recent_links) >= self.storm_links and len(self._recent_switches) >= p.storm_switches:
            if now >= self._storm_until:
                self._begin_storm(now, out, None)
            self._storm_until = now + p.storm_window
            self.storm_flaps += 1
            recent.append((now, index, switch, 0.0))
            return
        for end in set(self._ends[index]) if index < len(self._ends) else ():
            if len(self._by_end.get(end, ())) >= self._local_need[end]:
                if now >= self._local_until.get(end, -math.inf) and now >= self._storm_until:
                    self._begin_storm(now, out, end)
                self._local_until[end] = now + p.storm_window
                self.storm_flaps += 1
                recent.append((now, index, switch, 0.0))
                return
        recent.append((now, index, switch, self._flap(index, now, out)))

    def _count(self, index: int, switch: str | None, delta: int) -> None:
        """Add (+1) or remove (-1) one flap of `index` reported by `switch` from the window's counts."""
        ends = set(self._ends[index]) if index < len(self._ends) else set()
        counters = [(self._recent_links, index)]
        if switch is not None:
            counters.append((self._recent_switches, switch))
            counters += [(self._by_end.setdefault(e, Counter()), index) for e in ends if e != switch]
        for counter, key in counters:
            counter[key] += delta
            if counter[key] <= 0:
                del counter[key]

    def _begin_storm(self, now: float, out: list[DampEvent], local: str | None) -> None:
        """A storm is recognised (fabric-wide, or `local` to one switch): refund every flap charged within the
        window (of that switch's links)."""
        self.storms += 1
        decay = self._ln2_per_half_life
        refunded: set[int] = set()
        first_refunded: dict[int, float] = {}               # link -> its earliest refunded flap
        for k, (t, i, sw, added) in enumerate(self._recent):
            if added <= 0.0 or (local is not None and local not in self._ends[i]) \
                    or self._recent_links[i] > _STORM_FLAPS:
                continue
            self._recent[k] = (t, i, sw, 0.0)
            self.storm_flaps += 1
            refunded.add(i)
            st = self.links.get(i)
            if st is None:
                continue
            st.penalty = max(0.0, self.penalty(i, now) - added * math.exp(-(now - t) * decay))
            st.at = now
            st.flaps -= 1
            first_refunded[i] = min(first_refunded.get(i, t), t)
        for i, t in first_refunded.items():
            st = self.links[i]
            if st.suppressed_since is not None and (st.suppressed_since >= t or st.penalty < self.policy.reuse):
                st.reuse_at = now                   # suppressed by a storm flap: reused at the next tick
                heapq.heappush(self._reuse_heap, (now, i))
            elif st.suppressed_since is not None:
                st.reuse_at = self._reuse_time(st.penalty, now)
                heapq.heappush(self._reuse_heap, (st.reuse_at, i))
        links = set(self._recent_links) if local is None else set(self._by_end.get(local, ()))
        out.append(DampEvent("storm", tuple(sorted(links | refunded)), local, 0))

    # ------------------------------------------------------------------------------------ decisions
    def observe(self, indices: Iterable[int], states: Mapping[int, int] | bytes,
                changes: Mapping[int, LinkState], now: float, switch: str | None = None) -> list[DampEvent]:
        """The derivation looked at `indices`: `states` are their LSD states, `changes` what it wants to change
        (before the guard and damping), so the evidence of link i is changes.get(i, states[i]). An evidence
        going UP -> DOWN is a flap (`switch`: whose report made it; storms need several). Returns "suppress"
        and "storm" events.

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
                self._note_flap(i, switch, now, out)
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
            if states[i] in DRAINED_STATES:
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
