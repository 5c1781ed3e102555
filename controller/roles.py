"""The seam between the master core and whatever decides its role: FMRP (`controller.fmrp.FmrpDriver`)
in every deployment, `SingleMasterDriver` (no election) where the server is started without one (tests).

A RoleDriver owns the role transitions of a `MasterCore` (`become_master/backup/inactive`) and any
election messages. `controller.node.MasterNode` wires the two: it routes every decoded message whose type
is in `driver.handles` to the driver and everything else to the core (types in `driver.observes` go to
the core, then to the driver); it passes the core's events to `driver.observe` (so the driver sees e.g.
`TermSeen` and can step down); it releases the driver's actions exactly like the core's (`PersistTerm` is
written before the following sends); it keeps one deadline, min(core.next_deadline(),
driver.next_deadline()); on SIGTERM it runs `driver.stop(now)`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from controller.actions import Action, Handover, PersistTerm, Send, TermSeen
from controller.core import MasterCore, Role
from controller.fmrp import BecomeBackup, BecomeInactive, BecomeMaster, Fmrp, FmrpAction, FmrpState, SendPeer
from controller.reach import reach_margin
from proto.messages import Hello, ReplicationAck, StepDown, Vote, VoteRequest
from proto.wire import MAX_U63

log = logging.getLogger("firepath.master")


class RoleDriver(Protocol):
    #: message classes the runtime routes to `handle` INSTEAD of the core (Hello, VoteRequest, Vote, StepDown)
    handles: tuple[type, ...]
    #: message classes the runtime gives to the core AND THEN to `handle` (e.g. ReplicationAck for a lease)
    observes: tuple[type, ...]

    def start(self, now: float) -> list[Action]: ...
    def handle(self, sender: str, msg: Any, now: float) -> list[Action]: ...
    def observe(self, events: list[Action], now: float) -> list[Action]: ...
    def tick(self, now: float) -> list[Action]: ...
    def next_deadline(self) -> float | None: ...
    def persist_failed(self, term: int, now: float) -> list[Action]: ...
    def persisted(self, term: int, took: float = 0.0) -> None: ...
    def stop(self, now: float) -> list[Action]: ...
    def view(self, now: float) -> dict[str, Any]: ...


class SingleMasterDriver:
    """No election: after the init wait (`timers.master_dead`, so an earlier incarnation's messages have
    drained) become master with term = durable term + 1, persisted before the first message of that term.
    A higher term seen from elsewhere (a misconfigured second master) is persisted and we step down to
    inactive, so two masters never serve with the same term; operators see it in logs and /v1/masters."""

    handles: tuple[type, ...] = ()
    observes: tuple[type, ...] = ()

    def __init__(self, core: MasterCore, durable_term: int) -> None:
        self.core = core
        self.durable_term = durable_term
        self.wake_at: float | None = None
        self.started_at: float | None = None

    def start(self, now: float) -> list[Action]:
        self.started_at = now
        self.wake_at = now + self.core.fabric.timers.master_dead
        return self.core.become_inactive(self.durable_term)

    def handle(self, sender: str, msg: Any, now: float) -> list[Action]:
        return []

    def observe(self, events: list[Action], now: float) -> list[Action]:
        out: list[Action] = []
        for ev in events:
            if isinstance(ev, TermSeen) and ev.term > self.core.term:
                out.append(PersistTerm(ev.term))
                out.extend(self.core.become_inactive(ev.term))
                self.durable_term = ev.term
                self.wake_at = None
        return out

    def tick(self, now: float) -> list[Action]:
        if self.wake_at is None or now < self.wake_at or self.core.role == Role.MASTER:
            return []
        self.wake_at = None
        term = self.durable_term + 1
        if term > MAX_U63:          # u63 on the wire: no message could carry it (a state file at the last term)
            log.error("event=term_exhausted term=%d: no term left to take; reset the state dir", self.durable_term)
            return []
        self.durable_term = term
        return [PersistTerm(term), *self.core.become_master(term, now)]

    def next_deadline(self) -> float | None:
        return self.wake_at

    def persist_failed(self, term: int, now: float) -> list[Action]:
        """The save of `term` failed: give the mastership of that term up and try again after the init
        wait (a term that is not durable could be reused after a restart)."""
        if self.durable_term == term:
            self.durable_term = term - 1
        self.wake_at = now + self.core.fabric.timers.master_dead
        # the core keeps its term (never lowered): the next attempt takes durable_term + 1, i.e. this term again
        return self.core.become_inactive() if self.core.role == Role.MASTER else []

    def persisted(self, term: int, took: float = 0.0) -> None:
        pass

    def stop(self, now: float) -> list[Action]:
        return []

    def view(self, now: float) -> dict[str, Any]:
        core = self.core
        replicas: list[dict[str, Any]] = [
            {"id": core.id, "self": True, "state": core.role.value, "term": core.term,
             "version": core.version, "leader": core.leader}
        ]
        backups = {p.name: p for p in core.backups()}
        for m in core.fabric.masters:
            if m.id == core.id:
                continue
            p = backups.get(m.id)
            replicas.append({
                "id": m.id, "self": False, "state": "unknown", "term": p.acked_term if p else None,
                "version": p.acked_version if p else None,
                "last_heard_age": None if p is None or p.last_heard == p.first_seen and p.acked_version is None
                else now - p.last_heard,
            })
        return {"mode": "single-master", "replicas": replicas}


class FmrpDriver:
    """`controller.roles.RoleDriver` running FMRP for a `MasterCore` — the exact wiring of the runtime:

    - `handles`: Hello, VoteRequest, Vote, StepDown are routed here instead of the core; `observes`: a
      ReplicationAck goes to the core (it tracks the backup's version and streams what it lacks) and then
      here (it renews the master's lease and is shown in `view`).
    - `SendPeer(to, msg)` → `Send(to, msg)` (signed with our master key); `PersistTerm` passes through and
      is written before the following actions; `BecomeMaster(t)` → `core.become_master(t, now)`;
      `BecomeBackup(t, leader)` → `core.become_backup(t, leader, now)`; `BecomeInactive(t)` →
      `core.become_inactive(t)`.
    - Core events: `TermSeen(sender, term)` → `fmrp.observe_term(term, now)` (a master of a newer term
      exists: a master steps down); the core's LSD version (-1 while it has none) is handed to
      `fmrp.set_lsd_version` before every FMRP input, so hellos and vote requests carry it.
    - SIGTERM: `stop(now)` → `fmrp.step_down(now)` (StepDown to every replica: immediate failover).

    Use: `MasterServer(..., driver_factory=lambda core, store: FmrpDriver(core, store.load().term))`.
    """

    handles: tuple[type, ...] = (Hello, VoteRequest, Vote, StepDown)
    observes: tuple[type, ...] = (ReplicationAck,)

    def __init__(self, core: MasterCore, durable_term: int, *, seed: int | None = None) -> None:
        self.core = core
        self.durable_term = durable_term
        # Jitter only has to differ between replicas (the id is mixed in); a fixed seed keeps runs replayable.
        self.seed = 0 if seed is None else seed
        self.fmrp: Fmrp | None = None

    def start(self, now: float) -> list[Any]:
        fabric = self.core.fabric
        self.fmrp = Fmrp(self.core.id, fabric.masters, fabric.timers, self.durable_term, now, seed=self.seed,
                         reach_margin=reach_margin(fabric.guard.reach_margin, len(fabric.switches)),
                         reach_dwell=fabric.guard.reach_dwell,
                         reach_settle=self.core.reach.window)
        # The durable term from the start, as SingleMasterDriver does: REST and the term gauge said 0 until
        # a leader was heard (tester bb40 F18), though FMRP itself counts from it.
        return [*self.core.become_inactive(self.durable_term), *self.tick(now)]

    def handle(self, sender: str, msg: Any, now: float) -> list[Any]:
        return self._translate(self._synced(now).on_message(sender, msg, now), now)

    def observe(self, events: list[Any], now: float) -> list[Any]:
        f = self._synced(now)
        out: list[Any] = []
        for ev in events:
            if isinstance(ev, TermSeen):
                out += self._translate(f.observe_term(ev.term, now), now)
        return out

    def tick(self, now: float) -> list[Any]:
        return self._translate(self._synced(now).tick(now), now)

    def next_deadline(self) -> float | None:
        return None if self.fmrp is None else self.fmrp.next_deadline()

    def persist_failed(self, term: int, now: float) -> list[Any]:
        return self._translate(self._synced(now).persist_failed(term, now), now)

    def persisted(self, term: int, took: float = 0.0) -> None:
        if self.fmrp is not None:
            self.fmrp.persisted(term, took)

    def stop(self, now: float) -> list[Any]:
        return self._translate(self._synced(now).step_down(now), now)

    def view(self, now: float) -> dict[str, Any]:
        f = self._synced(now)
        acked = f.backup_versions()
        ids = [m.id for m in self.core.fabric.masters]
        replicas: list[dict[str, Any]] = [{
            "id": f.id, "self": True, "state": f.state.value, "term": f.term, "leader": f.leader,
            "leader_term": f.leader_term, "version": self.core.version if self.core.lsd_term is not None else -1,
            "lease_ok": f.lease_ok(now) if f.state is FmrpState.MASTER else None, "retired": f.retired,
            "reach": dict(zip(ids, f.reach, strict=False)), "handovers": f.handovers,
        }]
        for p in f.peers(now):
            replicas.append({
                "id": p.id, "self": False, "state": p.state or "unknown", "term": p.term, "version": p.version,
                "priority": p.priority, "leader": p.leader, "last_hello_age": p.last_hello_age,
                "acked_version": acked.get(p.id), "reach": dict(zip(ids, p.reach, strict=False)),
            })
        return {"mode": "fmrp", "replicas": replicas}

    def _synced(self, now: float) -> Fmrp:
        if self.fmrp is None:
            raise RuntimeError("FmrpDriver used before start()")
        self.fmrp.set_lsd_version(self.core.version if self.core.lsd_term is not None else -1)
        self.fmrp.set_reach(self.core.reach_counts(now), self.core.reach.heard(now), self.core.reach.input_loss_at)
        return self.fmrp

    def _translate(self, actions: list[FmrpAction], now: float) -> list[Any]:
        core = self.core
        out: list[Any] = []
        for a in actions:
            if isinstance(a, SendPeer):
                out.append(Send(a.to, a.msg))
            elif isinstance(a, PersistTerm):
                out.append(a)
            elif isinstance(a, BecomeMaster):
                out += core.become_master(a.term, now)
            elif isinstance(a, BecomeBackup):
                out += core.become_backup(a.term, a.leader, now)
            elif isinstance(a, BecomeInactive):
                out += core.become_inactive(a.term if a.term >= core.term else None)
            elif isinstance(a, Handover):
                out.append(a)
        return out
