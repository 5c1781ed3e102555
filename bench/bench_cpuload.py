"""Stability of a lab fabric under CPU load (issue #20: "stay stable ... also with two CPU-bound processes
competing"), and what gives ovs-vswitchd the CPU it needs.

    python -m bench.bench_cpuload [--pods 0 --leaves 4 --spines 2] [--hogs 2] [--soak-s 60] [--name perfl]

One `lab up` with the lab's own defaults (CFM sized by lab.sizing, flap damping on: what a fresh user
runs), then per phase: 10 s quiet, then `--hogs` CPU-bound processes (python -c 'while 1: pass', one
session, nice 0, or one session each with `--hog-sessions`; killed by PID) for `--soak-s`, counting what moved: LSD versions published (every link
state change is one), `usable=False` lines in the client logs, CFM faults (client counters) and ports
damped at the end. Phases:

- `boosted`: ovs-vswitchd as `lab up` leaves it (threads at nice -15 and its autogroup at -15);
- `group-nice-0`: its autogroup set back to nice 0 (the lab before the autogroup fix: thread nice alone,
  which autogroup scheduling confines to vswitchd's own session).

Results: BENCHMARKS.md "Bring-up and stability under CPU load"; JSON in bench/results/cpuload.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.hogs import CpuHogs

RESULTS = Path(__file__).resolve().parent / "results" / "cpuload.json"


def _counts(lab: Any) -> dict[str, int]:
    states = lab.client_states()
    out = {"oam_fault": 0, "damped_ports": 0, "unusable_ports": 0}
    for st in states.values():
        if not isinstance(st, dict):
            continue
        out["oam_fault"] += int(st.get("counters", {}).get("oam_fault", 0))
        for p in st.get("ports", []):
            out["damped_ports"] += int(bool(p.get("damped")))
            out["unusable_ports"] += int(not p.get("usable"))
    return out


def _downs(lab: Any, since: dict[str, int]) -> int:
    n = 0
    for rec in lab.state.clients():
        with open(rec.log, "rb") as f:
            f.seek(since.get(rec.name, 0))
            n += f.read().count(b" usable=False ")
    return n


def _offsets(lab: Any) -> dict[str, int]:
    return {rec.name: os.path.getsize(rec.log) for rec in lab.state.clients()}


def set_group_nice(lab: Any, nice: int) -> bool:
    """The autogroup nice of every ovs-vswitchd of the lab; False if one could not be set."""
    ok = True
    for pid in lab.vswitchd_pids():
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            ok = False
    return ok


def phase(lab: Any, name: str, hogs: int, soak_s: float, log: Any, sessions: bool = False) -> dict[str, Any]:
    time.sleep(10.0)
    v0, c0, off = lab.lsd_version() or 0, _counts(lab), _offsets(lab)
    la0 = os.getloadavg()
    with CpuHogs(hogs, sessions) as h:
        log(f"[{name}] {hogs} hogs {h.pids} for {soak_s:g}s, load {la0[0]:.2f}")
        time.sleep(soak_s)
        la1 = os.getloadavg()
        c1 = _counts(lab)
    v1 = lab.lsd_version() or 0
    out = {"phase": name, "hogs": hogs, "hog_sessions": "one each" if sessions else "shared", "seconds": soak_s, "lsd_versions": v1 - v0,
           "ports_went_unusable": _downs(lab, off), "oam_faults": c1["oam_fault"] - c0["oam_fault"],
           "damped_ports_at_end": c1["damped_ports"], "unusable_ports_at_end": c1["unusable_ports"],
           "loadavg_start": la0, "loadavg_end": la1}
    log(f"[{name}] {json.dumps(out)}")
    lab.wait_converged(120.0)          # damped ports come back after damp_max at most
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_cpuload", description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="cpuload")
    ap.add_argument("--spines", type=int, default=2)
    ap.add_argument("--pods", type=int, default=0)
    ap.add_argument("--leaves", type=int, default=4)
    ap.add_argument("--aggs-per-pod", type=int, default=2)
    ap.add_argument("--tors-per-pod", type=int, default=2)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--soak-s", type=float, default=60.0)
    ap.add_argument("--hog-sessions", action="store_true", help="each hog in a session (autogroup) of its own")
    ap.add_argument("--phases", default="boosted,group-nice-0")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from lab.fabric import Lab

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    clos = {"spines": args.spines, "pods": args.pods, "leaves": args.leaves, "aggs_per_pod": args.aggs_per_pod,
            "tors_per_pod": args.tors_per_pod}
    if args.pods == 0:
        clos.pop("aggs_per_pod")
        clos.pop("tors_per_pod")
    report: dict[str, Any] = {"benchmark": "cpuload", "clos": clos, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                              time.gmtime()),
                              "loadavg_start": os.getloadavg(), "phases": []}
    lab = Lab.up(name=args.name, clos=clos, clean=True, timeout=120.0, log=log)
    try:
        report["timers"] = {"oam_interval_ms": lab.fabric.timers.oam_interval * 1000,
                            "flap_threshold": lab.fabric.timers.flap_threshold}
        for name in [p for p in args.phases.split(",") if p]:
            set_group_nice(lab, -15 if name == "boosted" else 0)
            report["phases"].append(phase(lab, name, args.hogs, args.soak_s, log, args.hog_sessions))
    finally:
        lab.down(log=lambda _m: None)
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
