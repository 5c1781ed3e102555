"""ECMP spread per tier on the 3-tier lab, before (one hash basis everywhere) and after (per switch).

    python -m bench.bench_ecmp [--flows 128,1024] [--quick]

Brings up the lab's 3-tier Clos (2 spines, 2 pods x (2 aggs + 2 ToRs), real masters and clients, real
OVS) twice: "before" with `hash_basis: 0` on every switch (what every client did before: the same
dp_hash parameter everywhere), "after" with the config's defaults (a basis derived from each switch id).
A third run, "weighted", gives tor-1-1's uplinks capacities 30G and 10G (buckets 3:1).
Each time, h-1-1-1 sends UDP flows (one packet each, distinct source ports) to h-2-1-1, and the bucket
counters of the group routing towards h-2-1-1's prefix are read on every switch of the path with
`ovs-ofctl -O OpenFlow15 dump-group-stats`: tor-1-1 (2 buckets: the pod's aggs), agg-1-1 and agg-1-2
(2 buckets each: the spines), spine-1 and spine-2 (2 buckets each: pod 2's aggs).
Needs root and Open vSwitch. Results go to bench/results/ecmp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lab.fabric import Lab, generate_config

RESULTS = Path(__file__).resolve().parent / "results" / "ecmp.json"
SRC, DST = "h-1-1-1", "h-2-1-1"
PATH = ("tor-1-1", "agg-1-1", "agg-1-2", "spine-1", "spine-2")
WEIGHTED = (30, 10)  # Gbit/s of tor-1-1's two uplinks in the "weighted" run
TIER = {"tor-1-1": "tor", "agg-1-1": "agg", "agg-1-2": "agg", "spine-1": "spine", "spine-2": "spine"}


def config(mode: str, name: str) -> Path:
    d = Path(f"/tmp/fplab-{name}")
    path = generate_config(d, name, spines=2, pods=2)
    doc = yaml.safe_load(path.read_text())
    if mode == "before":
        for sw in doc["switches"]:
            sw["hash_basis"] = 0
    if mode == "weighted":  # tor-1-1's uplinks: 30G to agg-1-1, 10G to agg-1-2 -> buckets 3:1
        for link in doc["links"]:
            ends = (link["a"], link["b"])
            if "tor-1-1:1" in ends:
                link["capacity"] = WEIGHTED[0]
            elif "tor-1-1:2" in ends:
                link["capacity"] = WEIGHTED[1]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def route_group(lab: Lab, switch: str, prefix: str) -> int:
    out = lab.ovs_of(switch).ofctl(lab.state.bridges[switch], "dump-flows", f"ip,nw_dst={prefix}", protocol="OpenFlow15")
    m = re.search(r"group:(\d+)", out)
    if m is None:
        raise RuntimeError(f"{switch}: no group route to {prefix}: {out}")
    return int(m.group(1))


def settled_groups(lab: Lab, prefix: str, timeout: float = 120.0) -> dict[str, int]:
    """The route group of every switch of the path, once each exists and has its 2 buckets."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            groups = {sw: route_group(lab, sw, prefix) for sw in PATH}
            if all(len(buckets(lab, sw, gid)) == 2 for sw, gid in groups.items()):
                return groups
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"the path's groups towards {prefix} did not settle in {timeout:.0f}s")
        time.sleep(0.5)


def buckets(lab: Lab, switch: str, gid: int) -> list[int]:
    out = lab.ovs_of(switch).ofctl(lab.state.bridges[switch], "dump-group-stats", f"group_id={gid}", protocol="OpenFlow15")
    return [int(x) for x in re.findall(r"bucket\d+:packet_count=(\d+)", out)]


def send_flows(lab: Lab, n: int, first_port: int) -> None:
    dst = lab.host_ip(DST)
    code = (
        "import socket, time\n"
        f"for port in range({first_port}, {first_port + n}):\n"
        "    time.sleep(0.001)\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.bind(('', port))\n"
        f"    s.sendto(b'x' * 20, ('{dst}', 5000))\n"
        "    s.close()\n"
    )
    subprocess.run(["ip", "netns", "exec", lab.state.host_netns[SRC], "python3", "-c", code], check=True, timeout=120)


