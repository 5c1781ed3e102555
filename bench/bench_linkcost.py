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

`--window-ms W` asks another question: how much CPU the lab's processes *want* in the first W ms after a
link goes down (and after it comes back), against what the machine has in that time (cores x the window's
measured length). A remote switch's reprogramming is one chain (the end's ovs-vswitchd and client, the
serving master, the remote client and its ovs-vswitchd); when the processes around it want the whole
machine in that window, the chain waits for cores, whatever each link of it costs. Per change: the CPU of
every process (/proc/PID/task/*/schedstat) read right before the change and again W ms after it, added up by
role (the two ends' clients, the other clients, the masters, ovs-vswitchd), next to an idle window of the
same length with no change.
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


def _proc_cpu(pid: int) -> int:
    """CPU ns of every thread of `pid` so far (0 when it is gone)."""
    return sum(_threads(pid).values())


def measure_window(scenario: str, flaps: int, name: str, window_s: float, timers: list[str],
                   ovs_per_switch: bool = False, masters: int | None = None) -> dict[str, Any]:
    """CPU wanted in the first `window_s` after a link down / up / nothing, by role: see the module doc.
    Returns ms of CPU per change for each role and in total, the window's measured length (ms: reading
    /proc takes time of its own), and the machine's capacity in it (cores x length)."""
    from bench.bench_convergence import SCENARIOS, Injector, override_timers
    from lab.fabric import Lab

    sc = SCENARIOS[scenario]
    clos = dict(sc.clos)
    clos.setdefault("damping", (("enabled", False),))
    clos["timers"] = override_timers(sc.timers, timers)
    if masters:
        clos["masters"] = masters
    lab = Lab.up(name=name, clos=clos, clean=True, timeout=120, log=lambda _m: None, ovs_per_switch=ovs_per_switch)
    try:
        time.sleep(3)
        pids = {rec.key: rec.pid for rec in lab.state.processes.values()}
        pids.update({f"ovs-vswitchd:{i}": p for i, p in enumerate(lab.vswitchd_pids())})
        link = next(lk for lk in lab.fabric.links if lk.a.switch.startswith(("leaf", "tor")))
        ends = {f"client:{link.a.switch}", f"client:{link.b.switch}"}

        def role(key: str) -> str:
            if key in ends:
                return "the two ends' clients"
            return {"client": "other clients", "master": "masters", "ovs-vswitchd": "ovs-vswitchd"}.get(
                key.split(":")[0], "other")

        inj = Injector(lab)
        phases = ("down", "up", "idle")
        cpu = {ph: {} for ph in phases}
        length = {ph: 0.0 for ph in phases}
        fault = None
        for _ in range(flaps):
            for ph in phases:
                before = {k: _proc_cpu(p) for k, p in pids.items()}
                t0 = time.monotonic()
                me1 = time.thread_time_ns()
                if ph == "down":
                    fault = inj.fail("tor_s2_link", link.name)
                elif ph == "up":
                    inj.heal(fault)
                time.sleep(max(0.0, window_s - (time.monotonic() - t0)))
                after = {k: _proc_cpu(p) for k, p in pids.items()}
                length[ph] += time.monotonic() - t0
                # the change itself (an ioctl) and reading /proc after it are in the window too
                own = cpu[ph].get("this benchmark (the change, reading /proc)", 0)
                cpu[ph]["this benchmark (the change, reading /proc)"] = own + time.thread_time_ns() - me1
                for k in pids:
                    r = role(k)
                    cpu[ph][r] = cpu[ph].get(r, 0) + after[k] - before[k]
                time.sleep(0.5)        # past the change's aftermath (ND, CFM restart) before the next one
        cores = os.cpu_count() or 1
        out: dict[str, Any] = {}
        for ph in phases:
            ms = {r: round(v / flaps / 1e6, 2) for r, v in sorted(cpu[ph].items())}
            win = length[ph] / flaps * 1000
            out[ph] = {"cpu_ms": ms, "total_ms": round(sum(ms.values()), 2), "window_ms": round(win, 2),
                       "capacity_ms": round(cores * win, 2)}
        return {"scenario": scenario, "mode": "window", "ovs": "per switch" if ovs_per_switch else "shared",
                "masters": len(lab.fabric.masters), "changes": flaps, "link": link.name, "timers": timers,
                "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "loadavg": os.getloadavg(),
                "window": out}
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
    ap.add_argument("--window-ms", type=float, default=0.0,
                    help="instead: CPU wanted in the first W ms after a link down / up, by role (module doc)")
    ap.add_argument("--timer", action="append", default=[], metavar="KEY=VALUE",
                    help="--window-ms: override a timer, as bench_convergence (e.g. oam_interval_ms=7)")
    ap.add_argument("--masters", type=int, default=None, help="--window-ms: master replicas (default: the scenario's)")
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.window_ms > 0:
        res = measure_window(args.scenario, args.flaps, args.name, args.window_ms / 1000, args.timer,
                             args.ovs_per_switch, args.masters)
        mode = f"window{args.window_ms:g}ms" + (f"/masters{args.masters}" if args.masters else "")
        for ph, w in res["window"].items():
            print(f"{ph:5} window {w['window_ms']:6.2f} ms, capacity {w['capacity_ms']:6.2f} ms of CPU, wanted "
                  f"{w['total_ms']:6.2f}: " + ", ".join(f"{r} {v:.2f}" for r, v in w["cpu_ms"].items()))
    else:
        res = measure(args.scenario, args.flaps, args.mode, args.name, args.period, args.ovs_per_switch)
        mode = args.mode
        print(json.dumps(res, indent=1))
    out = Path(args.output)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[f"{args.scenario}/{mode}" + ("/ovs-per-switch" if args.ovs_per_switch else "")] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
