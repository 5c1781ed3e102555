"""Run every benchmark and print a summary: what `make bench` runs.

    python -m bench.run_all [--quick] [--only NAME,...] [--skip NAME,...]

Each benchmark is a separate process (`python -m bench.NAME [--quick]`), one after the other (they must not
compete for the CPU). Its output goes to bench/results/NAME.log and its JSON to bench/results/NAME.json
(with --quick: bench/results/quick/, the recorded full results are left as they are);
the summary lists each one's exit status, duration and the headline numbers from its JSON. Benchmarks that
need root and Open vSwitch (convergence) are skipped with a note when the machine cannot run a lab.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# name -> (extra args for a full run, extra args for --quick)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "bench_lsd": ([], ["--quick"]),
    "bench_routes": ([], ["--quick"]),
    "bench_update": ([], ["--changes", "40"]),
    "bench_fanout": (["--multicast"], ["--quick", "--multicast"]),
    "bench_failover": ([], ["--quick"]),
    "bench_scale": ([], ["--quick"]),
    "bench_convergence": ([], ["--quick"]),
    "bench_ecmp": ([], ["--quick"]),
    "bench_cpn": ([], ["--quick"]),
    "bench_peer": ([], ["--quick"]),
}
NEEDS_LAB = {"bench_convergence", "bench_ecmp", "bench_cpn", "bench_peer"}
NEEDS_FRR = {"bench_peer"}


def _load(name: str, directory: Path = RESULTS) -> dict[str, Any] | None:
    path = directory / f"{name.removeprefix('bench_')}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def headline_lsd(r: dict[str, Any]) -> str:
    worst = max(r.get("snapshots", []), key=lambda s: s["datagram_bytes"], default={})
    return (f"{r.get('links', '?'):,} links: worst LsdFull {worst.get('datagram_bytes', '?'):,} B of "
            f"{r.get('max_datagram', '?'):,}, encode {worst.get('encode_ms')} ms, decode {worst.get('decode_ms')} ms")


def headline_routes(r: dict[str, Any]) -> str:
    rows = r.get("switches", [])
    full = [s["full_ms_cpu_median"] for s in rows]
    inc = [s["inc_ms_cpu_median"] for s in rows]
    return (f"full {min(full, default=0)}-{max(full, default=0)} ms cpu, incremental median "
            f"{min(inc, default=0)}-{max(inc, default=0)} ms; targets {'met' if r.get('targets_met') else 'NOT met'}")


def headline_fanout(r: dict[str, Any]) -> str:
    parts = [f"{x['mode']} N={x['n_clients']}: {x['last_ms_p50']} ms" for x in r.get("results", [])]
    return "last client p50: " + ", ".join(parts)


def headline_scale(r: dict[str, Any]) -> str:
    parts = []
    for run in _get(r, "fanout", "runs") or []:
        if "error" in run:
            parts.append(f"{run['mode']} error")
        else:
            parts.append(f"{run['mode']} {run['clients']:,} clients last p50 {run['last_ms_p50']} ms")
    s = _get(r, "routes", "switch") or {}
    if s:
        parts.append(f"ToR full {s.get('full_ms_cpu_median')} ms, inc median {s.get('inc_ms_cpu_median')} ms")
    m = r.get("client_memory") or {}
    if "cores_mib" in m:
        parts.append(f"client cores {m['cores_mib']} MiB")
    return "; ".join(parts)


def headline_convergence(r: dict[str, Any]) -> str:
    met = missed = 0
    for sc in r.get("scenarios", []):
        for vs in sc.get("verdicts", {}).values():
            for v in vs.values():
                met += bool(v.get("met"))
                missed += not v.get("met")
    return f"{len(r.get('scenarios', []))} scenarios, targets met {met}, missed {missed}"


def headline_ecmp(r: dict[str, Any]) -> str:
    after = _get(r, "after", "runs") or {}
    n = max(after, key=int, default=None)
    if n is None:
        return "see JSON"
    worst = max(abs(50 - v["shares_pct"][0]) for k, v in after[n].items() if k != "attempts")
    return (f"{n} flows: every 2-bucket group within 50 ± {worst:.1f} % after (target 40-60: "
            f"{'met' if r.get('spread_target_met') else 'NOT met'}); weighted target "
            f"{'met' if r.get('weighted_target_met') else 'NOT met'}")


def headline_peer(r: dict[str, Any]) -> str:
    fp = _get(r, "figures", "firepath") or {}
    parts = []
    for v, f in (r.get("figures") or {}).items():
        if v == "firepath":
            continue
        for key, short in (("link down: every affected switch reprogrammed, p50 ms", "link down"),
                           ("silent failure: every affected switch reprogrammed, p50 ms", "silent"),
                           ("repaired link back in use, p50 ms", "repair")):
            a, b = fp.get(key), f.get(key)
            parts.append(f"{short} {round(a / b, 2) if a is not None and b else '-'}x FRR {v}")
    return "firepath/FRR: " + ", ".join(parts) if parts else "see JSON"


def headline_failover(r: dict[str, Any]) -> str:
    parts = []
    for name, v in (r.get("variants") or {}).items():
        parts.append(f"{name}: elected p50 {_get(v, 'elected_ms', 'p50')} ms, all clients on the new term p50 "
                     f"{_get(v, 'clients_ms', 'p50')} ms, LSD changed {v.get('lsd_changed_total')}")
    return "; ".join(parts) or "see JSON"


def headline_cpn(r: dict[str, Any]) -> str:
    parts = []
    for fault, v in (r.get("summary") or {}).items():
        link = v.get("link_everywhere_ms_max")
        parts.append(f"{fault}: pairs min {v.get('pairs_min')}/{v.get('pairs_total')}, link everywhere "
                     f"{'never' if v.get('link_never') else f'<= {link} ms'}, {'met' if v.get('met') else 'MISSED'}")
    return "; ".join(parts) or "see JSON"


def headline_update(r: dict[str, Any]) -> str:
    return "; ".join(f"{x['fabric']}: {x['median_us']['total']} µs per one-link delta (median)"
                     for x in r.get("results", [])) or "see JSON"


HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench_update": headline_update,
    "bench_lsd": headline_lsd, "bench_routes": headline_routes, "bench_fanout": headline_fanout,
    "bench_scale": headline_scale, "bench_convergence": headline_convergence, "bench_failover": headline_failover,
    "bench_ecmp": headline_ecmp,
    "bench_cpn": headline_cpn,
    "bench_peer": headline_peer,
}


def can_run_lab() -> str | None:
    try:
        from lab.fabric import preflight
    except Exception as e:  # noqa: BLE001 - reported as the reason
        return f"lab not importable: {e!r}"
    return preflight()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (e.g. bench_lsd,bench_scale)")
    ap.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    args = ap.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    lab_problem = can_run_lab()
    for name, (full, quick) in BENCHES.items():
        if (only and name not in only) or name in skip:
            continue
        if not (ROOT / "bench" / f"{name}.py").exists():
            rows.append((name, "absent", 0.0, "no such script yet"))
            continue
        if name in NEEDS_LAB and lab_problem:
            rows.append((name, "skipped", 0.0, lab_problem.splitlines()[0]))
            continue
        if name in NEEDS_FRR:
            from bench.peers.frr import frr_missing

            if frr_missing():
                rows.append((name, "skipped", 0.0, frr_missing() or ""))
                continue
        cmd = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"== python {' '.join(cmd[1:])}  (load average {os.getloadavg()[0]:.2f})", flush=True)
        json_path = RESULTS / f"{name.removeprefix('bench_')}.json"
        # a --quick run must not replace the recorded full results: its JSON and log go to results/quick/
        out_dir = RESULTS / "quick" if args.quick else RESULTS
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = json_path.read_bytes() if args.quick and json_path.exists() else None
        t0 = time.monotonic()
        try:
            with open(out_dir / f"{name.removeprefix('bench_')}.log", "w") as logf:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, check=False)
        finally:
            if args.quick and json_path.exists():
                json_path.replace(out_dir / json_path.name)
            if saved is not None:
                json_path.write_bytes(saved)
        took = time.monotonic() - t0
        result = _load(name, out_dir)
        try:
            head = HEADLINES[name](result) if result else "no JSON"
        except Exception as e:  # noqa: BLE001 - a summary must not fail the run
            head = f"(summary unavailable: {e!r})"
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        rows.append((name, status, took, head))
        print(f"   {status} in {took:.0f}s: {head}", flush=True)
    print(f"\n{'benchmark':<20}{'status':<10}{'time s':>8}  headline")
    for name, status, took, head in rows:
        print(f"{name:<20}{status:<10}{took:>8.0f}  {head}")
    where = (RESULTS / "quick") if args.quick else RESULTS
    print(f"\nlogs and JSON in {where.relative_to(ROOT)}/; load average now {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cpus")
    return 0 if all(r[1] in ("ok", "skipped", "absent") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
