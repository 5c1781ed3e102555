"""Bounded bookkeeping that frames the Codec has not authenticated, or has judged replays, can feed.

An attacker without the fabric key chooses the claimed sender, the key id and the source address of every
datagram it sends, and may replay any authenticated frame it saw from any address. Whatever the Codec (or a
runtime) remembers or logs per such value must therefore stay bounded however many values it sends — per
configured name x 255 key ids is millions of rows at Jupiter size (30,088 switches) — and must not let one
source take from another what it needs:

* ``KeyIdRejections`` — ``unknown_key_id`` drops by (claimed sender, key id): a fixed-size LRU table with
  exact totals beside it (the genuine need, a peer signing under a key id this node does not have yet or
  no longer accepts during a key rollover, stays visible);
* ``LogBudget`` — one token bucket for the log lines about such drops: a fixed number of lines per minute
  whatever the number of pairs, each line carrying how many were suppressed before it;
* ``RejectLog`` — the log lines about rejected datagrams and ND frames (which source, why): two
  ``LogBudget``s, one for forged or broken input and one for the routine (a restarted peer's first frames),
  so neither can use up the other's lines;
* ``AnswerBudget`` — the Challenges that answer ``stale`` frames, at most one per interval per
  (peer, address): replays sent from one address cannot use up the allowance of the address the genuine
  peer speaks from.

Pure objects: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping

from proto.logsetup import kv

__all__ = ["ROUTINE_REJECTIONS", "AnswerBudget", "KeyIdRejections", "LogBudget", "RejectLog", "clipped"]


def clipped(value: str, keep: int = 40) -> str:
    """`value` (a name or parameter a peer chose) as an error message quotes it: its repr, cut to `keep`
    characters and marked "..." when longer, so a 100,000-character input never comes back whole."""
    return f"{value[:keep]!r}..." if len(value) > keep else repr(value)


class KeyIdRejections(Mapping[tuple[str, int], int]):
    """``unknown_key_id`` rejections by (claimed sender, key id): at most ``capacity`` pairs, exact totals.

    Shape: a mapping (sender, key id) -> frames counted while the pair is in the table, holding the
    ``capacity`` (default 256) most recently seen pairs: a pair seen again moves to the newest end, a new
    pair evicts the least recently seen one (an evicted pair that comes back counts from 1 again). Beside it,
    exact whatever was evicted: ``total`` (every rejection), ``by_key_id`` (per key id; at most 256 entries,
    the id is a u8 on the wire), ``evicted_pairs`` and ``evicted_frames``, with
    ``total == sum(self.values()) + evicted_frames``.

    Why bounded: the frames are not authenticated, so the pair is the sender's free choice; counting every
    pair ever claimed grew without end and was served whole by ``GET /v1/keys``. Why LRU: the genuine case
    is key rollover (a peer under a key id we do not have yet, or a straggler under a retired one), a peer
    that keeps sending and so stays among the most recently seen or comes straight back; and ``by_key_id``
    names its key id exactly even while a flood of forged pairs cycles through the table.
    """

    __slots__ = ("_pairs", "by_key_id", "capacity", "evicted_frames", "evicted_pairs", "total")

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._pairs: dict[tuple[str, int], int] = {}     # insertion order = least recently seen first
        self.by_key_id: Counter[int] = Counter()
        self.total = 0
        self.evicted_pairs = 0
        self.evicted_frames = 0

    def note(self, sender: str, key_id: int) -> int:
        """Count one rejected frame of (``sender``, ``key_id``); returns the pair's count in the table."""
        self.total += 1
        self.by_key_id[key_id] += 1
        pair = (sender, key_id)
        pairs = self._pairs
        n = pairs.pop(pair, 0) + 1
        if not n - 1 and len(pairs) >= self.capacity:
            oldest = next(iter(pairs))
            self.evicted_frames += pairs.pop(oldest)
            self.evicted_pairs += 1
        pairs[pair] = n
        return n

    def __getitem__(self, pair: tuple[str, int]) -> int:
        return self._pairs[pair]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return (f"KeyIdRejections({self._pairs!r}, total={self.total}, evicted_pairs={self.evicted_pairs}, "
                f"evicted_frames={self.evicted_frames})")


