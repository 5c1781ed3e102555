"""Scale benchmark on the Jupiter-size preset, no OVS: LSD, one client's routing, master fan-out, memory.

    python -m bench.bench_scale [--quick] [--rounds R] [--sockets S] [--skip fanout,routes,...]

Parts (each can be skipped with --skip):

* ``lsd``      the full LSD as a real LsdFull datagram (all up, and the worst case: random 3-state) and a
               1-link LsdDelta; encode/decode times (bench.bench_lsd's helpers).
* ``routes``   one ToR's full route computation and incremental single-link updates, and its OpenFlow
               plan (bench.bench_routes's functions).
* ``fanout``   a real master process (`controller.cli master`) holding the Jupiter config on 127.0.0.1;
               every switch of the fabric (30,088) simulated by tests.harness.simclient.SimFleet, multiplexed
               on a few UDP sockets; all report and are acked (with every port unusable but the far end of
               one ToR link, so the LSD does not churn while they join); then, R times, that ToR reports its
               port up/down (one LSD change)
               and we time, from the report sent (loopback: received within microseconds) to the arrival
               of the last datagram carrying the new version at the simulated clients' sockets (recorded
               raw; a sample of them is then decoded with the destination's key: HMAC, type, versions).
               Unicast (one signed datagram per client), then multicast (`distribution: multicast`, one
               datagram to the group, which one socket joined on behalf of every client).
               Clients do not acknowledge each update (an ack would be an LsdRequest per client per
               change, measuring this harness rather than the master): "last client reached" is the
               receive time of the last datagram at the clients' sockets.
* ``memory``   RSS of the master process holding the Jupiter LSD and 30,088 client sessions (VmRSS and
               peak VmHWM, from /proc), and, in a fresh process, what one ToR's client cores add on top of
               the loaded Fabric: LsdReplica + RouteComputer (after a full computation) + OfPlanner (after
               the initial plan).

--quick: a 1/8 fabric (16 pods, ~3,800 switches), 3 rounds. Results: bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.procstat import mem_mib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "scale.json"
LSD_TYPES = (4, 5)          # LsdFull, LsdDelta message type bytes
ROUND_GAP = 0.6             # > 1 / max_update_rate (2/s): a measured change is never rate-limited
FANOUT_TIMERS = (("keepalive_ms", 60_000), ("switch_dead_ms", 600_000), ("report_refresh_ms", 300_000),
                 ("max_update_rate", 2))


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def jupiter_params(quick: bool, **over: Any) -> Any:
    from proto.clos import PRESETS

    params = PRESETS["jupiter"]
    if quick:
        params = dataclasses.replace(params, name="jupiter-eighth", pods=16)
    return dataclasses.replace(params, **over) if over else params


def params_kw(params: Any) -> dict[str, Any]:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def rss_mib(pid: int | str = "self") -> dict[str, float | None]:
    """{"VmRSS": MiB, "VmHWM": MiB} of `pid` (bench.procstat.mem_mib)."""
    return {k: None if (v := mem_mib(pid, k)) is None else round(v, 1) for k in ("VmRSS", "VmHWM")}


# -------------------------------------------------------------------------------------------------- LSD
def bench_lsd_part(n_links: int, repeat: int) -> dict[str, Any]:
    from bench.bench_lsd import DIGEST, MASTER, SWITCH, best_of, make_states
    from proto.auth import KeyRing
    from proto.lsd import LinkState, decode_changes, decode_snapshot, encode_changes, encode_snapshot
    from proto.messages import MAX_DATAGRAM, Codec, LsdDelta, LsdFull

    rng = random.Random(1)
    codec = Codec(KeyRing.from_secret(bytes(32)), MASTER, [SWITCH], [MASTER])
    rows = []
    for kind in ("all up", "random 1% down", "random 3-state (worst)"):
        states = make_states(n_links, kind, rng)
        snap = encode_snapshot(states)
        datagram = codec.encode(LsdFull(MASTER, 1, 1, DIGEST, snap), to=SWITCH)
        rows.append({"state": kind, "snapshot_bytes": len(snap), "datagram_bytes": len(datagram),
                     "fits": len(datagram) <= MAX_DATAGRAM,
                     "encode_ms": round(best_of(lambda s=states: encode_snapshot(s), repeat), 3),
                     "decode_ms": round(best_of(lambda s=snap: decode_snapshot(s, n_links), repeat), 3)})
    change = encode_changes({rng.randrange(n_links): LinkState.DOWN})
    delta = codec.encode(LsdDelta(MASTER, 1, 1, 2, change), to=SWITCH)
    return {"links": n_links, "max_datagram": MAX_DATAGRAM, "snapshots": rows,
            "delta_1_link": {"changes_bytes": len(change), "datagram_bytes": len(delta),
                             "decode_ms": round(best_of(lambda: decode_changes(change, n_links), repeat), 4)}}


# -------------------------------------------------------------------------------------------------- routes
def bench_routes_part(fabric: Any, samples: int) -> dict[str, Any]:
    from bench.bench_routes import bench_plan, bench_switch

    tor = next(sw.name for sw in fabric.switches if str(sw.role) == "tor")
    rng = random.Random(1)
    return {"switch": bench_switch(fabric, tor, samples, rng), "plan": bench_plan(fabric, tor, rng)}


# -------------------------------------------------------------------------------------------------- memory
def client_memory_child(quick: bool) -> dict[str, Any]:
    """In a fresh process: what one ToR's client cores keep allocated (tracemalloc: live Python objects,
    so the allocator's reuse of the config loader's freed memory does not hide them), and the process RSS.
    The Fabric (the whole cluster config, shared by all cores of a client) is loaded first."""
    import tracemalloc

    from client.ofplan import OfPlanner
    from client.replica import LsdReplica
    from client.routes import RouteComputer
    from proto.clos import clos_fabric

    rss = {"python + imports": rss_mib()["VmRSS"]}
    fabric = clos_fabric(**params_kw(jupiter_params(quick)))
    gc.collect()
    rss["+ Fabric (whole cluster config)"] = rss_mib()["VmRSS"]
    tor = next(sw.name for sw in fabric.switches if str(sw.role) == "tor")
    tracemalloc.start()
    kept: dict[str, float] = {}

    def mark(name: str) -> None:
        gc.collect()
        kept[name] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)

    replica = LsdReplica(fabric, tor)
    replica.db.load_snapshot(1, _all_up_snapshot(len(fabric.links)))
    mark("LsdReplica (loaded)")
    states = bytes([1]) * len(fabric.links)
    rc = RouteComputer(fabric, tor)
    routes = rc.compute(states)
    mark("+ RouteComputer (full computation done, routes dict)")
    planner = OfPlanner(fabric, tor)
    planner.set_routes(routes)
    mark("+ OfPlanner (initial plan committed)")
    tracemalloc.stop()
    names = list(kept)
    added = {names[0]: kept[names[0]]}
    added.update({names[i]: round(kept[names[i]] - kept[names[i - 1]], 2) for i in range(1, len(names))})
    mem = rss_mib()
    rss["+ client cores"] = mem["VmRSS"]
    return {"switch": tor, "routes": len(routes), "traced_mib_added": added, "cores_mib": kept[names[-1]],
            "rss_mib_after": rss, "process_rss_mib": mem["VmRSS"], "process_peak_mib": mem["VmHWM"],
            "alive": bool(replica and rc and planner)}


def _all_up_snapshot(n: int) -> bytes:
    from proto.lsd import encode_snapshot

    return encode_snapshot(bytes([1]) * n)


def client_memory(quick: bool) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_scale", "--client-memory-child"]
                          + (["--quick"] if quick else []), cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(argv: list[str]) -> tuple[int, float, float, str]:
    """Run a child process: (exit status, wall s, its own peak RSS in MiB from wait4, stdout)."""
    import tempfile as _tf

    with _tf.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return proc.returncode, wall, usage.ru_maxrss / 1024, text


def config_check(cfg: Path) -> dict[str, Any]:
    """`firepath config clos --preset jupiter` and `firepath config check` of the result, each in a child
    process: wall time and that process's peak RSS."""
    cli = [sys.executable, "-c", "import sys; from proto.cli import main; sys.exit(main())", "config"]
    out = cfg.parent / "jupiter-preset.yaml"
    rc_g, wall_g, rss_g, _ = run_child([*cli, "clos", "--preset", "jupiter", "-o", str(out)])
    rc_c, wall_c, rss_c, text = run_child([*cli, "check", str(out)])
    return {"generate": {"exit": rc_g, "wall_s": round(wall_g, 2), "peak_rss_mib": round(rss_g, 1),
                         "bytes": out.stat().st_size if out.exists() else None},
            "check": {"exit": rc_c, "wall_s": round(wall_c, 2), "peak_rss_mib": round(rss_c, 1),
                      "summary": text.strip().splitlines()[:3]}}


