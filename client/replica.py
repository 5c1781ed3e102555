"""The client's replica of the Link State Database: in order, atomic, term-aware, fail-static (pure).

Inputs are authenticated master messages (the codec already checked HMAC, replay and field ranges):
`LsdFull`, `LsdDelta`, `Keepalive`. Outputs: `LsdApplied` (feed `states`/`changed` to the route
computer), `SendToMaster(master, LsdRequest)` and `FailStaticChanged`.

Rules
-----
- Terms: the replica follows the highest term it has seen; anything from a lower term is ignored. A
  higher term (or, within the term, another master id) means our knowledge may not match the new
  master's history: the replica keeps its LSD (routes stay) but asks
  `LsdRequest(switch, term=<term of our data>, version=<our version>)` and lets the master decide
  between a full snapshot and a delta. An `LsdFull` of the new term answers that by itself.
- Fulls: applied when of a higher term, or of the current term and not older than what we hold. The
  fabric digest must match ours, else the snapshot is refused and recorded (`refused_digest`).
- Deltas: applied only if `from_version` equals our version and the delta's term is the term our data
  came from (versions of different masterships are not comparable: after a term change the master
  answers our request with a full snapshot). A delta that ends at or below our version in our term is a
  harmless duplicate (ignored). Any other delta is a *gap*: nothing is applied, we request.
- Keepalives announce the master's version; a newer one than ours is a gap (we missed an update) -> request.
- Atomic: the snapshot/changes are decoded and validated completely before anything changes; a decode
  error leaves the replica untouched (counted in `decode_errors`) and triggers a request.
- Requests are rate-limited: at most one per `request_interval` (default: keepalive; on a big fabric
  n / budget, proto.budget.request_interval) while unanswered; an
  applied full/delta counts as the answer, so the next gap may be requested at once. Requests go to the
  master in use, or to all configured masters when none is known or it is silent. The master in use is
  learnt from its Keepalive / LsdFull / LsdDelta and from its own ReportAck (`on_report_ack`). The first
  request waits for a master to be known, at most `request_interval` (issue #18: a request to every
  replica cost each backup a rejection, or a snapshot the master was sending too).
- Fail-static: no message from the master in use (nor from a backup serving us, below) for
  `master_silence` (default 3 x keepalive; on a big fabric at least n / budget: proto.budget) ->
  `fail_static` (the last LSD stays in force, routes are not
  touched) until any replica is heard again. While fail-static it probes every configured master with an
  LsdRequest every `master_silence`, which also recovers a client whose multicast path alone is broken
  (the master answers by unicast).
- Served by a backup (issue #16): a backup that holds the LSD of the current term answers such a probe
  from its replicated LSD (messages with `backup=True`, the master's term, the backup's id). They are
  applied like the master's (a (term, version) names one content fabric-wide) but never make the backup
  "the master in use". While the master stays silent and a backup answered within `master_silence`, the
  replica polls that backup every `request_interval` (its keepalive): a switch cut off from the master
  alone follows the LSD within master_silence + request_interval + one round trip, and is not
  fail-static. A backup's message of a higher term teaches the term (the master of it is then unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from client.reporter import SendToMaster
from proto.budget import master_silence as budget_master_silence
from proto.budget import request_interval as budget_request_interval
from proto.config import Fabric
from proto.lsd import LinkStateDB, decode_changes, decode_snapshot
from proto.messages import Keepalive, LsdDelta, LsdFull, LsdRequest

__all__ = ["ConfigMismatchChanged", "FailStaticChanged", "LsdApplied", "LsdReplica", "ReplicaState"]


@dataclass(frozen=True, slots=True)
class LsdApplied:
    """The replica moved to (`term`, `version`). `changed`: link indices whose state changed (sorted);
    `states`: all link states after the update (one LinkState byte per link) — hand both to
    `RouteComputer.update(states, changed)`. `full` is True for a snapshot."""

    master: str
    term: int
    version: int
    full: bool
    changed: tuple[int, ...]
    states: bytes


@dataclass(frozen=True, slots=True)
class FailStaticChanged:
    fail_static: bool


@dataclass(frozen=True, slots=True)
class ConfigMismatchChanged:
    """The masters serve an LSD of another config than ours (`digest`: theirs), or again ours (None). While
    they do, the client programs nothing from them and keeps forwarding on what it has (issue #21)."""

    digest: str | None


Action = LsdApplied | SendToMaster | FailStaticChanged | ConfigMismatchChanged


class ReplicaState:
    """String constants for `LsdReplica.state` (REST/metrics)."""

    EMPTY = "empty"              # no LSD received yet
    SYNCED = "synced"            # in sync with the master in use, as far as we know
    RESYNCING = "resyncing"      # a gap / new term is known: a request is pending or outstanding
    FAIL_STATIC = "fail_static"  # no master heard for master_silence: keeping the last LSD


class LsdReplica:
    def __init__(self, fabric: Fabric, switch: str, *, now: float = 0.0, request_interval: float | None = None,
                 master_silence: float | None = None) -> None:
        fabric.switch(switch)  # KeyError for an unknown switch
        if not fabric.masters:
            raise ValueError(f"{fabric.source}: masters: no master configured")
        self.switch = switch
        self.digest = fabric.digest
        self.masters: tuple[str, ...] = tuple(m.id for m in fabric.masters)
        self.n_links = fabric.lsd_size      # links, then the borders' external slots (issue #13)
        self.request_interval = (budget_request_interval(fabric.timers, len(fabric.switches))
                                 if request_interval is None else request_interval)   # issue #18
        self.master_silence = (budget_master_silence(fabric.timers, len(fabric.switches))
                               if master_silence is None else master_silence)
        self.db = LinkStateDB(self.n_links, history=0)   # a replica never serves deltas
        self.has_data = False
        self.data_term = 0               # term of the master our LSD came from
        self.term = 0                    # highest term seen
        self.master: str | None = None   # master in use (of `term`)
        self.announced = -1              # highest version the master in use announced in `term`
        self.need_sync = True            # a gap / new term / no data: we must ask
        self.fail_static = False
        #: the config digest of the last LSD snapshot refused for not being ours (None: none since ours)
        self.config_mismatch: str | None = None
        self._heard_at = now             # start counts as "heard": fail-static only after a real silence
        self._master_heard_at = now      # the master in use itself (not a serving backup)
        self.server: str | None = None   # a backup that answered us while the master was silent
        self._server_heard_at = -math.inf
        # earliest time the next request may go out. The first waits for a master to be known (its ReportAck
        # of our first report, or its keepalive: then it goes at once, to that master alone), at most one
        # request_interval: asked with no master known, it went to every replica, and in a cold start each
        # backup read it, rejected it (`not_master`) or, once it held the LSD, answered it with a ~27 KB
        # snapshot the master was sending too (issue #18, stop 35)
        self._next_request = now + self.request_interval
        self._asked: tuple[str, ...] = ()  # the replicas the last request went to
        #: whether the switch forwards on routes it kept while we hold no LSD (LsdRequest.kept); None: not
        #: known yet (the switch not read back), and then no request goes out — a -1 request would be taken for
        #: a fabric bring-up's, and a new master's unheard LSD would replace the kept routes. Standalone: False.
        self.kept_routes: bool | None = False
        # Counters (metrics) and the last refusal, for operators.
        self.counters: dict[str, int] = dict.fromkeys(
            ("applied_full", "applied_delta", "requests", "gaps", "ignored_lower_term", "ignored_stale",
             "ignored_unknown_master", "refused_digest", "decode_errors", "term_changes", "master_changes",
             "fail_static_entered", "served_by_backup"), 0)
        self.last_refusal: str | None = None

    # ------------------------------------------------------------------------------------------ queries
    @property
    def version(self) -> int:
        """Our LSD version, -1 before the first snapshot."""
        return self.db.version if self.has_data else -1

    @property
    def state(self) -> str:
        if self.fail_static:
            return ReplicaState.FAIL_STATIC
        if not self.has_data:
            return ReplicaState.EMPTY
        return ReplicaState.RESYNCING if self.need_sync else ReplicaState.SYNCED

    def states(self) -> bytes:
        return self.db.states()

    def master_alive(self, now: float) -> bool:
        return self.master is not None and now < self._master_heard_at + self.master_silence

    def served(self, now: float) -> bool:
        """The master in use is silent and a backup answered within `master_silence`: we poll that backup."""
        return (self.server is not None and not self.master_alive(now)
                and now < self._server_heard_at + self.master_silence)

    def next_deadline(self) -> float:
        deadlines = [math.inf]
        if not self.fail_static:
            deadlines.append(self._heard_at + self.master_silence)
        if not self._may_request():
            # `_maybe_request` sends nothing yet: a request deadline would be due forever (a client whose
            # switch was never read back, e.g. its OVS unreachable, spun its control loop at 70-90 % of a core)
            return min(deadlines)
        if self.need_sync or self.fail_static:
            deadlines.append(self._next_request)
        if self.server is not None:
            # Poll the serving backup once the master is silent, for as long as the backup answers.
            t = max(self._next_request, self._master_heard_at + self.master_silence)
            if t < self._server_heard_at + self.master_silence:
                deadlines.append(t)
        return min(deadlines)

    # ------------------------------------------------------------------------------------------ inputs
    def on_full(self, msg: LsdFull, now: float) -> list[Action]:
        out: list[Action] = []
        if self._accept(msg.master, msg.term, now, out, msg.backup) is None:
            return out
        if msg.digest != self.digest:
            self._refuse("refused_digest", f"LsdFull from {msg.master} term {msg.term}: fabric digest "
                         f"{msg.digest[:12]}... differs from ours {self.digest[:12]}...")
            if msg.backup and self.has_data:
                # A backup that answered our request before it read our first report under this config (a
                # switch just moved to a prepared next config asks every replica): the master already serves
                # us our config's LSD, so this says nothing about what the masters serve. Refused, not a mismatch.
                return out
            if self.config_mismatch != msg.digest:
                self.config_mismatch = msg.digest
                out.append(ConfigMismatchChanged(msg.digest))
            return out   # no request: the master would answer with the same snapshot
        if self.has_data and self.data_term == msg.term and msg.version < self.db.version:
            self.counters["ignored_stale"] += 1
            return out
        try:
            states = decode_snapshot(msg.snapshot, self.n_links)
        except ValueError as e:
            self._refuse("decode_errors", f"LsdFull from {msg.master} version {msg.version}: {e}")
            self.need_sync = True
            self._maybe_request(now, out)
            return out
        old = self.db.states()
        self.db.load_snapshot(msg.version, msg.snapshot)   # validated above: cannot fail half-way
        if old == states and self.has_data:
            changed: tuple[int, ...] = ()
        else:
            changed = tuple(i for i, (a, b) in enumerate(zip(old, states, strict=True)) if a != b)
        self.has_data = True
        self.data_term = msg.term
        if self.config_mismatch is not None:
            self.config_mismatch = None
            out.append(ConfigMismatchChanged(None))
        self.counters["applied_full"] += 1
        self._answered(now, msg.version)
        out.append(LsdApplied(msg.master, msg.term, msg.version, True, changed, states))
        return out

    def on_delta(self, msg: LsdDelta, now: float) -> list[Action]:
        out: list[Action] = []
        if self._accept(msg.master, msg.term, now, out, msg.backup) is None:
            return out
        if self.has_data and self.data_term == msg.term and msg.from_version == self.db.version:
            try:
                changes = decode_changes(msg.changes, self.n_links)
            except ValueError as e:
                self._refuse("decode_errors", f"LsdDelta from {msg.master} {msg.from_version}->"
                             f"{msg.to_version}: {e}")
                self.need_sync = True
                self._maybe_request(now, out)
                return out
            db = self.db
            changed = tuple(sorted(i for i, s in changes.items() if db.state(i) != s))
            db.apply_delta(msg.from_version, msg.to_version, changes)   # checked above: atomic, cannot fail
            self.data_term = msg.term
            self.announced = max(self.announced, msg.to_version)
            self.counters["applied_delta"] += 1
            self._answered(now, msg.to_version)
            out.append(LsdApplied(msg.master, msg.term, msg.to_version, False, changed, db.states()))
            return out
        if self.has_data and self.data_term == msg.term and msg.to_version <= self.db.version:
            self.counters["ignored_stale"] += 1     # a duplicate or reordered old delta
            return out
        self.announced = max(self.announced, msg.to_version)
        self._gap(now, out)
        return out

    def on_keepalive(self, msg: Keepalive, now: float) -> list[Action]:
        out: list[Action] = []
        new = self._accept(msg.master, msg.term, now, out, msg.backup)
        if new is None:
            return out
        self.announced = max(self.announced, msg.version)
        if new or not self.has_data or self.data_term != self.term or msg.version > self.db.version:
            self._gap(now, out)   # a new master/term is asked once even if the versions look equal
        elif msg.version == self.db.version:
            self.need_sync = False     # the master in use confirms our version in our data's term
        return out

    def on_report_ack(self, master: str, term: int, backup: bool, now: float) -> list[Action]:
        """A ReportAck of our report. A master's own (not a backup's: `backup`) names the master of its
        term, like a keepalive that names no version: the master in use is learnt (and heard), and a request
        that waited for a master to be known goes now, to it alone (issue #18, stop 35: in a cold start the
        first ack comes long before the master's first LSD message)."""
        out: list[Action] = []
        if backup:
            return out               # a backup acks as a backup: it serves nothing by that (reach only)
        new = self._accept(master, term, now, out)
        if new is None:
            return out
        self._maybe_request(now, out)   # a new term set need_sync (and lifted the rate limit): ask it
        return out

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        # Same expression as next_deadline(): ticking exactly at the deadline must flip the state.
        if not self.fail_static and now >= self._heard_at + self.master_silence:
            self.fail_static = True
            self.counters["fail_static_entered"] += 1
            out.append(FailStaticChanged(True))
        self._maybe_request(now, out)
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _accept(self, master: str, term: int, now: float, out: list[Action], backup: bool = False) -> bool | None:
        """Term/master bookkeeping shared by every message. None: ignore the message (lower term or
        unknown master); True: the sender is a new master in use (new term or new id), or a backup taught us
        a new term; False: the same."""
        if master not in self.masters:
            self._refuse("ignored_unknown_master", f"message from unknown master {master!r}")
            return None
        if term < self.term:
            self.counters["ignored_lower_term"] += 1
            return None
        if backup:
            new = term > self.term
            if new:                              # a newer master exists; we do not know which one yet
                self.term = term
                self.master = None
                self.announced = -1
                self.need_sync = True
                self._next_request = now
                self.counters["term_changes"] += 1
            if self.master_alive(now):
                return new                       # a late answer: the master serves us again
            if self.server != master:
                self.counters["served_by_backup"] += 1
                self._next_request = min(self._next_request, now + self.request_interval)   # start polling
            self.server = master
            self._server_heard_at = self._heard_at = now
            if self.fail_static:
                self.fail_static = False
                out.append(FailStaticChanged(False))
            return new
        new = term > self.term or master != self.master
        if term > self.term:
            # A new term: whatever we hold may not be on the new master's history. Keep it (routes stay)
            # but ask; the master decides between a delta and a full.
            self.term = term
            self.master = master
            self.announced = -1
            self.need_sync = True
            if self.has_data or not (master in self._asked and now < self._next_request):
                self._next_request = now      # a new term answers nothing outstanding: ask at once
            # else we hold no LSD and our request for one is outstanding at that very master (issue #18: in a
            # cold start the master's first keepalive comes while our first request waits in its queue): as
            # master it answers it; read before its mastership, it made us a peer without LSD that its
            # mastership sends the LSD at once (controller.corerequests); lost, it is asked again when the
            # rate limit ends, as any request
            self.counters["term_changes"] += 1
        elif master != self.master:
            # Same term, another master id (normally impossible: one master per term). Ask, but do not
            # reset the rate limit: two masters alternating must not turn into a request storm.
            self.master = master
            self.announced = -1
            self.need_sync = True
            self.counters["master_changes"] += 1
        self._heard_at = self._master_heard_at = now
        self.server = None
        if self.fail_static:
            self.fail_static = False
            out.append(FailStaticChanged(False))
        return new

    def _gap(self, now: float, out: list[Action]) -> None:
        if not self.need_sync:
            self.counters["gaps"] += 1
        self.need_sync = True
        self._maybe_request(now, out)

    def _answered(self, now: float, version: int) -> None:
        """A full/delta was applied: the outstanding request (if any) is answered."""
        self._next_request = now
        self.need_sync = self.data_term != self.term or self.announced > version

    def set_kept_routes(self, kept: bool, now: float) -> list[Action]:
        """The switch was read back (no LSD held): whether it forwards on kept routes. May send a request."""
        self.kept_routes = kept
        out: list[Action] = []
        self._maybe_request(now, out)
        return out

    def _may_request(self) -> bool:
        """False until the switch was read back while no LSD is held (`kept_routes` None): then nothing is
        asked, and no request deadline is due."""
        return self.kept_routes is not None or self.has_data

    def _maybe_request(self, now: float, out: list[Action]) -> None:
        if not self._may_request():
            return
        served = self.served(now)
        probing = self.fail_static
        if not (self.need_sync or probing or served) or now < self._next_request:
            return
        term = self.data_term if self.has_data else self.term
        request = LsdRequest(switch=self.switch, term=term, version=self.version,
                             kept=bool(self.kept_routes) and not self.has_data)
        if self.master_alive(now) and self.master is not None:
            targets: tuple[str, ...] = (self.master,)
        elif served and self.server is not None:
            targets = (self.server,)             # poll the backup that serves us (its "keepalive")
        else:
            targets = self.masters
        out.extend(SendToMaster(m, request) for m in targets)
        self._asked = targets
        self.counters["requests"] += 1
        self._next_request = now + (self.master_silence if probing and not served else self.request_interval)

    def _refuse(self, counter: str, why: str) -> None:
        self.counters[counter] += 1
        self.last_refusal = why