class LogBudget:
    """A token bucket for log lines about unauthenticated input: ``burst`` lines at once (default 20), then
    ``rate`` lines/s (default 0.1: six a minute), whatever the number of senders, key ids or addresses.

    ``take(now)`` spends one line: the number of lines suppressed since the previous line it allowed (to be
    written in that line, so nothing is lost silently), or None when this line must be suppressed. The
    counters that feed the lines stay exact; only the lines are limited. ``suppressed`` counts every
    suppressed line. Why: a per-pair limit (1st, 2nd, 4th, ... frame of each pair) bounds nothing when the
    attacker picks the pairs: 18,288 header-only frames wrote 4,572 WARNING lines (739 KB)."""

    __slots__ = ("_at", "_pending", "_tokens", "burst", "rate", "suppressed")

    def __init__(self, rate: float = 0.1, burst: int = 20) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None
        self._pending = 0           # suppressed since the last line allowed
        self.suppressed = 0

    def take(self, now: float) -> int | None:
        if self._at is not None and now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
        if self._tokens < 1.0:
            self._pending += 1
            self.suppressed += 1
            return None
        self._tokens -= 1.0
        pending, self._pending = self._pending, 0
        return pending


#: Rejection reasons that normal operation produces (a restarted peer's first frames are ``stale`` until one
#: exchange verifies it): RejectLog writes them at INFO from a budget of their own.
ROUTINE_REJECTIONS = frozenset({"stale"})
#: Logged elsewhere, not a second time: by the Codec itself with the key ids (``Codec._key_id_rejected``),
#: once per episode with both sources (``duplicate``: controller.dupclients; the older client keeps sending).
_LOGGED_ELSEWHERE = frozenset({"unknown_key_id", "duplicate"})


class RejectLog:
    """The log lines about rejected input — datagrams at a master's client or peer port or a switch's
    socket, ND frames at a switch port — within a budget (the counters beside them stay exact).

    ``note(now, reason, source, detail)`` writes ``event=datagram_rejected local=<node> path=<path>
    source=<ip:port or "port N ..."> reason=<the metric label> detail="<what the codec or core says:
    message type and claimed sender where the header had them>" [suppressed=N]``: WARNING from one
    ``LogBudget`` (default 20 lines at once, then one per 10 s), INFO from another for the reasons in
    ``ROUTINE_REJECTIONS``, so that restarts cannot use up the lines about forged input, nor forged input hide
    a restart. ``unknown_key_id`` is not written (the Codec logs it with the key ids), nor ``duplicate`` (one
    ``duplicate_client`` line per episode, controller.dupclients). ``detail`` is clipped to 160 characters (it may quote a name the sender chose).
    ``suppressed`` (total, both budgets) counts the lines not written; each written line carries how many of
    its budget were suppressed before it. Returns whether a line was written. ``now``: monotonic seconds."""

    __slots__ = ("_logger", "_path", "_routine", "_warn", "local")

    def __init__(self, logger: logging.Logger, local: str, path: str, *, rate: float = 0.1, burst: int = 20) -> None:
        self._logger = logger
        self.local = local
        self._path = path
        self._warn = LogBudget(rate, burst)
        self._routine = LogBudget(rate, burst)

    @property
    def suppressed(self) -> int:
        return self._warn.suppressed + self._routine.suppressed

    def note(self, now: float, reason: str, source: str | tuple[str, int] | Callable[[], str] | None,
             detail: str | Callable[[], str] = "") -> bool:
        """`source`: an (ip, port) pair, rendered "ip:port" only when a line is written (the flood path
        formats nothing), a text, a callable returning the text (called only for a line written: the ND
        path's "port N src_mac ..."), or None ("-": not known). `detail`: a text or such a callable."""
        if reason in _LOGGED_ELSEWHERE:
            return False
        routine = reason in ROUTINE_REJECTIONS
        level = logging.INFO if routine else logging.WARNING
        if not self._logger.isEnabledFor(level):
            return False
        skipped = (self._routine if routine else self._warn).take(now)
        if skipped is None:
            return False
        if isinstance(source, tuple):
            source = f"{source[0]}:{source[1]}"
        elif source is None:
            source = "-"
        elif callable(source):
            source = source()
        if callable(detail):
            detail = detail()
        detail = detail if len(detail) <= 160 else detail[:160] + "..."
        if not detail.isprintable():        # one line whatever the sender put in a name
            detail = detail.encode("unicode_escape").decode("ascii")
        fields = {"local": self.local, "path": self._path, "source": source, "reason": reason, "detail": detail}
        if skipped:
            fields["suppressed"] = skipped
        self._logger.log(level, kv("datagram_rejected", **fields))
        return True


