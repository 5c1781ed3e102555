"""client.stallwatch: a real thread; the process's stall is made by a clock that jumps (what a SIGSTOP looks
like from inside: the next wake-up finds the clock that much later)."""

from __future__ import annotations

import threading
import time

import pytest

from client.stallwatch import StallWatch


class JumpClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_a_jump_of_the_clock_is_reported_as_one_stall_of_about_its_length():
    clock = JumpClock()
    got: list[tuple[float, float]] = []
    seen = threading.Event()

    def on_stall(start: float, end: float) -> None:
        got.append((start, end))
        seen.set()

    watch = StallWatch(on_stall, clock=clock, period=0.02, min_stall=0.5)   # 0.5 s: no scheduling delay
    watch.start()
    try:
        time.sleep(0.1)
        assert got == []                            # running normally: nothing
        before = clock()
        clock.offset += 2.0
        assert seen.wait(2.0)
        time.sleep(0.1)
    finally:
        watch.stop()
    assert len(got) == 1 and watch.stalls == 1
    start, end = got[0]
    assert before - 0.05 <= start <= before + 0.05     # when the wake-up was due
    assert 1.9 <= end - start <= 2.3 and watch.longest == pytest.approx(end - start)


def test_bad_periods_are_refused():
    with pytest.raises(ValueError, match="period and min_stall"):
        StallWatch(lambda a, b: None, period=0)