# -------------------------------------------------------------------------------------------------- fan-out
def write_config(d: Path, quick: bool, multicast: bool) -> Path:
    from bench.bench_fanout import free_port
    from proto.auth import write_secret_file
    from proto.clos import generate_clos_yaml

    text = generate_clos_yaml(jupiter_params(quick, masters=1, timers=FANOUT_TIMERS))
    if multicast:
        text += f"distribution: {{mode: multicast, group: 239.77.0.2, port: {free_port()}}}\n"
    write_secret_file(d / "fabric.key")
    cfg = d / "fabric.yaml"
    cfg.write_text(text)
    return cfg


class MasterProc:
    def __init__(self, cfg: Path, d: Path) -> None:
        from bench.bench_fanout import free_port

        self.cport, self.pport, self.rport = free_port(), free_port(), free_port()
        self.logf = open(d / "master.log", "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "master", "--config", str(cfg), "--id", "m1",
             "--state-dir", str(d / "state"), "--bind", "127.0.0.1", "--client-port", str(self.cport),
             "--peer-port", str(self.pport), "--rest-port", str(self.rport), "--log-level", "warning"],
            cwd=ROOT, stdout=self.logf, stderr=self.logf)
        from bench.bench_fanout import wait_rest

        wait_rest(self.rport, self.proc, timeout=600)
        self.start_s = time.perf_counter() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.logf.close()


