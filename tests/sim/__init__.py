"""Deterministic discrete-event simulator for FMRP (see tests/sim/world.py for the model and invariants).

    from tests.sim import run_seed
    run_seed(42)            # raises InvariantViolation (with a replayable trace) or returns a Result

`python -m tests.sim --seeds 5000` runs many seeds; `--seed N --trace` replays one and prints its trace.
"""

from tests.sim.world import InvariantViolation, Result, Scenario, World, run_seed

__all__ = ["InvariantViolation", "Result", "Scenario", "World", "run_seed"]
