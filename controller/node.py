"""MasterNode: one master replica's rules — the master core, its role driver and the order between them.

Pure, like the cores: inputs and `now` go in, steps come out; the runtime (`controller.server`, the asyncio
process) and the simulator (`tests/sim/realcores.py`) drive this same object and only execute what it
returns. The rules it owns (and nobody else repeats):

- routing: a decoded message whose type is in `driver.handles` (Hello, VoteRequest, Vote, StepDown) goes
  to the role driver instead of the core; every other message goes to the core, then, if its type is in
  `driver.observes` (ReplicationAck), to the driver too;
- feedback: the core's events (`TermSeen`, `RoleChanged`, ...) are given to `driver.observe` after each
  batch; what it returns is the next batch of the same turn;
- durability: a `PersistTerm` is handed to the runtime on its own (`Step.persist`) and nothing after it
  is released until the runtime says whether the write succeeded (`persisted(ok, now)`). After a failed
  write, no `Send` of the rest of the turn is released (it may speak for a term or a vote that is not
  durable) and the driver learns of the failure after the batch's role events (so a mastership that batch
  gave is undone);
- timers: one deadline, the earlier of the core's and the driver's (`next_deadline`).

A turn (one input) runs like this in every runtime (`run_turn` does exactly this)::

    step = node.datagram(sender, msg, now)          # or timer(now), start(now), stop(now), apply(...)
    while True:
        execute(step.actions)                       # Send and events, in order
        if step.persist is None:
            break
        step = node.persisted(save(step.persist), now)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from controller.actions import Action, PersistTerm, Send
from controller.core import MasterCore
from controller.roles import RoleDriver


class TurnInProgress(RuntimeError):
    """A new input reached the node while a turn still waits for the outcome of a PersistTerm."""


@dataclass(slots=True)
class Step:
    """What the runtime executes next: `actions` (Send and events, in order), then `persist` if not None
    (write it durably, then call `MasterNode.persisted(ok, now)` for the rest of the turn)."""

    actions: list[Action] = field(default_factory=list)
    persist: PersistTerm | None = None


class MasterNode:
    def __init__(self, core: MasterCore, driver: RoleDriver) -> None:
        self.core = core
        self.driver = driver
        self._queue: deque[Action] = deque()   # the current batch, not executed yet
        self._events: list[Action] = []        # the current batch's events, for driver.observe
        self._waiting: PersistTerm | None = None
        self._durable = True                   # no save failed in this turn
        self._failed_term: int | None = None   # a save failed in the current batch
        self._now = 0.0

    # ------------------------------------------------------------------------------------ inputs
    def start(self, now: float) -> Step:
        return self._turn(self.driver.start(now), now)

    def datagram(self, sender: str, msg: object, now: float, arrived: float | None = None) -> Step:
        """One authenticated, decoded message from `sender` (a switch or another master replica);
        `arrived`: its receive time if the runtime knows it (MasterCore.handle)."""
        driver = self.driver
        if driver.handles and isinstance(msg, driver.handles):
            return self._turn(driver.handle(sender, msg, now), now)
        actions = self.core.handle(sender, msg, now, arrived)
        if driver.observes and isinstance(msg, driver.observes):
            actions += driver.handle(sender, msg, now)
        return self._turn(actions, now)

    def timer(self, now: float) -> Step:
        """At `next_deadline()` (earlier is harmless: both cores re-check their deadlines)."""
        return self._turn(self.driver.tick(now) + self.core.tick(now), now)

    def liveness(self, now: float) -> Step:
        """The role driver's timer alone (FMRP hellos, lease, leader check), before `timer(now)` does the
        core's share (issue #18: a fan-out must not delay a hello; ticking the driver twice at one `now`
        is harmless)."""
        return self._turn(self.driver.tick(now), now)

    def stop(self, now: float) -> Step:
        """SIGTERM: the driver's step-down (FMRP announces it so the backups elect at once)."""
        return self._turn(self.driver.stop(now), now)

    def apply(self, actions: list[Action], now: float) -> Step:
        """Actions a core call returned outside the inputs above (an operator's drain, a guard confirm,
        `core.note_input_loss`): executed under the same rules."""
        return self._turn(actions, now)

    def persisted(self, ok: bool, now: float, took: float = 0.0) -> Step:
        """The outcome of the last `Step.persist` (`took`: how long the write took, s); returns the rest of
        the turn."""
        p = self._waiting
        if p is None:
            raise RuntimeError("persisted() without a pending PersistTerm")
        self._waiting = None
        self._now = now
        if ok:
            self.driver.persisted(p.term, took)
        else:
            self._durable = False
            self._failed_term = p.term
        return self._drain()

    def abandon(self, now: float) -> list[Action]:
        """The runtime raised in the middle of a turn (a bug in an observer, a sender): drop what the turn
        had not released, so the next input is not refused (TurnInProgress) forever — a replica that sends
        no hello and casts no vote. A term write the turn waited for counts as failed (it may not be
        durable: FMRP neither votes nor stands on it until a save succeeds); returns the driver's reaction,
        to run as a turn of its own (`apply`)."""
        waiting, self._waiting = self._waiting, None
        self._queue.clear()
        self._events = []
        self._durable, self._failed_term = True, None
        return self.driver.persist_failed(waiting.term, now) if waiting is not None else []

    def next_deadline(self) -> float | None:
        times = [t for t in (self.core.next_deadline(), self.driver.next_deadline()) if t is not None]
        return min(times) if times else None

    # ------------------------------------------------------------------------------------ the turn
    def _turn(self, actions: list[Action], now: float) -> Step:
        if self._waiting is not None:
            raise TurnInProgress(f"input while {self._waiting} waits for persisted()")
        self._queue.extend(actions)
        self._events = []
        self._durable, self._failed_term, self._now = True, None, now
        return self._drain()

    def _drain(self) -> Step:
        out: list[Action] = []
        while True:
            while self._queue:
                a = self._queue.popleft()
                if isinstance(a, Send):
                    if self._durable:
                        out.append(a)
                elif isinstance(a, PersistTerm):
                    self._waiting = a
                    return Step(out, a)
                else:
                    out.append(a)
                    self._events.append(a)
            events, self._events = self._events, []
            nxt = self.driver.observe(events, self._now) if events else []
            if self._failed_term is not None:
                nxt += self.driver.persist_failed(self._failed_term, self._now)
                self._failed_term = None
            if not nxt:
                return Step(out)
            self._queue.extend(nxt)


def run_turn(node: MasterNode, step: Step, now: float, execute: Callable[[Iterable[Action]], Any],
             save: Callable[[PersistTerm], bool], clock: Callable[[], float] | None = None) -> None:
    """Execute one turn to its end: `execute(actions)` for each step's actions, `save(persist) -> ok` for
    each PersistTerm before anything that follows it; with `clock` (seconds), each save is timed and the
    role driver told how long it took (FMRP sizes its election rounds by it)."""
    while True:
        execute(step.actions)
        if step.persist is None:
            return
        if clock is None:
            step = node.persisted(save(step.persist), now)
        else:
            t0 = clock()
            ok = save(step.persist)
            step = node.persisted(ok, now, clock() - t0)
