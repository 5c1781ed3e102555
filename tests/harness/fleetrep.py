"""The fleet's LSD replica of one switch, or of every switch in step with the multicast group (issue #18).

`Rep` follows `client.replica.LsdReplica`'s rules (terms, fulls, deltas applied strictly in order, gaps,
keepalives, rate-limited requests, fail-static probing, a backup serving a switch whose master is silent)
but holds no LSD: only the (term, version) it is at. A (term, version) names one content fabric-wide, so
the fleet worker keeps one reference LinkStateDB per term (tests.harness.fleet) and the content checks
(digest, decoding) are done once per datagram by the worker, which passes the result in.

Why a separate state object: with multicast every switch hears the same group datagrams. A worker keeps
ONE `Rep` for all its switches that are *in step* with the group (same state, same timers) and applies a
group datagram to it once: O(1) per datagram however many switches follow it. A switch gets its own copy
(`copy()`) only when a unicast message would make it differ (its own snapshot, repair delta, a new term
learnt alone) and rejoins the shared one as soon as `key(now)` says the two would behave identically from
now on. Actions are returned as `Request(targets, term, version)`: the worker sends one LsdRequest per
switch the `Rep` stands for.

Pure: `now` passed in, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_NONE = -1


@dataclass(frozen=True, slots=True)
class RepConfig:
    masters: tuple[str, ...]
    silence: float            # master_silence: proto.budget.master_silence, like LsdReplica's default
    interval: float           # request_interval (proto.budget), like LsdReplica's default


@dataclass(frozen=True, slots=True)
class Request:
    """Send LsdRequest(switch, term, version) to each of `targets`, for every switch this Rep stands for."""

    targets: tuple[str, ...]
    term: int
    version: int


class Rep:
    __slots__ = ("announced", "asked", "cfg", "data_term", "fail_static", "heard_at", "master", "master_heard_at",
                 "mismatch", "need_sync", "next_request", "server", "server_heard_at", "term", "version")

    def __init__(self, cfg: RepConfig, now: float) -> None:
        self.cfg = cfg
        self.version = _NONE            # -1: no LSD yet
        self.data_term = 0
        self.term = 0
        self.master: str | None = None
        self.announced = -1
        self.need_sync = True
        self.fail_static = False
        self.heard_at = now             # start counts as heard (LsdReplica)
        self.master_heard_at = now
        self.server: str | None = None
        self.server_heard_at = -math.inf
        self.next_request = now + cfg.interval   # LsdReplica: the first request waits for a master to be known
        self.asked: tuple[str, ...] = ()   # the replicas the last request went to
        self.mismatch = False           # last snapshot refused for another fabric digest

    def copy(self) -> Rep:
        r = Rep.__new__(Rep)
        for k in Rep.__slots__:
            setattr(r, k, getattr(self, k))
        return r

    def key(self, now: float) -> tuple[object, ...]:
        """Two Reps with equal keys at `now` behave identically for every input from now on: times that are
        already past their use are normalised (a request allowed since t1 or since t2 < now: allowed)."""
        s = self.cfg.silence
        v = self.version
        # an announcement at or below our version changes nothing — only if both are of the same term (our
        # data may be of an older term than the announcement: then a later full of that term at a lower
        # version still leaves us behind the announced one)
        announced = max(self.announced, v) if v >= 0 and self.data_term == self.term else self.announced
        return (v, self.data_term if v >= 0 else None, self.term, self.master, announced,
                self.need_sync, self.fail_static, None if self.fail_static else max(self.heard_at, now - s),
                None if self.master is None else max(self.master_heard_at, now - s),
                self.server, None if self.server is None else max(self.server_heard_at, now - s),
                max(self.next_request, now), self.asked if self.next_request > now else None, self.mismatch)

    # ------------------------------------------------------------------------------------------ queries
    @property
    def has_data(self) -> bool:
        return self.version >= 0

    def master_alive(self, now: float) -> bool:
        return self.master is not None and now < self.master_heard_at + self.cfg.silence

    def served(self, now: float) -> bool:
        return (self.server is not None and not self.master_alive(now)
                and now < self.server_heard_at + self.cfg.silence)

    def next_deadline(self) -> float:
        s = self.cfg.silence
        d = math.inf
        if not self.fail_static:
            d = self.heard_at + s
        if (self.need_sync or self.fail_static) and self.next_request < d:
            d = self.next_request
        if self.server is not None:
            t = max(self.next_request, self.master_heard_at + s)
            if t < self.server_heard_at + s and t < d:
                d = t
        return d

    # ------------------------------------------------------------------------------------------ inputs
    def on_full(self, master: str, term: int, version: int, digest_ok: bool, valid: bool, backup: bool,
                now: float, out: list[Request]) -> None:
        if self._accept(master, term, backup, now) is None:
            return
        if not digest_ok:
            self.mismatch = True
            return      # no request: the master would answer with the same snapshot
        if self.has_data and self.data_term == term and version < self.version:
            return      # stale
        if not valid:
            self.need_sync = True
            self._maybe_request(now, out)
            return
        self.version, self.data_term, self.mismatch = version, term, False
        self._answered(now, version)

    def on_delta(self, master: str, term: int, frm: int, to: int, valid: bool, backup: bool, now: float,
                 out: list[Request]) -> None:
        if self._accept(master, term, backup, now) is None:
            return
        if self.has_data and self.data_term == term and frm == self.version:
            if not valid:
                self.need_sync = True
                self._maybe_request(now, out)
                return
            self.version = to
            self.announced = max(self.announced, to)
            self._answered(now, to)
            return
        if self.has_data and self.data_term == term and to <= self.version:
            return      # a duplicate or reordered old delta (deltas are net: an older from_version is a gap)
        self.announced = max(self.announced, to)
        self._gap(now, out)

    def on_keepalive(self, master: str, term: int, version: int, backup: bool, now: float,
                     out: list[Request]) -> None:
        new = self._accept(master, term, backup, now)
        if new is None:
            return
        self.announced = max(self.announced, version)
        if new or not self.has_data or self.data_term != self.term or version > self.version:
            self._gap(now, out)
        elif version == self.version:
            self.need_sync = False

    def on_report_ack(self, master: str, term: int, backup: bool, now: float, out: list[Request]) -> None:
        """LsdReplica.on_report_ack: a master's own ReportAck names the master of its term."""
        if backup or self._accept(master, term, False, now) is None:
            return
        self._maybe_request(now, out)

    def tick(self, now: float, out: list[Request]) -> None:
        if not self.fail_static and now >= self.heard_at + self.cfg.silence:
            self.fail_static = True
        self._maybe_request(now, out)

    # ------------------------------------------------------------------------------------------ internals
    def _accept(self, master: str, term: int, backup: bool, now: float) -> bool | None:
        if master not in self.cfg.masters or term < self.term:
            return None
        if backup:
            new = term > self.term
            if new:
                self.term, self.master, self.announced, self.need_sync = term, None, -1, True
                self.next_request = now
            if self.master_alive(now):
                return new
            if self.server != master:
                self.next_request = min(self.next_request, now + self.cfg.interval)
            self.server = master
            self.server_heard_at = self.heard_at = now
            self.fail_static = False
            return new
        new = term > self.term or master != self.master
        if term > self.term:
            self.term, self.master, self.announced, self.need_sync = term, master, -1, True
            if self.version >= 0 or not (master in self.asked and now < self.next_request):
                self.next_request = now     # LsdReplica: unless we hold no LSD and that master has our request
        elif master != self.master:
            self.master, self.announced, self.need_sync = master, -1, True
        self.heard_at = self.master_heard_at = now
        self.server = None
        self.fail_static = False
        return new

    def _gap(self, now: float, out: list[Request]) -> None:
        self.need_sync = True
        self._maybe_request(now, out)

    def _answered(self, now: float, version: int) -> None:
        self.next_request = now
        self.need_sync = self.data_term != self.term or self.announced > version

    def _maybe_request(self, now: float, out: list[Request]) -> None:
        served = self.served(now)
        probing = self.fail_static
        if not (self.need_sync or probing or served) or now < self.next_request:
            return
        term = self.data_term if self.has_data else self.term
        if self.master is not None and self.master_alive(now):
            targets: tuple[str, ...] = (self.master,)
        elif served and self.server is not None:
            targets = (self.server,)
        else:
            targets = self.cfg.masters
        out.append(Request(targets, term, self.version))
        self.asked = targets
        self.next_request = now + (self.cfg.silence if probing and not served else self.cfg.interval)
