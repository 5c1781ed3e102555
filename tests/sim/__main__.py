"""Run the FMRP simulator over many seeds: `python -m tests.sim --seeds 5000 [--start 0] [--jobs 4]`.

Replay one seed with its full event trace: `python -m tests.sim --seed 1234 --trace`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from tests.sim.world import InvariantViolation, Result, World


def _run(seed: int) -> Result | str:
    try:
        return World(seed).run()
    except InvariantViolation as e:
        return str(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    ap.add_argument("--seeds", type=int, default=500, help="number of seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="run only this seed")
    ap.add_argument("--trace", action="store_true", help="with --seed: print the whole event trace")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)

    if args.seed is not None:
        w = World(args.seed)
        try:
            r = w.run()
        except InvariantViolation as e:
            if args.trace:
                print(w.format_trace())
            print(e, file=sys.stderr)
            return 1
        if args.trace:
            print(w.format_trace())
        print(r)
        return 0

    seeds = range(args.start, args.start + args.seeds)
    t0 = time.perf_counter()
    failures: list[str] = []
    results: list[Result] = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            outcomes = list(ex.map(_run, seeds, chunksize=16))
    else:
        outcomes = [_run(s) for s in seeds]
    for o in outcomes:
        (failures.append(o) if isinstance(o, str) else results.append(o))
    dt = time.perf_counter() - t0
    for f in failures[:3]:
        print(f, "\n", file=sys.stderr)
    conv = [r.converge_after for r in results]
    print(
        f"{len(seeds)} seeds in {dt:.1f}s ({args.jobs} jobs): {len(failures)} failed; "
        f"{sum(r.sticky for r in results)} sticky runs; elections {sum(r.elections for r in results)}; "
        f"max term {max((r.max_term for r in results), default=0)}"
    )
    if conv:
        conv.sort()
        print(
            f"convergence after heal: median {statistics.median(conv) * 1000:.0f} ms, "
            f"p99 {conv[int(0.99 * (len(conv) - 1))] * 1000:.0f} ms, max {conv[-1] * 1000:.0f} ms"
        )
    if failures:
        print("failed seeds:", " ".join(f.split(" ", 2)[1] for f in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
