"""Two client processes for one switch: said once, counted, and the older refused (tester bb40 F17).

A second `firepath client` started for a switch that already has one (a host's config management started
it twice, a switch was replaced without stopping the old client) signs with the same switch key, so the
master's Codec takes each process's frames as a *restart* of the other: B's first frame is stale, one
Challenge later B's incarnation is accepted; then A's next frame is stale, one Challenge later A is accepted
again, and so on. Each takeover costs the other process a stale (lost) frame, PortReports included, and
moves the switch's address (where the LSD and keepalives go), so both clients flapped fail-static and
nothing said why (17 rejections in 20 s in the tester's lab).

**What proves a duplicate.** An incarnation is a random 64-bit value drawn once per process
(proto.messages, ARCHITECTURE.md "Freshness"): a restarted client never speaks in its old incarnation
again. Once incarnation B of a switch has been accepted, the Codec's challenge for that switch is redrawn,
so a frame of the *superseded* incarnation A that reflects the new challenge was built by a process that
heard that challenge after B took over: A is alive beside B. Replays cannot do this (they reflect old
challenges and are `stale`), nor can a genuine restart (the old process is gone). Two frames from two
addresses are not enough on their own (a restarted client may come back on a new source port).

**What the master does** (the freshness design's reading: a newly verified incarnation *is* the switch,
anything of an older incarnation changes no state): while the newer incarnation is live — an accepted
frame within ``live`` seconds (3 x `report_refresh` in the runtime: a client refreshes its report at least
that often; the margin `proto.budget` keeps for `switch_dead`) — every frame of the older one is refused
(`DecodeError` reason ``duplicate``: nothing changes, no Challenge answers it, the switch's address stays
the newer one's). The newer client keeps working; the older goes fail-static on its last LSD. When the
newer one falls silent for ``live`` (the operator stopped it), the older one's next frame is accepted
again: it takes over as a restart would. Each replica decides on its own, on the order it verified the
two (a replica started after both may keep the other one); the log line and the counter are the same.

**What is said.** One WARNING line per switch and episode, ``event=duplicate_client switch=X
sources=ADDR_A(inc:HEX),ADDR_B(inc:HEX) kept=ADDR refused=ADDR|-``, older first; an episode is over once
no such frame came for ``quiet`` seconds (`switch_dead`: the master's notion of a switch gone). Lines of
all switches share one `proto.bounded.LogBudget` (20 at once, then one per 10 s, each saying how many were
suppressed): only holders of a switch key can start an episode, but a fleet misdeployed at once must not
flood the log. ``episodes[switch]`` counts episodes (the runtime's counter
`firepath_master_duplicate_clients_total{switch}`), ``view(switch, now)`` is the `/v1/clients` field.

Pure: fed events and ``now`` (monotonic seconds), no sockets; `attach` plugs it into a Codec
(`Codec.admit`) with the runtime's clock. Bounded: one entry per configured switch that spoke, at most
``MAX_SUPERSEDED`` superseded incarnations each, and only for frames whose HMAC verified.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Hashable
from typing import Any

from proto.bounded import LogBudget
from proto.logsetup import kv

__all__ = ["MAX_SUPERSEDED", "DuplicateClients"]

log = logging.getLogger("firepath.master")

#: superseded incarnations remembered per switch (restarts in a row; the oldest is forgotten first)
MAX_SUPERSEDED = 4


class _Source:
    """One incarnation of a switch's client: where its last frame came from and when (monotonic s).
    ``alive``: a superseded incarnation that proved it still runs (it reflected a later challenge)."""

    __slots__ = ("address", "alive", "at", "inc")

    def __init__(self, inc: int, address: Hashable, at: float) -> None:
        self.inc = inc
        self.address = address
        self.at = at
        self.alive = False

    def label(self) -> str:
        return f"{_addr(self.address)}(inc:{self.inc:016x})"

    def row(self, now: float) -> dict[str, Any]:
        return {"address": _addr(self.address), "incarnation": f"{self.inc:016x}",
                "heard_age": round(now - self.at, 3)}


class _Switch:
    __slots__ = ("current", "episode_at", "episode_start", "refused", "superseded")

    def __init__(self, current: _Source) -> None:
        self.current = current
        self.superseded: dict[int, _Source] = {}     # incarnation -> source, oldest superseded first
        self.episode_at: float | None = None         # last evidence of a duplicate
        self.episode_start: float | None = None
        self.refused = 0                             # frames refused, all episodes


def _addr(address: Hashable) -> str:
    if isinstance(address, tuple) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return "-" if address is None else str(address)


class DuplicateClients:
    """Per-switch incarnation history of one master replica. ``live``, ``quiet``: seconds (see the module
    docstring); ``local``: this replica's id (log lines); ``switches``: the names it judges (other senders,
    the replicas, are always admitted)."""

    def __init__(self, live: float, quiet: float, local: str, switches: Collection[str], *,
                 log_budget: LogBudget | None = None) -> None:
        if live <= 0 or quiet <= 0:
            raise ValueError(f"need live > 0 and quiet > 0, got {live}, {quiet}")
        self.live = live
        self.quiet = quiet
        self.local = local
        self._switch_names = frozenset(switches)
        self._codec: Any = None
        self.log_budget = LogBudget() if log_budget is None else log_budget
        self._switches: dict[str, _Switch] = {}
        #: episodes by switch (the runtime's counter); ``flush`` hands the new ones over
        self.episodes: Counter[str] = Counter()
        self._unflushed: Counter[str] = Counter()     # episodes since the last `flush`, by switch

    def attach(self, codec: Any, clock: Callable[[], float]) -> None:
        """Give ``codec`` (a proto.messages.Codec) this judgement of new incarnations, at ``clock()``; the
        switches judged are then the codec's own, as a rollout changes them (review: switches added by a
        rollout were never judged)."""
        codec.admit = lambda sender, inc, current, source: self.admit(sender, inc, current, source, clock())
        self._codec = codec

    @property
    def switches(self) -> frozenset[str]:
        return self._codec.switches if self._codec is not None else self._switch_names

    def set_timers(self, live: float, quiet: float) -> None:
        """A committed config's timers (seconds, as in the constructor)."""
        if live > 0 and quiet > 0:
            self.live, self.quiet = live, quiet

    # -- events -------------------------------------------------------------------------------------

    def admit(self, switch: str, inc: int, current: int | None, source: Hashable, now: float) -> bool:
        """May a frame of ``switch`` in incarnation ``inc``, not the accepted ``current`` one, start it now?
        It came from ``source`` and reflected the Codec's live challenge (so its sender runs now). False:
        refuse it (a superseded incarnation while the newer one is live). Called before the frame is
        accepted; `heard` follows for a frame accepted."""
        st = self._switches.get(switch)
        if st is None or current is None or switch not in self.switches:
            return True
        old = st.superseded.get(inc)
        if old is None:
            return True          # an incarnation never seen: a restart
        old.address, old.at, old.alive = source, now, True
        cur = st.current
        refuse = cur.inc == current and now - cur.at < self.live
        self._evidence(switch, st, old, cur if refuse else old, now)
        if refuse:
            st.refused += 1
        return not refuse

    def heard(self, switch: str, inc: int | None, source: Hashable, now: float) -> None:
        """A frame of ``switch`` in its accepted incarnation ``inc`` came from ``source`` (every accepted
        frame: the newer one's liveness). A new ``inc`` supersedes the one before."""
        if inc is None or switch not in self.switches:
            return
        st = self._switches.get(switch)
        if st is None:
            self._switches[switch] = _Switch(_Source(inc, source, now))
            return
        cur = st.current
        if cur.inc == inc:
            cur.address, cur.at = source, now
            return
        back = st.superseded.pop(inc, None)
        st.superseded[cur.inc] = cur
        while len(st.superseded) > MAX_SUPERSEDED:
            del st.superseded[next(iter(st.superseded))]
        if back is None:
            back = _Source(inc, source, now)
        back.address, back.at = source, now
        st.current = back

    def _evidence(self, switch: str, st: _Switch, older: _Source, kept: _Source, now: float) -> None:
        if st.episode_at is not None and now - st.episode_at < self.quiet:
            st.episode_at = now
            return
        st.episode_at = st.episode_start = now
        self.episodes[switch] += 1
        self._unflushed[switch] += 1
        skipped = self.log_budget.take(now)
        if skipped is None:
            return
        fields: dict[str, Any] = {
            "local": self.local, "switch": switch, "sources": f"{older.label()},{st.current.label()}",
            "kept": _addr(kept.address), "refused": _addr(older.address) if kept is not older else "-",
            "hint": "two_client_processes_for_one_switch"}
        if skipped:
            fields["suppressed"] = skipped
        log.warning(kv("duplicate_client", **fields))

    # -- views --------------------------------------------------------------------------------------

    def active(self, switch: str, now: float) -> bool:
        st = self._switches.get(switch)
        return st is not None and st.episode_at is not None and now - st.episode_at < self.quiet

    def view(self, switch: str, now: float) -> dict[str, Any] | None:
        """The `/v1/clients` field of ``switch``: None if it never had two live clients here; else
        ``{"active": bool, "episodes": n, "refused": frames, "since_age": s, "last_age": s, "serving":
        source, "others": [source, ...]}`` with sources ``{"address": "ip:port", "incarnation": hex,
        "heard_age": s}`` ("others": superseded incarnations that proved alive, refused while "serving" is
        live)."""
        st = self._switches.get(switch)
        if st is None or st.episode_at is None or st.episode_start is None:
            return None
        return {"active": now - st.episode_at < self.quiet, "episodes": self.episodes[switch],
                "refused": st.refused, "since_age": round(now - st.episode_start, 3),
                "last_age": round(now - st.episode_at, 3), "serving": st.current.row(now),
                "others": [s.row(now) for s in st.superseded.values() if s.alive]}

    def flush(self, counter: Any) -> None:
        """Hand the episodes counted since the last call to ``counter`` (a labelled Prometheus Counter,
        ``counter.labels(switch).inc(n)``)."""
        # called after every master turn: only the switches with new episodes, not every one that ever had one
        for switch, n in self._unflushed.items():
            counter.labels(switch).inc(n)
        self._unflushed.clear()