def run(mode: str, flow_counts: list[int]) -> dict[str, Any]:
    name = f"ecmp{mode[0]}"
    lab = Lab.up(name=name, config=config(mode, name), clean=True, log=lambda m: print(f"  [{mode}] {m}"))
    try:
        prefix = str(next(p for p in lab.fabric.switch("tor-2-1").prefixes))
        groups = settled_groups(lab, prefix)
        out: dict[str, Any] = {"basis": {sw: lab.fabric.switch(sw).hash_basis for sw in PATH}, "runs": {}}
        port = 20000
        for n in flow_counts:
            # The lab runs ND at 50/250 ms: on a loaded machine a port may flap during a run (local repair
            # drops its bucket). Such a run is discarded and repeated once the fabric has converged again
            # (at most 5 tries), and the tries are recorded.
            attempt = 0
            for attempt in range(1, 6):  # noqa: B007 - recorded below
                before = {sw: buckets(lab, sw, gid) for sw, gid in groups.items()}
                send_flows(lab, n, port)
                port += n
                # counters of upcalled packets arrive through OVS's revalidators, tier by tier: wait until
                # every tier has all n, or nothing moved for 2 s
                deadline = time.monotonic() + 20
                last, stable_since = None, time.monotonic()
                while True:
                    now = {sw: buckets(lab, sw, gid) for sw, gid in groups.items()}
                    if any(len(now[sw]) != len(before[sw]) or len(now[sw]) != 2 for sw in PATH):
                        break
                    delta = {sw: [a - b for a, b in zip(now[sw], before[sw], strict=True)] for sw in PATH}
                    t = time.monotonic()
                    if delta != last:
                        last, stable_since = delta, t
                    tiers = (("tor-1-1",), ("agg-1-1", "agg-1-2"), ("spine-1", "spine-2"))
                    if all(sum(sum(delta[sw]) for sw in tier) >= n for tier in tiers):
                        break
                    if t - stable_since > 2.0 or t > deadline:
                        break
                    time.sleep(0.1)
                if all(len(now[sw]) == len(before[sw]) == 2 for sw in PATH):
                    break
                print(f"  [{mode}] {n} flows: a group changed during the run (port flap), retrying")
                time.sleep(1.0)
                lab.wait_converged(60)
                groups = settled_groups(lab, prefix)
            else:
                raise RuntimeError(f"{mode}: groups kept changing during {n}-flow runs")
            out["runs"][str(n)] = {
                sw: {"tier": TIER[sw], "packets": c, "shares_pct": [round(100 * x / max(1, sum(c)), 1) for x in c]}
                for sw, c in delta.items()
            }
            out["runs"][str(n)]["attempts"] = attempt
        return out
    finally:
        lab.down(log=lambda _m: None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default=None, help="comma-separated flow counts (default 128,1024)")
    ap.add_argument("--quick", action="store_true", help="128 flows only (a smoke run)")
    args = ap.parse_args(argv)
    if args.flows is None:
        args.flows = "128" if args.quick else "128,1024"
    if os.geteuid() != 0:
        print("bench_ecmp needs root (network namespaces, Open vSwitch)", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.flows.split(",")]
    load = Path("/proc/loadavg").read_text().split()[0]
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": load}
    for mode in ("before", "after", "weighted"):
        result[mode] = run(mode, counts)
    print(f"\nbucket shares (% of packets per bucket) of the group towards {DST}'s prefix, load average {load}")
    print(f"{'flows':>6} {'switch':9} {'tier':6} {'before':>14} {'after':>14}")
    for n in counts:
        for sw in PATH:
            b = result["before"]["runs"][str(n)][sw]["shares_pct"]
            a = result["after"]["runs"][str(n)][sw]["shares_pct"]
            print(f"{n:>6} {sw:9} {TIER[sw]:6} {'/'.join(map(str, b)):>14} {'/'.join(map(str, a)):>14}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    ok = all(
        40 <= s[0] <= 60 for n in counts for sw in PATH for s in [result["after"]["runs"][str(n)][sw]["shares_pct"]]
    )
    result["spread_target_met"] = ok
    print("target (every 2-bucket group 40-60 % after):", "met" if ok else "NOT met")
    want = 100 * WEIGHTED[0] / sum(WEIGHTED)
    for n in counts:
        got = result["weighted"]["runs"][str(n)]["tor-1-1"]["shares_pct"]
        print(f"weighted tor-1-1 ({WEIGHTED[0]}G/{WEIGHTED[1]}G uplinks), {n} flows: {got[0]}/{got[1]} "
              f"(weights {want:.0f}/{100 - want:.0f})")
    got = result["weighted"]["runs"][str(max(counts))]["tor-1-1"]["shares_pct"]
    result["weighted_target_met"] = abs(got[0] - want) <= 0.1 * want
    print(f"target (weighted within +-10 % of its weight at {max(counts)} flows):",
          "met" if result["weighted_target_met"] else "NOT met")
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
