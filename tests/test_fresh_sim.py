"""The FMRP simulator with wire freshness and an attacker (tests/sim/fresh.py, issue #19): real Codecs,
restarts that lose memory, replays of any datagram ever seen to any replica at any time. Every World
invariant (at most one master per term, convergence after the faults heal, ...) plus: nothing created
before the receiver's current life is accepted, nothing is accepted twice, a rejected datagram changes no
freshness state. `FIREPATH_SIM_FRESH_SEEDS=N` (default 150); thousands: `python -m tests.sim --fresh`."""

from __future__ import annotations

import os

from tests.sim import InvariantViolation
from tests.sim.fresh import FreshWorld

N_SEEDS = int(os.environ.get("FIREPATH_SIM_FRESH_SEEDS", "150"))
START = int(os.environ.get("FIREPATH_SIM_START", "0"))


def test_replays_and_restarts_hold_every_invariant():
    failures: list[str] = []
    replays = stale = 0
    for seed in range(START, START + N_SEEDS):
        w = FreshWorld(seed)
        try:
            w.run()
        except InvariantViolation as e:
            failures.append(str(e))
            continue
        replays += w.replays
        stale += w.stale
    print(f"{N_SEEDS} fresh seeds from {START}: {len(failures)} failed, {replays} replays, {stale} stale")
    assert not failures, failures[0]
    assert replays > 100 * N_SEEDS and stale > N_SEEDS  # the attacker really attacked, restarts happened