def fanout_run(fabric: Any, fleet: Any, keyring: Any, d: Path, cfg: Path, rounds: int,
               multicast: bool) -> dict[str, Any]:
    from bench.bench_fanout import metric_lines, rest_get, rest_text

    for attempt in range(3):     # a free port picked for the master may be taken meanwhile: pick again
        try:
            master = MasterProc(cfg, d)
            break
        except (OSError, RuntimeError) as e:
            if attempt == 2:
                raise
            log(f"  master start failed ({e!r}), retrying")
    log(f"  master up in {master.start_s:.1f}s ({'multicast' if multicast else 'unicast'}), "
        f"rss {rss_mib(master.proc.pid)}")
    try:
        fleet.masters = {"m1": ("127.0.0.1", master.cport)}
        # No warm-up storm: every switch reports its ports unusable except the leaf's peer on the measured
        # link, so the LSD does not change while 30,000 clients join (each change would be a delta to
        # everyone); each round then flips that one link with one report of the leaf.
        leaf = next(sw.name for sw in fabric.switches if str(sw.role) == "tor")
        port = fabric.fabric_ports(leaf)[0]
        peer = fabric.peer_of(leaf, port)
        for name in fleet.switches:
            fleet.set_usable(name, set())
        fleet.set_usable(peer.switch, {peer.port})
        for sw in fleet.switches.values():     # a fresh master: forget the previous run's session
            sw.term, sw.data_term, sw.master, sw.acked_seq = 0, -1, None, -1
        t_sync = time.perf_counter()
        names = list(fleet.switches)
        # The fleet's own retry timer scans every simulated switch each pump iteration (O(clients) of Python
        # per 10 ms): switched off here, reports are retried per slice below instead.
        fleet._retry_reports = lambda now: None
        for i in range(0, len(names), 500):
            # in slices, each acked before the next: the master's socket queue never overflows and no
            # report is duplicated (duplicates would leave the master a backlog to chew after the warm-up)
            chunk = [fleet.switches[n] for n in names[i:i + 500]]
            fleet.report(names[i:i + 500])
            for _ in range(10):
                if fleet.pump(3.0, until=lambda chunk=chunk: all(sw.acked_seq == sw.report_seq for sw in chunk),
                              skip_lsd=True):
                    break
                fleet.report([sw.name for sw in chunk if sw.acked_seq != sw.report_seq])
        if not fleet.pump(60, until=fleet.all_acked, skip_lsd=True):
            acked = sum(sw.acked_seq == sw.report_seq for sw in fleet.switches.values())
            raise RuntimeError(f"warm-up: only {acked}/{len(names)} reports acked")
        fleet.pump(1.0, skip_lsd=True)          # > 1/max_update_rate: the start-up storm is over
        sync_s = time.perf_counter() - t_sync
        mem_warm = rss_mib(master.proc.pid)
        clients = rest_get(master.rport, "/v1/clients")
        n_clients = len(clients.get("clients", clients)) if isinstance(clients, dict) else len(clients)
        log(f"  warm-up {sync_s:.1f}s, master knows {n_clients} clients, master rss {mem_warm}")
        expected = 1 if multicast else len(fleet.switches)
        samples = []
        for r in range(rounds + 1):            # round 0 is a warm-up, reported but not in the statistics
            quiet_s = wait_quiet(fleet, ROUND_GAP + 0.5, 180.0)
            fleet.raw.clear()
            fleet.set_usable(leaf, {port} if r % 2 == 0 else set())
            t0 = time.monotonic()
            fleet.report([leaf], now=t0)
            got: list[tuple[float, int, bytes]] = []
            cursor = [0]

            def done(got: list = got, cursor: list = cursor) -> bool:
                raw = fleet.raw
                while cursor[0] < len(raw):
                    item = raw[cursor[0]]
                    cursor[0] += 1
                    if len(item[2]) > 3 and item[2][3] in LSD_TYPES:
                        got.append(item)
                return len(got) >= expected

            fleet.pump(60, until=done, raw=True)
            fleet.pump(0.3, raw=True)           # stragglers
            done()
            v = rest_get(master.rport, "/v1/lsd/version")
            check = verify(fleet, got, v["version"])
            new = check.pop("arrivals")
            complete = len(new) >= expected
            samples.append({"lsd_datagrams": len(got), "new_version_datagrams": len(new), "complete": complete,
                            "first_ms": round((new[0] - t0) * 1e3, 2) if new else None,
                            "last_ms": round((new[-1] - t0) * 1e3, 2) if complete else None,
                            "bytes_per_datagram": round(statistics.fmean(len(g[2]) for g in got), 1) if got else None,
                            "verified": check, "version": v["version"], "quiet_wait_s": quiet_s})
            log(f"  round {r}: {samples[-1]}")
            fleet.raw.clear()
        samples[0]["warmup"] = True
        measured = samples[1:]
        lasts = [s["last_ms"] for s in measured if s["last_ms"] is not None]
        metrics = rest_text(master.rport)
        return {
            "mode": "multicast" if multicast else "unicast", "clients": len(fleet.switches),
            "master_start_s": round(master.start_s, 1), "warmup_s": round(sync_s, 1),
            "master_rss_mib_after_warmup": mem_warm, "master_rss_mib_end": rss_mib(master.proc.pid),
            "rounds": samples,
            "last_ms_p50": round(statistics.median(lasts), 2) if lasts else None,
            "last_ms_max": round(max(lasts), 2) if lasts else None,
            "first_ms_p50": round(statistics.median(s["first_ms"] for s in measured if s["first_ms"] is not None), 2)
            if any(s["first_ms"] is not None for s in measured) else None,
            "incomplete_rounds": sum(not s["complete"] for s in measured),
            "report_to_send_hist": metric_lines(metrics, "firepath_master_report_to_send_seconds"),
        }
    finally:
        master.stop()


