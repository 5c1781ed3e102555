"""FMRP under master overload (issue #18, tests.sim.overload): a report storm that the replicas process
more slowly than it arrives must not cost the master its mastership when FMRP datagrams are read first
(their own socket, drained before every turn and timer, handled at their arrival time) — while the same
storm through one FIFO socket (asyncio's datagram transport before #18) breaks the sticky-run invariants."""

from __future__ import annotations

import pytest

from proto.config import Timers
from tests.sim.overload import run_overload
from tests.sim.world import InvariantViolation

SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
def test_fmrp_first_keeps_the_master_through_a_report_storm(seed: int) -> None:
    result, world = run_overload(seed, "fmrp_first")
    assert result.elections == 1                      # the first election only: sticky, no storm election
    assert world.dropped > 10_000                     # the storm really overflowed the receive queues
    assert world.processed_reports > 20_000
    assert world.max_wait < Timers().hello_interval   # a hello never waited a hello interval


def test_fifo_loses_the_lease_or_the_master_in_the_same_storm() -> None:
    violations = 0
    for seed in SEEDS:
        try:
            run_overload(seed, "fifo")
        except InvariantViolation:
            violations += 1
    assert violations >= len(SEEDS) // 2, "the storm model no longer overloads a FIFO runtime"
