"""Where a link change's time goes between the report and the remote switches (issue #20, stop 36).

    python -m bench.bench_stages [--flaps 16] [--timer oam_interval_ms=7] [--out F.json]

Brings up the 2 x 4 CFM lab (`lab up --pods 0 --leaves 4`), then flaps its ToR-S2 links one after the other,
a different link each time so that master-side damping stays out (carrier down 0.3 s, up 1.0 s, by ioctl from
this process: `lab.iputil.set_carrier`). Two stages, each read from the daemons themselves:

- the serving master's ``firepath_master_report_to_send_seconds`` (a report's arrival -> the first client send
  of the version it made), read after every carrier change: bad news (down) and good news (up, paced) apart;
- the CPU (utime + stime, /proc) of a client none of whose links flap (the last leaf), per LSD version it
  programmed, with its idle share over the 10 s before the flaps subtracted.

Run it under the benchmarks' lock (`flock /work/wt/bench.lock`) on a quiet machine; results are noisy on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from typing import Any

from bench.procstat import cpu_s
from controller.ops.fetch import fetch
from lab.fabric import Lab
from lab.iputil import in_netns, set_carrier

_SEND = re.compile(r"^firepath_master_report_to_send_seconds_(sum|count)\s+(\S+)", re.M)


def _cpu(pid: int) -> float:
    v = cpu_s(pid)
    if v is None:
        raise RuntimeError(f"process {pid} is gone")
    return v


def _report_to_send(lab: Lab) -> tuple[float, float]:
    """(sum s, count) of the master that has sent the most versions (the serving one)."""
    best = (0.0, 0.0)
    for m in lab.fabric.masters:
        url = f"http://127.0.0.1:{m.rest_port}/metrics"
        try:
            _, raw = in_netns(lab.state.netns, fetch, url, "GET", None, None, 1.0)
        except OSError:
            continue
        got = dict(_SEND.findall(raw.decode()))
        pair = (float(got.get("sum", 0)), float(got.get("count", 0)))
        best = max(best, pair, key=lambda p: p[1])
    return best


def _programmed(log_path: str) -> int:
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return f.read().count("event=programmed")


def run(flaps: int, timers: list[str]) -> dict[str, Any]:
    clos = {"spines": 2, "pods": 0, "leaves": 4,
            "timers": tuple({"oam_interval_ms": 7.0, **{k: float(v) for k, v in (t.split("=", 1) for t in timers)}}.items())}
    lab = Lab.up(name="stages", clos=clos, clean=True, timeout=60.0, log=lambda _m: None)
    try:
        quiet = lab.fabric.switches[-1].name                     # the last leaf: none of its links flap
        rec = lab.state.processes[f"client:{quiet}"]
        links = [link for link in lab.fabric.links if quiet not in (link.a.switch, link.b.switch)]
        ifaces = [lab.state.ifaces[f"{link.a.switch}:{link.a.port}"] for link in links]
        time.sleep(2.0)
        c0 = _cpu(rec.pid)
        time.sleep(10.0)
        idle = (_cpu(rec.pid) - c0) / 10.0
        down: list[float] = []
        up: list[float] = []
        p0, c0, t0 = _programmed(rec.log), _cpu(rec.pid), time.monotonic()
        for i in range(flaps):
            iface = ifaces[i % len(ifaces)]
            for state, into, wait in ((False, down, 0.3), (True, up, 1.0)):
                s0, n0 = _report_to_send(lab)
                set_carrier(lab.state.netns, [iface], state)
                time.sleep(wait)
                s1, n1 = _report_to_send(lab)
                if n1 - n0 == 1:             # exactly this change's version (else: not attributable)
                    into.append((s1 - s0) * 1000)
        versions = _programmed(rec.log) - p0
        extra = _cpu(rec.pid) - c0 - idle * (time.monotonic() - t0)
    finally:
        lab.down(log=lambda _m: None)

    def p50(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 2) if xs else None

    return {"flaps": flaps, "timers": timers,
            "report_to_first_send_ms": {"down_p50": p50(down), "down_n": len(down), "up_p50": p50(up),
                                        "up_n": len(up)},
            "quiet_client": {"switch": quiet, "idle_cpu_pct": round(idle * 100, 2), "versions": versions,
                             "cpu_ms_per_version": round(extra * 1000 / versions, 2) if versions else None},
            "loadavg": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flaps", type=int, default=16)
    ap.add_argument("--timer", action="append", default=[], metavar="KEY=MS",
                    help="fabric timer over oam_interval_ms=7 (repeatable; the last of a key wins)")
    ap.add_argument("--out", help="write the result as JSON here too")
    a = ap.parse_args()
    res = run(a.flaps, a.timer)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
