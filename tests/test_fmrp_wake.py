"""A master paused past `master_dead` (SIGSTOP, a frozen VM) wakes up to its overdue timers and a socket full
of what the others sent meanwhile (tester F8): it must rejoin as a backup of the master elected without it,
in whatever order the runtime hands it that input, without a term of its own — the failover is the only
term change. Pure: `tests.test_fmrp.Cluster` (a 1 ms fake clock, zero-delay network); the loopback test with
real processes and SIGSTOP is `tests/test_fmrp_wake_loopback.py`."""

from __future__ import annotations

from typing import Any

import pytest

from controller.fmrp import BecomeMaster, FmrpState, PersistTerm, SendPeer
from proto.messages import Hello
from tests.test_fmrp import Cluster, T, settled

Held = list[tuple[float, str, Any]]   # (arrival time, sender, message) sent to the stalled replica


def stall(c: Cluster, rid: str, seconds: float) -> Held:
    """Run the others for `seconds` while `rid` runs nothing (no tick, no input); what they send it is held
    with its arrival time, as the kernel would queue it."""
    node, held = c.nodes.pop(rid), []
    execute = c.execute

    def holding(src: str, actions: list[Any]) -> None:
        held.extend((c.now, src, a.msg) for a in actions if isinstance(a, SendPeer) and a.to == rid)
        execute(src, actions)

    c.execute = holding                 # type: ignore[method-assign]
    try:
        c.run(seconds)
    finally:
        c.execute = execute             # type: ignore[method-assign]
    c.nodes[rid] = node
    return held


def per_peer(held: Held, order: list[str]) -> Held:
    """The runtime's order (controller.peerinput): each peer's queue in turn, arrival times never going back."""
    out, last = [], float("-inf")
    for peer in order:
        for at, src, msg in held:
            if src == peer:
                last = max(at, last)
                out.append((last, src, msg))
    return out


def wake(c: Cluster, rid: str, held: Held, order: str) -> list[Any]:
    """Resume `rid` at c.now: its queued input and its overdue tick, in the given order; returns its actions."""
    node, acts = c.nodes[rid], []

    def run(actions: list[Any]) -> None:
        acts.extend(actions)
        c.execute(rid, actions)

    peers = [p for p in sorted(c.nodes) if p != rid]
    if order == "tick_first":
        run(node.tick(c.now))
        seq = [(c.now, src, msg) for _, src, msg in held]
    else:
        seq = {"arrival": sorted(held, key=lambda x: x[0]), "peers": per_peer(held, peers),
               "peers_reversed": per_peer(held, peers[::-1])}[order]
    for at, src, msg in seq:
        run(node.on_message(src, msg, at))
    run(node.tick(c.now))
    return acts


def elected_cluster() -> tuple[Cluster, str]:
    c = Cluster(3)
    c.run(2.0, until=lambda: settled(c))
    c.run(0.5)
    assert settled(c)
    return c, c.masters_now()[0]


@pytest.mark.parametrize("order", ["peers", "peers_reversed", "arrival", "tick_first"])
def test_a_master_woken_from_a_stall_follows_the_new_master_without_a_term_of_its_own(order: str):
    c, old = elected_cluster()
    term0 = c.nodes[old].term
    held = stall(c, old, 5.0)                               # the tester's SIGSTOP 5 s
    new = [i for i in c.masters_now() if i != old]
    assert len(new) == 1 and c.nodes[new[0]].term == term0 + 1     # the failover: one term
    new_id = new[0]
    acts = wake(c, old, held, order)
    assert [a.term for a in acts if isinstance(a, PersistTerm) and a.term > term0 + 1] == [], \
        f"the woken {old} stood in a term of its own ({order})"
    assert not any(isinstance(a, BecomeMaster) for a in acts)
    c.run(2.0)
    assert settled(c) and c.masters_now() == [new_id], "the healthy new master was displaced"
    assert {f.term for f in c.nodes.values()} == {term0 + 1}
    assert [term for _, _, term in c.elected()] == [term0, term0 + 1]
    assert c.nodes[old].state is FmrpState.BACKUP and c.nodes[old].leader == new_id


def test_a_woken_master_ignores_a_backup_that_stood_for_the_new_master():
    """The other queued hellos: a backup that voted in the failover says ELECTING in the new term before the
    new master's first hello reaches it. Re-anchoring above it (issue #19) would cost a term; the woken
    master knows it was silent past master_dead, does not, and follows the hello that follows."""
    c, old = elected_cluster()
    node, term0 = c.nodes[old], c.nodes[old].term
    held = stall(c, old, 1.0)
    new = next(i for i in c.masters_now() if i != old)
    voter = next(i for i in c.nodes if i not in (old, new))
    t = held[-1][0]
    acts = node.on_message(voter, Hello(voter, "electing", term0 + 1, node.version, 100, None), t)
    acts += node.on_message(new, Hello(new, "master", term0 + 1, node.version, 100, new), t + 0.001)
    assert not [a for a in acts if isinstance(a, PersistTerm) and a.term > term0 + 1]
    assert node.state is FmrpState.BACKUP and node.leader == new and node.term == term0 + 1


def test_a_master_re_anchors_only_above_a_replica_that_could_follow_it():
    """A backup of another master never votes for us (sticky): its higher term is no reason to stand."""
    c, m = elected_cluster()
    node, term0 = c.nodes[m], c.nodes[m].term
    other = next(i for i in c.nodes if i != m)
    acts = node.on_message(other, Hello(other, "backup", term0 + 3, node.version, 100, "m9"), c.now)
    assert acts == [] and node.state is FmrpState.MASTER and node.term == term0


@pytest.mark.parametrize("seconds", [0.5 * T.master_dead, T.master_dead - 2 * T.hello_interval])
def test_a_master_paused_less_than_master_dead_keeps_its_mastership(seconds: float):
    c, m = elected_cluster()
    term0 = c.nodes[m].term
    held = stall(c, m, seconds)
    assert c.masters_now() == [m] and all(f.term == term0 for f in c.nodes.values())
    wake(c, m, held, "peers")
    c.run(1.0)
    assert settled(c) and c.masters_now() == [m] and all(f.term == term0 for f in c.nodes.values())


def test_a_master_silent_past_master_dead_re_anchors_only_after_its_next_hello():
    """Issue #19 still holds: the higher term of a replica that could follow us is re-anchored above, but
    not while our own last hello is older than master_dead (the term may be a new master's voter's)."""
    c, m = elected_cluster()
    node, term0 = c.nodes[m], c.nodes[m].term
    follower, vain = (p for p in sorted(c.nodes) if p != m)
    t = node.next_deadline() - T.hello_interval + T.master_dead + 0.002      # silent past master_dead
    node.on_message(follower, Hello(follower, "backup", term0, node.version, 100, m), t)
    acts = node.on_message(vain, Hello(vain, "electing", term0 + 3, node.version, 100, None), t)
    assert acts == [] and node.state is FmrpState.MASTER and node.term == term0
    acts = node.tick(t)                                   # our (overdue) hello: we spoke again
    assert not [a for a in acts if isinstance(a, PersistTerm)]
    assert any(isinstance(a, SendPeer) and isinstance(a.msg, Hello) for a in acts)
    acts = node.on_message(vain, Hello(vain, "electing", term0 + 3, node.version, 100, None), t + 0.001)
    assert PersistTerm(term0 + 4, m) in acts and node.state is FmrpState.MASTER    # re-anchoring
