"""Does a config rollout keep every host pair? (issue #21) The issue's re-weight, step by step.

    sudo .venv/bin/python -m bench.bench_rollout [--naive]

Brings up the issue's 2-spine x 4-leaf lab (3 masters) as lab `robench`, re-weights link leaf-1:1-spine-1:1
in its fabric.yaml and rolls it out with `lab reload` (lab/reload.py): prepare on every master, then every
client one at a time, then the commit. A 4 x 250 pps probe h-2-1 -> h-3-1 (a pair whose paths the change
does not touch) runs through the whole rollout; after every step all 12 host pairs are pinged. Prints
per step the pairs reachable, the probe's loss and the time from the commit until every client programmed
the new config; with `--naive`, the issue's rolling restart instead (masters, leaf-1, spine-1, then the
rest restarted on the edited file). Tears the lab down. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import time
from pathlib import Path

from lab import inject
from lab.fabric import LAB_DEFAULT_TIMERS, Lab, load_fabric, teardown, wait_until
from lab.reload import reload_lab

NAME = "robench"
CLOS = {"spines": 2, "pods": 0, "leaves": 4, "masters": 3, "timers": LAB_DEFAULT_TIMERS}


def pairs_ok(lab: Lab) -> int:
    res = lab.ping(count=3)
    return sum(1 for v in res.values() if v >= 2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive", action="store_true", help="the issue's rolling restart instead of the rollout")
    ap.add_argument("--idle", action="store_true", help="the same steps and pings, nothing reloaded (the "
                    "probe's loss from the machine's load alone)")
    args = ap.parse_args()
    d = Path("/tmp") / f"fplab-{NAME}"
    lab = Lab.up(name=NAME, lab_dir=d, clos=CLOS, clean=True, timeout=90.0, log=lambda m: None)
    steps: list[dict] = []
    try:
        lab.wait_converged(60.0)
        steps.append({"step": "baseline", "pairs_ok": pairs_ok(lab)})
        config = Path(lab.state.config)
        config.write_text(re.sub(r'(\{a: "leaf-1:1", b: "spine-1:1")\}', r"\1, weight: 3}", config.read_text()))
        probe = lab.probe("h-2-1", "h-3-1", flows=4, rate=250.0, port=7200)
        probe.start()
        t_probe = time.monotonic()
        t_commit = None

        def mark(step: str) -> None:
            steps.append({"step": step, "pairs_ok": pairs_ok(lab), "t": round(time.monotonic() - t_probe, 2)})

        try:
            if args.naive:
                for m in lab.fabric.masters:
                    lab.stop_process(f"master:{m.id}", signal.SIGTERM)
                for m in lab.fabric.masters:
                    lab.start_master(m.id)
                wait_until(lambda: lab.current_master() is not None, 30.0, 0.1)
                time.sleep(2.0)
                mark("masters restarted")
                for sw in ("leaf-1", "spine-1"):
                    inject.restart_client(lab, sw)
                    time.sleep(4.0)
                    mark(f"{sw} restarted")
            elif args.idle:
                for sw in ["masters", *(s.name for s in lab.fabric.switches), "commit"]:
                    time.sleep(2.5)
                    mark(f"{sw}: nothing done")
            else:
                for m in lab.fabric.masters:
                    reload_lab(lab, m.id, log=lambda m: None)
                mark("prepared on every master")
                for sw in lab.fabric.switches:
                    reload_lab(lab, sw.name, log=lambda m: None)
                    mark(f"{sw.name} on the next config")
                t0 = time.monotonic()
                reload_lab(lab, "all", log=lambda m: None)     # every client already moved: the commit
                t_commit = round(time.monotonic() - t0, 3)
                mark("committed")
            result = probe.stop()
        finally:
            probe.close()
        out = {"mode": "naive" if args.naive else "idle" if args.idle else "rollout", "steps": steps,
               "probe": {"sent": result["sent"], "lost": result["lost"], "rate_per_flow": 250,
                         "holes_s": sorted((round(h[0] / 250.0, 2), h[1]) for f in result["flows"]
                                           for h in f["holes"])[:40]},
               "commit_to_converged_s": t_commit, "digest": load_fabric(config).digest[:12],
               "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
        print(json.dumps(out, indent=1))
    finally:
        lab.close()
        teardown(d, name=NAME, log=lambda m: None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
