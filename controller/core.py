"""MasterCore: the pure master replica — reports in, LSD versions and distribution out.

`now` goes in, actions come out (`controller.actions`): `Send(dest, msg)` datagrams, `PersistTerm`, and
events for metrics and logs. No sockets, no clock, no threads; the asyncio runtime (`controller.server`)
and the tests drive it the same way:

    actions = core.handle(sender, msg, now)     # a decoded datagram (the Codec already checked HMAC/replay)
    actions = core.tick(now)                    # at core.next_deadline() (or earlier; ticks are idempotent)

Roles (driven by a RoleDriver, FMRP in every deployment: controller.roles.FmrpDriver):
- MASTER of a term: accepts port reports, derives link states from both ends, bumps the LSD version once
  per batch of effective changes, distributes to clients and streams to the other masters (backups).
- BACKUP of a term: applies LsdFull/LsdDelta from that term's leader, answers ReplicationAck; ignores
  client reports (it only notes that the client exists, so it can announce itself fast if promoted).
- INACTIVE: neither (init / electing / no majority). Clients keep their last LSD (fail-static).

Every message the core sends carries its term. A message carrying a higher term is refused; a master's is
reported as a `TermSeen` event (what to do about it — step down, adopt the term — is the role driver's
decision), a switch's is not: a switch signs with its own key and is no evidence of a newer master.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.actions import (
    Action,
    InputLoss,
    PeerAcked,
    Rejected,
    ReportAccepted,
    RoleChanged,
    Send,
    SwitchSilent,
    TermSeen,
    VersionChanged,
)
from controller.borders import BorderSessions
from controller.coredrains import DrainOps
from controller.coreguard import GuardOps
from controller.corerequests import RequestOps
from controller.corerollout import RolloutOps
from controller.coretypes import DrainRefused, NotMaster, Role, UnknownTarget
from controller.damping import Damper
from controller.distribution import Distributor, Peer
from controller.drains import DrainBook
from controller.guard import Guard
from controller.linkstate import LinkStateDeriver
from controller.nextlsd import NextLsd
from controller.reach import ReachTracker
from controller.rollout import Rollout
from proto.budget import SETTLE_MIN_SWITCHES, TICK_PEERS, settle_window
from proto.config import Fabric
from proto.lsd import DRAINED_STATES, LinkState, LinkStateDB, LsdError, decode_changes
from proto.messages import (
    DrainNotes,
    DrainNotesAck,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    PortReport,
    RelayedReport,
    ReplicationAck,
    ReportAck,
)

__all__ = ["ClientInfo", "DrainRefused", "MasterCore", "NotMaster", "Role", "UnknownTarget"]

@dataclass(frozen=True, slots=True)
class ClientInfo:
    switch: str
    last_report_age: float | None      # seconds since the last accepted report; None: never
    last_heard_age: float | None       # seconds since any valid datagram from it
    acked_term: int | None
    acked_version: int | None          # its last LsdRequest (clients ask on a gap only: may be superseded)
    sent_version: int | None           # what we last sent it (in our term; unconfirmed)
    lag: int | None                    # version - acked_version while that is its latest word, else None
    alive: bool                        # reported within switch_dead
    fulls_sent: int
    deltas_sent: int


class MasterCore(DrainOps, RolloutOps, RequestOps, GuardOps):
    def __init__(self, fabric: Fabric, master_id: str) -> None:
        fabric.master(master_id)                     # KeyError if not configured
        self.fabric = fabric
        self.id = master_id
        self.role = Role.INACTIVE
        self.term = 0
        self.leader: str | None = None
        # links, then the borders' external slots (issue #13, `Fabric.external_slots`)
        self.lsd = LinkStateDB(fabric.lsd_size, history=fabric.lsd.history)
        self._slots_of = {s.name: fabric.slots_of(s.name) for s in fabric.switches if s.bgp is not None}
        self.borders = BorderSessions()              # the borders' eBGP session summaries (REST only)
        #: term in which the LSD content was built/received; None = invalid (never had one)
        self.lsd_term: int | None = None
        #: while MASTER and `dist.held`: when the hold ends at the latest (see become_master)
        self.hold_until: float | None = None
        self.switch_names = frozenset(s.name for s in fabric.switches)
        self.master_ids = frozenset(m.id for m in fabric.masters)
        self.deriver = LinkStateDeriver(fabric)
        self.guard = Guard(fabric)
        #: master-side damping (issue #19): per-link flap penalty, per-switch UP rate (controller.damping)
        self.damper = Damper(fabric.damping, len(fabric.links), [(k.a.switch, k.b.switch) for k in fabric.links])
        self._held_recheck_at = float("-inf")
        self.master_index = {m.id: i for i, m in enumerate(fabric.masters)}
        # A live client sends a new report to every replica each report_refresh: fresh for two of them.
        self.reach = ReachTracker(len(fabric.masters), 2 * fabric.timers.report_refresh + fabric.timers.keepalive)
        self._served_at: dict[str, float] = {}       # switch -> last LsdRequest answered as a backup
        #: switch -> (digest, when) of its last report refused for another config digest (issue #21)
        self._other_config: dict[str, tuple[str, float]] = {}
        #: switch -> ("unknown", when): it asked for the LSD holding one (version >= 0) while this mastership
        #: started without one, and has not reported under our config yet (it may run another: issue #21)
        self._unreported: dict[str, tuple[str, float]] = {}
        #: this mastership started without a valid LSD: nothing it publishes is known to any client
        self._unheard = False
        #: inside begin_batch()/end_batch(): the version this batch created (-1: none yet); None: no batch
        self._batch: int | None = None
        #: issue #21: the current and (while prepared) the next config; see controller.rollout
        self.rollout = Rollout(fabric)
        #: switch -> (usable fabric ports, report_seq, when) of its last report under the next config
        self._next_usable: dict[str, tuple[frozenset[int], int, float]] = {}
        #: while prepared and MASTER: the LSD under the next config served to moved switches (controller.nextlsd)
        self._next_lsd: NextLsd | None = None
        #: the evidence about the next config's new links changed since `_next_lsd` was carried
        self._next_dirty = False
        t = fabric.timers
        settle = settle_window(len(fabric.switches), t.pacing)
        self.dist = Distributor(
            master_id,
            fabric.digest,
            pacing=t.pacing,
            max_update_rate=t.max_update_rate,
            keepalive=t.keepalive,
            client_dead=t.switch_dead,
            multicast=fabric.distribution.mode == "multicast",
            settle_quiet=settle.quiet,
            settle_max=settle.max_wait,
            max_per_tick=TICK_PEERS if len(fabric.switches) >= SETTLE_MIN_SWITCHES else 0,
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
        reported under this mastership keep their replicated state (silence is not evidence).

        Zero data-plane impact: every client still forwards on the LSD it got from the old master, so the
        new master must not publish anything that is not at least as true as that. It announces itself at
        once (a Keepalive of the new term to every client it has ever heard from: they re-send their
        reports and ask for the LSD), but *holds* LSD updates to clients until every switch has reported
        under this mastership, or `keepalive` has passed (replicated LSD: what is still unreported keeps
        its replicated state, i.e. exactly what the clients already have), or `switch_dead` has passed
        (no valid LSD, e.g. every master restarted: publishing the empty LSD would wipe every client's
        routes). The first full snapshot of the new term therefore equals the clients' state except for
        changes that really happened, and a client reprograms nothing for it. Backups get the LSD at once if
        it was replicated; without a valid LSD they are held too (issue #21: they would serve it to a switch
        that asks them). While such a mastership hears switches on another config, the hold never times out
        (see _maybe_release).
        """
        if term < self.term:
            raise ValueError(f"become_master: term {term} < current term {self.term}")
        replicated = self.lsd_term is not None
        self.role, self.term, self.leader = Role.MASTER, term, self.id
        lsd_states = self.lsd.states()
        lsd_drained = {i for i, s in enumerate(lsd_states) if s in DRAINED_STATES}
        # The LSD decides (a replicated note it does not enact was never in force); without an LSD, notes
        # this replica saved before every replica restarted are the operator's word (controller.durable).
        if replicated or not self.drains.restored:
            self.drains.prune(lsd_drained)
        self.drains.inherit(lsd_drained, {i for i in lsd_drained if lsd_states[i] == LinkState.DRAINED_DOWN})
        self._unnoted = lsd_drained - self.drains.drained()
        self._set_drained()
        self._notes_term = term
        self._notes_acked.clear()
        self._notes_sent_at.clear()
        self.deriver.start_mastership(now)
        self.guard.reset()
        self.damper.reset()
        self.lsd_term = term
        for mid in sorted(self.master_ids - {self.id}):          # a fixed order: replayable runs
            self.dist.peer(mid, True, now)
        self.dist.activate(term, now)
        # A rollout prepared here: the switches this replica heard report under the next config (as a backup
        # too) are served its LSD; a view of this mastership, on this LSD's version sequence (NextLsd).
        self._next_lsd = None
        self.dist.next = None
        for p in list(self.dist.peers.values()):
            if not p.is_master:
                self.dist.set_moved(p, self._holds_next(p.name), now)
        # Without a valid LSD, what we build is unheard until the switches report: not even the backups get
        # it (they would serve it to a switch that asks them, controller.core._serve_as_backup).
        self.dist.hold(backups=not replicated)
        t = self.fabric.timers
        self.hold_until = now + (t.keepalive if replicated else t.switch_dead)
        self._unheard = not replicated
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
        self._next_lsd = self.dist.next = None
        self.hold_until = None
        self.deriver.start_mastership(now)
        self.guard.reset()
        self.damper.reset()
        # Tell the leader where we stand so it streams a snapshot at once.
        return [RoleChanged(self.role.value, term, leader), Send(leader, self._replication_ack())]

    def become_inactive(self, term: int | None = None) -> list[Action]:
        """Neither master nor backup (init, electing, no majority). Optionally adopt a higher `term`."""
        if term is not None:
            if term < self.term:
                raise ValueError(f"become_inactive: term {term} < current term {self.term}")
            self.term = term
        self.role, self.leader = Role.INACTIVE, None
        self.guard.reset()
        self.damper.reset()
        self.dist.deactivate()
        self._next_lsd = self.dist.next = None
        self.hold_until = None
        return [RoleChanged(self.role.value, self.term, None)]

    # ============================================================================ inputs
    def handle(self, sender: str, msg: object, now: float, arrived: float | None = None) -> list[Action]:
        """One decoded datagram from `sender` (a switch name or master id, authenticated by the Codec).
        `arrived`: when it reached this replica (the kernel's receive time, on the clock of `now`), if known:
        a request that waited in the input queue while its answer went out asks for nothing (corerequests)."""
        match msg:
            case PortReport():
                return self._on_report(sender, msg, now, arrived=arrived)
            case LsdRequest():
                return self._on_lsd_request(sender, msg, now, arrived)
            case ReplicationAck():
                return self._on_replication_ack(sender, msg, now)
            case RelayedReport():
                return self._on_relayed(sender, msg, now)
            case LsdFull() | LsdDelta() | Keepalive():
                return self._on_from_master(sender, msg, now)
            case DrainNotes():
                return self._on_drain_notes(sender, msg)
            case DrainNotesAck():
                return self._on_drain_notes_ack(sender, msg)
        return [Rejected(sender, type(msg).__name__, "unexpected_message")]

    def peer_restarted(self, switch: str) -> None:
        """The Codec verified a new incarnation of `switch` (its client restarted; issue #19): its
        report_seq numbering starts again, whatever its clock says, so the next report is not refused as
        older than the previous life's. Frames of the old incarnation can no longer be accepted."""
        view = self.deriver.views.get(switch)
        if view is not None:
            view.report_seq = -1

    def tick(self, now: float) -> list[Action]:
        if self._batch is not None:
            self._batch = -1                     # what tick() sends is published: no more folding into it
        if self.role != Role.MASTER:
            return []
        out: list[Action] = []
        self._apply_timeouts(now, out)
        self._damping_tick(now, out)
        self._maybe_release(now)
        self._notes_tick(now, out)
        self._next_refresh(now, out)
        out.extend(self.dist.tick(self.lsd, now))
        return out

    def _damping_tick(self, now: float, out: list[Action]) -> None:
        """Links whose damping penalty decayed below `reuse` are re-derived (UP if their evidence says so);
        switches whose deferred UPs are due (a token is back) have their links re-derived."""
        due = self.damper.next_deadline()
        if due is None or due > now:
            return
        reused, switches, events = self.damper.tick(now)
        out.extend(events)
        if reused:
            self._rederive(reused, now, "damping", out)
        for sw in switches:
            self._rederive(self._links_of[sw], now, "report", out, switch=sw)

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
        """End the hold when every switch reported, or at `hold_until` — but never, while this mastership
        started without a valid LSD, as long as a live switch reports under another config (issue #21): its
        links would be published DOWN for want of a report we can read, and a client restarted on our config
        would program that (it holds no LSD, so the hold is `strict` then: not even it gets the LSD)."""
        if not self.dist.held or self.hold_until is None:
            return
        everyone = len(self.deriver.views) >= len(self.switch_names)
        dead = self.fabric.timers.switch_dead      # any live entry: short-circuits, O(1) per report in a storm
        blocked = self._unheard and any(now - at < dead for t in (self._other_config, self._unreported)
                                        for _d, at in t.values())
        self.dist.strict = blocked
        if everyone or (now >= self.hold_until and not blocked):
            self.hold_until = None
            self.dist.release(now)
        elif now >= self.hold_until:
            self.hold_until = now + self.fabric.timers.keepalive      # look again (a switch may go silent)

    def other_config(self, now: float) -> dict[str, str]:
        """Live switches (heard within switch_dead) whose last report carried another config digest, and
        which have not reported under ours since: switch -> their digest ("unknown": it asked for the LSD
        holding one, under a mastership that started without one, and has not reported under our config)."""
        dead = self.fabric.timers.switch_dead
        for table in (self._other_config, self._unreported):
            for sw in [sw for sw, (_d, at) in table.items() if now - at >= dead]:
                del table[sw]
        return {**{sw: d for sw, (d, _at) in self._unreported.items()},
                **{sw: d for sw, (d, _at) in self._other_config.items()}}

    def _note_digest(self, switch: str, digest: str, now: float) -> bool:
        """Record which config a switch reports under; True if it is ours (current, or next while a rollout
        is prepared)."""
        self.rollout.note(switch, digest, now)
        if digest in self.rollout.digests:
            self._other_config.pop(switch, None)
            self._unreported.pop(switch, None)
            return True
        self._other_config[switch] = (digest, now)
        return False

    def _apply_timeouts(self, now: float, out: list[Action]) -> None:
        """Switches that became silent by `now`: an event each (logs, metrics). No link changes: silence is
        not evidence (controller.linkstate)."""
        for sw in sorted(self.deriver.expire(now)):
            out.append(SwitchSilent(sw))

    def note_input_loss(self, dropped: int, now: float) -> list[Action]:
        """The runtime dropped `dropped` datagrams (receive queue overflow): while it knows it is losing
        input, it declares no switch silent (see LinkStateDeriver.note_input_loss), and its reach view
        does not judge it for a while (controller.reach.ReachSettle: the lost reports are its own loss)."""
        self.deriver.note_input_loss(now)
        self.reach.input_loss_at = now
        return [InputLoss(dropped)]

    def silent_switches(self, now: float) -> list[str]:
        """Switches heard under this mastership that are silent now (no report for switch_dead)."""
        return self.deriver.silent(now) if self.role == Role.MASTER else []

    def next_deadline(self) -> float | None:
        """When tick() must be called next (None: nothing scheduled)."""
        if self.role != Role.MASTER:
            return None
        times = [t for t in (self.deriver.next_deadline(), self.dist.next_deadline(), self.hold_until,
                             self._notes_deadline(), self.damper.next_deadline()) if t is not None]
        return min(times) if times else None

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
            lag, acked = None, p.acked_version
            # a switch moved to a prepared next config holds that config's LSD (controller.nextlsd)
            nxt = self.dist.next if p.moved else None
            current = nxt.version if nxt is not None and nxt.version >= 0 else self.lsd.version
            if p.acked_term == self.term and acked is not None and 0 <= acked <= current and not (
                    p.sent_term == self.term and p.sent_version is not None and p.sent_version > acked):
                lag = current - acked
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

    def switch_alive(self, switch: str, now: float) -> bool:
        """The switch reported within `switch_dead` under this mastership."""
        return self.deriver.alive(switch, now)

    def link_evidence(self, index: int, now: float) -> tuple[str, str]:
        """What each end of link `index` says of it (controller.linkstate), for the guard's view."""
        return self.deriver.evidence(index, now)

    def clients_connected(self, now: float) -> int:
        """Switches heard from within `switch_dead`."""
        dead = self.fabric.timers.switch_dead
        return sum(1 for p in self.dist.peers.values() if not p.is_master and now - p.last_heard < dead)

    # ============================================================================ internals
    def _external(self, switch: str, bits: int) -> dict[int, LinkState]:
        """A border's external slots as its report states them (issue #13): UP = some eBGP session provides
        the prefix now. Not guarded: a withdraw is the border's own first-hand evidence, and one border's
        slots never cut anything off (other borders or nothing: then the outside is gone anyway)."""
        slots = self._slots_of.get(switch)
        if not slots:
            return {}
        return {i: LinkState.UP if bits >> k & 1 else LinkState.DOWN for k, i in enumerate(slots)}

    def external_states(self) -> dict[str, dict[str, bool]]:
        """Border -> external prefix -> provided now (the LSD's external slots; REST)."""
        out: dict[str, dict[str, bool]] = {}
        for i, (sw, prefix) in enumerate(self.fabric.external_slots, start=len(self.fabric.links)):
            out.setdefault(sw, {})[str(prefix)] = self.lsd.state(i) == LinkState.UP
        return out

    def _rederive(self, indices: Iterable[int], now: float, cause: str, out: list[Action],
                  extra: dict[int, LinkState] | None = None, switch: str | None = None) -> int:
        """Re-derive `indices`; apply the effective changes (and `extra`: external slots) as ONE LSD
        version. Returns how many changed. `switch`: whose report caused it (its UPs count against its
        damping rate, controller.damping); external slots are not damped here (the border damps them)."""
        idx = indices if isinstance(indices, list | tuple | range) else list(indices)
        if self.guard.held and cause != "guard" and now >= self._held_recheck_at:
            # A held link may be corroborated by a report about another link (a dead switch's neighbours):
            # re-check them all, at most once per keepalive (a mass hold must not cost O(held) per report).
            self._held_recheck_at = now + self.fabric.timers.keepalive
            idx = sorted(set(idx) | self.guard.held.keys())
        # A report touches a handful of links: read those states rather than copying all of them.
        states = {i: self.lsd.state(i) for i in idx} if len(idx) <= 64 else self.lsd.states()
        changes = self.deriver.changes(idx, states, now)
        out.extend(self.damper.observe(idx, states, changes, now, switch))
        if cause != "guard" and (changes or self.guard.held):
            cache: dict[tuple[str, bool], bool] = {}
            out.extend(self.guard.filter(changes, states, self.lsd.states,
                                         lambda i: self._corroborated(i, now, cache), idx, now))
        if changes:
            out.extend(self.damper.filter(changes, states, switch, now))
        if extra:
            changes = {**changes, **{i: st for i, st in extra.items() if self.lsd.state(i) != st}}
        if not changes:
            return 0
        before = self.lsd.version
        urgent = any(st is not LinkState.UP for st in changes.values())     # bad news is not paced
        if self._batch is not None and self._batch == before:
            self.lsd.amend(changes)             # one version per batch of reports (begin_batch)
            self.dist.on_version(now, urgent)
            return len(changes)
        self.lsd.apply(changes)
        if self.lsd.version == before:
            return 0
        if self._batch is not None:
            self._batch = self.lsd.version
        out.append(VersionChanged(self.lsd.version, len(changes), cause))
        self.dist.on_version(now, urgent)
        return len(changes)

    def note_backlog(self, now: float, changed: bool = True) -> None:
        """The runtime has client input waiting after a turn that `changed` the LSD or not (Distributor.note_backlog)."""
        if self.role == Role.MASTER:
            self.dist.note_backlog(now, changed)

    def begin_batch(self) -> None:
        """The runtime hands over a batch of datagrams (issue #18): until end_batch(), every LSD change is
        folded into one version (nothing is sent between them: distribution runs in tick())."""
        self._batch = -1

    def end_batch(self) -> None:
        self._batch = None

    def _corroborated(self, index: int, now: float, cache: dict[tuple[str, bool], bool]) -> bool:
        """A link-down is corroborated (controller.guard) when both ends are live and say not usable, or
        one says so and the other end's switch is corroborated down (`_switch_down`): silent, or still live
        on a last report that says usable while every neighbour has lost carrier to it — a power loss, whose
        client died a moment before its links went dark, is live for `switch_dead` more on that stale word.
        (Without carrier loss a live switch's word stands: a whole tier reporting its links down wrongly
        must not take the healthy tier above it out.)"""
        a, b = self.deriver.evidence(index, now)
        if a == "down" and b == "down":
            return True
        link = self.fabric.links[index]
        if a == "down":
            return self._switch_down(link.b.switch, now, cache, dark=b == "up")
        if b == "down":
            return self._switch_down(link.a.switch, now, cache, dark=a == "up")
        return False

    def _switch_down(self, switch: str, now: float, cache: dict[tuple[str, bool], bool], dark: bool = False) -> bool:
        """A switch is corroborated down when at least two of its neighbours are live and every live
        neighbour reports its link to it not usable (independent witnesses, none contradicting) — and, with
        `dark` (the switch itself is live and says usable), without carrier: only hardware can outvote it."""
        hit = cache.get((switch, dark))
        if hit is not None:
            return hit
        witnesses = 0
        verdict = True
        for j in self._links_of[switch]:
            link = self.fabric.links[j]
            ev_a, ev_b = self.deriver.evidence(j, now)
            far = link.b if link.a.switch == switch else link.a
            ev = ev_b if link.a.switch == switch else ev_a
            if ev == "up" or (dark and ev == "down" and not self.deriver.dark(far.switch, far.port, now)):
                verdict = False
                break
            if ev == "down":
                witnesses += 1
        cache[(switch, dark)] = verdict = verdict and witnesses >= 2
        return verdict

    def _higher_term(self, sender: str, msg_type: str, term: int, out: list[Action]) -> bool:
        """A message of a higher term is refused. Only a master's (signed with a master key) is evidence of
        a newer term (`TermSeen`: the role driver may step down and persist it); a switch's is not: a switch
        signs with its own key, so one bad or broken switch could otherwise depose every master and write
        any term, up to 2^63-1, into their durable state. A stale master learns the new term from FMRP."""
        if term > self.term:
            if sender in self.master_ids:
                out.append(TermSeen(sender, term))
            out.append(Rejected(sender, msg_type, "higher_term"))
            return True
        return False

    def _admit_from_backup(self, sender: str, kind: str, backup: str, term: int, out: list[Action]) -> bool:
        """Checks shared by what the master takes from a backup (drain-notes acks, relayed reports): another
        configured master speaking for itself, in this master's term. False = refused (reason in `out`)."""
        if backup not in self.master_ids or backup == self.id:
            out.append(Rejected(sender, kind, "unknown_master"))
        elif backup != sender:
            out.append(Rejected(sender, kind, "sender_mismatch"))
        elif self._higher_term(sender, kind, term, out):
            pass
        elif self.role != Role.MASTER or term != self.term:
            out.append(Rejected(sender, kind, "not_master" if self.role != Role.MASTER else "stale_term"))
        else:
            return True
        return False

    def _admit_from_leader(self, sender: str, kind: str, master: str, term: int, out: list[Action]) -> bool:
        """Checks shared by what a backup takes from its master (LSD stream, drain notes): another configured
        master speaking for itself, not an older term (a higher one goes to the role driver), and the leader
        this backup follows. False = refused (the reason is in `out`)."""
        if master not in self.master_ids or master == self.id:
            out.append(Rejected(sender, kind, "unknown_master"))
        elif master != sender:
            out.append(Rejected(sender, kind, "sender_mismatch"))
        elif self._higher_term(sender, kind, term, out):
            pass
        elif term < self.term:
            out.append(Rejected(sender, kind, "stale_term"))
        elif self.role != Role.BACKUP:
            out.append(Rejected(sender, kind, "not_backup"))
        elif sender != self.leader:
            out.append(Rejected(sender, kind, "not_leader"))
        else:
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

    def reach_counts(self, now: float) -> tuple[int, ...]:
        """Per configured master: switches whose fresh report says they hear it two-way (controller.reach)."""
        return self.reach.counts(now)

    def _on_relayed(self, sender: str, m: RelayedReport, now: float) -> list[Action]:
        """A backup relays a switch's report (see RelayedReport): applied like the switch's own, not acked."""
        kind = "RelayedReport"
        out: list[Action] = []
        if not self._admit_from_backup(sender, kind, m.backup, m.term, out):
            return out
        r = m.report()
        if r.switch not in self.switch_names:
            return [Rejected(sender, kind, "unknown_switch")]
        view = self.deriver.views.get(r.switch)
        if view is not None and r.report_seq <= view.report_seq:
            return []                  # already have it (from the switch or another backup)
        return self._on_report(r.switch, r, now, relayed=True)

    def _on_report(self, sender: str, r: PortReport, now: float, relayed: bool = False,
                   arrived: float | None = None) -> list[Action]:
        kind = "PortReport"
        out: list[Action] = []
        if r.switch == sender and self._foreign_port(sender, r):
            return [Rejected(sender, kind, "unknown_port")]     # no config of ours has it: changes nothing
        if self.role != Role.MASTER and r.switch == sender and sender in self.switch_names:
            # A backup (or a replica between roles) hears every client's new reports: it notes the switch
            # (address, reachability) and acknowledges as a backup, so the client knows it hears us.
            self.dist.peer(sender, False, now)
            if self._higher_term(sender, kind, r.term, out):
                return out
            if not self._note_digest(sender, r.digest, now):
                return [Rejected(sender, kind, "digest_mismatch")]
            self.reach.note(sender, r.reach, now)
            self.borders.note(sender, r.bgp, now)
            out = [Send(sender, ReportAck(self.id, self.term, r.report_seq, backup=True))]
            leader = self.leader
            bit = self.master_index.get(leader, -1) if leader is not None else -1
            if (self.role == Role.BACKUP and bit >= 0 and r.reach and not r.reach >> bit & 1
                    and r.term <= self.term):
                # The switch hears some replica two-way but not the master: the master may not hear it
                # (reach 0 is a switch that has heard nobody yet, e.g. at bring-up: nothing to conclude).
                out.append(Send(leader, RelayedReport.of(self.id, self.term, r)))
            return out
        if not self._admit_client(sender, kind, r.switch, r.term, now, out):
            return out
        peer = self.dist.peer(sender, False, now)
        if not self._note_digest(sender, r.digest, now):
            self._maybe_release(now)
            return [Rejected(sender, kind, "digest_mismatch")]
        self.dist.set_moved(peer, self._holds_next(sender), now)
        if not relayed:
            self.reach.note(sender, r.reach, now)
        view = self.deriver.views.get(sender)
        if view is not None and self.deriver.alive(sender, now) and r.report_seq < view.report_seq:
            return [Rejected(sender, kind, "stale_report")]
        self._apply_timeouts(now, out)
        was_alive = view is not None and self.deriver.alive(sender, now)
        if view is not None and not was_alive:
            out.append(SwitchSilent(sender, False))
        peer.last_report = now
        self.borders.note(sender, r.bgp, now)
        if r.term != self.term and peer.sent_term == self.term and peer.update_due is None:
            # It still follows another term: it has not taken our snapshot (lost?) — send it again. Unless
            # the report waited in our queue while the snapshot went out (a cold start's retransmission).
            self.dist.on_request(peer, r.term, -1, self.lsd.version, now, arrived)
        usable_ports = frozenset(ps.port for ps in r.ports if ps.usable)
        dark = [ps.port for ps in r.ports if not ps.phy]
        if self.rollout.next is not None and r.digest == self.rollout.next.digest:
            prev = self._next_usable.get(sender)
            self._next_usable[sender] = (usable_ports, r.report_seq, now)
            if prev is None or prev[0] != usable_ports:
                self._next_dirty |= self._ends_new_link(sender)
        elif self._next_usable.pop(sender, None) is not None:
            self._next_dirty |= self._ends_new_link(sender)
        if (was_alive and view is not None and not self.guard.held and self.rollout.next is None
                and sender not in self._slots_of and view.usable == usable_ports & self.deriver.fabric_ports(sender)):
            # issue #18: a refresh or retransmission of what a live switch already says changes no derivation
            # (its links depend on its view and its neighbours', not on when it was heard): O(1), not O(links)
            self.deriver.set_report(sender, usable_ports, r.report_seq, now, dark)
            n_changes = 0
        else:
            if sender in self._links_of:             # a switch only in the next config has no link yet
                self.deriver.set_report(sender, usable_ports, r.report_seq, now, dark)
            n_changes = self._rederive(self._links_of.get(sender, ()), now, "report", out,
                                       self._external(sender, r.external), switch=sender)
        self._maybe_release(now)
        out.append(ReportAccepted(sender, r.report_seq, n_changes))
        if not relayed:
            peer.report_acked_at = now
            out.append(Send(sender, ReportAck(self.id, self.term, r.report_seq)))
        return out

    def _foreign_port(self, switch: str, r: PortReport) -> bool:
        """The report states a port that is not a fabric port of `switch` in the config it names (a client on
        that config reports only those: a broken or hostile one). False for a config that is not ours."""
        nxt = self.rollout.next
        try:
            if r.digest == self.fabric.digest:
                known = self.deriver.fabric_ports(switch)
            elif nxt is not None and r.digest == nxt.digest:
                known = frozenset(nxt.fabric_ports(switch))
            else:
                return False
        except KeyError:        # not a switch of that config: the checks that follow say so
            return False
        return any(ps.port not in known for ps in r.ports)

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
        out: list[Action] = []
        if not self._admit_from_leader(sender, kind, m.master, m.term, out):
            return out
        if isinstance(m, LsdFull):
            # (a pending config: this replica restarted on it mid-rollout; its leader runs it: committed)
            nxt = self.rollout.next or (self.rollout.pending_for(m.digest, now) if m.digest != self.fabric.digest
                                        else None)
            if m.digest != self.fabric.digest and nxt is not None and m.digest == nxt.digest:
                self.rollout.adopt(nxt, now)          # the leader committed the rollout we hold
                self._adopt_fabric(nxt, now)
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
