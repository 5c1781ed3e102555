"""controller.node.MasterNode: routing, feedback, persist-before-send and the combined deadline — the rules
the asyncio server and the simulator share (they drive this object; neither repeats them)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.actions import PersistTerm, RoleChanged, Send, TermSeen
from controller.node import MasterNode, TurnInProgress, run_turn
from proto.messages import Hello, ReplicationAck


class StubCore:
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.deadline: float | None = None

    def handle(self, sender: str, msg: Any, now: float, arrived: float | None = None) -> list[Any]:
        self.got.append(msg)
        return [TermSeen(sender, 7), Send("sw1", "lsd")]

    def tick(self, now: float) -> list[Any]:
        return [Send("sw1", "core-tick")]

    def next_deadline(self) -> float | None:
        return self.deadline


class StubDriver:
    handles = (Hello,)
    observes = (ReplicationAck,)

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.deadline: float | None = None

    def start(self, now: float) -> list[Any]:
        return []

    def handle(self, sender: str, msg: Any, now: float) -> list[Any]:
        self.calls.append(("handle", type(msg).__name__))
        return [Send("m2", "vote")]

    def observe(self, events: list[Any], now: float) -> list[Any]:
        self.calls.append(("observe", tuple(type(e).__name__ for e in events)))
        if any(isinstance(e, TermSeen) for e in events):
            # adopt the term: persist, then a message of that term, then a role event
            return [PersistTerm(7), Send("m2", "hello-7"), RoleChanged("inactive", 7, None)]
        return []

    def tick(self, now: float) -> list[Any]:
        return [Send("m2", "driver-tick")]

    def next_deadline(self) -> float | None:
        return self.deadline

    def persist_failed(self, term: int, now: float) -> list[Any]:
        self.calls.append(("persist_failed", term))
        return [RoleChanged("inactive", term - 1, None)]

    def persisted(self, term: int, took: float = 0.0) -> None:
        self.calls.append(("persisted", term) if not took else ("persisted", term, took))

    def stop(self, now: float) -> list[Any]:
        return []


def _node() -> tuple[MasterNode, StubCore, StubDriver]:
    core, driver = StubCore(), StubDriver()
    return MasterNode(core, driver), core, driver  # type: ignore[arg-type]


def _run(node: MasterNode, step: Any, ok: bool) -> tuple[list[Any], list[PersistTerm]]:
    done: list[Any] = []
    saved: list[PersistTerm] = []

    def save(p: PersistTerm) -> bool:
        saved.append(p)
        return ok

    run_turn(node, step, 0.0, done.extend, save)
    return done, saved


def test_election_messages_go_to_the_driver_only_and_observed_ones_to_both():
    node, core, driver = _node()
    done, _ = _run(node, node.datagram("m2", Hello("m2", "master", 1, 0, 100, "m2"), 0.0), True)
    assert core.got == [] and driver.calls == [("handle", "Hello")] and done == [Send("m2", "vote")]

    ack = ReplicationAck("m2", 1, 3)
    _run(node, node.datagram("m2", ack, 0.0), True)
    assert core.got == [ack] and ("handle", "ReplicationAck") in driver.calls


def test_core_events_reach_the_driver_and_its_term_is_persisted_before_its_sends():
    node, core, driver = _node()
    step = node.datagram("sw1", object(), 0.0)
    # the first step stops at the PersistTerm the driver's reaction to TermSeen asked for
    assert step.actions == [TermSeen("sw1", 7), Send("sw1", "lsd")] and step.persist == PersistTerm(7)
    with pytest.raises(TurnInProgress):
        node.timer(0.0)
    rest = node.persisted(True, 0.0)
    assert rest.actions == [Send("m2", "hello-7"), RoleChanged("inactive", 7, None)] and rest.persist is None
    assert ("persisted", 7) in driver.calls
    assert driver.calls[-1] == ("observe", ("RoleChanged",))


def test_a_timed_turn_tells_the_driver_how_long_the_write_took():
    """run_turn with a clock times each save (FMRP sizes its election rounds by it)."""
    node, core, driver = _node()
    clock = iter([10.0, 10.75])
    done: list[Any] = []
    run_turn(node, node.datagram("sw1", object(), 0.0), 0.0, done.extend, lambda p: True, clock=lambda: next(clock))
    assert ("persisted", 7, 0.75) in driver.calls and Send("m2", "hello-7") in done


def test_a_turn_that_raised_midway_is_abandoned_and_the_next_input_is_taken():
    """A runtime that raises while executing a turn (a bug in an observer) used to leave the node waiting
    for a write forever: every later input raised TurnInProgress — no hello, no vote, ever."""
    node, core, driver = _node()

    def explode(actions: Any) -> None:
        raise RuntimeError("observer bug")

    with pytest.raises(RuntimeError, match="observer bug"):
        run_turn(node, node.datagram("sw1", object(), 0.0), 0.0, explode, lambda p: True)
    with pytest.raises(TurnInProgress):                  # what the replica did until it was abandoned
        node.timer(0.05)
    reaction = node.abandon(0.1)
    # the term write it waited for may not be durable: the driver hears it failed, nothing of it was sent
    assert driver.calls[-1] == ("persist_failed", 7) and reaction == [RoleChanged("inactive", 6, None)]
    done, saved = _run(node, node.apply(reaction, 0.1), True)
    assert done == [RoleChanged("inactive", 6, None)] and saved == []
    done, _ = _run(node, node.timer(1.0), True)          # the next input is taken
    assert done == [Send("m2", "driver-tick"), Send("sw1", "core-tick")]


def test_after_a_failed_save_no_send_of_the_turn_leaves_and_the_driver_hears_of_it_after_the_batch():
    node, core, driver = _node()
    done, saved = _run(node, node.datagram("sw1", object(), 0.0), False)
    assert saved == [PersistTerm(7)]
    assert Send("m2", "hello-7") not in done                       # it spoke for a term that is not durable
    assert RoleChanged("inactive", 7, None) in done                # role events still happen
    assert RoleChanged("inactive", 6, None) in done                # the driver undid what the term gave
    i_observe = driver.calls.index(("observe", ("RoleChanged",)))
    assert driver.calls[i_observe + 1] == ("persist_failed", 7)
    # the next turn is durable again
    done, _ = _run(node, node.timer(1.0), True)
    assert done == [Send("m2", "driver-tick"), Send("sw1", "core-tick")]


def test_one_deadline_the_earlier_of_core_and_driver():
    node, core, driver = _node()
    assert node.next_deadline() is None
    core.deadline, driver.deadline = 5.0, None
    assert node.next_deadline() == 5.0
    driver.deadline = 2.5
    assert node.next_deadline() == 2.5
