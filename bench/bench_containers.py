"""The controller cluster in containers: image build, cluster up, failover after `docker kill` / `docker stop`.

    sudo .venv/bin/python -m bench.bench_containers [--quick] [--kills N] [--stops N] [--ups N]

Steps (root, OVS, Docker; the same pieces as tests/test_containers.py):
1. the local base image (docker/build-base.sh; cached in the engine's image store unless --cold-base);
2. the image from this checkout (docker/build-image.sh: host wheels + docker build), timed as a rebuild
   after a source change with the dependencies' wheels and the base already there ("warm cache");
3. `--ups` times: compose up of docker/compose.yaml (3 replicas, host networking, 127.0.0.11-13) until
   exactly one master serves, then down with its volumes (fresh terms each time);
4. a 2-spine/2-leaf lab on the containerised masters (`lab up --external-masters`);
5. `--kills` times: a UDP probe across the fabric, `docker kill` of the serving master; failover = from the
   killed process's end (docker State.FinishedAt) to the new master's `role=master` log line (both the
   host clock), and from the `docker kill` command to a client-visible switch of every client (REST
   polling); probe loss; the killed replica is started again and rejoins as a backup;
6. `--stops` times: the same with `docker stop` (SIGTERM: step-down), from the old master's SIGTERM log
   line to the new master's.
Writes bench/results/containers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from lab import extconfig, external
from lab.fabric import Lab, load_fabric, teardown, wait_until
from tests.harness import compose
from tests.harness.loopcluster import ROOT

RESULTS = ROOT / "bench" / "results"
IMAGE = "firepath:bench"


def _stats(xs: list[float]) -> dict[str, float | int]:
    return summary(xs, digits=3)


def _load() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_containers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 up, 2 kills, 1 stop")
    ap.add_argument("--ups", type=int, default=3)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--stops", type=int, default=3)
    ap.add_argument("--cold-base", action="store_true", help="remove and rebuild the debootstrap base image")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.quick:
        args.ups, args.kills, args.stops = 1, 2, 1
    missing = compose.missing_tools()
    if missing or os.geteuid() != 0:
        print(f"bench_containers: needs root and {', '.join(missing) or 'nothing else'}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"benchmark": "containers", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "load_avg_start": _load(), "cpus": os.cpu_count()}
    if args.cold_base:
        compose.run(["docker", "image", "rm", "firepath-base:bookworm"], check=False)
    base, out["base_image_s"], built = compose.ensure_base_image()
    out["base_image"] = "built" if built else "cached"
    compose.build_image(IMAGE, base, sys.executable)          # make sure the dependency wheels are there
    out["image_build_warm_s"] = round(compose.build_image(IMAGE, base, sys.executable), 2)
    out["load_avg_after_build"] = _load()
    name = f"bc{os.getpid() % 100000}"
    d = Path("/tmp") / f"fplab-{name}"
    shutil.rmtree(d, ignore_errors=True)
    config = extconfig.write_config(d / "cfg", name, key_owner=10001, pods=0, leaves=2, spines=2, masters=3,
                                   master_address=",".join(compose.MASTER_ADDRESSES),
                                   master_base_port=compose.free_master_base_port())
    fabric = load_fabric(config)
    cluster = compose.ComposeCluster(f"fp{name}", d / "cfg", IMAGE)

    def states() -> dict[str, Any]:
        return external.master_states(fabric.masters, 0.3)

    lab: Lab | None = None
    try:
        ups, up_cmd, rest = [], [], []
        for i in range(args.ups):
            t0 = time.monotonic()
            cluster.up()
            up_cmd.append(time.monotonic() - t0)         # docker-compose up -d returned: containers started
            assert wait_until(lambda: all(isinstance(v, dict) for v in states().values()), 60.0, 0.02), states()
            rest.append(time.monotonic() - t0)           # every replica's REST answers (Python started)
            assert wait_until(lambda: compose.serving(states()) is not None, 60.0, 0.02), states()
            ups.append(time.monotonic() - t0)
            if i < args.ups - 1:
                cluster.down()
        out["cluster_up_to_serving_s"] = _stats(ups)
        out["cluster_up_compose_s"] = _stats(up_cmd)
        out["cluster_up_all_rest_s"] = _stats(rest)
        t0 = time.monotonic()
        lab = Lab.up(name=name, lab_dir=d / "lab", config=config, external_masters=True, clean=True, timeout=90.0,
                     log=lambda m: None)
        out["lab_up_s"] = round(time.monotonic() - t0, 2)
        hosts = [h.name for h in fabric.hosts]
        rows: dict[str, list[dict[str, Any]]] = {"kill": [], "stop": []}
        for kind, n in (("kill", args.kills), ("stop", args.stops)):
            for _ in range(n):
                assert lab.wait_converged(30.0), lab.convergence_problem()
                old, old_term = compose.serving(states())
                probe = lab.probe(hosts[0], hosts[-1], port=7400, flows=4, rate=250.0)
                probe.start()
                try:
                    time.sleep(0.3)
                    t0 = time.monotonic()
                    (cluster.kill if kind == "kill" else cluster.stop)(old)
                    assert wait_until(lambda old=old: (s := compose.serving(states())) is not None and s[0] != old,
                                      10, 0.01)
                    new, term = compose.serving(states())
                    assert wait_until(lambda new=new: all(isinstance(s, dict) and s.get("master") == new
                                                  for s in lab.client_states().values()), 10.0, 0.02)
                    seen = time.monotonic() - t0
                    time.sleep(0.3)
                    result = probe.stop()
                finally:
                    probe.close()
                elected = cluster.event_time(new, "role", role="master", term=term)
                start = cluster.exit_time(old) if kind == "kill" else \
                    cluster.event_time(old, "signal", name="SIGTERM")
                rows[kind].append({"failover_s": round(elected - start, 3), "clients_follow_seen_s": round(seen, 3),
                                   "probe_sent": result["sent"], "probe_lost": result["lost"],
                                   "max_gap_ms": result["max_gap_ms"], "old": old, "new": new, "load": _load()})
                print(f"{kind}: {rows[kind][-1]}", flush=True)
                cluster.start(old)
                assert wait_until(lambda old=old: isinstance(s := states()[old], dict) and s.get("role") == "backup",
                                  30.0, 0.05), states()
                time.sleep(1.0)
                assert compose.serving(states()) == (new, term), "a restarted replica took over: not sticky"
        for kind in rows:
            out[f"{kind}_failover_s"] = _stats([r["failover_s"] for r in rows[kind]])
            out[f"{kind}_follow_seen_s"] = _stats([r["clients_follow_seen_s"] for r in rows[kind]])
            out[f"{kind}_probe_lost"] = sum(r["probe_lost"] for r in rows[kind])
        out["runs"] = rows
    finally:
        if lab is not None:
            lab.close()
        teardown(d / "lab", name=name, log=lambda m: None)
        cluster.down()
        out["leftovers"] = cluster.leftovers()
        shutil.rmtree(d, ignore_errors=True)
        compose.run(["docker", "image", "rm", IMAGE], check=False)
    out["load_avg_end"] = _load()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "containers.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
