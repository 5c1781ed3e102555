"""Master failover benchmark: 3 real master processes + N scripted clients on loopback.

    python -m bench.bench_failover [--quick] [--runs 20] [--leaves 30] [--variants kill,term] [--report-all]

Per run: the serving master is killed (`kill`: SIGKILL; `term`: SIGTERM, i.e. a StepDown announcement) at
t0 and measured:

- `elected_ms`: t0 → REST of a surviving replica says role=master with a higher term (polled every ~5 ms,
  so up to ~5 ms + one HTTP round trip late);
- `master_ms`: t0 → that master serves: it no longer holds its first LSD publication (`held`: it waits
  until every switch reported under its term, at most one keepalive interval);
- `first_client_ms`: t0 → the first scripted client hears the new term (the new master's announcement);
- `clients_ms`: t0 → every scripted client holds LSD data of the new term (SimFleet per-switch timestamps,
  exact to the datagram);
- `lsd_changed`: clients whose LSD *content* differed after the failover (must be 0: zero data-plane impact).

Then the killed replica is restarted (same state dir) and the next run waits until it is a Backup in sync.
Default FMRP timers (hello 30 ms, dead 150 ms). Prints a table and writes bench/results/failover.json.
The machine is shared: the numbers include scheduler noise (see `load_avg` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import stats
from proto.auth import KeyRing
from tests.harness.loopcluster import ROOT, LoopCluster
from tests.harness.simclient import SimFleet

RESULTS = ROOT / "bench" / "results" / "failover.json"
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}


def summary(xs: list[float]) -> dict[str, float | int]:
    return stats.summary(xs, digits=1)


class Bench:
    def __init__(self, directory: Path, leaves: int, report_all: bool = False) -> None:
        self.cluster = LoopCluster(directory, masters=3, leaves=leaves, log_level="info")
        self.fleet = SimFleet(self.cluster.fabric, KeyRing.load(self.cluster.fabric.security.key_file),
                              self.cluster.client_addr, n_sockets=4, report_all=report_all)

    def close(self) -> None:
        self.cluster.stop_all()
        self.fleet.close()

    def steady(self, timeout: float) -> tuple[str, dict[str, Any]]:
        """Wait for: one master, every other replica its backup at its version, every client on its term."""
        c, f = self.cluster, self.fleet

        def ok() -> tuple[str, dict[str, Any]] | None:
            got = c.single_master()
            if not got:
                return None
            leader, v = got
            views = c.versions()
            for mid, w in views.items():
                if mid != leader and not (isinstance(w, dict) and w["role"] == "backup" and w["leader"] == leader
                                          and w["version"] == v["version"] and w["term"] == v["term"]):
                    return None
            return got if f.on_term(v["term"]) and f.all_acked() else None

        got = c.wait(ok, timeout, f.pump, step=0.05)
        if not got:
            raise RuntimeError(f"cluster not steady within {timeout}s: {c.versions()}")
        return got

    def run_once(self, sig: int) -> dict[str, Any]:
        c, f = self.cluster, self.fleet
        leader, v = self.steady(60.0)
        before = {n: sw.lsd.states() for n, sw in f.switches.items()}
        for sw in f.switches.values():
            sw.term_at = sw.data_term_at = None
        others = [m for m in c.ids if m != leader]
        t0 = time.monotonic()
        c.kill(leader, sig)
        elected_at: float | None = None
        master_at: float | None = None
        new_term = None
        deadline = t0 + 15.0
        next_poll = t0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if master_at is None and now >= next_poll:
                ms = [(m, w) for m, w in c.masters_now(others) if w["term"] > v["term"]]
                if len(ms) == 1:
                    if elected_at is None:
                        elected_at = time.monotonic()
                    if not ms[0][1].get("held"):
                        master_at = time.monotonic()
                        new_term = ms[0][1]["term"]
                next_poll = time.monotonic() + 0.005
            if new_term is not None and f.on_term(new_term):
                break
            f.pump(0.002)
        if elected_at is None or master_at is None or new_term is None or not f.on_term(new_term):
            raise RuntimeError(f"no failover within 15 s: {c.versions()}")
        first = min(sw.term_at for sw in f.switches.values() if sw.term_at is not None)
        last = max(sw.data_term_at for sw in f.switches.values() if sw.data_term_at is not None)
        changed = sum(1 for n, sw in f.switches.items() if sw.lsd.states() != before[n])
        # bring the replica back for the next run (it must rejoin as a backup: sticky)
        c.wait_exit(leader, 10.0)
        c.start(leader)
        return {"signal": signal.Signals(sig).name, "old": leader, "old_term": v["term"], "new_term": new_term,
                "elected_ms": round((elected_at - t0) * 1000, 2),
                "master_ms": round((master_at - t0) * 1000, 2), "first_client_ms": round((first - t0) * 1000, 2),
                "clients_ms": round((last - t0) * 1000, 2), "lsd_changed": changed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_failover", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 runs per variant, 8 leaves")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--leaves", type=int, default=30, help="leaf switches (clients = leaves + 2 spines)")
    ap.add_argument("--variants", default="kill,term")
    ap.add_argument("--report-all", action="store_true",
                    help="scripted clients send every port report to every master (proposed client change)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    runs = 3 if args.quick else args.runs
    leaves = 8 if args.quick else args.leaves
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, Any] = {
        "benchmark": "failover", "runs": runs, "clients": leaves + 2, "masters": 3,
        "clients_report_to_all_masters": args.report_all,
        "timers": {"hello_interval_ms": 30, "master_dead_ms": 150, "keepalive_ms": 100},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="fpbench-failover-") as tmp:
        bench = Bench(Path(tmp), leaves, args.report_all)
        try:
            bench.cluster.start_all()
            bench.fleet.report()
            for name in variants:
                rows = []
                for i in range(runs):
                    row = bench.run_once(SIGNALS[name])
                    rows.append(row)
                    print(f"{name:>4} run {i + 1:>2}: elected {row['elected_ms']:7.1f} ms  serving "
                          f"{row['master_ms']:7.1f} ms  first client "
                          f"{row['first_client_ms']:7.1f} ms  all clients {row['clients_ms']:7.1f} ms  "
                          f"term {row['old_term']}->{row['new_term']}  lsd changed {row['lsd_changed']}",
                          flush=True)
                results["variants"][name] = {
                    "elected_ms": summary([r["elected_ms"] for r in rows]),
                    "master_ms": summary([r["master_ms"] for r in rows]),
                    "first_client_ms": summary([r["first_client_ms"] for r in rows]),
                    "clients_ms": summary([r["clients_ms"] for r in rows]),
                    "lsd_changed_total": sum(r["lsd_changed"] for r in rows),
                    "runs": rows,
                }
        finally:
            bench.close()
    results["machine"]["load_avg_end"] = os.getloadavg()
    print()
    print(f"{'variant':<8} {'metric':<16} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, v in results["variants"].items():
        for metric in ("elected_ms", "master_ms", "first_client_ms", "clients_ms"):
            s = v[metric]
            print(f"{name:<8} {metric:<16} {s['n']:>3} {s['p50']:>8} {s['p99']:>8} {s['max']:>8}")
        print(f"{name:<8} {'lsd_changed':<16} {v['lsd_changed_total']:>3}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
