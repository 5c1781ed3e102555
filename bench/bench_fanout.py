"""Fan-out benchmark: one port report -> the resulting LSD delta received by N scripted clients (loopback).

    python -m bench.bench_fanout [--quick] [--sizes 100,1000,10000] [--rounds R] [--multicast]

For each N a three-tier fabric of ~N switches (4 spines, pods of 4 aggs + ToRs) is generated; a real master process
(`python -m controller.cli master`) serves it on 127.0.0.1; N scripted clients (tests.harness.simclient)
multiplexed on a few UDP sockets report, take their full snapshot, and then, R times, one leaf reports a
port change. Measured per round: t0 = the report is sent; first/last = arrival of the first/last datagram
carrying the new version at the clients' sockets (recorded raw, verified afterwards: every client must
decode and apply its delta and hold the master's LSD). Keepalives/refresh are set long, clients do not
acknowledge updates, and max_update_rate is 2/s with rounds 0.6 s apart (so the warm-up storm stays small
and a measured change is never rate-limited): the measurement sees only the fan-out. Prints a table, writes
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

from proto.auth import KeyRing, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import load_fabric
from tests.harness.simclient import SimFleet

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fanout.json"
LSD_TYPES = (4, 5)   # LsdFull, LsdDelta message type bytes
#: FP_BENCH_PROFILE=FILE runs the master under cProfile (writes FILE at shutdown) to see where time goes
ROUND_GAP = 0.6   # > 1 / max_update_rate
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
              # Updates to one client at least 500 ms apart: keeps the warm-up storm (every switch reporting
              # at once) small; rounds are spaced by more than that, so a measured change is never delayed.
              ("max_update_rate", 2))
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
            import gc

            gc.collect()
            gc.freeze()          # 10,000 simulated switches: keep the cyclic GC off their long-lived state
            # -- warm-up: everyone reports and takes its snapshot
            t_sync = time.perf_counter()
            names = list(fleet.switches)
            for i in range(0, len(names), 500):     # in slices, so the master's queue never overflows
                fleet.report(names[i:i + 500])
                fleet.pump(0.05, skip_lsd=True)
            # The storm of deltas while everyone reports is discarded undecoded (it would only measure this
            # harness); then every switch asks for one snapshot.
            ok = fleet.pump(300, until=fleet.all_acked, skip_lsd=True)
            if not ok:
                raise RuntimeError("warm-up: reports not acked")
            fleet.pump(1.0, skip_lsd=True)              # > 1/max_update_rate: the storm has ended
            v = rest_get(rport, "/v1/lsd/version")
            for i in range(0, len(names), 1000):
                fleet.request_full(names[i:i + 1000])
                fleet.pump(0.05)
            ok = fleet.pump(120, until=lambda: all(sw.data_term == v["term"] and sw.version == v["version"]
                                                   for sw in fleet.switches.values()))
            if not ok:
                raise RuntimeError("warm-up: snapshots not received")
            sync_s = time.perf_counter() - t_sync
            fleet.pump(0.5)
            # -- rounds: one leaf flips port 1
            samples = []
            leaf = "tor-1-1"
            expected = len(fleet.switches) if not multicast else n_sockets_joined(fleet)
            for r in range(rounds):
                fleet.pump(ROUND_GAP)
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


def breakdown(n: int) -> dict:
    """Master CPU per fan-out without the network: core tick (scheduling + message choice), signing
    (fast path), and the sendto syscalls into a sink socket on loopback — microseconds per client."""
    from controller.actions import Send
    from controller.core import MasterCore
    from controller.fanout import FanoutEncoder
    from proto.config import parse_fabric
    from proto.messages import Codec, PortReport, PortStatus

    fabric = parse_fabric(generate_clos_yaml(clos_params(n, ())))
    core = MasterCore(fabric, "m1")
    core.become_master(1, 0.0)

    def report(name: str, seq: int, usable: bool) -> PortReport:
        return PortReport(name, fabric.digest, seq, 1, tuple(
            PortStatus(p, usable, usable, usable, True, False) for p in fabric.fabric_ports(name)))

    for sw in fabric.switches:
        core.handle(sw.name, report(sw.name, 1, True), 0.0)
    import gc

    gc.collect()
    gc.freeze()                          # as controller.server does after start-up
    core.tick(0.1)                       # everyone's full snapshot
    core.tick(0.2)
    core.handle("tor-1-1", report("tor-1-1", 2, False), 0.5)   # (all still alive: switch_dead 1.5 s)
    t = time.perf_counter()
    sends = [a for a in core.tick(0.51) if isinstance(a, Send)]
    tick_s = time.perf_counter() - t
    keyring = KeyRing.from_secret(bytes(32))
    codec = Codec(keyring, "m1", [s.name for s in fabric.switches], ["m1"])
    enc = FanoutEncoder(codec, keyring, fabric.switches[0].name)
    enc.warm([s.name for s in fabric.switches])
    t = time.perf_counter()
    datagrams = [enc.encode(a.msg, a.dest) for a in sends]
    sign_s = time.perf_counter() - t
    t = time.perf_counter()
    for a in sends[:50]:
        codec.encode(a.msg, to=a.dest)
    codec_us = (time.perf_counter() - t) / 50 * 1e6
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 * 1024 * 1024)
        addr = sink.getsockname()
        t = time.perf_counter()
        for d in datagrams:
            tx.sendto(d, addr)
        send_s = time.perf_counter() - t
    k = len(sends)
    return {"n_clients": k, "tick_us_per_client": round(tick_s / k * 1e6, 2),
            "sign_us_per_client": round(sign_s / k * 1e6, 2), "codec_encode_us": round(codec_us, 2),
            "sendto_us_per_client": round(send_s / k * 1e6, 2),
            "total_ms": round((tick_s + sign_s + send_s) * 1e3, 1)}


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
    costs = [breakdown(n) for n in sizes]
    print(f"{'clients':>8} {'tick us':>8} {'sign us':>8} {'sendto us':>10} {'total ms':>9}   (master CPU per fan-out,"
          " no network; Codec.encode alone would be", costs[0]["codec_encode_us"], "us)")
    for c in costs:
        print(f"{c['n_clients']:>8} {c['tick_us_per_client']:>8} {c['sign_us_per_client']:>8} "
              f"{c['sendto_us_per_client']:>10} {c['total_ms']:>9}")
    print(f"{'mode':9} {'clients':>8} {'links':>7} {'first p50 ms':>13} {'last p50 ms':>12} {'last max ms':>12} "
          f"{'sync s':>7}")
    for r in results:
        print(f"{r['mode']:9} {r['n_clients']:>8} {r['n_links']:>7} {r['first_ms_p50']!s:>13} "
              f"{r['last_ms_p50']!s:>12} {r['last_ms_max']!s:>12} {r['initial_sync_s']:>7}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "fanout", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "loadavg_at_end": os.getloadavg()},
        "results": results, "master_cpu_breakdown": costs}, indent=1))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
