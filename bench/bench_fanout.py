"""Fan-out benchmark: one port report -> the resulting LSD delta received by N scripted clients (loopback).

    python -m bench.bench_fanout [--quick] [--sizes 100,1000,10000] [--rounds R] [--multicast]

For each N a three-tier fabric of ~N switches (4 spines, pods of 4 aggs + ToRs) is generated; a real master process
(`python -m controller.cli master`) serves it on 127.0.0.1; N scripted clients (controller.simclient)
multiplexed on a few UDP sockets report, take their full snapshot, and then, R times, one leaf reports a
port change. Measured per round: t0 = the report is sent; first/last = arrival of the first/last datagram
carrying the new version at the clients' sockets (recorded raw, verified afterwards: every client must
decode and apply its delta and hold the master's LSD). Keepalives/refresh are set long and clients do not
acknowledge updates, so the measurement sees only the fan-out. Prints a table, writes
bench/results/fanout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.simclient import SimFleet
from proto.auth import KeyRing, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import load_fabric

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fanout.json"
LSD_TYPES = (4, 5)   # LsdFull, LsdDelta message type bytes
#: FP_BENCH_PROFILE=FILE runs the master under cProfile (writes FILE at shutdown) to see where time goes
PROFILE = ["-m", "cProfile", "-o", os.environ["FP_BENCH_PROFILE"]] if os.environ.get("FP_BENCH_PROFILE") else []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", port))
    return port


def clos_params(n: int, timers: tuple) -> ClosParams:
    """A three-tier fabric of about n switches (4 spines, pods of 4 aggs + ToRs) — no switch gets so many
    ports that its report would not fit a datagram."""
    spines, aggs = 4, 4
    pods = max(1, n // 100)
    tors = (n - spines) // pods - aggs
    return ClosParams(name=f"fanout{n}", spines=spines, pods=pods, aggs_per_pod=aggs, tors_per_pod=tors,
                      masters=1, hosts_per_tor=0, timers=timers)


def write_config(d: Path, n: int, multicast: bool) -> Path:
    timers = (("keepalive_ms", 60_000), ("switch_dead_ms", 600_000), ("report_refresh_ms", 300_000),
              ("max_update_rate", 50))   # 20 ms apart: keeps the warm-up storm small; irrelevant to a lone change
    text = generate_clos_yaml(clos_params(n, timers))
    if multicast:
        text += f"distribution: {{mode: multicast, group: 239.77.0.1, port: {free_port()}}}\n"
    write_secret_file(d / "fabric.key")
    cfg = d / "fabric.yaml"
    cfg.write_text(text)
    return cfg


def wait_rest(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"master exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/lsd/version", timeout=2) as r:
                if json.loads(r.read())["role"] == "master":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("master did not come up")


def rest_get(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def run_size(n: int, rounds: int, n_sockets: int, multicast: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="fp-fanout-") as tmp:
        d = Path(tmp)
        cfg = write_config(d, n, multicast)
        t_load = time.perf_counter()
        fabric = load_fabric(cfg)
        load_s = time.perf_counter() - t_load
        keyring = KeyRing.load(fabric.security.key_file)
        cport, pport, rport = free_port(), free_port(), free_port()
        log = open(d / "master.log", "wb")  # noqa: SIM115 - closed in the finally below
        proc = subprocess.Popen(
            [sys.executable, *PROFILE, "-m", "controller.cli", "master", "--config", str(cfg), "--id", "m1",
             "--state-dir", str(d / "state"), "--bind", "127.0.0.1", "--client-port", str(cport),
             "--peer-port", str(pport), "--rest-port", str(rport), "--log-level", "warning"],
            cwd=ROOT, stdout=log, stderr=log)
        fleet = None
        try:
            wait_rest(rport, proc)
            group = None
            if multicast:
                group = (str(fabric.distribution.group), fabric.distribution.port)
            fleet = SimFleet(fabric, keyring, {"m1": ("127.0.0.1", cport)}, n_sockets=n_sockets,
                             ack_updates=False, report_refresh=0, report_retry=0.5, group=group)
            # -- warm-up: everyone reports and takes its snapshot
            t_sync = time.perf_counter()
            for i in range(0, n, 500):                  # in slices, so the master's queue never overflows
                fleet.report(list(fleet.switches)[i:i + 500])
                fleet.pump(0.02)
            ok = fleet.pump(120, until=lambda: fleet.all_acked() and all(
                sw.data_term == 1 for sw in fleet.switches.values()))
            if not ok:
                raise RuntimeError("warm-up did not converge")
            v = rest_get(rport, "/v1/lsd/version")
            ok = fleet.pump(60, until=lambda: all(sw.version == v["version"] for sw in fleet.switches.values()))
            sync_s = time.perf_counter() - t_sync
            fleet.pump(0.5)
            # -- rounds: one leaf flips port 1
            samples = []
            leaf = "tor-1-1"
            expected = len(fleet.switches) if not multicast else n_sockets_joined(fleet)
            for r in range(rounds):
                fleet.raw.clear()
                fleet.set_usable(leaf, set() if r % 2 == 0 else {1, 2})
                t0 = time.monotonic()
                fleet.report([leaf], now=t0)
                got: list[float] = []
                cursor = [0]

                def done(got: list[float] = got, cursor: list[int] = cursor) -> bool:
                    raw = fleet.raw
                    while cursor[0] < len(raw):
                        t, _, data = raw[cursor[0]]
                        cursor[0] += 1
                        if len(data) > 3 and data[3] in LSD_TYPES:
                            got.append(t)
                    return len(got) >= expected

                fleet.pump(30, until=done, raw=True)
                # verify: every client decodes and applies what it received (HMAC, replay, delta order)
                t_dec = time.perf_counter()
                fleet.process_raw()
                decode_s = time.perf_counter() - t_dec
                v = rest_get(rport, "/v1/lsd/version")
                fleet.pump(10, until=lambda v=v: all(sw.version == v["version"] for sw in fleet.switches.values()))
                behind = sum(1 for sw in fleet.switches.values() if sw.version != v["version"])
                samples.append({"received": len(got), "first_ms": (got[0] - t0) * 1e3 if got else None,
                                "last_ms": (got[-1] - t0) * 1e3 if len(got) >= expected else None,
                                "client_decode_s": decode_s, "clients_behind_after": behind})
            metrics = rest_text(rport)
            lasts = [s["last_ms"] for s in samples if s["last_ms"] is not None]
            return {
                "n_clients": len(fleet.switches), "n_links": len(fabric.links), "sockets": n_sockets,
                "mode": "multicast" if multicast else "unicast",
                "config_load_s": round(load_s, 3), "initial_sync_s": round(sync_s, 3),
                "rounds": samples,
                "last_ms_p50": round(statistics.median(lasts), 2) if lasts else None,
                "last_ms_max": round(max(lasts), 2) if lasts else None,
                "first_ms_p50": round(statistics.median([s["first_ms"] for s in samples if s["first_ms"]]), 2)
                if samples else None,
                "report_to_send_hist": metric_lines(metrics, "firepath_master_report_to_send_seconds"),
            }
        finally:
            if fleet is not None:
                fleet.close()
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()


def n_sockets_joined(fleet: SimFleet) -> int:
    return 1   # only socket 0 joins the group: one datagram reaches every client on it


def rest_text(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read().decode()


def metric_lines(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_sum") or line.startswith(name + "_count"):
            k, v = line.split()
            out[k[len(name) + 1:]] = float(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only, 3 rounds")
    ap.add_argument("--sizes", help="comma-separated client counts (default 100,1000,10000)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--sockets", type=int, default=8, help="client UDP sockets (clients multiplexed on them)")
    ap.add_argument("--multicast", action="store_true", help="also measure multicast distribution")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([100, 1000] if args.quick else
                                                                       [100, 1000, 10000])
    rounds = args.rounds or (3 if args.quick else 7)
    results = []
    modes = [False, True] if args.multicast else [False]
    for multicast in modes:
        for n in sizes:
            res = run_size(n, rounds, args.sockets, multicast)
            results.append(res)
            print(f"  {res['mode']:9} N={n:>6}: last p50 {res['last_ms_p50']} ms, max {res['last_ms_max']} ms",
                  file=sys.stderr)
    print(f"{'mode':9} {'clients':>8} {'links':>7} {'first p50 ms':>13} {'last p50 ms':>12} {'last max ms':>12} "
          f"{'sync s':>7}")
    for r in results:
        print(f"{r['mode']:9} {r['n_clients']:>8} {r['n_links']:>7} {r['first_ms_p50']!s:>13} "
              f"{r['last_ms_p50']!s:>12} {r['last_ms_max']!s:>12} {r['initial_sync_s']:>7}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "fanout", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "results": results}, indent=1))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
