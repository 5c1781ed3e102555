"""Reachability between the master replicas and the switches (issue #16): which switches each replica and
the switches hear each other with, from the reports this replica receives. Pure; `now` passed in.

Every client sends each new report to every replica, with `PortReport.reach`: a bitmap over the configured
masters (fabric order) of the replicas that acknowledged its recent reports (client.reporter). A replica
keeps, per switch, the bitmap of its latest report and when it arrived; a report is *fresh* for `window`
seconds (default 2 x report_refresh + keepalive: a live client sends a new report every report_refresh).
`counts(now)[i]` is the number of switches with a fresh report whose bit i is set: the switches this
replica saw two-way with replica i. Incremental (a running count per replica, a FIFO of arrivals with lazy
invalidation): O(replicas) per report, amortised O(1) per expiry — 30,088 switches cost nothing per hello.

FMRP carries `counts` in every Hello (`Hello.reach`), and the leader decides on a hand-over with
`handover_target()`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

__all__ = ["ReachSettle", "ReachTracker", "handover_target", "reach_margin"]


class ReachTracker:
    def __init__(self, n_masters: int, window: float) -> None:
        if n_masters < 1 or window <= 0:
            raise ValueError(f"ReachTracker: need n_masters >= 1 and window > 0, got {n_masters}, {window}")
        self.n = n_masters
        self.window = window
        self._latest: dict[str, tuple[float, int]] = {}     # switch -> (time, bits) of the fresh report
        self._fifo: deque[tuple[float, str]] = deque()
        self._counts = [0] * n_masters
        self._fresh = 0
        self.input_loss_at = -math.inf      # when the runtime last knew it dropped input (MasterCore)

    def note(self, switch: str, bits: int, now: float) -> None:
        """A report of `switch` with `reach` = `bits` arrived at `now` (times must not go back)."""
        old = self._latest.get(switch)
        if old is not None:
            self._add(old[1], -1)
        else:
            self._fresh += 1
        self._latest[switch] = (now, bits)
        self._add(bits, +1)
        self._fifo.append((now, switch))

    def _add(self, bits: int, delta: int) -> None:
        i = 0
        counts = self._counts
        while bits and i < self.n:
            if bits & 1:
                counts[i] += delta
            bits >>= 1
            i += 1

    def _expire(self, now: float) -> None:
        fifo, latest = self._fifo, self._latest
        limit = now - self.window
        while fifo and fifo[0][0] <= limit:
            at, switch = fifo.popleft()
            cur = latest.get(switch)
            if cur is not None and cur[0] == at:
                del latest[switch]
                self._add(cur[1], -1)
                self._fresh -= 1

    def counts(self, now: float) -> tuple[int, ...]:
        """Per configured master: switches with a fresh report that say they hear it two-way."""
        self._expire(now)
        return tuple(self._counts)

    def heard(self, now: float) -> int:
        """Switches this replica has a fresh report from."""
        self._expire(now)
        return self._fresh

    def clear(self) -> None:
        self._latest.clear()
        self._fifo.clear()
        self._counts = [0] * self.n
        self._fresh = 0


def reach_margin(share: float, n_switches: int) -> int:
    """How many more switches a backup must reach than the leader for a hand-over: `share` of the fabric's
    switches, at least 2 (one switch cut from the master alone is served by a backup, not a hand-over)."""
    return max(2, math.ceil(share * n_switches))


def handover_target(me: int, own: Sequence[int], views: Mapping[int, Sequence[int]], margin: int) -> int | None:
    """The replica (index) the leader `me` should hand over to, or None.

    `own`: the leader's own counts; `views[b]`: backup b's counts (its latest Hello; only backups that are
    live, follow this leader and hold its LSD version). b qualifies when *its* view shows it two-way with
    at least `margin` more switches than the leader (`views[b][b] - views[b][me] >= margin`) and the
    leader's own view does not contradict it (`own[me] - own[b] < margin`). A deaf leader's own view is
    stale or empty, which never contradicts; a mute leader's own view already shows it. Ties in between
    equally good replicas never qualify (sticky). The best advantage wins, then the lower index."""
    best: tuple[int, int] | None = None
    for b, v in views.items():
        if b == me or len(v) <= max(b, me) or len(own) <= max(b, me):
            continue
        adv = v[b] - v[me]
        if adv >= margin and own[me] - own[b] < margin and (best is None or (adv, -b) > (best[0], -best[1])):
            best = (adv, b)
    return None if best is None else best[1]


class ReachSettle:
    """When a master's reach view may judge it behind a backup (pure; controller.fmrp asks before a hand-over).

    Not within `settle` (2 x report_refresh + keepalive: the time the switches' bits take to rise again) of
    - becoming master (the bits still describe the previous mastership),
    - its own view first hearing a switch in this mastership: a master that has heard no switch yet is not
      "behind" (at lab start the backups heard the switches first and the master was handed over three times
      before it had heard one),
    - its view hearing switches again after every one went quiet at once: a fabric-wide stall, not a deaf
      master (a deaf master's view goes quiet and stays so, and is still judged: empty never contradicts),
    - the master running again after it did not run for more than `stall` (master_dead / 2): the switches'
      bits for it describe its own stall (a starved CPU, a paused process), not the network,
    - the master knowing it dropped input (its receive queue overflowed in a burst of reports): its view is
      short of reports by its own loss, not because switches cannot reach it.
    """

    def __init__(self, settle: float, stall: float) -> None:
        self.settle = settle
        self.stall = stall
        self.heard: int | None = None      # switches with a fresh report in the view (None: unknown)
        self.input_loss_at = -math.inf      # the latest input loss the runtime knew of
        self._from = -math.inf              # the latest of the events above (not becoming master)
        self._heard_any = False
        self._heard_prev = 0
        self._last_run = -math.inf

    def new_mastership(self) -> None:
        self._heard_any, self._heard_prev, self._from = False, 0, -math.inf

    def ran(self, now: float) -> None:
        """Called on every tick: a gap longer than `stall` since the previous one was a stall of ours."""
        if self._last_run > -math.inf and now - self._last_run > self.stall:
            self._from = now
        self._last_run = now

    def meaningful(self, master_since: float, now: float) -> bool:
        heard = self.heard
        if heard is not None:
            if heard > 0 and self._heard_prev == 0:
                self._from = now
                self._heard_any = True
            self._heard_prev = heard
            if not self._heard_any:
                return False
        return now - max(master_since, self._from, self.input_loss_at) >= self.settle
