"""Cold start of a whole fabric (issue #18): every switch reports at once to real master processes.

    python -m bench.bench_coldstart [--preset jupiter] [--masters 1|3] [--multicast] [--stable 300]
                                    [--workers 3] [--timeout 120] [--hogs N]

Real `firepath master` replicas on loopback (tests.harness.loopcluster) start first and elect (3 replicas:
one master); then the multi-process fleet (tests.harness.fleet) makes every switch report at t0 from an
empty LSD. Measured:

- `converged_s`: t0 → every simulated switch holds the complete LSD (all links UP, the version its
  worker's reference holds), polled every 100 ms;
- `stable`: then for `--stable` seconds every switch keeps holding it (no switch loses it), and
  `silences` (switch_silent lines in the master logs after t0) stays 0;
- `elections`: master terms started after t0 (highest term at the end − term at t0; must be 0);
- per replica: CPU seconds (utime+stime after t0), peak RSS (VmHWM), kernel drops of its client socket
  (/proc/net/udp, cumulative), `overload` log lines;
- `fleet_cpu_storm_s` / `replica_cpu_storm_s`: CPU seconds of the fleet workers (summed) and of each replica from
  t0 to convergence — on a 2-core host their sum / 2 bounds the convergence time from below;
  `fleet_cpu_setup_s`: the workers' CPU before t0 (building the codecs), included in `fleet_cpu_s`.

`--hogs N`: N CPU-bound processes (bench.hogs, each in a session of its own) run from t0 to the end, so the
replicas read slower than on an idle host (the shared host of issue #18's misses, made repeatable).

Results: bench/results/coldstart.json and BENCHMARKS.md. The machine is shared: `load_avg` is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.hogs import CpuHogs
from bench.procstat import cpu_s, mem_mib
from proto.clos import PRESETS
from tests.harness.fleet import Fleet
from tests.harness.loopcluster import ROOT, LoopCluster, free_ports

RESULTS = ROOT / "bench" / "results" / "coldstart.json"
def proc_cpu(pid: int, user: bool = True, system: bool = True) -> float:
    """`bench.procstat.cpu_s`, NaN for a process that is gone (sums of a run then show it)."""
    v = cpu_s(pid, user, system)
    return float("nan") if v is None else v


def proc_hwm_mb(pid: int) -> float:
    v = mem_mib(pid, "VmHWM")
    return float("nan") if v is None else v


def udp_port_drops(port: int) -> int | None:
    want = f":{port:04X}"
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1].endswith(want):
                    return int(cols[-1])
    except OSError:
        return None
    return None


def udp_drops_total(ports: set[int]) -> int:
    """Kernel drops summed over every UDP socket bound to one of `ports` (the fleet's sockets, the group port)."""
    want = {f":{p:04X}" for p in ports}
    total = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1][cols[1].index(":"):] in want:
                    total += int(cols[-1])
    except OSError:
        pass
    return total


def count_lines(path: Path, offset: int, needle: str) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return sum(1 for line in f if needle.encode() in line)
    except OSError:
        return 0


def _max_term(cluster: LoopCluster) -> int:
    terms = [v["term"] for v in cluster.versions().values() if isinstance(v, dict)]
    return max(terms) if terms else -1