class AnswerBudget:
    """Rate limit of the Challenges that answer ``stale`` frames: at most one per ``interval`` s per
    (peer, address).

    ``address``: where the answer goes. A master answers a switch at the datagram's source, so replays of a
    switch's frames sent from one address must not use up the allowance of the address the genuine
    (restarted) switch speaks from: each address has its own. An answer sent to a configured address
    (a client to its masters, FMRP between masters) passes ``None``: whatever frame drew it, the Challenge
    reaches the genuine peer, so one allowance per peer is right there.

    Bounds: only entries answered within the last ``interval`` are kept (an older one limits nothing and is
    dropped as time passes); at most ``per_peer`` (default 4) addresses per peer — a further address
    takes the place of the one answered longest ago — and at most ``capacity`` (default 4,096) entries in
    all, the oldest answer going first (4,096 answers within 50 ms is 80,000/s). Dropping an entry early
    only lets its address be answered again sooner, never later, so no source can make another wait.
    Anti-amplification: at most one Challenge (a small datagram) per incoming datagram always, and at most
    one per ``interval`` per (peer, address) while at most ``per_peer`` addresses send that peer's frames.
    """

    __slots__ = ("_order", "_peers", "capacity", "evicted", "interval", "per_peer")

    def __init__(self, interval: float, per_peer: int = 4, capacity: int = 4096) -> None:
        if per_peer < 1 or capacity < 1:
            raise ValueError(f"need per_peer >= 1 and capacity >= 1, got {per_peer}, {capacity}")
        self.interval = interval
        self.per_peer = per_peer
        self.capacity = capacity
        self._peers: dict[str, dict[Hashable, float]] = {}        # peer -> address -> last answer, oldest first
        self._order: dict[tuple[str, Hashable], float] = {}      # every entry, oldest answer first
        self.evicted = 0          # entries dropped before their interval ran out (per_peer or capacity)

    def __len__(self) -> int:
        return len(self._order)

    def allow(self, peer: str, address: Hashable, now: float) -> bool:
        """Whether ``peer`` may be answered at ``address`` now (if so, the answer is recorded)."""
        self._expire(now)
        addrs = self._peers.get(peer, {})
        last = addrs.get(address)
        if last is not None:
            if now - last < self.interval:
                return False
            self._drop(peer, address)
        elif len(addrs) >= self.per_peer:
            self._drop(peer, next(iter(addrs)))
            self.evicted += 1
        self._peers.setdefault(peer, {})[address] = now
        self._order[(peer, address)] = now
        if len(self._order) > self.capacity:
            self._drop(*next(iter(self._order)))
            self.evicted += 1
        return True

    def _expire(self, now: float) -> None:
        order = self._order
        while order:
            entry = next(iter(order))
            if now - order[entry] < self.interval:
                return
            self._drop(*entry)

    def _drop(self, peer: str, address: Hashable) -> None:
        del self._order[(peer, address)]
        addrs = self._peers[peer]
        del addrs[address]
        if not addrs:
            del self._peers[peer]
