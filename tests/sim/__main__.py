"""Run the FMRP simulator over many seeds: `python -m tests.sim --seeds 5000 [--start 0] [--jobs 4] [--real]`.

`--real` runs the real MasterCore + FmrpDriver replicas and real Reporter + LsdReplica switches instead of
the minimal LSD model. Replay one seed with its full event trace: `python -m tests.sim --seed 1234 --trace`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from tests.sim.world import InvariantViolation, Result, World

GRAY_KINDS = ("deaf", "mute", "cut")


def _world(seed: int, real: bool, failover: str | None = None, gray: str | None = None,
           fresh: bool = False) -> World:
    if fresh:
        from tests.sim.fresh import FreshWorld

        return FreshWorld(seed, failover=failover)
    if real or gray:
        from tests.sim.realcores import RealWorld

        if gray == "mix":
            gray = GRAY_KINDS[seed % len(GRAY_KINDS)]
        return RealWorld(seed, failover=failover, gray=gray)
    return World(seed, failover=failover)


def _run(args: tuple[int, bool, str | None, str | None, bool]) -> Result | str:
    try:
        return _world(*args).run()
    except InvariantViolation as e:
        return str(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    ap.add_argument("--seeds", type=int, default=500, help="number of seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="run only this seed")
    ap.add_argument("--trace", action="store_true", help="with --seed: print the whole event trace")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--real", action="store_true", help="real master/client cores instead of the LSD model")
    ap.add_argument("--fresh", action="store_true",
                    help="FMRP over real Codecs, restarts losing memory, a replaying attacker (issue #19)")
    ap.add_argument("--failover", choices=("crash", "stepdown"),
                    help="clean runs (no faults) that kill the master once: measures failover time")
    ap.add_argument("--gray", choices=(*GRAY_KINDS, "mix"),
                    help="issue #16: clean runs (real cores) with one one-way CPN fault on the master while links "
                         "change: every change must reach every switch within 1 s (mix: one kind per seed)")
    args = ap.parse_args(argv)

    if args.seed is not None:
        w = _world(args.seed, args.real, args.failover, args.gray, args.fresh)
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
            outcomes = list(ex.map(_run, [(s, args.real, args.failover, args.gray, args.fresh) for s in seeds],
                                   chunksize=16))
    else:
        outcomes = [_run((s, args.real, args.failover, args.gray, args.fresh)) for s in seeds]
    for o in outcomes:
        (failures.append(o) if isinstance(o, str) else results.append(o))
    dt = time.perf_counter() - t0
    for f in failures[:3]:
        print(f, "\n", file=sys.stderr)
    conv = [r.converge_after for r in results]
    print(
        f"{len(seeds)} {'fresh' if args.fresh else 'real-core' if args.real or args.gray else 'model'} seeds in "
        f"{dt:.1f}s ({args.jobs} jobs): "
        f"{len(failures)} failed; "
        f"{sum(r.sticky for r in results)} sticky runs; elections {sum(r.elections for r in results)}; "
        f"max term {max((r.max_term for r in results), default=0)}"
    )
    if conv:
        conv.sort()
        print(
            f"convergence after heal: median {statistics.median(conv) * 1000:.0f} ms, "
            f"p99 {conv[int(0.99 * (len(conv) - 1))] * 1000:.0f} ms, max {conv[-1] * 1000:.0f} ms"
        )
    for kind in ("crash", "stepdown"):
        fo = sorted(d for r in results for k, d in r.failovers if k == kind)
        if fo:
            print(
                f"failover after master {kind} (under the run's faults): n={len(fo)} "
                f"median {statistics.median(fo) * 1000:.0f} ms, p90 {fo[int(0.9 * (len(fo) - 1))] * 1000:.0f} ms, "
                f"max {fo[-1] * 1000:.0f} ms"
            )
    gl = sorted(x for r in results for x in r.gray_latencies)
    if gl:
        print(
            f"gray ({args.gray}): {len(gl)} link changes during the fault reached every switch: median "
            f"{statistics.median(gl) * 1000:.0f} ms, p99 {gl[int(0.99 * (len(gl) - 1))] * 1000:.0f} ms, "
            f"max {gl[-1] * 1000:.0f} ms; hand-overs {sum(r.handovers for r in results)}; held by the guard "
            f"(alarmed, not counted) {sum(r.gray_held for r in results)}"
        )
    if failures:
        print("failed seeds:", " ".join(f.split(" ", 2)[1] for f in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