def _sent_counts(rest_port: int) -> dict[str, int]:
    """{"<message type>/<destination kind>": sent, "rejected/<reason>": datagrams} from a replica's
    Prometheus metrics (prometheus_client's parser; {} if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "firepath_master_messages_sent_total":
                out[f"{sample.labels['type']}/{sample.labels['dest']}"] = int(sample.value)
            elif sample.name == "firepath_master_datagrams_rejected_total":
                out[f"rejected/{sample.labels['reason']}"] = int(sample.value)
    return out


def run(directory: Path, *, masters: int = 1, multicast: bool = False, workers: int = 3, timeout: float = 120.0,
        stable: float = 10.0, fleet_nice: int = 0, hogs: int = 0, log: Any = print, **clos: Any) -> dict[str, Any]:
    """One cold start; returns the measurements (see the module docstring)."""
    cluster = LoopCluster(directory, masters=masters, log_level="info", **clos)
    group = None
    if multicast:
        port = free_ports(1)[0]
        group = (f"239.255.18.{1 + os.getpid() % 250}", port)
        with open(cluster.config, "a") as f:
            f.write(f"distribution: {{mode: multicast, group: {group[0]}, port: {port}}}\n")
        from proto.config import load_fabric

        cluster.fabric = load_fabric(cluster.config)
    fabric = cluster.fabric
    res: dict[str, Any] = {"switches": len(fabric.switches), "links": len(fabric.links), "masters": masters,
                           "fleet_nice": fleet_nice, "hogs": hogs,
                           "distribution": "multicast" if multicast else "unicast",
                           "timers": {k: getattr(fabric.timers, k) for k in
                                      ("keepalive", "report_refresh", "switch_dead", "hello_interval", "master_dead")}}
    fleet = Fleet(fabric, cluster.client_addr, workers=workers, group=group, nice=fleet_nice)
    hogged = CpuHogs(hogs, sessions=True)
    try:
        cluster.start_all()
        t_ready = time.monotonic()
        fleet.start()
        log(f"fleet ready in {time.monotonic() - t_ready:.1f} s")
        # one master (a cold-started master holds its empty LSD until every switch reported: not "held" here)
        leader = cluster.wait(lambda: len(cluster.masters_now()) == 1, timeout=max(60.0, timeout))
        if leader is None:
            raise RuntimeError("no single master elected before the cold start")
        time.sleep(1.0)                 # let the replicas settle into hellos
        term0 = _max_term(cluster)
        offsets = {m: cluster.log_path(m).stat().st_size for m in cluster.ids}
        cpu0 = {m: proc_cpu(cluster.procs[m].pid) for m in cluster.ids}
        res["load_avg_before"] = os.getloadavg()
        fleet_cpu0 = sum(proc_cpu(pid) for pid in fleet.pids)
        fleet_sys0 = sum(proc_cpu(pid, user=False) for pid in fleet.pids)
        hogged.__enter__()
        fleet.cold_start()
        progress: list[tuple[float, int]] = []

        def note(t: float, s: dict[str, Any]) -> None:
            if not progress or t - progress[-1][0] >= 1.0:
                progress.append((round(t, 1), s["complete"]))
                log(f"t={t:6.1f}s complete={s['complete']}/{s['switches']} acked={s['acked']} "
                    f"in_step={s['in_step']} requests={s['counts'].get('requests', 0)} group={s['counts'].get('group', 0)} "
                    f"full={s['counts'].get('full', 0)} delta={s['counts'].get('delta', 0)} "
                    f"ack={s['counts'].get('ack', 0)} "
                    f"terms={sorted(s['terms'])}")

        n = len(fleet.names)
        conv = fleet.wait(lambda s: s["complete"] == n, timeout=timeout, on_stats=note)
        res["converged_s"] = None if conv is None else round(conv, 2)
        # CPU from t0 to convergence (or the timeout): what the storm cost the harness and each replica on the
        # shared cores (fleet_cpu_s below also counts the workers' setup before t0 and the stable window)
        res["fleet_cpu_setup_s"] = round(fleet_cpu0, 1)
        res["fleet_cpu_storm_s"] = round(sum(proc_cpu(pid) for pid in fleet.pids) - fleet_cpu0, 1)
        # of which in the kernel: sendto on loopback also runs the receiving socket's side of each datagram
        res["fleet_sys_storm_s"] = round(sum(proc_cpu(pid, user=False) for pid in fleet.pids) - fleet_sys0, 1)
        res["replica_cpu_storm_s"] = {m: round(proc_cpu(cluster.procs[m].pid) - cpu0[m], 1) for m in cluster.ids}
        res["progress"] = progress
        lost_at = None
        if conv is not None and stable > 0:
            end = time.monotonic() + stable
            while time.monotonic() < end:
                s = fleet.stats()
                if s["complete"] != n:
                    lost_at = round(time.monotonic() - fleet.started_at, 2)  # type: ignore[operator]
                    break
                time.sleep(1.0)
        res["stable_s"] = stable if conv is not None and lost_at is None else 0.0
        res["lost_at_s"] = lost_at
        final = fleet.stats()
        res["fleet_counts"] = final["counts"]
        res["in_step"] = final["in_step"]          # switches following the group's shared state (multicast)
        res["fleet_udp_drops"] = udp_drops_total(final["ports"])    # the harness falling behind shows here
        res["elections"] = max(0, _max_term(cluster) - term0)
        res["load_avg_after"] = os.getloadavg()
        res["replicas"] = {}
        for m in cluster.ids:
            pid = cluster.procs[m].pid
            port = fabric.master(m).client_port
            res["replicas"][m] = {
                "cpu_s": round(proc_cpu(pid) - cpu0[m], 1),
                "peak_rss_mb": round(proc_hwm_mb(pid), 1),
                "udp_drops": udp_port_drops(port),
                "overload_episodes": count_lines(cluster.log_path(m), offsets[m], "event=overload "),
                "silences": count_lines(cluster.log_path(m), offsets[m], "switch_silent"),
                "masterships": count_lines(cluster.log_path(m), offsets[m], "role=master"),
            }
            res["replicas"][m]["sent"] = _sent_counts(cluster.rest_port[m])
        res["silences"] = sum(r["silences"] for r in res["replicas"].values())
        # a mastership taken after t0 is an election (REST may be slow to answer under load: logs count too)
        res["elections"] = max(res["elections"], sum(r["masterships"] for r in res["replicas"].values()))
        res["fleet_cpu_s"] = round(sum(proc_cpu(pid) for pid in fleet.pids), 1)
    finally:
        hogged.__exit__(None, None, None)
        fleet.close()
        cluster.stop_all()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="jupiter", choices=sorted(PRESETS))
    ap.add_argument("--masters", type=int, default=1)
    ap.add_argument("--multicast", action="store_true")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--fleet-nice", type=int, default=0,
                    help="niceness of the fleet workers during the storm (the replicas keep the caller's)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--hogs", type=int, default=0, help="CPU-bound processes running from t0 to the end")
    ap.add_argument("--stable", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", type=Path, default=None,
                    help="run in this directory and keep it (the replicas' logs and config) instead of a temporary one")
    a = ap.parse_args(argv)
    p = asdict(PRESETS[a.preset])
    clos = {k: p[k] for k in ("spines", "pods", "aggs_per_pod", "tors_per_pod", "hosts_per_tor", "border_pods",
                              "planes", "leaves")}
    with contextlib.ExitStack() as stack:
        if a.keep is not None:
            a.keep.mkdir(parents=True, exist_ok=True)
            d = str(a.keep)
        else:
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="fp-coldstart-"))
        res = run(Path(d), masters=a.masters, multicast=a.multicast, workers=a.workers, timeout=a.timeout,
                  stable=a.stable, fleet_nice=a.fleet_nice, hogs=a.hogs, name=a.preset, **clos)
    res.update(preset=a.preset, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               command="python -m bench.bench_coldstart " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps({k: v for k, v in res.items() if k != "progress"}, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(a.out.read_text()) if a.out.exists() else []
    runs.append(res)
    a.out.write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if res["converged_s"] is not None and res["elections"] == 0 and res["silences"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
