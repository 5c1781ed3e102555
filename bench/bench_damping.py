"""A 1 ms flap storm against one real master process, without and with master-side damping (issue #19).

    python -m bench.bench_damping [--base REV] [--duration S] [--period S]
    python -m bench.bench_damping --cost        # the damping's cost per report in the master core alone

One `firepath master` on loopback, a 2-spine x 4-leaf fabric of scripted switches (tests/harness/simclient),
all links up; then leaf-1 (a valid key) reports port 1 down and up every `period` (1 ms) for `duration`
(2 s). Run twice in the same invocation: the master of REV (default: `git merge-base HEAD main`, extracted
with `git archive` into a temp dir: no damping) and this tree's (default damping policy). Prints, per run,
the LSD versions the master made (per second of storm), the LsdDeltas every other switch received (what it
would program), and the reports sent. Writes bench/results/damping.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from io import BytesIO
from pathlib import Path
from typing import Any

from proto.auth import KeyRing
from proto.config import load_fabric
from tests.harness.flapstorm import flap_storm
from tests.harness.loopcluster import free_ports
from tests.harness.simclient import SimFleet
from tests.test_master_integration import write_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "damping.json"


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def _extract(rev: str) -> Path:
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    d = Path(tempfile.mkdtemp(prefix="fp-bench-damp-"))
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(d, filter="data")
    return d


def run(code_dir: Path, label: str, duration: float, period: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"fp-bench-damp-{label}-"))
    cfg = write_config(work)
    fabric = load_fabric(cfg)
    client_port, peer_port, rest_port = free_ports(3)
    cmd = [sys.executable, "-m", "proto.cli", "master", "--config", str(cfg), "--id", "m1",
           "--state-dir", str(work / "state"), "--bind", "127.0.0.1", "--client-port", str(client_port),
           "--peer-port", str(peer_port), "--rest-port", str(rest_port), "--log-level", "warning"]
    with open(work / "master.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=code_dir, stdout=log, stderr=log)   # cwd first on sys.path: that code
    fleet = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(rest_port, "/v1/lsd/version")["role"] == "master":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{label}: master did not come up; see {work / 'master.log'}")
            time.sleep(0.05)
        fleet = SimFleet(fabric, KeyRing.load(fabric.security.key_file), {"m1": ("127.0.0.1", client_port)},
                         n_sockets=2)
        fleet.report()
        if not fleet.pump(10, until=lambda: all(s == "up" for s in _get(rest_port, "/v1/lsd")["links"].values())):
            raise RuntimeError(f"{label}: links not up")
        fleet.pump(0.5)
        v0 = _get(rest_port, "/v1/lsd/version")["version"]
        stats = flap_storm(fleet, "leaf-1", 1, duration=duration, period=period)
        fleet.pump(0.3)
        v1 = _get(rest_port, "/v1/lsd/version")["version"]
        others = {sw: n for sw, n in stats["deltas"].items() if sw != "leaf-1"}
        el = stats["elapsed"]
        return {"code": label, "reports": stats["reports"], "storm_s": round(el, 3),
                "lsd_versions": v1 - v0, "lsd_versions_per_s": round((v1 - v0) / el, 1),
                "deltas_per_other_switch_max": max(others.values()),
                "deltas_per_other_switch_per_s": round(max(others.values()) / el, 1),
                "fulls_per_other_switch_max": max(stats["fulls"][sw] for sw in others)}
    finally:
        if fleet is not None:
            fleet.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def core_cost(rounds: int = 10, repeats: int = 4) -> dict[str, float]:
    """µs per report in `MasterCore.handle` on a 96-switch 3-tier fabric where every report changes one link
    (its lowest port alternately down and up), damping off vs default; best of `repeats`."""
    import dataclasses

    from proto.clos import clos_fabric
    from proto.config import Damping
    from tests.test_master_core import master, report

    base = clos_fabric(pods=4, spines=16, aggs_per_pod=4, tors_per_pod=16, masters=1)

    def once(enabled: bool) -> float:
        f = dataclasses.replace(base, damping=Damping(enabled=enabled))
        core = master(f)
        names = [sw.name for sw in f.switches]
        reports = {}
        for sw in names:
            ports = set(f.fabric_ports(sw))
            reports[sw] = [report(f, sw, usable=ports if r % 2 == 0 else ports - {min(ports)}, seq=10 + r)
                           for r in range(rounds)]
        t = 0.0
        for sw in names:
            core.handle(sw, report(f, sw, seq=1), t)
        t0 = time.perf_counter()
        for r in range(rounds):
            for sw in names:
                t += 0.01
                core.handle(sw, reports[sw][r], t)
        return (time.perf_counter() - t0) / (rounds * len(names)) * 1e6

    best = {"off_us": math.inf, "default_us": math.inf}
    for _ in range(repeats):
        best["off_us"] = min(best["off_us"], once(False))
        best["default_us"] = min(best["default_us"], once(True))
    return {k: round(v, 1) for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=None, help="git revision without damping (default: merge-base with main)")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--period", type=float, default=0.001)
    ap.add_argument("--cost", action="store_true", help="only measure the cost per report in the master core")
    args = ap.parse_args()
    if args.cost:
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"load average {' '.join(load)}; us per report (every report changes a link): {core_cost()}")
        return
    base = args.base or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3]
    rows = [run(_extract(base), f"base-{base[:7]}", args.duration, args.period),
            run(ROOT, "damping", args.duration, args.period)]
    keys = list(rows[0])
    print(f"load average {' '.join(load)}; storm: leaf-1 port 1 down/up every {args.period * 1000:g} ms "
          f"for {args.duration:g} s")
    print("  ".join(f"{k:>30}" if i else f"{k:<14}" for i, k in enumerate(keys)))
    for r in rows:
        print("  ".join(f"{r[k]!s:>30}" if i else f"{r[k]!s:<14}" for i, k in enumerate(keys)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": load,
                                   "host": platform.node(), "period": args.period, "duration": args.duration,
                                   "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
