"""A fake monotonic clock, and a driver that runs a pure core's timers up to a point in time.

The pure cores take `now` and expose `tick(now)` / `next_deadline()`. `run_until` plays the runtime's
role: it jumps the clock from deadline to deadline (never sleeping) and collects what `tick` returns,
with a bound on the number of steps so a core that keeps asking for the past cannot hang a test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class FakeClock:
    """Monotonic time under the test's control. Call it (or read `.now`) to get the time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds
        return self.now

    def set(self, t: float) -> float:
        if t < self.now:
            raise ValueError(f"a monotonic clock cannot go back (from {self.now} to {t})")
        self.now = float(t)
        return self.now


class StuckCore(AssertionError):
    """A core asked to be ticked more than `max_steps` times: its deadlines do not advance."""


def run_until(clock: FakeClock, until: float, tick: Callable[[float], list[Any]],
              next_deadline: Callable[[], float], *, max_steps: int = 100_000,
              on_actions: Callable[[float, list[Any]], None] | None = None) -> list[tuple[float, Any]]:
    """Tick at every deadline <= `until` (in order), then leave the clock at `until`.

    Returns `(time, action)` for every action returned by `tick`. `on_actions(now, actions)` is called
    after each tick (e.g. to feed the actions to another core, as the runtime would).
    """
    out: list[tuple[float, Any]] = []
    for _ in range(max_steps):
        deadline = next_deadline()
        if deadline > until or math.isinf(deadline):
            clock.set(max(clock.now, until))
            return out
        clock.set(max(clock.now, deadline))
        actions = tick(clock.now)
        out.extend((clock.now, a) for a in actions)
        if on_actions is not None:
            on_actions(clock.now, actions)
    raise StuckCore(f"still ticking after {max_steps} steps at t={clock.now} (deadline {next_deadline()})")
