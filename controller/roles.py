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

from typing import Any, Protocol

from controller.actions import Action, PersistTerm, TermSeen
from controller.core import MasterCore, Role


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
    def persisted(self, term: int) -> None: ...
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
        return self.core.become_inactive(self.durable_term) if self.core.role == Role.MASTER else []

    def persisted(self, term: int) -> None:
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
