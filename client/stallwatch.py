"""Stall watch: notice when this process did not run (runtime; the damper uses it, client.damping).

A thread wakes every `period` seconds and compares the clock with when it expected to wake. A process that
was stopped (SIGSTOP, a paused VM or container) or starved of CPU wakes late by about as long as it did not
run; every wake-up later than `period + min_stall` is reported as `on_stall(start, end)`: the process was
not running between `start` (when the wake-up was due) and `end` (when it happened), in `clock` seconds.
All threads of the process stop together, so the stall seen here is the one every event queued meanwhile
went through. Cost: `1 / period` wake-ups per second of a thread that does nothing else (a plain sleep,
not an Event wait, which costs about twice as much per wake-up).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["StallWatch"]


class StallWatch:
    def __init__(self, on_stall: Callable[[float, float], None], clock: Callable[[], float] = time.monotonic,
                 period: float = 0.1, min_stall: float = 0.1) -> None:
        if period <= 0 or min_stall <= 0:
            raise ValueError(f"period and min_stall must be > 0 s (got {period}, {min_stall})")
        self.on_stall = on_stall
        self.clock = clock
        self.period = period
        self.min_stall = min_stall
        self.stalls = 0
        self.longest = 0.0          # seconds
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread within `period`."""
        self._stopped = True
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        due = self.clock() + self.period
        while not self._stopped:
            time.sleep(max(0.0, due - self.clock()))
            if self._stopped:
                return
            now = self.clock()
            if now - due > self.min_stall:
                self.stalls += 1
                self.longest = max(self.longest, now - due)
                self.on_stall(due, now)
            due = now + self.period