def wait_quiet(fleet: Any, quiet: float, timeout: float) -> float:
    """Pump (discarding) until no datagram at all arrived for `quiet` s (keepalives are 60 s apart): the
    previous change's fan-out and any start-up backlog are over. Returns the seconds waited (bounded)."""
    t0 = time.monotonic()
    last = t0
    while time.monotonic() - t0 < timeout:
        fleet.raw.clear()
        fleet.pump(0.1, raw=True)
        if fleet.raw:
            last = time.monotonic()
        elif time.monotonic() - last >= quiet:
            break
    fleet.raw.clear()
    return round(time.monotonic() - t0, 2)


def verify(fleet: Any, got: list[tuple[float, int, bytes]], version: int) -> dict[str, Any]:
    """Decode every measured datagram, in arrival order, with its destination's own codec (HMAC, replay
    window, type); returns counts and the arrival times of those carrying `version`."""
    from proto.messages import DecodeError, LsdDelta, LsdFull
    from tests.harness.simclient import key_owner

    arrivals = []
    other = 0
    reasons: dict[str, int] = {}
    for t, _, data in got:
        owner = key_owner(data)
        sw = fleet.switches.get(owner) if owner else next(iter(fleet.switches.values()))
        if sw is None:
            reasons["unknown_owner"] = reasons.get("unknown_owner", 0) + 1
            continue
        try:
            _, msg = sw.codec.decode(data)
        except DecodeError as e:
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
            continue
        v = msg.to_version if isinstance(msg, LsdDelta) else msg.version if isinstance(msg, LsdFull) else None
        if v == version:
            arrivals.append(t)
        else:
            other += 1
    return {"arrivals": arrivals, "other_versions": other, "rejected": reasons}


