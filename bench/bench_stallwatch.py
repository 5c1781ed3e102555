"""Cost of the client's stall watch (client.stallwatch): process CPU of an idle Python process with and
without the watch thread, and of the first version's `threading.Event.wait` loop for comparison.

    python -m bench.bench_stallwatch [--seconds S]

Each variant runs for S seconds (default 15) in this process; CPU is read from getrusage (user + system),
so time the process was descheduled is not counted. Printed: % of a core and µs per wake-up.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from collections.abc import Callable

from client.stallwatch import StallWatch


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(seconds: float, start: Callable[[], Callable[[], None]]) -> float:
    """CPU seconds per wall second while the variant `start()` runs (it returns its stop function)."""
    stop = start()
    c0, t0 = _cpu(), time.monotonic()
    time.sleep(seconds)
    used, wall = _cpu() - c0, time.monotonic() - t0
    stop()
    return used / wall


def _event_wait_loop(period: float) -> Callable[[], Callable[[], None]]:
    def start() -> Callable[[], None]:
        done = threading.Event()

        def loop() -> None:
            while not done.wait(period):
                time.monotonic()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return lambda: (done.set(), t.join())
    return start


def _stall_watch(period: float) -> Callable[[], Callable[[], None]]:
    def start() -> Callable[[], None]:
        w = StallWatch(lambda a, b: None, period=period)
        w.start()
        return w.stop
    return start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_stallwatch", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="per variant (default 15)")
    args = ap.parse_args(argv)
    rows = [("idle process (no watch)", None, lambda: (lambda: None)),
            ("StallWatch, sleep every 100 ms (shipped)", 0.1, _stall_watch(0.1)),
            ("StallWatch, sleep every 50 ms", 0.05, _stall_watch(0.05)),
            ("Event.wait every 50 ms (first version)", 0.05, _event_wait_loop(0.05))]
    print(f"{'variant':<44} {'% of a core':>12} {'µs/wake-up':>11}")
    for name, period, start in rows:
        share = _measure(args.seconds, start)
        per = f"{share * period * 1e6:.0f}" if period else "-"
        print(f"{name:<44} {share * 100:>11.3f}% {per:>11}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
