"""FMRP — the Firepath Master Redundancy Protocol: sticky, term-fenced election between master replicas.

A pure state machine: `now` (monotonic seconds) goes in, actions come out. No sockets, threads or clock.

    fmrp = Fmrp(self_id, fabric.masters, fabric.timers, durable_term=store.load().term, now=now, seed=s)
    actions = fmrp.on_message(sender, msg, now)   # Hello / VoteRequest / Vote / ReplicationAck / StepDown
    actions = fmrp.tick(now)                      # at fmrp.next_deadline() (earlier is harmless)
    fmrp.set_lsd_version(core.version)            # the master core's LSD version (-1: none), before inputs

`controller.roles.FmrpDriver` is the `RoleDriver` that wires it to a `MasterCore`; what a replica remembers
besides its term and role (candidacy, lease, hand-over, configuration) is grouped in `controller.fmrpstate`.

Actions (execute them **in list order**): `SendPeer(to, msg)` (one datagram to one replica), `PersistTerm`
(`controller.actions.PersistTerm`: write term/voted_for durably *before* executing any later action of the
same list — it always precedes every message carrying the new term or the vote; it is not necessarily the
first action, e.g. a BecomeInactive may come before it), `BecomeMaster(term)`, `BecomeBackup(term, leader)`,
`BecomeInactive(term)` (role changes for the master core).

Protocol
--------
States INIT → BACKUP | ELECTING → MASTER, as published for Firepath, with Raft-style term fencing:

* INIT: the LSD is invalid; the replica listens for `master_dead` (the init wait) and grants no vote. A Hello
  from a MASTER whose term is not below the highest master term we know → BACKUP of it. Else → ELECTING.
* ELECTING: after a short deterministic jitter the replica bumps its durable term, votes for itself and
  sends `VoteRequest(candidate, term, version, priority)` to every replica (re-sent each hello interval
  until the round ends: 2 hello intervals, doubled per failed candidacy up to 2 x master_dead, never
  under two term writes, so an overloaded host or a slow disk still elects). Votes from a majority of the
  *configured* replicas (itself included) → MASTER; a late vote of its term still counts until it stands
  again. A failed round backs off (jittered) and retries with a new term, only while it hears (any message
  within `master_dead`) a majority: alone, a bump wins nothing (a lone replica's term climbed ~1/s).
* Voting: a replica grants at most one vote per term, and only if (a) it is not in INIT, (b) it follows no
  live master (no MASTER hello within `master_dead`) and is not itself a master holding its lease —
  **sticky**: such a replica does not even adopt the candidate's term, so a newcomer (higher priority,
  higher version, bogus huge term) can never unseat a healthy master — (c) the term is not below its own,
  and (d) the candidate's (LSD version, priority, id) is not worse than its own (tuples compared in that
  order: the latest LSD wins, then the higher priority, then the greater id) — unless its own candidacy
  already failed since it last had a master (so a better replica that cannot reach the others does not
  block the election forever). A better replica that refuses a candidate starts its own candidacy at once,
  so the freshest LSD normally wins within one round trip. Candidacy jitter is rank-ordered too: a replica
  waits a whole hello interval for each live peer it knows to have a better (version, priority, id), plus
  a random half hello interval — so the best candidate asks first with a margin of at least half a hello
  interval for delivery and scheduling (half a hello per rank: two replicas stood in one term on a loaded
  host and split the vote). If a candidate nevertheless
  receives a better-ranked candidate's request for its own term (split vote), it yields: its next attempt
  waits until the better one has had a full round of the next term.
* Durability: the term (and the vote) is persisted before any message carrying it is sent. After a
  restart the replica does not know whether it voted in its durable term, so it never votes in that term
  again and its first candidacy uses durable_term + 1: two masters can never share a term, across crashes.
* MASTER: Hello every `hello_interval` carrying (state, term, version, priority, leader). **Lease**
  (CheckQuorum): the master must hear, within `master_dead`, from a majority (itself included) that follows
  it (Hello with state backup and leader = it, or a ReplicationAck of its term); otherwise it steps down
  (StepDown, BecomeInactive): without a majority there is no master and clients stay fail-static.
* Higher terms: a Hello from a MASTER, a StepDown, a ReplicationAck, or a term the master core saw on an
  LSD/report message (`observe_term`) proves a newer master exists: the replica adopts and persists the
  term and a master steps down at once. VoteRequests carry a higher term only for replicas without a live
  master (see sticky); hellos of non-masters never move terms.
* BACKUP: a master silent for `master_dead`, or a Hello from it that no longer says MASTER, or its StepDown
  (SIGTERM, `step_down()`, like VRRP priority 0: skips the dead interval) → ELECTING. Backups follow the
  live master with the highest term, never one below their own durable term (re-anchoring, below); the term
  handed to the master core (`BecomeBackup`/`BecomeInactive`) is the highest master term known (monotonic).

Timers and the failover trade-off
---------------------------------
A crashed master is detected after `master_dead`; the best-ranked backup asks for votes after its
rank-ordered jitter and wins after one round trip; a SIGTERM step-down skips the dead interval. Shorter
timers fail over faster but risk spurious suspicions (harmless thanks to stickiness, but they cost term
bumps and fsyncs). Measured failover times: BENCHMARKS.md.

Re-anchoring (issue #19)
------------------------
A replica never *starts* following a master whose term is below its own durable term (a term it bumped in
vain while cut off, or a replayed hello of a dead master). It does not stand against that live master
either: it waits, and grants it a vote (even in INIT). The master sees the higher term in that replica's
hellos and stands again in a term above every term it knows, while staying master of its own term: its
followers vote for their live master and keep following it until its hello of the new term. A healthy
master is therefore never displaced, and every replica follows a term at least its durable one. Only a
replica that could follow it counts (a backup of another master never votes for it: sticky), and only
while the master has not been silent (no hello sent) for `master_dead`: after such a stall (SIGSTOP, a
frozen VM, an overloaded host) its backups may have elected another master, and the higher terms in the
input queued meanwhile (a voter's hello, in whatever order the runtime reads it) are that master's, whose
hello it follows (tester F8: re-anchoring there cost two terms). It re-anchors after its next hello.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from controller.actions import BecomeBackup, BecomeInactive, BecomeMaster, Handover, PersistTerm, SendPeer
from controller.fmrpstate import NEVER, UNKNOWN, Candidacy, Config, HandoverPlan, Lease, PeerView, Unknown
from controller.reach import ReachSettle, handover_target
from proto.config import Master, Timers
from proto.messages import Hello, ReplicationAck, StepDown, Vote, VoteRequest
from proto.wire import MAX_U63

__all__ = ["BecomeBackup", "BecomeInactive", "BecomeMaster", "Fmrp", "FmrpAction", "FmrpError", "FmrpState",
           "PeerView", "PersistTerm", "SendPeer"]


class FmrpError(ValueError):
    """Bad configuration or a message that cannot come from the named replica."""


class FmrpState(StrEnum):
    INIT = "init"
    BACKUP = "backup"
    ELECTING = "electing"
    MASTER = "master"


FmrpAction = SendPeer | PersistTerm | BecomeMaster | BecomeBackup | BecomeInactive | Handover


class Fmrp:
    def __init__(
        self,
        self_id: str,
        masters: Iterable[Master],
        timers: Timers,
        durable_term: int,
        now: float,
        *,
        seed: int = 0,
        reach_margin: int = 2,
        reach_dwell: float = 0.3,
        reach_settle: float = 0.0,
    ) -> None:
        masters = tuple(masters)
        ids = [m.id for m in masters]
        if len(set(ids)) != len(ids):
            raise FmrpError(f"masters: duplicate replica id in {ids}")
        if self_id not in ids:
            raise FmrpError(f"self_id: {self_id!r} is not one of the configured masters {ids}")
        if isinstance(durable_term, bool) or not isinstance(durable_term, int) or durable_term < 0:
            raise FmrpError(f"durable_term: expected a non-negative integer, got {durable_term!r}")
        if not 0 < timers.hello_interval < timers.master_dead:
            raise FmrpError(f"timers: need 0 < hello_interval ({timers.hello_interval}) < master_dead "
                            f"({timers.master_dead})")
        self._id = self_id
        priorities = {m.id: m.priority for m in masters}
        first_round = 2 * timers.hello_interval
        self._cfg = Config(
            priorities=priorities, priority=priorities[self_id], peers=tuple(i for i in ids if i != self_id),
            ids=tuple(ids), index={m: i for i, m in enumerate(ids)}, majority=len(ids) // 2 + 1,
            hello=timers.hello_interval, dead=timers.master_dead, round_first=first_round,
            round_max=max(first_round, 2 * timers.master_dead),
            reach_margin=reach_margin, reach_dwell=reach_dwell, reach_settle=reach_settle)
        # Deterministic jitter: seeded from (seed, id) — str seeds are hashed with SHA-512, not hash().
        self._rng = random.Random(f"fmrp:{seed}:{self_id}")
        # durable state
        self._term = durable_term
        self._voted_for: str | None | Unknown = UNKNOWN  # see Unknown: never vote again in durable_term
        self._durable_ok = True  # False after a failed save of term/vote, until one succeeds
        self._persist_took = 0.0  # how long term writes take (s), a decaying maximum (persisted)
        # role and what we know of the others
        self._state = FmrpState.INIT
        self._init_until = now + timers.master_dead
        self._master_term = 0  # highest term in which a master is known to exist
        self._leader: str | None = None
        self._leader_term = 0
        self._leader_heard = NEVER
        self._version = -1
        self._retired = False
        self._next_hello = now
        self._views: dict[str, tuple[Hello, float]] = {}
        self._heard: dict[str, float] = {}    # peer -> when any message of it last arrived
        self._reach: tuple[int, ...] = ()           # our own reachability view (controller.reach counts)
        self._settle = ReachSettle(self._cfg.reach_settle, self._cfg.dead / 2)   # when that view may judge us
        self._cand = Candidacy()
        self._lease = Lease()
        self._handover = HandoverPlan()
        self.handovers = 0

    # ============================================================================ read-only view
    @property
    def id(self) -> str:
        return self._id

    @property
    def state(self) -> FmrpState:
        return self._state

    @property
    def term(self) -> int:
        """Our durable term: the highest term we have seen or stood in (votes are counted in it)."""
        return self._term

    @property
    def leader(self) -> str | None:
        """The master we follow (ourselves when MASTER); None in INIT/ELECTING."""
        return self._leader

    @property
    def leader_term(self) -> int:
        """The term of `leader` (may be below `term` if we bumped ours in a vain candidacy)."""
        return self._leader_term

    @property
    def master_term(self) -> int:
        return self._master_term

    @property
    def version(self) -> int:
        return self._version

    @property
    def retired(self) -> bool:
        return self._retired

    def peers(self, now: float) -> tuple[PeerView, ...]:
        out = []
        for p in self._cfg.peers:
            seen = self._views.get(p)
            if seen is None:
                out.append(PeerView(p, None, None, None, self._cfg.priorities[p], None, None))
            else:
                h, t = seen
                out.append(PeerView(p, h.state, h.term, h.version, h.priority, h.leader, max(0.0, now - t),
                                    h.reach))
        return tuple(out)

    def backup_versions(self) -> dict[str, int]:
        """LSD versions the backups acknowledged (ReplicationAck) in our term, while MASTER."""
        return dict(self._lease.acked) if self._state is FmrpState.MASTER else {}

    def lease_ok(self, now: float) -> bool:
        """MASTER only: a majority (ourselves included) followed us within master_dead."""
        if self._state is not FmrpState.MASTER:
            return False
        if now - self._lease.since < self._cfg.dead:
            return True
        live = sum(1 for t in self._lease.followers.values() if now - t <= self._cfg.dead)
        return 1 + live >= self._cfg.majority

    @property
    def reach(self) -> tuple[int, ...]:
        return self._reach

    # ============================================================================ inputs
    def set_reach(self, counts: tuple[int, ...], heard: int | None = None, input_loss_at: float | None = None) -> None:
        """Our reach view (controller.reach counts; in hellos; when it may judge us: reach.ReachSettle)."""
        self._reach = tuple(counts)
        self._settle.heard = heard
        self._settle.input_loss_at = self._settle.input_loss_at if input_loss_at is None else input_loss_at

    def set_lsd_version(self, version: int) -> None:
        """The master core's current LSD version (-1: invalid). Used in hellos, vote requests and ranking."""
        if isinstance(version, bool) or not isinstance(version, int) or version < -1:
            raise FmrpError(f"set_lsd_version: expected an integer >= -1, got {version!r}")
        self._version = version

    def on_message(self, sender: str, msg: object, now: float) -> list[FmrpAction]:
        """One authenticated FMRP datagram from replica `sender`, handled by `TRANSITIONS[(state, type)]`.
        Other message types: []. Raises FmrpError if the message speaks for another replica."""
        if sender not in self._cfg.priorities or sender == self._id:
            raise FmrpError(f"sender: {sender!r} is not another configured master replica")
        handler = TRANSITIONS.get((self._state, type(msg)))
        if handler is None:
            return []
        claimed = _CLAIMS[type(msg)]
        if getattr(msg, claimed) != sender:
            raise FmrpError(f"{type(msg).__name__}.{claimed}: {getattr(msg, claimed)!r} does not match the "
                            f"authenticated sender {sender!r}")
        self._heard[sender] = now
        return handler(self, sender, msg, now)

    def observe_term(self, term: int, now: float) -> list[FmrpAction]:
        """The master core refused a message carrying a higher `term` (its `TermSeen` event). Terms only
        originate from elected masters, so a master of `term` exists: adopt it; step down if master; stop
        following a leader of an older term (we will follow the new master at its first hello)."""
        out: list[FmrpAction] = []
        if term <= self._master_term and term <= self._term:
            return out
        self._adopt(term, now, out)
        self._master_term = max(self._master_term, term)
        if self._state is FmrpState.MASTER and term > self._leader_term:
            self._abdicate(now, out, announce=True)
        elif self._state is FmrpState.BACKUP and self._leader_term < term and not (
                term == self._term and self._voted_for == self._leader):
            # (the term our leader re-anchors in, which we voted for: its hello of that term follows)
            self._to_electing(now, out)
        return out

    def persist_failed(self, term: int, now: float) -> list[FmrpAction]:
        """The save of `term` (and its vote) failed (full disk, I/O error); the runtime dropped the sends
        that followed it. Until a save succeeds (`persisted`) this replica neither grants a vote nor keeps
        a candidacy or mastership: its term is not durable, and a restart could reuse it. Each later
        candidacy persists again, so the election rounds' backoff is the retry."""
        out: list[FmrpAction] = []
        self._durable_ok = False
        if self._state is FmrpState.MASTER:
            self._abdicate(now, out, announce=False)
        elif self._cand.until is not None:     # the candidacy's requests were never sent
            self._cand.end_round()
            self._cand.failed += 1
            self._cand.at = now + self._retry_delay(now)
        return out

    def persisted(self, term: int, took: float = 0.0) -> None:
        """A save of `term` succeeded (`took`: seconds the write held this replica's turn): votes and
        candidacies are allowed again; rounds last at least two such writes (_round_len)."""
        if term >= self._term:
            self._durable_ok = True
        self._persist_took = max(took, self._persist_took * 0.5)   # decays by half per faster write

    @property
    def durable_ok(self) -> bool:
        return self._durable_ok

    def step_down(self, now: float) -> list[FmrpAction]:
        """Voluntary, permanent retirement (SIGTERM): a master announces StepDown to every replica so the
        backups elect at once instead of waiting `master_dead`. The replica stays reachable as a voter but
        never stands again; keep ticking it until the process exits."""
        out: list[FmrpAction] = []
        was_master = self._state is FmrpState.MASTER
        self._retired = True
        if was_master:
            self._abdicate(now, out, announce=True)
        elif self._state is not FmrpState.ELECTING:
            self._to_electing(now, out)
        self._cand.at = None
        self._cand.until = None
        self._cand.votes.clear()
        return out

    def tick(self, now: float) -> list[FmrpAction]:
        out: list[FmrpAction] = []
        st = self._state
        self._settle.ran(now)
        if st is FmrpState.MASTER:
            if not self.lease_ok(now):
                self._abdicate(now, out, announce=True)
            else:
                self._tick_reanchor(now, out)
                if self._state is FmrpState.MASTER:
                    self._check_handover(now, out)
        elif st is FmrpState.INIT:
            if now >= self._init_until:
                self._to_electing(now, out)
        elif st is FmrpState.BACKUP and now - self._leader_heard > self._cfg.dead:
            self._to_electing(now, out)
        if self._state is FmrpState.ELECTING:
            self._tick_electing(now, out)
        if now >= self._next_hello:
            self._next_hello = now + self._cfg.hello
            self._broadcast(self._make_hello(), out)
        return out

    def next_deadline(self) -> float:
        times = [self._next_hello]
        if self._handover.since is not None and self._state is FmrpState.MASTER:
            times.append(self._handover.since + self._cfg.reach_dwell)
        st = self._state
        if st is FmrpState.INIT:
            times.append(self._init_until)
        elif st is FmrpState.BACKUP:
            times.append(self._leader_heard + self._cfg.dead + 1e-9)
        elif st is FmrpState.ELECTING:
            if self._cand.until is not None:
                times += [self._cand.until, self._cand.next_request]
            elif self._cand.at is not None:
                times.append(self._cand.at)
        if st is FmrpState.MASTER and self._cand.until is not None:
            times += [self._cand.until, self._cand.next_request]
        return min(times)

    # ============================================================================ message handlers
    # One handler per (state, message type): `TRANSITIONS` below is the table; `on_message` dispatches on it.
    def _hello_to_master(self, sender: str, h: Hello, now: float) -> list[FmrpAction]:
        out: list[FmrpAction] = []
        self._views[sender] = (h, now)
        if h.state == FmrpState.MASTER:
            if h.term > self._leader_term:  # a newer master was elected without us: follow it
                self._adopt(h.term, now, out)
                self._follow(sender, h.term, now, out)
            return out  # an older (or, impossibly, equal) term: it will step down on our hellos
        if h.state == FmrpState.BACKUP and h.leader == self._id:
            self._lease.followers[sender] = now
        if h.term > self._leader_term and _could_follow(h, self._id):   # not in our term: re-anchor (#19)
            self._maybe_reanchor(now, out)
        return out

    def _hello(self, sender: str, h: Hello, now: float) -> list[FmrpAction]:
        """INIT, BACKUP, ELECTING: follow a live master (never below our durable term), or leave ours."""
        out: list[FmrpAction] = []
        self._views[sender] = (h, now)
        if h.state != FmrpState.MASTER:
            if sender == self._leader and self._state is FmrpState.BACKUP:
                # Our master says it is no longer master (restarted, lost its lease, retired): elect now.
                self._to_electing(now, out)
            return out
        if h.term < self._master_term:
            return out  # a stale master that has not heard of the newer one yet
        live = self._leader_live(now)
        if sender != self._leader and live and h.term <= self._leader_term:
            return out
        if h.term < self._term and not (live and sender == self._leader and h.term == self._leader_term):
            # Issue #19: never start following a term below our durable term (a replayed hello of a dead
            # master, or a term we bumped in vain). The master sees our term in our hellos and re-anchors
            # above it; until then we neither follow it nor stand against it.
            self._cand.lower_master, self._cand.lower_heard = sender, now
            return out
        self._adopt(h.term, now, out)
        self._follow(sender, h.term, now, out)
        return out

    def _vote_request_to_master(self, sender: str, r: VoteRequest, now: float) -> list[FmrpAction]:
        out: list[FmrpAction] = []
        if r.term <= self._term or self.lease_ok(now):
            return self._reply(r.candidate, False, out)  # sticky: a healthy master is never displaced
        self._abdicate(now, out, announce=False)  # lease lost: we are no master any more
        return self._vote_request(sender, r, now, out)

    def _vote_request(self, sender: str, r: VoteRequest, now: float,
                      out: list[FmrpAction] | None = None) -> list[FmrpAction]:
        """INIT, BACKUP, ELECTING: at most one vote per term, persisted before the reply."""
        out = [] if out is None else out
        cand = r.candidate
        if self._state is FmrpState.BACKUP and cand == self._leader and self._leader_live(now) \
                and r.term > self._term and self._durable_ok:
            # Our live master re-anchors in a term above ours (#19): vote for it and keep following it
            # until its hello of that term.
            self._adopt(r.term, now, out)
            self._voted_for = cand
            self._persist(out)
            return self._reply(cand, True, out)
        lower = self._lower_live(now)
        if r.term < self._term or self._leader_live(now) or (self._state is FmrpState.INIT and cand != lower):
            # (in INIT only the live master we heard, re-anchoring above our term, gets a vote)
            return self._reply(cand, False, out)
        self._adopt(r.term, now, out)
        if not self._durable_ok:        # a vote we cannot persist could be given twice after a restart
            return self._reply(cand, False, out)
        favour = self._handover.favour if now < self._handover.favour_until else None
        if favour is not None and cand != favour:
            return self._reply(cand, False, out)      # a hand-over is under way: only its successor
        if self._voted_for is not None and self._voted_for != cand:
            if (self._voted_for == self._id and self._cand.until is not None
                    and (r.version, r.priority, cand) > self._rank()):
                self._cand.yield_until = now + self._round_len() + self._cfg.hello   # split vote: the better one next
            return self._reply(cand, False, out)
        if (
            favour is None
            and not self._retired
            and self._cand.failed == 0
            and self._voted_for is None
            and cand != lower                 # the live master we wait for, re-anchoring: not a rival
            and self._rank() > (r.version, r.priority, cand)
        ):
            # We would make a better master: refuse and stand ourselves right away.
            if self._state is not FmrpState.ELECTING:
                self._to_electing(now, out)
            if self._cand.until is None:
                at = now + self._candidacy_delay(now)
                self._cand.at = at if self._cand.at is None else min(self._cand.at, at)
            return self._reply(cand, False, out)
        if self._voted_for is None:
            self._voted_for = cand
            self._persist(out)
        if self._state is not FmrpState.ELECTING:
            self._to_electing(now, out)
        # Give the candidate its round before we stand ourselves.
        wait = now + self._round_len() + self._candidacy_delay(now)
        if self._cand.at is None or self._cand.at < wait:
            self._cand.at = wait
        return self._reply(cand, True, out)

    def _vote_to_master(self, sender: str, v: Vote, now: float) -> list[FmrpAction]:
        """MASTER: only votes of a re-anchoring round count (a term above ours: re-anchor above it)."""
        out: list[FmrpAction] = []
        if v.term > self._term:
            self._cand.end_round()
            self._reanchor(v.term, now, out)
        elif self._cand.until is not None and v.term == self._term and v.candidate == self._id and v.granted:
            self._cand.votes.add(v.voter)
            if len(self._cand.votes) >= self._cfg.majority:
                self._become_master(now, out)
        return out

    def _vote_to_candidate(self, sender: str, v: Vote, now: float) -> list[FmrpAction]:
        """ELECTING: count a granted vote of the term we stand in; a late one still counts."""
        out = self._vote_term(sender, v, now)
        if (not out and self._cand.stood_term == self._term and self._cand.votes and v.term == self._term
                and v.candidate == self._id and v.granted):
            self._cand.votes.add(v.voter)
            if len(self._cand.votes) >= self._cfg.majority:
                self._become_master(now, out)
        return out

    def _vote_term(self, sender: str, v: Vote, now: float) -> list[FmrpAction]:
        """INIT, BACKUP: a vote (ours long over) only tells us its term."""
        out: list[FmrpAction] = []
        self._adopt(v.term, now, out)
        return out

    def _ack_to_master(self, sender: str, a: ReplicationAck, now: float) -> list[FmrpAction]:
        if a.term == self._leader_term:
            self._lease.followers[a.backup] = now
            self._lease.acked[a.backup] = a.version
        elif a.term > self._term:  # it follows a newer master
            return self.observe_term(a.term, now)
        return []

    def _ignore(self, sender: str, msg: object, now: float) -> list[FmrpAction]:
        return []

    def _step_down_to_master(self, sender: str, s: StepDown, now: float) -> list[FmrpAction]:
        out: list[FmrpAction] = []
        self._adopt(s.term, now, out)
        self._master_term = max(self._master_term, s.term)
        if s.term > self._leader_term:  # a newer master stepped down: we are stale
            self._abdicate(now, out, announce=False)
        return out

    def _step_down(self, sender: str, s: StepDown, now: float) -> list[FmrpAction]:
        out: list[FmrpAction] = []
        self._adopt(s.term, now, out)
        self._master_term = max(self._master_term, s.term)
        if s.master == self._leader and self._state is FmrpState.BACKUP and s.term >= self._leader_term:
            # Only the StepDown of the term we follow: an older one (delayed, replayed) must not make a
            # backup leave a live master.
            self._to_electing(now, out)  # skip the dead interval
        if (s.successor is not None and s.successor in self._cfg.priorities and s.term >= self._leader_term
                and self._state is FmrpState.ELECTING and self._cand.until is None):
            # A hand-over to the replica that reaches more switches (issue #16): it stands at once, every
            # replica (itself included) votes only for it for a full round. (Its hello saying it is no
            # longer master may have arrived first: we may be ELECTING already.)
            self._handover.favour, self._handover.favour_until = s.successor, now + self._cfg.round_max + self._cfg.dead
            if s.successor == self._id:
                if not self._retired:
                    self._cand.at = now
            elif self._cand.at is not None:
                self._cand.at = max(self._cand.at, self._handover.favour_until)
        return out

    def _check_handover(self, now: float, out: list[FmrpAction]) -> None:
        """MASTER: hand over to a backup that is two-way with clearly more switches (controller.reach
        .handover_target), after `reach_dwell` of the same verdict. Only backups that are live, follow us
        and acknowledged our LSD version qualify, so the successor continues our version sequence."""
        if not self._reach or self._retired or not self._settle.meaningful(self._lease.since, now):
            self._handover.since = None
            return
        views: dict[int, tuple[int, ...]] = {}
        for p, (h, t) in self._views.items():
            if (now - t <= self._cfg.dead and h.state == FmrpState.BACKUP and h.leader == self._id
                    and h.reach and self._lease.acked.get(p, -1) >= self._version):
                views[self._cfg.index[p]] = h.reach
        target = handover_target(self._cfg.index[self._id], self._reach, views, self._cfg.reach_margin)
        if target is None:
            self._handover.since = self._handover.to = None
            return
        succ = self._cfg.ids[target]
        if self._handover.to != succ or self._handover.since is None:
            self._handover.since, self._handover.to = now, succ
            return
        if now - self._handover.since < self._cfg.reach_dwell:
            return
        me, theirs = self._cfg.index[self._id], views[target]
        out.append(Handover(self._id, succ, self._leader_term, self._reach[me], theirs[target], theirs[me]))
        self.handovers += 1
        self._handover.since = self._handover.to = None
        self._broadcast(StepDown(self._id, self._leader_term, succ), out)
        self._to_electing(now, out)
        self._handover.favour, self._handover.favour_until = succ, now + self._cfg.round_max + self._cfg.dead
        self._cand.at = self._handover.favour_until

    # ============================================================================ transitions
    def _tick_electing(self, now: float, out: list[FmrpAction]) -> None:
        if self._cand.until is not None:
            if now >= self._cand.until:
                self._cand.until = None    # votes are kept: a late one for this term still counts
                self._cand.failed += 1
                self._cand.at = max(now + self._retry_delay(now), self._cand.yield_until)
            elif now >= self._cand.next_request:
                self._request_votes(now, out)
                return
        if self._cand.until is None and self._cand.at is not None and now >= self._cand.at:
            # a live master below our term will re-anchor above it (#19); too few heard: nothing to win
            if self._lower_live(now) or 1 + sum(now - t <= self._cfg.dead for t in self._heard.values()) \
                    < self._cfg.majority:
                self._cand.at = now + self._cfg.hello
                return
            self._start_candidacy(now, out)

    def _start_candidacy(self, now: float, out: list[FmrpAction]) -> None:
        self._cand.at = None
        if not self._retired:
            self._stand(self._term + 1, now, out)

    def _stand(self, term: int, now: float, out: list[FmrpAction]) -> None:
        """Stand in `term`: persist it with our own vote, then ask every replica (a single replica wins). Terms
        are u63 on the wire: a replica at the last term (a state file, a hello) stays out of elections."""
        if term > MAX_U63:
            return
        self._term = term
        self._cand.stood_term = term
        self._voted_for = self._id
        self._persist(out)
        self._cand.votes = {self._id}
        self._cand.until = now + self._round_len()
        self._cand.next_request = now + self._cfg.hello
        if len(self._cand.votes) >= self._cfg.majority:
            self._become_master(now, out)
        else:
            self._broadcast(VoteRequest(self._id, term, self._version, self._cfg.priority), out)

    def _request_votes(self, now: float, out: list[FmrpAction]) -> None:
        """Re-send our VoteRequest to the replicas whose vote we lack (every hello interval of a round)."""
        self._cand.next_request = now + self._cfg.hello
        req = VoteRequest(self._id, self._term, self._version, self._cfg.priority)
        out.extend(SendPeer(p, req) for p in self._cfg.peers if p not in self._cand.votes)

    def _become_master(self, now: float, out: list[FmrpAction]) -> None:
        self._state = FmrpState.MASTER
        self._leader = self._id
        self._leader_term = self._term
        self._master_term = self._term
        self._lease = Lease(now, {v: now for v in self._cand.votes if v != self._id})
        self._settle.new_mastership()
        self._cand.end_round()
        self._cand.at, self._cand.failed, self._cand.lower_master = None, 0, None
        out.append(BecomeMaster(self._term))
        self._next_hello = now + self._cfg.hello
        self._broadcast(self._make_hello(), out)

    def _follow(self, leader: str, term: int, now: float, out: list[FmrpAction]) -> None:
        changed = self._state is not FmrpState.BACKUP or self._leader != leader or self._leader_term != term
        self._state = FmrpState.BACKUP
        self._leader = leader
        self._leader_term = term
        self._master_term = max(self._master_term, term)
        self._leader_heard = now
        self._cand.end_round()
        self._cand.at, self._cand.failed = None, 0
        self._lease = Lease()
        if changed:
            out.append(BecomeBackup(term, leader))
            # Tell the new master at once that we follow it (its lease counts us).
            self._next_hello = now + self._cfg.hello
            out.append(SendPeer(leader, self._make_hello()))

    def _to_electing(self, now: float, out: list[FmrpAction]) -> None:
        """Leave INIT/BACKUP/MASTER for ELECTING; the candidacy starts after the rank-ordered jitter."""
        self._state = FmrpState.ELECTING
        self._handover.since = self._handover.to = None
        self._leader = None
        self._lease = Lease()
        self._cand.end_round()
        self._cand.at = None if self._retired else now + self._candidacy_delay(now)
        out.append(BecomeInactive(self._master_term))

    def _abdicate(self, now: float, out: list[FmrpAction], *, announce: bool) -> None:
        """A master stops being one (lease lost, newer term, SIGTERM). It waits master_dead before standing
        again, so the replicas that still have a majority elect first."""
        if announce:
            self._broadcast(StepDown(self._id, self._leader_term), out)
        self._to_electing(now, out)
        if self._cand.at is not None:
            self._cand.at += self._cfg.dead

    # ============================================================================ helpers
    def _adopt(self, term: int, now: float, out: list[FmrpAction]) -> bool:
        """Move to a higher term (persisted before anything else in `out` that follows)."""
        if term <= self._term:
            return False
        self._term = term
        self._voted_for = None
        if self._cand.until is not None:  # our candidacy was for an older term: it is lost
            self._cand.end_round()
            self._cand.failed += 1
            self._cand.at = now + self._retry_delay(now)
        self._persist(out)
        return True

    def _persist(self, out: list[FmrpAction]) -> None:
        voted = self._voted_for if isinstance(self._voted_for, str) else None
        # One write per handler: a later write in the same list supersedes an earlier one of the same term.
        if out and isinstance(out[-1], PersistTerm) and out[-1].term == self._term:
            out[-1] = PersistTerm(self._term, voted)
        else:
            out.append(PersistTerm(self._term, voted))

    def _reply(self, candidate: str, granted: bool, out: list[FmrpAction]) -> list[FmrpAction]:
        out.append(SendPeer(candidate, Vote(self._id, self._term, candidate, granted)))
        return out

    def _leader_live(self, now: float) -> bool:
        return self._state is FmrpState.BACKUP and now - self._leader_heard <= self._cfg.dead

    def _rank(self) -> tuple[int, int, str]:
        return (self._version, self._cfg.priority, self._id)

    def _candidacy_delay(self, now: float) -> float:
        """Rank-ordered jitter: a hello interval per live peer known to be a better candidate, plus a random
        half hello interval (the best candidate asks first, with a margin for delivery and scheduling)."""
        mine = self._rank()
        better = 0
        for p, (h, t) in self._views.items():
            if now - t <= self._cfg.dead and h.state != FmrpState.MASTER and (h.version, h.priority, p) > mine:
                better += 1
        return (2 * better + self._rng.random()) * self._cfg.hello / 2

    def _round_len(self) -> float:
        """How long a candidacy waits for votes: 2 hello intervals, doubled per failed candidacy since we
        last had a master (on an overloaded host fixed rounds ended before any vote came), at most 2 x
        master_dead, never under two term writes (the candidate's and the voter's) plus the first round."""
        doubled = min(self._cfg.round_first * 2 ** min(self._cand.failed, 8), self._cfg.round_max)
        return max(doubled, 2 * self._persist_took + self._cfg.round_first)

    def _retry_delay(self, now: float) -> float:
        backoff = self._cfg.hello * min(2 ** max(self._cand.failed - 1, 0), 8)
        return self._candidacy_delay(now) + backoff * self._rng.random()

    def _make_hello(self) -> Hello:
        # A master speaks for the term it is master of (its durable term may be a re-anchoring one ahead).
        term = self._leader_term if self._state is FmrpState.MASTER else self._term
        return Hello(self._id, self._state.value, term, self._version, self._cfg.priority, self._leader,
                     self._reach)

    def _silent(self, now: float) -> bool:
        """MASTER: our last hello is older than master_dead (a stall, an overload): our backups may have
        declared us dead and elected another master meanwhile (or, as slow as we are, not noticed)."""
        return now - (self._next_hello - self._cfg.hello) > self._cfg.dead

    def _lower_live(self, now: float) -> str | None:
        """A master below our durable term heard within master_dead (we wait for it to re-anchor)."""
        return self._cand.lower_master if now - self._cand.lower_heard <= self._cfg.dead else None

    # ------------------------------------------------------------------ re-anchoring (issue #19)
    def _maybe_reanchor(self, now: float, out: list[FmrpAction]) -> None:
        """MASTER: a live replica's durable term is above the term we are master of, so it will not follow
        us: stand again, in a term above every term we know of (the same election rules: a majority votes,
        our followers vote for their live master). We stay master of our term meanwhile."""
        if (self._cand.until is not None or now < self._cand.reanchor_at or self._retired or not self._durable_ok
                or self._silent(now)):     # we may have been replaced: its voters' terms are no vain bumps
            return
        above = [h.term for p, (h, t) in self._views.items()
                 if now - t <= self._cfg.dead and _could_follow(h, self._id) and h.term > self._leader_term]
        if above:
            self._reanchor(max(above), now, out)

    def _reanchor(self, above: int, now: float, out: list[FmrpAction]) -> None:
        self._stand(max(self._term, above) + 1, now, out)

    def _tick_reanchor(self, now: float, out: list[FmrpAction]) -> None:
        if self._cand.until is None:
            self._maybe_reanchor(now, out)
        elif now >= self._cand.until:              # failed round: retry later, in a new term
            self._cand.end_round()
            self._cand.reanchor_at = now + self._retry_delay(now)
        elif now >= self._cand.next_request:
            self._request_votes(now, out)

    def _broadcast(self, msg: object, out: list[FmrpAction]) -> None:
        for p in self._cfg.peers:
            out.append(SendPeer(p, msg))


