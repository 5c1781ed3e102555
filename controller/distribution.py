"""LSD distribution: per-peer tracking, pacing/coalescing, full-vs-delta choice, keepalives, multicast.

A *peer* is a client switch or, when we are master, a backup master (replication uses the same
LsdFull/LsdDelta messages). For each peer we remember what we believe it has (`sent_term`,
`sent_version`: optimistic, set when we send) and what it told us it has (`acked_*`, from LsdRequest or
ReplicationAck). Rules:

- A peer with no known state, or known state from another term, gets a full snapshot (versions of
  different masterships are not comparable). So does one whose version left the history window, or when
  the encoded delta would be larger than the snapshot. Otherwise it gets the minimal delta.
- Pacing: when the LSD changes, a peer's update is due `pacing` seconds later; further changes in that
  window ride in the same delta (coalescing). Updates to one peer are at least `1/max_update_rate` apart.
  Bad news is not paced: a version that takes a link out of use (`urgent`) is due at once for every peer
  with nothing pending (traffic is being lost until the remote switches reroute; the other end's report
  about the same link changes no link state, so there is nothing to coalesce), still within the rate
  limit and the cold-start settle window.
- Keepalive(master, term, version) goes to a peer when nothing was sent to it for `keepalive` seconds. A
  client held at its first contact (below) gets one at once, so it knows its master — unless our ReportAck
  told it (`Peer.report_acked_at`): then its keepalive clock just starts. A
  client that finds itself behind answers with LsdRequest(its version) and gets the missing delta (repair).
  The version announced is the one the peer (or the group) was last brought to in this term, not the
  LSD's newest: while an update waits (paced, held, settling) a client in step has nothing to repair, and
  a keepalive naming a version it cannot get yet would make every such client ask every request interval
  (issue #18: 460,000 requests in a multicast cold start). A client that lost an update still sees a
  version above its own. A peer with nothing from this term is told the LSD's version (it needs a full).
- Multicast mode: clients get one LsdDelta per coalesced change on the group (and group keepalives);
  unicast only for a new client's first full and for repairs. Backups stay unicast. When many clients are
  off the group's version (a cold start: each got its unicast snapshot at another version), the group
  update is one snapshot instead: for them a delta would be a gap, and each would ask again.
- A client silent for longer than `switch_dead` is considered gone: no more keepalives until it speaks
  again (its next report or LsdRequest makes it live and due a full snapshot). A silent client thus stops
  getting keepalives — harmless: a live client reports every `report_refresh`, far inside `switch_dead`.
- Hold (failover): a new master may `hold()` LSD updates to clients (fulls/deltas, unicast and group)
  until it knows its LSD matches reality (`release()`); keepalives still flow, backups are never held,
  nor are clients that said they hold no LSD (LsdRequest version -1: a fabric bring-up) unless the hold
  is `strict` (issue #21) or the client said its switch kept routes (`LsdRequest.kept`: a restarted
  client at -1 still forwards on the flows its switch kept, and must not get an LSD nobody heard yet).
  `announce()` sends a Keepalive of the new term at once to every client ever heard (live or not), so
  clients learn the new master in one datagram instead of after their master-silence timeout.
- Moved clients (issue #21 follow-up): while a rollout is prepared, a client whose last report carried the
  next config's digest (`set_moved`) is served the LSD under that config (`set_next`: a
  controller.nextlsd.NextLsd the core keeps) instead of the running one: full snapshots only (an `LsdDelta`
  names no digest), unicast also in multicast mode (it is left out of the group's bookkeeping: a group
  update never counts it in step), keepalives naming that view's versions. Every other rule (pacing, bad
  news at once, the rate limit, settling, holds) is the same. A move either way forgets what the peer
  holds: its next update is a full snapshot of the config it now reports under.

Scheduling is a heap of per-peer due times with lazy invalidation, so a tick costs O(due peers · log n),
not O(all peers). Messages are shared between peers in the same situation within a tick (only the
per-destination signing in the runtime is per peer).

Pure: `now` passed in, actions out.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from controller.actions import GROUP, Send
from controller.nextlsd import NextLsd
from proto.lsd import LinkStateDB, encode_changes
from proto.messages import MAX_LSD_BYTES, Keepalive, LsdDelta, LsdFull

NEVER = -math.inf
#: a group update is a snapshot instead of a delta when at least this many clients (and an eighth of them)
#: are off the group's version: a delta would be a gap for each of them (see _tick_group)
GROUP_FULL_MIN = 32


@dataclass(slots=True, eq=False)
class Peer:
    name: str
    is_master: bool
    first_seen: float
    last_heard: float
    last_report: float | None = None
    report_acked_at: float = NEVER       # last ReportAck the master sent it itself (a relayed report gets none)
    acked_term: int | None = None
    acked_version: int | None = None
    sent_term: int | None = None
    sent_version: int | None = None
    last_update_at: float = NEVER        # last LsdFull/LsdDelta sent (rate limit)
    last_send_at: float = NEVER          # last message of any kind (keepalive timer)
    synced_at: float = NEVER             # when we last brought it to (sent_term, sent_version): unicast or group
    update_due: float | None = None
    queued_at: float | None = None       # time of this peer's live heap entry
    fulls_sent: int = 0
    deltas_sent: int = 0
    kept: bool = False                   # no LSD, but its switch forwards on kept routes (LsdRequest.kept)
    moved: bool = False                  # reports under the prepared next config: served the NextLsd


@dataclass(slots=True)
class _GroupState:
    version: int | None = None           # version the group was last brought to (None: nothing sent yet)
    term: int | None = None
    last_update_at: float = NEVER
    last_send_at: float = NEVER
    update_due: float | None = None


@dataclass(slots=True)
class _TickCache:
    """Messages built once per tick and shared by every peer that needs the same thing."""

    full: LsdFull | None = None
    full_len: int = 0
    deltas: dict[int, LsdDelta | LsdFull] = field(default_factory=dict)
    keepalives: dict[int, Keepalive] = field(default_factory=dict)
    next_full: LsdFull | None = None     # the NextLsd's snapshot, for moved clients


class Distributor:
    def __init__(
        self,
        master_id: str,
        digest: str,
        *,
        pacing: float,
        max_update_rate: float,
        keepalive: float,
        client_dead: float,
        multicast: bool = False,
        settle_quiet: float = 0.0,
        settle_max: float = 0.0,
        max_per_tick: int = 0,
    ) -> None:
        self.master_id = master_id
        self.digest = digest
        self.pacing = pacing
        self.min_interval = 1.0 / max_update_rate if max_update_rate > 0 else 0.0
        self.keepalive = keepalive
        self.client_dead = client_dead
        self.multicast = multicast
        self.peers: dict[str, Peer] = {}
        self.active = False                 # only a master distributes
        self.term = 0
        self._active_since = math.inf       # when this mastership's distribution started (activate)
        # Timer wheel: distinct due times (heap) -> peers due then. Peers updated in the same tick share
        # their next due time, so a fan-out to 10,000 peers is a few list appends, not 10,000 heap ops.
        self._times: list[float] = []
        self._buckets: dict[float, list[Peer]] = {}
        # Unicast peers with no update pending: the only ones a new version must schedule.
        self._idle: dict[str, Peer] = {}
        self._group = _GroupState()
        self.held = False                   # LSD updates to clients suspended (see hold())
        #: a strict hold also holds clients that hold no LSD (issue #21: see MasterCore.other_config)
        self.strict = False
        self.hold_backups = False
        # Settling (issue #18, proto.budget.settle_window): while the LSD churns, client updates wait until
        # it has been quiet for settle_quiet, at most settle_max after the first unsent version.
        self.settle_quiet = settle_quiet
        self.settle_max = settle_max
        self._unsent_since: float | None = None
        #: input pressure (note_backlog): updates wait while the master still has reports queued, at most
        #: 4 x settle_max after the first unsent version
        self._pressure_until = float("-inf")
        #: peers handled per tick() at most (0: all due); the rest stay due: the next tick is now (issue #18:
        #: a fan-out to 30,000 clients is spread over several turns, FMRP is read in between)
        self.max_per_tick = max_per_tick
        self._settle_at: float | None = None
        self.group_fulls = 0                # group updates sent as a snapshot (many clients off the group)
        self.crossed_requests = 0           # requests that crossed the update they ask for (on_request)
        # Across ticks, for the LSD content of one snapshot object (LinkStateDB.snapshot() is cached per
        # version and rebuilt by an amend): the snapshot message, and the versions whose delta to it is bigger
        # than it (issue #18: a cold start's fan-out spans many ticks, and each tick rebuilt both — the delta
        # of ~100,000 changes only to find it too big: 16 % of the master's samples)
        self._full_msg: LsdFull | None = None
        self._too_big: dict[int, bytes] = {}
        #: while a rollout is prepared: the LSD under the next config and its digest, for moved clients
        self.next: NextLsd | None = None
        self.next_digest: str | None = None
        #: clients that report under the next config (Peer.moved)
        self.moved: dict[str, Peer] = {}

    # ----------------------------------------------------------------------------------------- peers
    def peer(self, name: str, is_master: bool, now: float) -> Peer:
        """The peer record, created on first contact (a new peer is due a full snapshot now)."""
        p = self.peers.get(name)
        if p is None:
            p = self.peers[name] = Peer(name, is_master, now, now)
            if self.active:
                self._due_update(p, now, paced=False)
        elif not self.is_live(p, now):
            # Back after a silence longer than the dead interval (probably restarted): resync from scratch.
            p.last_heard = now
            p.sent_term = p.sent_version = None
            if self.active:
                self._due_update(p, now, paced=False)
        p.last_heard = now
        return p

    def is_live(self, p: Peer, now: float) -> bool:
        return p.is_master or now - p.last_heard < self.client_dead

    def _unicast(self, p: Peer) -> bool:
        return p.is_master or not self.multicast or p.moved

    # ----------------------------------------------------------------------------------------- moved clients
    def set_moved(self, p: Peer, moved: bool, now: float) -> None:
        """`p` reports under the prepared next config (`moved`) or under the running one. A change forgets what
        it holds (versions of one config say nothing in the other) and makes it due a full snapshot now."""
        if p.is_master or p.moved == moved:
            return
        p.moved = moved
        if moved:
            self.moved[p.name] = p
        else:
            self.moved.pop(p.name, None)
        p.sent_term = p.sent_version = None
        p.synced_at = NEVER
        self._idle.pop(p.name, None)
        if self.active and self.is_live(p, now):
            self._due_update(p, now, paced=False)

    def set_next(self, view: NextLsd, digest: str) -> None:
        """The LSD moved clients are served (the core keeps it current: controller.nextlsd)."""
        self.next, self.next_digest = view, digest

    def clear_next(self, now: float) -> None:
        """The rollout ended (commit or abort): no view any more; every moved client is an ordinary one again,
        due a full snapshot of the running config (after an abort it refuses it, as before the rollout)."""
        self.next = self.next_digest = None
        for p in list(self.moved.values()):
            self.set_moved(p, False, now)

    def on_next_version(self, now: float, urgent: bool = False) -> None:
        """The NextLsd got a new version: every live moved client is due it (`urgent`: now, else paced)."""
        if not self.active:
            return
        for p in self.moved.values():
            if self.is_live(p, now):
                self._due_update(p, now, paced=not urgent)

    # ----------------------------------------------------------------------------------------- roles
    def activate(self, term: int, now: float) -> None:
        """We became master of `term`: every known peer needs a full snapshot of this term, now."""
        self.active = True
        self.term = term
        self._active_since = now
        self._clear_schedule()
        for p in self.peers.values():
            p.sent_term = p.sent_version = None
            p.update_due = None
            p.queued_at = None
            p.last_update_at = p.last_send_at = p.synced_at = NEVER
            if self.is_live(p, now):
                self._due_update(p, now, paced=False)
        if self.multicast:
            self._group.update_due = now

    def hold(self, backups: bool = False) -> None:
        """Suspend LSD updates (fulls and deltas) to clients until `release()`; they stay due. `backups`: to
        the backups too (issue #21: an LSD nobody heard must not reach clients through a backup either)."""
        self.held = True
        self.hold_backups = backups

    def _held(self, p: Peer) -> bool:
        """Updates to `p` wait for `release()`: a client during a hold — unless it told us it holds no LSD
        at all (LsdRequest version -1) and its switch has no routes either (not `kept`): there is nothing
        to protect, and it gets the LSD at once. A restarted client at -1 forwards on the routes its switch
        kept: an LSD built from what this master has not heard yet would take them away."""
        if not self.held:
            return False
        if p.is_master:
            return self.hold_backups
        return self.strict or p.kept or not (p.acked_version is not None and p.acked_version < 0)

    def release(self, now: float) -> None:
        """End the hold: every client with an update due gets it now (group too)."""
        if not self.held:
            return
        backups, self.hold_backups = self.hold_backups, False
        self.held = self.strict = False
        for p in self.peers.values():
            if (backups or not p.is_master) and p.update_due is not None:
                p.queued_at = None                 # any queued entry was for a keepalive: requeue
                self._queue(p)
        if self.multicast and self._group.update_due is not None:
            self._group.update_due = min(self._group.update_due, now)

    def announce(self, lsd: LinkStateDB, now: float) -> list[Send]:
        """A Keepalive of our term to every client we have ever heard from (and to the group), now.

        A new master knows its clients' addresses only from datagrams they sent it (at bring-up clients
        report to every master); the ones that are not live here are live at the old master. One keepalive
        makes each of them re-send its report and ask for the LSD of the new term right away."""
        if not self.active:
            return []
        out: list[Send] = []
        cache = _TickCache()
        for p in self.peers.values():
            if p.is_master or not self._unicast(p):
                continue
            out.append(Send(p.name, self._keepalive(self._announced(p.sent_term, p.sent_version, lsd, p.moved),
                                                    cache)))
            p.last_send_at = now
            self._queue(p)
        if self.multicast:
            g = self._group
            out.append(Send(GROUP, self._keepalive(self._announced(g.term, g.version, lsd), cache)))
            g.last_send_at = now
        return out

    def deactivate(self) -> None:
        self.active = False
        self.held = self.strict = self.hold_backups = False
        self._clear_schedule()
        for p in self.peers.values():
            p.update_due = p.queued_at = None

    def _clear_schedule(self) -> None:
        self._too_big.clear()
        self._settle_at = self._unsent_since = None
        self._times.clear()
        self._buckets.clear()
        self._idle.clear()
        self._group = _GroupState()

    # ----------------------------------------------------------------------------------------- inputs
    def on_version(self, now: float, urgent: bool = False) -> None:
        """The LSD got a new version: schedule a coalesced update for every peer (or the group); `urgent`
        (a link went out of use): due now instead of after `pacing`."""
        if not self.active:
            return
        if self.settle_max > 0:
            if self._unsent_since is None:
                self._unsent_since = now
            self._settle_at = min(now + self.settle_quiet, self._unsent_since + self.settle_max)
            if self._pressure_until > now:
                self._settle_at = max(self._settle_at,
                                      min(self._pressure_until, self._unsent_since + 4 * self.settle_max))
        pace = self.pacing if not urgent else 0.0
        if self.multicast:
            g = self._group
            due = max(now + pace, g.last_update_at + self.min_interval)
            if g.update_due is None or due < g.update_due:
                g.update_due = due
        idle, self._idle = self._idle, {}
        for p in idle.values():
            if p.update_due is None and self.is_live(p, now):
                self._due_update(p, now, paced=not urgent)

    def on_request(self, p: Peer, term: int, version: int, current: int, now: float,
                   arrived: float | None = None) -> None:
        """The peer says it has (term, version) — LsdRequest or ReplicationAck. Repair if it is behind.

        `arrived` (the request's receive time, if known): a request that was already waiting in our input
        queue when we brought the peer to (our term, `sent_version`) crossed that update — it asks for what
        the update carries (issue #18: in a cold start every client asks again while its snapshot is on the
        way, and each such request cost another ~27 KB snapshot). It is not answered; a client whose update
        was lost asks again after it (that request arrives after the update left, and is answered)."""
        p.acked_term, p.acked_version = term, version
        if not self.active:
            return
        if (arrived is not None and arrived < p.synced_at and p.sent_term == self.term
                and p.sent_version is not None and not (term == self.term and version > p.sent_version)):
            self.crossed_requests += 1
            return
        if term != self.term or version < 0 or version > current:
            p.sent_term = p.sent_version = None
        elif version == current:
            p.sent_term, p.sent_version = term, version
            return
        else:
            p.sent_term, p.sent_version = term, version
        self._due_update(p, now, paced=False)

    def _due_update(self, p: Peer, now: float, paced: bool) -> None:
        earliest = p.last_update_at + self.min_interval
        due = max(now + self.pacing, earliest) if paced else max(now, earliest)
        if p.update_due is None or due < p.update_due:
            p.update_due = due
        self._idle.pop(p.name, None)
        self._queue(p)

    def _queue(self, p: Peer) -> None:
        due = self._next_due(p)
        if due is None:
            return
        if p.queued_at is None or due < p.queued_at:
            p.queued_at = due
            bucket = self._buckets.get(due)
            if bucket is None:
                self._buckets[due] = [p]
                heapq.heappush(self._times, due)
            else:
                bucket.append(p)

    def note_backlog(self, now: float, changed: bool = True) -> None:
        """The runtime left client input queued this turn (a cold start): while it does, updates to clients
        wait (reading the reports that make the LSD complete comes first), up to 4 x settle_max. Only while
        that input is changing the LSD (`changed`: the turn made a new version): a queue of requests — every
        client of a cold start asking for the LSD it waits for — or of refreshes changes nothing, and
        deferring for it only delayed what they ask for (issue #18)."""
        if self.settle_max <= 0 or not self.active or not changed:
            return
        self._pressure_until = now + self.settle_quiet
        if self._settle_at is not None and self._unsent_since is not None:
            self._settle_at = max(self._settle_at, min(self._pressure_until, self._unsent_since + 4 * self.settle_max))

    def settling(self, now: float) -> float | None:
        """While the LSD churns: when client updates may go out (None: now)."""
        at = self._settle_at
        if at is None:
            return None
        if now >= at:
            self._settle_at = self._unsent_since = None
            return None
        return at

    def _next_due(self, p: Peer) -> float | None:
        ka: float | None = None
        if self._unicast(p) and p.last_send_at != NEVER:
            ka = p.last_send_at + self.keepalive
        elif self._unicast(p) and p.update_due is not None and self._held(p):
            ka = p.last_heard          # held and never told anything: a keepalive now, so it knows its master
            #                            (unless our ack told it: then _tick_peer only starts the keepalive clock)
        if p.update_due is None or self._held(p):
            return ka
        due = p.update_due
        if self._settle_at is not None and not p.is_master and due < self._settle_at:
            due = self._settle_at
        return due if ka is None else min(ka, due)

    # ----------------------------------------------------------------------------------------- output
    def tick(self, lsd: LinkStateDB, now: float) -> list[Send]:
        if not self.active:
            return []
        out: list[Send] = []
        backups: list[Send] = []
        moved: list[Send] = []
        cache = _TickCache()
        if self.multicast:
            self._tick_group(lsd, now, cache, out)
        times, buckets, idle = self._times, self._buckets, self._idle
        keepalive, client_dead = self.keepalive, self.client_dead
        budget = self.max_per_tick or -1
        while times and times[0] <= now and budget:
            at = heapq.heappop(times)
            bucket = buckets.pop(at, ())
            for k, p in enumerate(bucket):
                if p.queued_at == at:
                    self._tick_peer(p, lsd, now, cache, backups if p.is_master else moved if p.moved else out,
                                    idle, keepalive, client_dead)
                    budget -= 1
                    if not budget:
                        if k + 1 < len(bucket):          # the rest: next tick
                            buckets.setdefault(at, []).extend(bucket[k + 1:])
                            heapq.heappush(times, at)
                        break
        # Backups first: a version reaches the replicas before any client, so a master that dies half-way
        # through a fan-out never leaves clients with a version no surviving replica has. Then moved clients,
        # before the group: their LSD's new version is above the group delta's, which then finds them ahead
        # (ignored) instead of behind (a request for what is on its way).
        if moved:
            out = moved + out
        return backups + out if backups else out

    def _tick_peer(self, p: Peer, lsd: LinkStateDB, now: float, cache: _TickCache, out: list[Send],
                   idle: dict[str, Peer], keepalive: float, client_dead: float) -> None:
        p.queued_at = None
        unicast = self._unicast(p)
        if not p.is_master and now - p.last_heard >= client_dead:
            p.update_due = None                        # gone quiet: stop until it speaks again
            return
        sent = False
        if (p.update_due is not None and p.update_due <= now and not self._held(p)
                and (p.is_master or self._settle_at is None or self.settling(now) is None)):
            p.update_due = None
            if unicast:
                idle[p.name] = p
            msg = (self._next_update_for(p, cache) if p.moved
                   else self._update_for(p.sent_term, p.sent_version, lsd, cache))
            if msg is not None:
                out.append(Send(p.name, msg))
                if isinstance(msg, LsdFull):
                    p.fulls_sent += 1
                else:
                    p.deltas_sent += 1
                p.sent_term, p.sent_version = self.term, msg.version if p.moved else lsd.version
                p.last_update_at = p.last_send_at = p.synced_at = now
                sent = True
        if not sent and unicast and p.last_send_at + keepalive <= now and not (
                p.last_send_at == NEVER and p.report_acked_at >= self._active_since):
            out.append(Send(p.name, self._keepalive(self._announced(p.sent_term, p.sent_version, lsd, p.moved),
                                                    cache)))
            p.last_send_at = now
        # else: a client we never sent anything whose report we acked in this mastership: the ack named us, its
        # master (client.replica.on_report_ack) — no keepalive now, only after `keepalive` (issue #18, stop 35:
        # every held client of a cold start got one, 30,088 datagrams the master built, signed and sent)
        if unicast and p.last_send_at == NEVER:
            p.last_send_at = now                       # start the keepalive clock
        self._queue(p)

    def _tick_group(self, lsd: LinkStateDB, now: float, cache: _TickCache, out: list[Send]) -> None:
        g = self._group
        if (g.update_due is not None and g.update_due <= now and not self.held
                and (self._settle_at is None or self.settling(now) is None)):
            g.update_due = None
            msg = self._update_for(g.term, g.version, lsd, cache)
            if msg is not None:
                frm = g.version
                # moved clients are served unicast (their LSD is another config's): never in step with the group
                clients = [p for p in self.peers.values()
                           if not p.is_master and not p.moved and self.is_live(p, now)]
                in_step = [p for p in clients if p.sent_term == self.term and p.sent_version == frm]
                if isinstance(msg, LsdDelta) and len(clients) - len(in_step) >= max(GROUP_FULL_MIN, len(clients) / 8):
                    # Many clients are off the group's version (each took a unicast snapshot at another
                    # version: a cold start): the delta would be a gap for every one of them, each asking for
                    # its own snapshot again. One group snapshot brings them all to the current version.
                    msg = self._full(lsd, cache)
                    self.group_fulls += 1
                if isinstance(msg, LsdFull):
                    in_step = clients               # a snapshot brings every client to the current version
                out.append(Send(GROUP, msg))
                for p in in_step:                   # clients in sync with the group ride along
                    p.sent_term, p.sent_version = self.term, lsd.version
                    p.synced_at = now
                g.term, g.version = self.term, lsd.version
                g.last_update_at = g.last_send_at = now
        if g.last_send_at + self.keepalive <= now:
            out.append(Send(GROUP, self._keepalive(self._announced(g.term, g.version, lsd), cache)))
            g.last_send_at = now

    def _announced(self, term: int | None, version: int | None, lsd: LinkStateDB, moved: bool = False) -> int:
        """The version a keepalive names for a peer (or the group) last brought to (term, version); one with
        nothing of this term is told the newest version of the LSD it is served (`moved`: the NextLsd's)."""
        if term == self.term and version is not None:
            return version
        view = self.next
        return view.version if moved and view is not None and view.version >= 0 else lsd.version

    def _next_update_for(self, p: Peer, cache: _TickCache) -> LsdFull | None:
        """A moved client's update: the NextLsd's snapshot, unless it holds that version (None)."""
        view = self.next
        if view is None or view.version < 0 or self.next_digest is None:
            return None
        if p.sent_term == self.term and p.sent_version == view.version:
            return None
        msg = cache.next_full
        if msg is None or msg.version != view.version:
            msg = cache.next_full = LsdFull(self.master_id, self.term, view.version, self.next_digest, view.snapshot())
        return msg

    def _keepalive(self, version: int, cache: _TickCache) -> Keepalive:
        msg = cache.keepalives.get(version)
        if msg is None:
            msg = cache.keepalives[version] = Keepalive(self.master_id, self.term, version)
        return msg

    def _full(self, lsd: LinkStateDB, cache: _TickCache) -> LsdFull:
        if cache.full is None:
            snap = lsd.snapshot()
            f = self._full_msg
            if (f is None or f.snapshot is not snap or f.version != lsd.version or f.term != self.term
                    or f.digest != self.digest):
                f = self._full_msg = LsdFull(self.master_id, self.term, lsd.version, self.digest, snap)
            cache.full = f
            cache.full_len = len(snap)
        return cache.full

    def _update_for(
        self, term: int | None, version: int | None, lsd: LinkStateDB, cache: _TickCache
    ) -> LsdFull | LsdDelta | None:
        """The message that brings a peer at (term, version) to the current LSD; None if already there."""
        if term != self.term or version is None:
            return self._full(lsd, cache)
        if version == lsd.version:
            return None
        hit = cache.deltas.get(version)
        if hit is not None:
            return hit
        full = self._full(lsd, cache)
        if self._too_big.get(version) is full.snapshot:
            cache.deltas[version] = full
            return full
        changes = lsd.changes_since(version)
        if changes is None:
            msg: LsdFull | LsdDelta = self._full(lsd, cache)
        else:
            data = encode_changes(changes)
            self._full(lsd, cache)
            if len(data) > cache.full_len or len(data) > MAX_LSD_BYTES:
                msg = self._full(lsd, cache)
                if len(self._too_big) >= 64:
                    self._too_big.clear()
                self._too_big[version] = msg.snapshot
            else:
                msg = LsdDelta(self.master_id, self.term, version, lsd.version, data)
        cache.deltas[version] = msg
        return msg

    def next_deadline(self) -> float | None:
        if not self.active:
            return None
        # May be early (a bucket whose peers were all rescheduled): a spurious tick is harmless.
        times = [self._times[0]] if self._times else []
        if self.multicast:
            g = self._group
            if g.update_due is not None and not self.held:
                times.append(g.update_due if self._settle_at is None else max(g.update_due, self._settle_at))
            times.append(g.last_send_at + self.keepalive if g.last_send_at != NEVER else 0.0)
        return min(times) if times else None
