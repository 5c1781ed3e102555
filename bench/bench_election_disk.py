"""Election time of two FMRP replicas (of three) when every term write is slow: the rule that sizes a round
by the measured write time against the rule before it (rounds capped at 2 x master_dead).

    python -m bench.bench_election_disk [--seeds N] [--writes 0,0.05,0.15,...]

Discrete-event runs of the real `controller.fmrp.Fmrp` objects (tests/harness/slowdisk.py: each write holds
the replica's turn, as controller.node does; messages take 1 ms) at the default timers (hello 30 ms,
master_dead 150 ms). Printed per write time: elected seeds of N and the median time to a master, each rule.
No wall-clock measurement: the figures are simulated seconds, the same on any machine.
"""

from __future__ import annotations

import argparse
import statistics

from tests.harness.slowdisk import elect_with_a_slow_disk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--writes", default="0,0.05,0.15,0.3,0.6,1.5,3")
    args = ap.parse_args()
    print("write (s) | rule | elected | median time to a master (s)")
    for w in (float(x) for x in args.writes.split(",")):
        for rule, took in (("rounds cover two writes", True), ("capped rounds (before)", False)):
            got = [elect_with_a_slow_disk(w, s, report_took=took) for s in range(args.seeds)]
            ok = [g for g in got if g is not None]
            med = f"{statistics.median(ok):.2f}" if ok else "-"
            print(f"{w:9.3f} | {rule:24} | {len(ok):3}/{args.seeds} | {med}")


if __name__ == "__main__":
    main()