def _could_follow(h: Hello, me: str) -> bool:
    """A replica that is no master and follows no other one: re-anchoring can win its vote. A backup of
    another master never votes for us (sticky): a term above ours there means that master is newer."""
    return h.state != FmrpState.MASTER and (h.state != FmrpState.BACKUP or h.leader == me)


#: the field of each FMRP message that names its sender (checked against the authenticated sender)
_CLAIMS: dict[type, str] = {Hello: "master", VoteRequest: "candidate", Vote: "voter", ReplicationAck: "backup",
                            StepDown: "master"}
MESSAGES: tuple[type, ...] = tuple(_CLAIMS)

_S = FmrpState
#: FMRP's transitions: (state, message type) -> handler. Every pair is listed (tests/test_fmrp.py checks
#: it); `Fmrp._ignore` marks a pair that has no effect by design.
TRANSITIONS: dict[tuple[FmrpState, type], Callable[[Fmrp, str, Any, float], list[FmrpAction]]] = {
    **{(st, Hello): Fmrp._hello for st in (_S.INIT, _S.BACKUP, _S.ELECTING)},
    (_S.MASTER, Hello): Fmrp._hello_to_master,
    **{(st, VoteRequest): Fmrp._vote_request for st in (_S.INIT, _S.BACKUP, _S.ELECTING)},
    (_S.MASTER, VoteRequest): Fmrp._vote_request_to_master,
    (_S.INIT, Vote): Fmrp._vote_term,
    (_S.BACKUP, Vote): Fmrp._vote_term,
    (_S.ELECTING, Vote): Fmrp._vote_to_candidate,
    (_S.MASTER, Vote): Fmrp._vote_to_master,
    **{(st, ReplicationAck): Fmrp._ignore for st in (_S.INIT, _S.BACKUP, _S.ELECTING)},
    (_S.MASTER, ReplicationAck): Fmrp._ack_to_master,
    **{(st, StepDown): Fmrp._step_down for st in (_S.INIT, _S.BACKUP, _S.ELECTING)},
    (_S.MASTER, StepDown): Fmrp._step_down_to_master,
}
