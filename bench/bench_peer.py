"""firepath side by side with FRR on the same fabric, same failures, one run: every figure as a ratio.

    python -m bench.bench_peer [--scenario leafspine|clos3] [--trials N] [--bringups N]
                               [--variants ospf,bgp] [--skip-firepath] [--bfd-ms 50] [--bfd-mult 3]

Needs root, Open vSwitch, nftables and Debian's frr (``sudo scripts/install-deps.sh --bench``).

1. **firepath**: bench.bench_convergence is called as it is (``--scenarios S --kinds LINK,silent``, its
   own lab, timers and analysis), then one more `lab up` of the same fabric measures the clients' idle
   CPU and RSS (and ovs-vswitchd's, reported apart: it is the switch, not the control plane).
2. **FRR**, per variant (bench.peers.frr: OSPF+BFD, eBGP+BFD per RFC 7938): the same fabric config,
   host namespaces and UDP probes (lab.probe, same flows and rate), the same failure chosen per trial
   (bench_convergence.make_plan), carrier changes timed the same way (ioctl from inside the namespaces)
   and silent failures through lab.inject (nftables drop at both ends). "Reprogrammed" is the kernel FIB
   of each affected switch (`ip -ts monitor route`, a route toward a ToR prefix changed), as firepath's is
   its `programmed` log line; the affected switches are the same (bench_convergence.AffectedOracle). The
   FRR trial dicts have the keys bench_convergence.analyse_kind reads, so both sides are summarised by
   the same code.

Figures (p50 over trials x affected switches, or over flows): link down / silent failure -> every affected
switch reprogrammed; probe outage (lost x interval) of affected flows; repaired link -> every affected
switch programmed back; daemons started -> full ECMP; idle CPU (% of a core) and RSS per switch.
Ratios are firepath / FRR (below 1: firepath is faster or lighter).

Results: a table on stdout (Markdown rows for BENCHMARKS.md) and bench/results/peer.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "peer.json"
LINK_KIND = {"leafspine": "tor_s2_link", "clos3": "s2s3_link",
             "leafspine-oam": "tor_s2_link", "clos3-oam": "s2s3_link",      # firepath with CFM (liveness: oam)
             "ls4x16-oam": "tor_s2_link"}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


# -------------------------------------------------------------------------------------------------- firepath
def run_firepath(args: argparse.Namespace, kinds: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """bench_convergence on the scenario (its JSON as it wrote it), then idle CPU/RSS of a fresh lab."""
    from bench import bench_convergence as bc

    # a --quick run leaves the recorded full results alone (run_all moves our own JSON to results/quick/)
    out_dir = args.output.parent / "quick" if args.quick else args.output.parent
    out_path = out_dir / (args.output.stem + "-firepath-convergence.json")
    argv = ["--scenarios", args.scenario, "--kinds", ",".join(kinds), "--trials", str(args.trials),
            "--name", f"{args.name}fp", "--output", str(out_path), "--flows", str(args.flows),
            "--rate", str(args.rate)]
    for item in args.timer:
        argv += ["--timer", item]
    if args.bringups <= 1:
        argv.append("--quick")          # one bring-up; --trials still wins over quick's 2
    if args.ovs_per_switch:
        argv.append("--ovs-per-switch")
    log(f"firepath: python -m bench.bench_convergence {' '.join(argv)}  (load {loadavg()})")
    t0 = time.time()
    rc = bc.main(argv)
    report = json.loads(out_path.read_text())
    res: dict[str, Any] = {"command": "python -m bench.bench_convergence " + " ".join(argv), "exit": rc,
                           "seconds": round(time.time() - t0, 1), "convergence": report}
    res["idle"] = firepath_idle(args, log)
    return res


def firepath_idle(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from bench import bench_convergence as bc
    from bench.peers.frr import cpu_rss
    from lab.fabric import Lab

    sc = bc.SCENARIOS[args.scenario]
    clos = dict(sc.clos)
    clos["timers"] = bc.override_timers(sc.timers, args.timer)
    lab = None
    try:
        lab = Lab.up(name=f"{args.name}fp", clos=clos, clean=True, timeout=90.0, log=lambda _m: None,
                     ovs_per_switch=args.ovs_per_switch)
        bc.wait_for(lambda: lab.convergence_problem() is None, 30.0)
        time.sleep(args.settle)
        pids = {rec.name: [rec.pid] for rec in lab.state.clients()}
        pids["ovs-vswitchd (all instances)"] = lab.vswitchd_pids()
        la = loadavg()
        sample = cpu_rss(pids, args.idle_s)
        log(f"firepath idle: {sample}")
        return {"per_switch": {k: v for k, v in sample.items() if not k.startswith("ovs-")},
                "ovs_vswitchd": sample.get("ovs-vswitchd (all instances)"), "seconds": args.idle_s,
                "loadavg": la, "timers": dict(clos["timers"])}
    except Exception as e:  # noqa: BLE001 - recorded, the FRR side still runs
        log(f"firepath idle failed: {e!r}")
        return {"error": repr(e)}
    finally:
        if lab is not None:
            lab.down(log=lambda _m: None)


# -------------------------------------------------------------------------------------------------- FRR
class FrrBench:
    """Trials on a bench.peers.frr.FrrLab, producing bench_convergence-shaped trial dicts."""

    def __init__(self, args: argparse.Namespace, variant: str, log: Callable[[str], None]) -> None:
        from bench import bench_convergence as bc

        self.args = args
        self.variant = variant
        self.log = log
        self.lab: Any = None
        # bench_convergence's probe start/stop, with our lab in its place (it only calls lab.probe)
        self.probes = bc.Bench(argparse.Namespace(flows=args.flows, rate=args.rate), log)

    def up(self) -> dict[str, Any]:
        from bench import bench_convergence as bc
        from bench.peers.frr import FrrLab

        sc = bc.SCENARIOS[self.args.scenario]
        t0 = time.time()
        self.lab = lab = FrrLab.up(name=f"{self.args.name}{self.variant}", clos=dict(sc.clos), variant=self.variant,
                                   bfd_ms=self.args.bfd_ms, bfd_mult=self.args.bfd_mult, timeout=60.0,
                                   log=lambda _m: None)
        t_seen = time.time()
        self.probes.lab = lab
        self.oracle = bc.AffectedOracle(lab.fabric)
        self.full = lab.expected()
        events = lab.route_events(lab.t_daemons, t_seen)
        last = [max(e[0] for e in ev) for ev in events.values() if ev]
        return {"lab_up_returned_s": round(t_seen - t0, 3),
                "daemons_to_full_ecmp_s": round(max(last) - lab.t_daemons, 3) if last else None,
                "full_ecmp": lab.route_problem(self.full) is None, "loadavg": loadavg()}

    def down(self) -> None:
        if self.lab is not None:
            self.lab.down()
            self.lab = None

    def idle(self) -> dict[str, Any]:
        from bench.peers.frr import cpu_rss

        time.sleep(self.args.settle)
        la = loadavg()
        return {"per_switch": cpu_rss(self.lab.daemon_pids(), self.args.idle_s), "seconds": self.args.idle_s,
                "loadavg": la}

    def trial(self, kind: str, i: int) -> dict[str, Any]:
        from bench import bench_convergence as bc
        from lab import inject

        lab, args = self.lab, self.args
        plan = bc.make_plan(lab.fabric, kind, i, None)
        link = next(lk for lk in lab.fabric.links if lk.name == plan.target)
        ends = {link.a.switch: {link.a.port}, link.b.switch: {link.b.port}}
        ifaces = [lab.state.ifaces[f"{link.a.switch}:{link.a.port}"], lab.state.ifaces[f"{link.b.switch}:{link.b.port}"]]
        out: dict[str, Any] = {"kind": kind, "trial": i, "target": plan.target, "probes": plan.probes}
        probes = self.probes.start_probes(plan.probes)
        rec: dict[str, Any] | None = None
        try:
            time.sleep(args.pre)
            if kind == "silent":
                rec = inject.fail_link(lab, f"{link.a.switch}:{link.a.port}", f"{link.b.switch}:{link.b.port}",
                                       silent=True)
                t_end = time.time()
                t0 = t_end - (time.monotonic() - float(rec["at"]))
            else:
                rec = {"kind": "link", "link": link.index, "name": link.name, "ifaces": ifaces}
                lab.state.faults.append(rec)
                lab.state.save()
                t0 = lab.set_links(ifaces, up=False)
                t_end = time.time()
            out["inject_window_ms"] = bc.ms(t_end, t0)
            time.sleep(args.hold + (args.silent_extra if kind == "silent" else 0.0))
        finally:
            out["probe"] = self.probes.stop_probes(probes, plan.probes)
        want = lab.expected([link.index])
        out["converged"] = lab.wait_routes(want, args.converge_timeout)
        if not out["converged"]:
            out["problem"] = lab.route_problem(want)
        t_seen = time.time()
        affected = self.oracle.affected([link.index], None)
        events = lab.route_events(t0, t_seen)
        per = {}
        for sw in affected:
            ts = [e[0] for e in events.get(sw, [])]
            per[sw] = {"local": sw in ends, "repaired_ms": bc.ms(min(ts), t0) if ts else None,
                       "first_ms": bc.ms(min(ts), t0) if ts else None, "last_ms": bc.ms(max(ts), t0) if ts else None,
                       "lsd_ms": None, "rounds": len(ts), "program_ms": [], "messages": []}
        out.update({"t_inject": round(t0, 6), "affected": affected, "detect_ms": {}, "switches": per,
                    "reprogrammed_ms": max((s["repaired_ms"] for s in per.values() if s["repaired_ms"] is not None),
                                           default=None),
                    "final_ms": max((s["last_ms"] for s in per.values() if s["last_ms"] is not None), default=None),
                    "missing_reprogram": sorted(sw for sw, s in per.items() if s["repaired_ms"] is None)})
        # --- heal, and the repaired link back in use on every affected switch
        if kind == "silent":
            t_h = time.time()
            inject.undo(lab, rec)
        else:
            t_h = lab.set_links(ifaces, up=True)
        with contextlib.suppress(ValueError):
            lab.state.faults.remove(rec)
        lab.state.save()
        healed = lab.wait_routes(self.full, args.converge_timeout + 5)
        t_back = time.time()
        events = lab.route_events(t_h, t_back)
        back = {sw: bc.ms(max(e[0] for e in events[sw]), t_h) if events.get(sw) else None
                for sw in sorted(set(affected) | set(ends))}
        out["healed"] = healed
        out["repair"] = {"switches": back, "port_usable_ms": {},
                         "back_in_use_ms": max(back.values()) if healed and all(v is not None for v in back.values())
                         else None}
        return out


def run_frr(args: argparse.Namespace, variant: str, kinds: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    from bench import bench_convergence as bc

    fb = FrrBench(args, variant, log)
    res: dict[str, Any] = {"variant": variant, "bfd": {"interval_ms": args.bfd_ms, "multiplier": args.bfd_mult},
                           "bringup": [], "kinds": [], "trials": {}, "loadavg_start": loadavg()}
    try:
        for b in range(args.bringups):
            if b:
                fb.down()
            res["bringup"].append(fb.up())
            log(f"FRR {variant} bring-up {b + 1}/{args.bringups}: {res['bringup'][-1]}")
        res["idle"] = fb.idle()
        log(f"FRR {variant} idle: {res['idle']}")
        for kind in kinds:
            rows = []
            for i in range(args.trials):
                try:
                    t = fb.trial(kind, i)
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    t = {"kind": kind, "trial": i, "error": repr(e), "traceback": traceback.format_exc()}
                    with contextlib.suppress(Exception):
                        from lab import inject

                        inject.heal(fb.lab)
                        fb.lab.wait_routes(fb.full, 10.0)
                rows.append(t)
                lost = sum(p.get("lost", 0) for p in t.get("probe", []))
                log(f"  FRR {variant} {kind} #{i}: {t.get('target')} reprogrammed={t.get('reprogrammed_ms')} "
                    f"lost={lost} back={t.get('repair', {}).get('back_in_use_ms')} {t.get('error', '')}")
                time.sleep(args.gap)
            good = [t for t in rows if "error" not in t]
            a = bc.analyse_kind(kind, good)
            a["errors"] = len(rows) - len(good)
            res["kinds"].append(a)
            res["trials"][kind] = rows
    except Exception as e:  # noqa: BLE001 - recorded
        res["error"] = repr(e)
        log(f"FRR {variant} aborted: {e!r}")
    finally:
        fb.down()
        res["loadavg_end"] = loadavg()
    return res


# -------------------------------------------------------------------------------------------------- ratios
def figures_convergence(kinds_summary: list[dict[str, Any]], link_kind: str) -> dict[str, float | None]:
    by = {a["kind"]: a for a in kinds_summary}

    def g(kind: str, *keys: str) -> float | None:
        d: Any = by.get(kind, {})
        for k in keys:
            d = d.get(k, {}) if isinstance(d, dict) else {}
        return d if isinstance(d, (int, float)) else None

    return {
        "link down: every affected switch reprogrammed, p50 ms": g(link_kind, "reprogram_ms_all", "p50"),
        "link down: remote switches, p50 ms": g(link_kind, "reprogram_ms_remote", "p50"),
        "link down: probe outage of affected flows, p50 ms": g(link_kind, "loss_ms_affected", "p50"),
        "silent failure: every affected switch reprogrammed, p50 ms": g("silent", "reprogram_ms_all", "p50"),
        "silent failure: probe outage of affected flows, p50 ms": g("silent", "loss_ms_affected", "p50"),
        "repaired link back in use, p50 ms": g(link_kind, "repair_back_in_use_ms", "p50"),
        "silent failure repaired, back in use, p50 ms": g("silent", "repair_back_in_use_ms", "p50"),
    }


def firepath_figures(fp: dict[str, Any], scenario: str) -> dict[str, float | None]:
    sc = next((s for s in fp["convergence"].get("scenarios", []) if s["name"] == scenario), {})
    f = figures_convergence(sc.get("kinds", []), LINK_KIND[scenario])
    f["daemons started -> full ECMP, median s"] = median([b.get("daemons_to_full_ecmp_s") for b in sc.get("bringup", [])])
    idle = fp.get("idle", {}).get("per_switch", {})
    f["idle CPU per switch, mean % of a core"] = (round(statistics.fmean(v["cpu_pct"] for v in idle.values()), 2)
                                                  if idle else None)
    f["RSS per switch, mean MiB"] = round(statistics.fmean(v["rss_mib"] for v in idle.values()), 1) if idle else None
    return f


def frr_figures(fr: dict[str, Any], scenario: str) -> dict[str, float | None]:
    f = figures_convergence(fr.get("kinds", []), LINK_KIND[scenario])
    f["daemons started -> full ECMP, median s"] = median([b.get("daemons_to_full_ecmp_s") for b in fr.get("bringup", [])])
    idle = fr.get("idle", {}).get("per_switch", {})
    f["idle CPU per switch, mean % of a core"] = (round(statistics.fmean(v["cpu_pct"] for v in idle.values()), 2)
                                                  if idle else None)
    f["RSS per switch, mean MiB"] = round(statistics.fmean(v["rss_mib"] for v in idle.values()), 1) if idle else None
    return f


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def table(report: dict[str, Any]) -> str:
    fp = report.get("figures", {}).get("firepath", {})
    variants = [v for v in report.get("figures", {}) if v != "firepath"]
    head = "| figure | firepath | " + " | ".join(f"FRR {v} + BFD | firepath / FRR {v}" for v in variants) + " |"
    lines = [head, "|---" * (2 + 2 * len(variants)) + "|"]
    for name in fp or report["figures"][variants[0]]:
        row = f"| {name} | {fmt(fp.get(name))} | "
        row += " | ".join(f"{fmt(report['figures'][v].get(name))} | **{fmt(ratio(fp.get(name), report['figures'][v].get(name)))}**"
                          for v in variants)
        lines.append(row + " |")
    return "\n".join(lines)


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if isinstance(x, float) and x < 10 else (f"{x:,.0f}" if isinstance(x, float) else str(x))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_peer", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="leafspine", choices=sorted(LINK_KIND))
    ap.add_argument("--quick", action="store_true", help="2 trials per kind, one bring-up, 3 s idle sample")
    ap.add_argument("--trials", type=int, default=None, help="trials per failure kind, each side (default 10)")
    ap.add_argument("--bringups", type=int, default=None, help="bring-ups measured, each side (default 3)")
    ap.add_argument("--variants", default="ospf,bgp")
    ap.add_argument("--skip-firepath", action="store_true", help="FRR only (no ratios)")
    ap.add_argument("--name", default="frrpeer", help="lab name prefix (labs NAMEfp, NAMEospf, NAMEbgp)")
    ap.add_argument("--ovs-per-switch", action="store_true", help="firepath's lab with one OVS instance per switch")
    ap.add_argument("--bfd-ms", type=int, default=50)
    ap.add_argument("--bfd-mult", type=int, default=3)
    ap.add_argument("--timer", action="append", default=[], metavar="KEY=VALUE",
                    help="firepath fabric timer override, as bench_convergence --timer (e.g. oam_interval_ms=5)")
    ap.add_argument("--flows", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--pre", type=float, default=0.25)
    ap.add_argument("--hold", type=float, default=0.6, help="s of probe after a failure (FRR side)")
    ap.add_argument("--silent-extra", type=float, default=0.9, help="more s of probe for a silent failure")
    ap.add_argument("--gap", type=float, default=0.2)
    ap.add_argument("--settle", type=float, default=2.0, help="s before the idle sample")
    ap.add_argument("--idle-s", type=float, default=10.0, help="idle CPU sample length, s")
    ap.add_argument("--converge-timeout", type=float, default=10.0)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.trials = args.trials or (2 if args.quick else 10)
    args.bringups = args.bringups or (1 if args.quick else 3)
    if args.quick:
        args.idle_s = min(args.idle_s, 3.0)
    from bench.peers.frr import frr_missing
    from lab.fabric import preflight

    problem = preflight() or frr_missing()
    if problem:
        print(problem, file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _interrupt)        # SIGTERM: tear the labs down, write what was measured
    kinds = [LINK_KIND[args.scenario], "silent"]
    report: dict[str, Any] = {"benchmark": "peer", "scenario": args.scenario, "trials": args.trials,
                              "command": "python -m bench.bench_peer " + " ".join(argv if argv is not None
                                                                                  else sys.argv[1:]),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "host": {"cpus": os.cpu_count(), "loadavg_start": loadavg()}, "figures": {}}
    try:
        if not args.skip_firepath:
            report["firepath"] = run_firepath(args, kinds, log)
            report["figures"]["firepath"] = firepath_figures(report["firepath"], args.scenario)
            _write(args.output, report)
        for v in [v for v in args.variants.split(",") if v]:
            report[f"frr_{v}"] = run_frr(args, v, kinds, log)
            report["figures"][v] = frr_figures(report[f"frr_{v}"], args.scenario)
            _write(args.output, report)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        report["host"]["loadavg_end"] = loadavg()
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write(args.output, report)
    if report["figures"]:
        print(table(report))
    print(f"\nwrote {args.output} (load average {report['host']['loadavg_start']} -> "
          f"{report['host']['loadavg_end']} on {os.cpu_count()} cpus)")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