def bench_fanout_part(fabric: Any, d: Path, quick: bool, rounds: int, n_sockets: int,
                      modes: list[str]) -> dict[str, Any]:
    """`fabric` was loaded from d/u/fabric.yaml (unicast); d/m/fabric.yaml is the multicast twin (same key,
    another digest: the fleet is pointed at that Fabric for the multicast run)."""
    from proto.auth import KeyRing
    from proto.config import load_fabric
    from tests.harness.simclient import SimFleet

    out: dict[str, Any] = {"runs": []}
    keyring = KeyRing.load(d / "u" / "fabric.key")
    fab_m = load_fabric(d / "m" / "fabric.yaml") if "multicast" in modes else None
    group = (str(fab_m.distribution.group), fab_m.distribution.port) if fab_m is not None else None
    t0 = time.perf_counter()
    try:
        fleet = SimFleet(fabric, keyring, {"m1": ("127.0.0.1", 9)}, n_sockets=n_sockets, ack_updates=False,
                         report_refresh=0, report_retry=10.0, group=group)
    except MemoryError as e:
        out["error"] = f"cannot simulate {len(fabric.switches)} clients: {e!r}"
        return out
    out["fleet_build_s"] = round(time.perf_counter() - t0, 1)
    out["fleet_rss_mib"] = rss_mib()
    out["clients"] = len(fleet.switches)
    out["sockets"] = n_sockets
    log(f"  fleet of {len(fleet.switches)} simulated clients on {n_sockets} sockets built in "
        f"{out['fleet_build_s']}s, this process {out['fleet_rss_mib']}")
    gc.collect()
    gc.freeze()
    try:
        for mode in modes:
            multicast = mode == "multicast"
            fleet.fabric = fab_m if multicast else fabric       # reports carry the config digest
            sub = d / ("m" if multicast else "u")
            try:
                out["runs"].append(fanout_run(fleet.fabric, fleet, keyring, sub, sub / "fabric.yaml", rounds,
                                              multicast))
            except Exception as e:  # noqa: BLE001 - recorded: the limit of this machine
                log(f"  {mode} failed: {e!r}\n{traceback.format_exc()}")
                out["runs"].append({"mode": mode, "error": repr(e)})
    finally:
        fleet.close()
    return out


def write_configs(d: Path, quick: bool) -> Path:
    for sub, multicast in (("u", False), ("m", True)):
        (d / sub).mkdir(parents=True, exist_ok=True)
        write_config(d / sub, quick, multicast)
    (d / "m" / "fabric.key").write_bytes((d / "u" / "fabric.key").read_bytes())   # one key for the fleet
    return d / "u" / "fabric.yaml"


