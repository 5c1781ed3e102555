"""MasterCore: the pure master replica — reports in, LSD versions and distribution out.

`now` goes in, actions come out (`controller.actions`): `Send(dest, msg)` datagrams, `PersistTerm`, and
events for metrics and logs. No sockets, no clock, no threads; the asyncio runtime (`controller.server`)
and the tests drive it the same way:

    actions = core.handle(sender, msg, now)     # a decoded datagram (the Codec already checked HMAC/replay)
    actions = core.tick(now)                    # at core.next_deadline() (or earlier; ticks are idempotent)

Roles (driven by a RoleDriver — single-master today, FMRP later):
- MASTER of a term: accepts port reports, derives link states from both ends, bumps the LSD version once
  per batch of effective changes, distributes to clients and streams to the other masters (backups).
- BACKUP of a term: applies LsdFull/LsdDelta from that term's leader, answers ReplicationAck; ignores
  client reports (it only notes that the client exists, so it can announce itself fast if promoted).
- INACTIVE: neither (init / electing / no majority). Clients keep their last LSD (fail-static).

Every message the core sends carries its term. A message carrying a higher term is refused and reported as
a `TermSeen` event: what to do about it (step down, adopt the term) is the role driver's decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from controller.actions import (
    Action,
    PeerAcked,
    Rejected,
    ReportAccepted,
    RoleChanged,
    Send,
    TermSeen,
    VersionChanged,
)
from controller.distribution import Distributor, Peer
from controller.drains import DrainBook, DrainBookFull, UndrainResult
from controller.linkstate import LinkStateDeriver
from proto.config import Fabric
from proto.drains import DrainNote, NoteError, decode_notes, encode_notes
from proto.lsd import LinkState, LinkStateDB, LsdError, decode_changes
from proto.messages import (
    DrainNotes,
    DrainNotesAck,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    PortReport,
    ReplicationAck,
    ReportAck,
)

_LINK_NAME = re.compile(r"([^:\s]+):(\d{1,5})-([^:\s]+):(\d{1,5})")  # OF ports <= 65279


class Role(StrEnum):
    INACTIVE = "inactive"
    BACKUP = "backup"
    MASTER = "master"


class NotMaster(RuntimeError):
    """An operation that only the master of the current term may do (e.g. a drain) was asked of a non-master."""


class UnknownTarget(ValueError):
    """A drain named a link or switch that the fabric does not have (message says which, and why)."""


class DrainRefused(ValueError):
    """A drain that cannot be recorded (bad who/reason text, too many drains): nothing changed."""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    switch: str
    last_report_age: float | None      # seconds since the last accepted report; None: never
    last_heard_age: float | None       # seconds since any valid datagram from it
    acked_term: int | None
    acked_version: int | None          # from its last LsdRequest
    sent_version: int | None           # what we last sent it (in our term)
    lag: int | None                    # our version - acked version (None if unknown / other term)
    alive: bool                        # reported within switch_dead
    fulls_sent: int
    deltas_sent: int


class MasterCore:
    def __init__(self, fabric: Fabric, master_id: str) -> None:
        fabric.master(master_id)                     # KeyError if not configured
        self.fabric = fabric
        self.id = master_id
        self.role = Role.INACTIVE
        self.term = 0
        self.leader: str | None = None
        self.lsd = LinkStateDB(len(fabric.links), history=fabric.lsd.history)
        #: term in which the LSD content was built/received; None = invalid (never had one)
        self.lsd_term: int | None = None
        #: while MASTER and `dist.held`: when the hold ends at the latest (see become_master)
        self.hold_until: float | None = None
        self.switch_names = frozenset(s.name for s in fabric.switches)
        self.master_ids = frozenset(m.id for m in fabric.masters)
        self.deriver = LinkStateDeriver(fabric)
        t = fabric.timers
        self.dist = Distributor(
            master_id,
            fabric.digest,
            pacing=t.pacing,
            max_update_rate=t.max_update_rate,
            keepalive=t.keepalive,
            client_dead=t.switch_dead,
            multicast=fabric.distribution.mode == "multicast",
        )
        self._links_of = {s.name: fabric.links_of(s.name) for s in fabric.switches}
        #: operator drains with who/when/why, replicated to the backups (DrainNotes, see _notes_tick)
        self.drains = DrainBook(fabric)
        self._notes_acked: dict[str, int] = {}       # backup -> serial it acknowledged in our term
        self._notes_sent_at: dict[str, float] = {}   # backup -> when we last sent it the book
        self._notes_term: int | None = None          # the term whose master wrote our book
        #: LSD-drained links no note covers (only past DrainBook's limit): stay drained until undrained
        self._unnoted: set[int] = set()
        self._link_by_end = {}
        for link in fabric.links:
            self._link_by_end[(link.a.switch, link.a.port)] = link.index
            self._link_by_end[(link.b.switch, link.b.port)] = link.index

    @property
    def version(self) -> int:
        return self.lsd.version

    @property
    def lsd_valid(self) -> bool:
        """False until this replica built (as master) or received (as backup) an LSD: FMRP's 'invalid LSD'."""
        return self.lsd_term is not None

    @property
    def election_version(self) -> int:
        """The LSD version to advertise in Hello/VoteRequest: -1 while the LSD is invalid."""
        return self.lsd.version if self.lsd_term is not None else -1

    # ============================================================================ role hooks (RoleDriver)
    def become_master(self, term: int, now: float) -> list[Action]:
        """Take mastership of `term` (>= current term), continuing the version sequence of the current LSD.

        Drains are inherited from the LSD (DRAINED links stay drained). Links whose switches have not
        reported under this mastership keep their replicated state for `switch_dead` (grace).

        Zero data-plane impact: every client still forwards on the LSD it got from the old master, so the
        new master must not publish anything that is not at least as true as that. It announces itself at
        once (a Keepalive of the new term to every client it has ever heard from: they re-send their
        reports and ask for the LSD), but *holds* LSD updates to clients until every switch has reported
        under this mastership, or `keepalive` has passed (replicated LSD: what is still unreported keeps
        its replicated state, i.e. exactly what the clients already have), or `switch_dead` has passed
        (no valid LSD, e.g. every master restarted: publishing the empty LSD would wipe every client's
        routes). The first full snapshot of the new term therefore equals the clients' state except for
        changes that really happened, and a client reprograms nothing for it. Backups get the LSD at once.
        """
        if term < self.term:
            raise ValueError(f"become_master: term {term} < current term {self.term}")
        replicated = self.lsd_term is not None
        self.role, self.term, self.leader = Role.MASTER, term, self.id
        lsd_drained = {i for i, s in enumerate(self.lsd.states()) if s == LinkState.DRAINED}
        self.drains.prune(lsd_drained)
        self.drains.inherit(lsd_drained)
        self._unnoted = lsd_drained - self.drains.drained()
        self.deriver.drained = self.drains.drained() | self._unnoted
        self._notes_term = term
        self._notes_acked.clear()
        self._notes_sent_at.clear()
        self.deriver.start_mastership(now, grace=replicated)
        self.lsd_term = term
        for mid in self.master_ids - {self.id}:
            self.dist.peer(mid, True, now)
        self.dist.activate(term, now)
        self.dist.hold()
        t = self.fabric.timers
        self.hold_until = now + (t.keepalive if replicated else t.switch_dead)
        return [RoleChanged(self.role.value, term, self.id), *self.dist.announce(self.lsd, now), *self.tick(now)]

    def become_backup(self, term: int, leader: str, now: float) -> list[Action]:
        """Follow `leader` in `term`: apply its LsdFull/LsdDelta, acknowledge with ReplicationAck."""
        if term < self.term:
            raise ValueError(f"become_backup: term {term} < current term {self.term}")
        if leader not in self.master_ids or leader == self.id:
            raise ValueError(f"become_backup: bad leader {leader!r}")
        self.role, self.term, self.leader = Role.BACKUP, term, leader
        if self._notes_term != term:          # another master's notes: its own will follow (DrainNotes)
            self.drains.replace(0, ())
            self._notes_term = term
        self.dist.deactivate()
        self.hold_until = None
        self.deriver.start_mastership(now, grace=False)
        # Tell the leader where we stand so it streams a snapshot at once.
        return [RoleChanged(self.role.value, term, leader), Send(leader, self._replication_ack())]

    def become_inactive(self, term: int | None = None) -> list[Action]:
        """Neither master nor backup (init, electing, no majority). Optionally adopt a higher `term`."""
        if term is not None:
            if term < self.term:
                raise ValueError(f"become_inactive: term {term} < current term {self.term}")
            self.term = term
        self.role, self.leader = Role.INACTIVE, None
        self.dist.deactivate()
        self.hold_until = None
        return [RoleChanged(self.role.value, self.term, None)]

    # ============================================================================ inputs
    def handle(self, sender: str, msg: object, now: float) -> list[Action]:
        """One decoded datagram from `sender` (a switch name or master id, authenticated by the Codec)."""
        match msg:
            case PortReport():
                return self._on_report(sender, msg, now)
            case LsdRequest():
                return self._on_lsd_request(sender, msg, now)
            case ReplicationAck():
                return self._on_replication_ack(sender, msg, now)
            case LsdFull() | LsdDelta() | Keepalive():
                return self._on_from_master(sender, msg, now)
            case DrainNotes():
                return self._on_drain_notes(sender, msg)
            case DrainNotesAck():
                return self._on_drain_notes_ack(sender, msg)
        return [Rejected(sender, type(msg).__name__, "unexpected_message")]

    def tick(self, now: float) -> list[Action]:
        if self.role != Role.MASTER:
            return []
        out: list[Action] = []
        self._apply_timeouts(now, out)
        self._maybe_release(now)
        self._notes_tick(now, out)
        out.extend(self.dist.tick(self.lsd, now))
        return out

    @property
    def held(self) -> bool:
        """True while a new master holds LSD updates to clients (see become_master)."""
        return self.role == Role.MASTER and self.dist.held

    def end_hold(self, now: float) -> list[Action]:
        """End the failover hold now (tests, or an operator who knows better); returns the resulting sends."""
        if self.role != Role.MASTER:
            return []
        self.hold_until = now
        return self.tick(now)

    def _maybe_release(self, now: float) -> None:
        if not self.dist.held or self.hold_until is None:
            return
        if now >= self.hold_until or len(self.deriver.views) >= len(self.switch_names):
            self.hold_until = None
            self.dist.release(now)

    def _apply_timeouts(self, now: float, out: list[Action]) -> None:
        """Silences and the end of the grace period that are due by `now` — applied before any input at
        `now`, so a dead switch costs one version (cause "timeout"), not one per report that notices it."""
        dead = self.deriver.expire(now)
        if self.deriver.grace_over(now):
            self._rederive(range(len(self.fabric.links)), now, "grace", out)
        elif dead:
            idx: set[int] = set()
            for sw in dead:
                idx.update(self._links_of[sw])
            self._rederive(sorted(idx), now, "timeout", out)

    def next_deadline(self) -> float | None:
        """When tick() must be called next (None: nothing scheduled)."""
        if self.role != Role.MASTER:
            return None
        times = [t for t in (self.deriver.next_deadline(), self.dist.next_deadline(), self.hold_until,
                             self._notes_deadline()) if t is not None]
        return min(times) if times else None

    # ============================================================================ operator drains
    def link_index(self, name: str) -> int:
        """Index of the link named "a:1-b:2" (either orientation). Raises UnknownTarget with the reason."""
        m = _LINK_NAME.fullmatch(name)
        if m is None:
            raise UnknownTarget(f"link {name!r}: expected 'switch:port-switch:port'")
        parsed = [(m[1], int(m[2])), (m[3], int(m[4]))]
        for sw, _ in parsed:
            if sw not in self.switch_names:
                raise UnknownTarget(f"link {name!r}: unknown switch {sw!r}")
        ia = self._link_by_end.get(parsed[0])
        ib = self._link_by_end.get(parsed[1])
        if ia is None or ia != ib:
            raise UnknownTarget(f"link {name!r}: no such link in fabric {self.fabric.name!r}")
        return ia

    def resolve(self, kind: str, target: str) -> tuple[str, tuple[int, ...]]:
        """(canonical target name, its link indices) of a drain target; UnknownTarget with the reason."""
        if kind == "link":
            i = self.link_index(target)
            return self.fabric.links[i].name, (i,)
        if kind == "switch":
            return target, self._switch_links(target)
        raise UnknownTarget(f"drain target kind {kind!r}: expected 'link' or 'switch'")

    def drain(self, kind: str, target: str, now: float, *, who: str | None = None, reason: str | None = None,
              at: float = 0.0) -> tuple[list[Action], tuple[int, ...]]:
        """Drain a link ("a:1-b:2", either orientation) or every link of a switch, noting who/when(`at`,
        Unix seconds)/why. Replaces the note of a target drained before. Returns (actions, link indices).
        Raises NotMaster, UnknownTarget, DrainRefused; nothing changes then."""
        self._check_master()
        name, indices = self.resolve(kind, target)
        try:
            # milliseconds: what the replicated note carries, so every replica shows the same time
            self.drains.drain(DrainNote(kind, name, who, round(at, 3), reason))
        except (NoteError, DrainBookFull) as e:
            raise DrainRefused(str(e)) from None
        return self._drains_changed(indices, now), indices

    def undrain(self, kind: str, target: str, now: float) -> tuple[list[Action], UndrainResult]:
        """Lift the drain of a link or switch. Links that another drain still covers stay drained (listed in
        the result's `still`). Raises NotMaster, UnknownTarget."""
        self._check_master()
        name, indices = self.resolve(kind, target)
        result = self.drains.undrain(kind, name)
        self._unnoted.difference_update(indices)
        return self._drains_changed(indices, now), result

    def drain_link(self, index: int, now: float) -> list[Action]:
        return self.drain("link", self._index_name(index), now)[0]

    def undrain_link(self, index: int, now: float) -> list[Action]:
        return self.undrain("link", self._index_name(index), now)[0]

    def drain_switch(self, switch: str, now: float) -> list[Action]:
        return self.drain("switch", switch, now)[0]

    def undrain_switch(self, switch: str, now: float) -> list[Action]:
        return self.undrain("switch", switch, now)[0]

    def _index_name(self, index: int) -> str:
        if not 0 <= index < len(self.fabric.links):
            raise UnknownTarget(f"link index {index}: out of range")
        return self.fabric.links[index].name

    def _switch_links(self, switch: str) -> tuple[int, ...]:
        if switch not in self.switch_names:
            raise UnknownTarget(f"switch {switch!r}: not in fabric {self.fabric.name!r}")
        return self._links_of[switch]

    def _check_master(self) -> None:
        if self.role != Role.MASTER:
            raise NotMaster(f"{self.id} is {self.role.value} (term {self.term}, leader {self.leader})")

    def _drains_changed(self, indices: Iterable[int], now: float) -> list[Action]:
        """The book changed: send it to the backups first (before the LSD version that enacts it), then
        re-derive the touched links as one LSD version."""
        self.deriver.drained = self.drains.drained() | self._unnoted
        out: list[Action] = []
        self._notes_acked.clear()
        self._notes_sent_at.clear()
        self._notes_tick(now, out)
        self._apply_timeouts(now, out)
        self._rederive(list(indices), now, "drain", out)
        return out

    # ---------------------------------------------------------------------------- drain notes replication
    def _notes_tick(self, now: float, out: list[Action]) -> None:
        """Send the book to every backup that has not acknowledged its serial, at most every `keepalive`.
        A book never written (serial 0) is empty, as is every backup's at the start of our term."""
        if self.role != Role.MASTER or self.drains.serial == 0:
            return
        msg: DrainNotes | None = None
        for mid in sorted(self.master_ids - {self.id}):
            if self._notes_acked.get(mid) == self.drains.serial:
                continue
            sent = self._notes_sent_at.get(mid)
            if sent is not None and now < sent + self.fabric.timers.keepalive:
                continue
            if msg is None:
                msg = DrainNotes(self.id, self.term, self.drains.serial, encode_notes(self.drains.notes))
            self._notes_sent_at[mid] = now
            out.append(Send(mid, msg))

    def _notes_deadline(self) -> float | None:
        if self.role != Role.MASTER or self.drains.serial == 0:
            return None
        pending = [self._notes_sent_at.get(mid, 0.0) + self.fabric.timers.keepalive
                   for mid in self.master_ids - {self.id} if self._notes_acked.get(mid) != self.drains.serial]
        return min(pending) if pending else None

    def _on_drain_notes(self, sender: str, m: DrainNotes) -> list[Action]:
        kind = "DrainNotes"
        if m.master not in self.master_ids or m.master == self.id:
            return [Rejected(sender, kind, "unknown_master")]
        if m.master != sender:
            return [Rejected(sender, kind, "sender_mismatch")]
        out: list[Action] = []
        if self._higher_term(sender, kind, m.term, out):
            return out
        if m.term < self.term:
            return [Rejected(sender, kind, "stale_term")]
        if self.role != Role.BACKUP:
            return [Rejected(sender, kind, "not_backup")]
        if sender != self.leader:
            return [Rejected(sender, kind, "not_leader")]
        try:
            notes = decode_notes(m.notes)
        except NoteError:
            return [Rejected(sender, kind, "malformed")]
        self.drains.replace(m.serial, notes)
        self._notes_term = m.term
        return [Send(sender, DrainNotesAck(self.id, self.term, m.serial))]

    def _on_drain_notes_ack(self, sender: str, a: DrainNotesAck) -> list[Action]:
        kind = "DrainNotesAck"
        if a.backup not in self.master_ids or a.backup == self.id:
            return [Rejected(sender, kind, "unknown_master")]
        if a.backup != sender:
            return [Rejected(sender, kind, "sender_mismatch")]
        out: list[Action] = []
        if self._higher_term(sender, kind, a.term, out):
            return out
        if self.role != Role.MASTER or a.term != self.term:
            return [Rejected(sender, kind, "not_master" if self.role != Role.MASTER else "stale_term")]
        self._notes_acked[sender] = a.serial
        return []

    # ============================================================================ views (REST)
    def link_states(self) -> list[LinkState]:
        return [LinkState(b) for b in self.lsd.states()]

    def clients(self, now: float) -> list[ClientInfo]:
        out = []
        for sw in self.fabric.switches:
            p = self.dist.peers.get(sw.name)
            view = self.deriver.views.get(sw.name)
            if p is None:
                out.append(ClientInfo(sw.name, None, None, None, None, None, None, False, 0, 0))
                continue
            lag = None
            if p.acked_version is not None and p.acked_term == self.term and p.acked_version >= 0:
                lag = max(0, self.lsd.version - p.acked_version)
            out.append(
                ClientInfo(
                    sw.name,
                    None if p.last_report is None else now - p.last_report,
                    now - p.last_heard,
                    p.acked_term,
                    p.acked_version,
                    p.sent_version if p.sent_term == self.term else None,
                    lag,
                    view is not None and self.deriver.alive(sw.name, now),
                    p.fulls_sent,
                    p.deltas_sent,
                )
            )
        return out

    def backups(self) -> list[Peer]:
        return [p for p in self.dist.peers.values() if p.is_master]

    # ============================================================================ internals
    def _rederive(self, indices: Iterable[int], now: float, cause: str, out: list[Action]) -> int:
        """Re-derive `indices`; apply the effective changes as ONE LSD version. Returns how many changed."""
        idx = indices if isinstance(indices, list | tuple | range) else list(indices)
        # A report touches a handful of links: read those states rather than copying all of them.
        states = {i: self.lsd.state(i) for i in idx} if len(idx) <= 64 else self.lsd.states()
        changes = self.deriver.changes(idx, states, now)
        if not changes:
            return 0
        before = self.lsd.version
        self.lsd.apply(changes)
        if self.lsd.version == before:
            return 0
        out.append(VersionChanged(self.lsd.version, len(changes), cause))
        self.dist.on_version(now)
        return len(changes)

    def _higher_term(self, sender: str, msg_type: str, term: int, out: list[Action]) -> bool:
        if term > self.term:
            out.append(TermSeen(sender, term))
            out.append(Rejected(sender, msg_type, "higher_term"))
            return True
        return False

    def _admit_client(self, sender: str, kind: str, switch: str, term: int, now: float,
                      out: list[Action]) -> bool:
        """Checks shared by every client message: a known switch speaking for itself, no higher term
        (then `out` holds what to do about it), and this replica the master. False = reject (in `out`)."""
        if switch not in self.switch_names:
            out.append(Rejected(sender, kind, "unknown_switch"))
            return False
        if switch != sender:
            out.append(Rejected(sender, kind, "sender_mismatch"))
            return False
        self.dist.peer(sender, False, now)      # track the client (address book, last heard)
        if self._higher_term(sender, kind, term, out):
            return False
        if self.role != Role.MASTER:
            out.append(Rejected(sender, kind, "not_master"))
            return False
        return True

    def _on_report(self, sender: str, r: PortReport, now: float) -> list[Action]:
        kind = "PortReport"
        out: list[Action] = []
        if not self._admit_client(sender, kind, r.switch, r.term, now, out):
            return out
        peer = self.dist.peer(sender, False, now)
        if r.digest != self.fabric.digest:
            return [Rejected(sender, kind, "digest_mismatch")]
        view = self.deriver.views.get(sender)
        if view is not None and self.deriver.alive(sender, now) and r.report_seq < view.report_seq:
            return [Rejected(sender, kind, "stale_report")]
        self._apply_timeouts(now, out)
        peer.last_report = now
        if r.term != self.term and peer.sent_term == self.term and peer.update_due is None:
            # It still follows another term: it has not taken our snapshot (lost?) — send it again.
            self.dist.on_request(peer, r.term, -1, self.lsd.version, now)
        self.deriver.set_report(sender, (ps.port for ps in r.ports if ps.usable), r.report_seq, now)
        n_changes = self._rederive(self._links_of[sender], now, "report", out)
        self._maybe_release(now)
        out.append(ReportAccepted(sender, r.report_seq, n_changes))
        out.append(Send(sender, ReportAck(self.id, self.term, r.report_seq)))
        return out

    def _on_lsd_request(self, sender: str, r: LsdRequest, now: float) -> list[Action]:
        kind = "LsdRequest"
        out: list[Action] = []
        if not self._admit_client(sender, kind, r.switch, r.term, now, out):
            return out
        peer = self.dist.peer(sender, False, now)
        self.dist.on_request(peer, r.term, r.version, self.lsd.version, now)
        if r.term == self.term and 0 <= r.version <= self.lsd.version:
            out.append(PeerAcked(sender, r.version, self.lsd.version - r.version))
        return out

    def _on_replication_ack(self, sender: str, a: ReplicationAck, now: float) -> list[Action]:
        kind = "ReplicationAck"
        if a.backup not in self.master_ids or a.backup == self.id:
            return [Rejected(sender, kind, "unknown_master")]
        if a.backup != sender:
            return [Rejected(sender, kind, "sender_mismatch")]
        out: list[Action] = []
        if self._higher_term(sender, kind, a.term, out):
            return out
        if self.role != Role.MASTER:
            return [Rejected(sender, kind, "not_master")]
        peer = self.dist.peer(sender, True, now)
        self.dist.on_request(peer, a.term, a.version, self.lsd.version, now)
        if a.term == self.term and 0 <= a.version <= self.lsd.version:
            out.append(PeerAcked(sender, a.version, self.lsd.version - a.version))
        return out

    def _on_from_master(self, sender: str, m: LsdFull | LsdDelta | Keepalive, now: float) -> list[Action]:
        kind = type(m).__name__
        if m.master not in self.master_ids or m.master == self.id:
            return [Rejected(sender, kind, "unknown_master")]
        if m.master != sender:
            return [Rejected(sender, kind, "sender_mismatch")]
        out: list[Action] = []
        if self._higher_term(sender, kind, m.term, out):
            return out
        if m.term < self.term:
            return [Rejected(sender, kind, "stale_term")]
        if self.role != Role.BACKUP:
            return [Rejected(sender, kind, "not_backup")]
        if sender != self.leader:
            return [Rejected(sender, kind, "not_leader")]
        if isinstance(m, LsdFull):
            if m.digest != self.fabric.digest:
                return [Rejected(sender, kind, "digest_mismatch")]
            try:
                self.lsd.load_snapshot(m.version, m.snapshot)
            except LsdError:
                return [Rejected(sender, kind, "malformed")]
            self.lsd_term = m.term
            out.append(VersionChanged(self.lsd.version, 0, "replication"))
        elif isinstance(m, LsdDelta):
            if self.lsd_term == m.term and m.from_version == self.lsd.version:
                try:
                    changes = decode_changes(m.changes, self.lsd.n_links)
                    self.lsd.apply_delta(m.from_version, m.to_version, changes)
                except LsdError:
                    return [Rejected(sender, kind, "malformed")]
                out.append(VersionChanged(self.lsd.version, len(changes), "replication"))
            elif self.lsd_term == m.term and m.to_version <= self.lsd.version:
                pass                                   # duplicate / already covered: just re-ack
            else:
                out.append(Rejected(sender, kind, "lsd_gap"))   # ack our version -> leader repairs
        out.append(Send(sender, self._replication_ack()))
        return out

    def _replication_ack(self) -> ReplicationAck:
        version = self.lsd.version if self.lsd_term == self.term else -1
        return ReplicationAck(self.id, self.term, version)
