"""CPU of every process of a lab per link change, and what ovs-vswitchd does for it (issue #20, "link down,
remote switches": where the 2 cores go when a link goes down and comes back).

    sudo .venv/bin/python -m bench.bench_linkcost [--scenario ls4x16-oam] [--flaps 10] [--mode link|host] [--ovs-per-switch]

One lab (the scenario's fabric and timers, as bench_convergence), then two windows of equal length: idle, and
`--flaps` failures and repairs of one fabric link (`link`: carrier down at both ends, as bench_convergence's
tor_s2_link; `host`: one host port of the last ToR, a carrier change with no routing change at all). For every
daemon and for each thread of ovs-vswitchd (added up over the lab's OVS instances): CPU time (/proc/PID/task/*/schedstat, ns) in the flap window
minus the idle window, per change (each failure and each repair is a change). And ovs-vswitchd's coverage
counters (`ovs-appctl coverage/show`, totals) over the same windows: how many flow-table revalidations
(`rev_flow_table`), bridge reconfigurations (`bridge_reconfigure`), OpenFlow messages received
(`ofproto_recv_openflow`), datapath flow translations (`xlate_actions`) one change costs.
Results: a table on stdout and bench/results/linkcost.json (merged by scenario and mode).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "linkcost.json"
COUNTERS = ("rev_flow_table", "rev_reconfigure", "rev_port_toggled", "bridge_reconfigure", "ofproto_recv_openflow",
            "xlate_actions", "netlink_sent", "util_xalloc")


def _threads(pid: int) -> dict[str, int]:
    """Thread name (numbered when repeated) -> CPU ns so far."""
    out: dict[str, int] = {}
    try:
        tasks = sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name))
    except OSError:
        return out
    for t in tasks:
        try:
            ns = int((t / "schedstat").read_text().split()[0])
            name = (t / "comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        out[name] = out.get(name, 0) + ns
    return out


def _coverage(lab: Any) -> dict[str, int]:
    """ovs-vswitchd's coverage counters, added up over every OVS instance of the lab."""
    out: dict[str, int] = {}
    for ovs in lab.ovs_instances():
        for line in ovs.appctl("coverage/show").splitlines():
            m = re.match(r"(\S+)\s+.*total:\s*(\d+)", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


def measure(scenario: str, flaps: int, mode: str, name: str, period: float, ovs_per_switch: bool = False) -> dict[str, Any]:
    from bench.bench_convergence import SCENARIOS, Injector, override_timers
    from lab.fabric import Lab
    from lab.inject import _set_ifaces

    sc = SCENARIOS[scenario]
    clos = dict(sc.clos)
    clos.setdefault("damping", (("enabled", False),))
    clos["timers"] = override_timers(sc.timers, [])
    lab = Lab.up(name=name, clos=clos, clean=True, timeout=90, log=lambda _m: None, ovs_per_switch=ovs_per_switch)
    try:
        time.sleep(3)
        pids = {rec.key: rec.pid for rec in lab.state.processes.values()}
        vswitchds = lab.vswitchd_pids()
        link = next(lk for lk in lab.fabric.links if lk.a.switch.startswith(("leaf", "tor")))
        fabric_ports = {f"{sw.name}:{p}" for sw in lab.fabric.switches for p in lab.fabric.fabric_ports(sw.name)}
        last_tor = [sw.name for sw in lab.fabric.switches if sw.hosts][-1]
        host_if = next(i for k, i in lab.state.ifaces.items() if k.startswith(f"{last_tor}:") and k not in fabric_ports)
        window = 2 * flaps * period

        def snap() -> tuple[dict[str, dict[str, int]], dict[str, int]]:
            threads = {k: _threads(p) for k, p in pids.items()}
            merged: dict[str, int] = {}         # every instance's threads, added up by thread name
            for p in vswitchds:
                for t, v in _threads(p).items():
                    merged[t] = merged.get(t, 0) + v
            threads["ovs-vswitchd"] = merged
            return threads, _coverage(lab)

        a = snap()
        time.sleep(window)
        b = snap()
        inj = Injector(lab)
        t0 = time.monotonic()
        for _ in range(flaps):
            if mode == "link":
                fault = inj.fail("tor_s2_link", link.name)
                time.sleep(period)
                inj.heal(fault)
            else:
                _set_ifaces(lab, [host_if], up=False)
                time.sleep(period)
                _set_ifaces(lab, [host_if], up=True)
            time.sleep(period)
        flap_s = time.monotonic() - t0
        c = snap()
        changes = 2 * flaps
        scale = window / flap_s        # the idle window, scaled to the flap window's length

        def per_change(k: str, thread: str | None = None) -> float:
            def tot(s: dict[str, dict[str, int]]) -> int:
                th = s[0].get(k, {})
                return th.get(thread, 0) if thread else sum(th.values())
            idle = (tot(b) - tot(a)) / scale
            return round(((tot(c) - tot(b)) - idle) / changes / 1000, 1)

        ends = {link.a.switch, link.b.switch} if mode == "link" else set()
        procs = {k: per_change(k) for k in [*pids, "ovs-vswitchd"]}
        ovs_threads = {t: per_change("ovs-vswitchd", t) for t in c[0].get("ovs-vswitchd", {})}
        cov = {k: round(((c[1].get(k, 0) - b[1].get(k, 0)) - (b[1].get(k, 0) - a[1].get(k, 0)) / scale) / changes, 1)
               for k in COUNTERS}
        clients = {k[7:]: v for k, v in procs.items() if k.startswith("client:")}
        return {
            "scenario": scenario, "mode": mode, "ovs": f"{len(vswitchds)} instances" if ovs_per_switch else "shared", "changes": changes, "link": link.name if mode == "link" else host_if,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "loadavg": os.getloadavg(),
            "cpu_us_per_change": {
                "ovs-vswitchd": procs["ovs-vswitchd"], "ovs_threads": {t: v for t, v in ovs_threads.items() if abs(v) >= 20},
                "clients_total": round(sum(clients.values()), 1),
                "ends": {k: v for k, v in clients.items() if k in ends},
                "other_clients_median": sorted(v for k, v in clients.items() if k not in ends)[
                    len([k for k in clients if k not in ends]) // 2],
                "masters": {k[7:]: v for k, v in procs.items() if k.startswith("master:")},
            },
            "ovs_coverage_per_change": cov,
        }
    finally:
        lab.down(log=lambda _m: None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="ls4x16-oam")
    ap.add_argument("--flaps", type=int, default=10)
    ap.add_argument("--mode", choices=("link", "host"), default="link")
    ap.add_argument("--name", default="linkcost")
    ap.add_argument("--period", type=float, default=0.5, help="s between a change and the next")
    ap.add_argument("--ovs-per-switch", action="store_true", help="one OVS per switch (`lab up --ovs-per-switch`)")
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    res = measure(args.scenario, args.flaps, args.mode, args.name, args.period, args.ovs_per_switch)
    print(json.dumps(res, indent=1))
    out = Path(args.output)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[f"{args.scenario}/{args.mode}" + ("/ovs-per-switch" if args.ovs_per_switch else "")] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