# -------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/8 fabric (16 pods), 3 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="fan-out rounds per mode (default 7, quick 3)")
    ap.add_argument("--sockets", type=int, default=8, help="UDP sockets the simulated clients share")
    ap.add_argument("--samples", type=int, default=None, help="links for incremental routing (default 100)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: config,lsd,routes,memory,fanout")
    ap.add_argument("--modes", default="unicast,multicast")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--merge", action="store_true", help="update only the parts run in an existing JSON")
    ap.add_argument("--client-memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client_memory_child:
        print(json.dumps(client_memory_child(args.quick)))
        return 0
    skip = {s for s in args.skip.split(",") if s}
    rounds = args.rounds or (3 if args.quick else 7)
    from proto.config import load_fabric

    result: dict[str, Any] = {}
    if args.merge and args.output.exists():      # keep the parts not re-run, each with its own time stamp
        result = json.loads(args.output.read_text())
        if result.get("quick") != args.quick:
            ap.error(f"--merge: {args.output} has quick={result.get('quick')}, this run quick={args.quick}")
    result.update({"benchmark": "scale", "quick": args.quick})
    result.setdefault("parts_measured", {})
    host = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": sys.version.split()[0],
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for part in ("config", "lsd", "routes", "memory", "fanout"):
        if part not in skip:
            result["parts_measured"][part] = host
    tmp = tempfile.TemporaryDirectory(prefix="fp-scale-")
    d = Path(tmp.name)
    t0 = time.perf_counter()
    cfg = write_configs(d, args.quick)
    result["config_generate_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    fabric = load_fabric(cfg)
    result["fabric"] = {"name": fabric.name, "switches": len(fabric.switches), "links": len(fabric.links),
                        "load_s": round(time.perf_counter() - t0, 1)}
    log(f"fabric {fabric.name}: {len(fabric.switches)} switches, {len(fabric.links)} links "
        f"({result['fabric']['load_s']} s)")

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1, default=str) + "\n")

    if "config" not in skip:
        result["config_check"] = config_check(cfg)
        log(f"config check: {result['config_check']}")
        save()
    if "lsd" not in skip:
        result["lsd"] = bench_lsd_part(len(fabric.links), 3 if args.quick else 10)
        save()
    if "routes" not in skip:
        log("routes ...")
        result["routes"] = bench_routes_part(fabric, args.samples or (30 if args.quick else 100))
        save()
    if "memory" not in skip:
        log("client memory ...")
        result["client_memory"] = client_memory(args.quick)
        save()
    if "fanout" not in skip:
        log("fan-out ...")
        result["fanout"] = bench_fanout_part(fabric, d, args.quick, rounds, args.sockets,
                                             [m for m in args.modes.split(",") if m])
    tmp.cleanup()
    host["loadavg_end"] = os.getloadavg()
    save()
    print_table(result)
    print(f"\nwrote {args.output}  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)")
    return 0


def print_table(r: dict[str, Any]) -> None:
    f = r["fabric"]
    print(f"\nscale: {f['name']}, {f['switches']:,} switches, {f['links']:,} links")
    if "lsd" in r:
        for s in r["lsd"]["snapshots"]:
            print(f"  LSD {s['state']:<24} snapshot {s['snapshot_bytes']:>7,} B, LsdFull datagram "
                  f"{s['datagram_bytes']:>7,} B of {r['lsd']['max_datagram']:,} ({'fits' if s['fits'] else 'TOO BIG'}),"
                  f" encode {s['encode_ms']} ms, decode {s['decode_ms']} ms")
        d = r["lsd"]["delta_1_link"]
        print(f"  LSD delta, 1 link: {d['changes_bytes']} B changes, {d['datagram_bytes']} B datagram")
    if "routes" in r:
        s, p = r["routes"]["switch"], r["routes"]["plan"]
        print(f"  routes {s['switch']}: {s['routes']} routes, full {s['full_ms_cpu_median']} ms cpu "
              f"({s['full_ms_wall_median']} wall), incremental median {s['inc_ms_cpu_median']} ms, p99 "
              f"{s['inc_ms_cpu_p99']} ms cpu ({s['inc_updates']} updates, {s['inc_full_fallbacks']} fallbacks)")
        print(f"  OpenFlow plan: {p['initial_messages']} messages initially in {p['initial_plan_ms_cpu']} ms, "
              f"update median {p['update_plan_ms_cpu_median']} ms")
    if "client_memory" in r:
        m = r["client_memory"]
        if "error" in m:
            print(f"  client memory: error {m['error'][-300:]}")
        else:
            print(f"  client memory ({m['switch']}): " + ", ".join(f"{k} {v} MiB" for k, v in
                                                                   m["traced_mib_added"].items())
                  + f"; cores total {m['cores_mib']} MiB (traced); process RSS {m['process_rss_mib']} MiB "
                    f"(Fabric {m['rss_mib_after']['+ Fabric (whole cluster config)']} MiB), peak {m['process_peak_mib']} MiB")
    if "fanout" in r:
        fo = r["fanout"]
        if "error" in fo:
            print(f"  fan-out: {fo['error']}")
        for run in fo.get("runs", []):
            if "error" in run:
                print(f"  fan-out {run['mode']}: error {run['error']}")
                continue
            print(f"  fan-out {run['mode']:<9} {run['clients']:,} clients: report -> first {run['first_ms_p50']} ms, "
                  f"-> last client p50 {run['last_ms_p50']} ms, max {run['last_ms_max']} ms; master RSS "
                  f"{run['master_rss_mib_after_warmup']} MiB (start {run['master_start_s']} s, warm-up "
                  f"{run['warmup_s']} s)")


if __name__ == "__main__":
    sys.exit(main())
