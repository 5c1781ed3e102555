"""Reach-based hand-over (issue #16) judges a master only on a meaningful view (controller.fmrp
`_reach_meaningful`): not before the master has heard any switch (lab start: three elections before any
switch was heard), not right after every switch went quiet at once and came back (a fabric-wide stall),
not right after the master itself did not run for a while; a deaf or mute master is still handed over."""

from __future__ import annotations

from controller.fmrp import Fmrp
from tests.test_fmrp import Cluster, T, settled

SETTLE = 0.5
ALL, MUTE = (6, 6, 6), None   # MUTE: filled per cluster (0 for the leader, 6 for the others)


class SettleCluster(Cluster):
    def start(self, rid: str, term_bonus: int = 0) -> Fmrp:
        self.durable[rid] += term_bonus
        f = Fmrp(rid, self.cfg, T, self.durable[rid], self.now, seed=7, reach_settle=SETTLE)
        self.nodes[rid] = f
        return f


def up() -> tuple[SettleCluster, str, tuple[int, ...]]:
    c = SettleCluster(3)
    c.run(1.0, until=lambda: settled(c))
    assert settled(c)
    leader = c.masters_now()[0]
    behind = tuple(0 if m.id == leader else 6 for m in c.cfg)
    return c, leader, behind


def views(c: Cluster, leader: str, own: tuple[int, ...], own_heard: int, backups: tuple[int, ...],
          backups_heard: int) -> None:
    for rid, f in c.nodes.items():
        if rid == leader:
            f.set_reach(own, own_heard)
        else:
            f.set_reach(backups, backups_heard)


def test_a_master_that_has_heard_no_switch_yet_is_not_behind():
    c, leader, behind = up()
    c.run(SETTLE + 0.1)                                   # well past becoming master
    views(c, leader, (0, 0, 0), 0, behind, 6)             # the backups hear the switches first
    c.run(2.0)
    assert c.masters_now() == [leader] and c.nodes[leader].handovers == 0
    views(c, leader, behind, 6, behind, 6)                # now heard, and still behind: judged after settling
    c.run(SETTLE - 0.05)
    assert c.masters_now() == [leader]
    c.run(1.0, until=lambda: c.masters_now() != [leader])
    assert c.nodes[leader].handovers == 1


def test_a_master_deaf_after_hearing_switches_is_still_handed_over():
    c, leader, behind = up()
    views(c, leader, ALL, 6, ALL, 6)
    c.run(SETTLE + 0.1)
    views(c, leader, (0, 0, 0), 0, behind, 6)             # deaf: its view goes quiet, the backups' do not
    c.run(1.0, until=lambda: c.masters_now() != [leader])
    assert c.nodes[leader].handovers == 1


def test_every_switch_quiet_at_once_then_back_is_not_a_reason_to_hand_over():
    c, leader, behind = up()
    views(c, leader, ALL, 6, ALL, 6)
    c.run(SETTLE + 0.1)
    views(c, leader, (0, 0, 0), 0, (0, 0, 0), 0)          # a fabric-wide stall: nobody hears anybody
    c.run(0.5)
    views(c, leader, behind, 6, behind, 6)                # back, the bits for the (busy) master still low
    c.run(SETTLE - 0.05)
    assert c.masters_now() == [leader] and c.nodes[leader].handovers == 0
    views(c, leader, ALL, 6, ALL, 6)                      # the bits rose with the next reports
    c.run(2.0)
    assert c.masters_now() == [leader] and c.nodes[leader].handovers == 0


def test_a_master_that_did_not_run_for_a_while_waits_for_the_switches_to_hear_it_again():
    c, leader, behind = up()
    views(c, leader, ALL, 6, ALL, 6)
    c.run(SETTLE + 0.1)
    node = c.nodes.pop(leader)                            # stalled (shorter than master_dead: still master)
    c.run(T.master_dead * 0.7)
    c.nodes[leader] = node
    views(c, leader, behind, 6, behind, 6)                # the switches' bits for it dropped meanwhile
    c.run(SETTLE - 0.05)
    assert c.masters_now() == [leader] and c.nodes[leader].handovers == 0
    c.run(1.0, until=lambda: c.masters_now() != [leader])   # still behind after settling: a mute master
    assert c.nodes[leader].handovers == 1


def test_a_master_that_knows_it_dropped_input_is_not_judged_on_the_reports_it_lost():
    c, leader, behind = up()
    views(c, leader, ALL, 6, ALL, 6)
    c.run(SETTLE + 0.1)
    views(c, leader, behind, 3, behind, 6)                # a burst overflowed its receive queue
    c.nodes[leader].set_reach(behind, 3, input_loss_at=c.now)
    c.run(SETTLE - 0.05)
    assert c.masters_now() == [leader] and c.nodes[leader].handovers == 0
    c.run(1.0, until=lambda: c.masters_now() != [leader])   # still behind, no new loss: judged
    assert c.nodes[leader].handovers == 1
