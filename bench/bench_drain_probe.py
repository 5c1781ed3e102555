"""Is a drain hitless, and what does running the operator CLI on the lab machine cost the data plane?

    sudo .venv/bin/python -m bench.bench_drain_probe [--rounds 2]

Brings up the demo Clos as lab `cliexp`, then per round: a 4 x 1000 pps probe h-1-1-1 -> h-2-2-1 for 3.5 s
around (a) nothing, (b) `firepath lsd` (a read: only the CLI process runs), (c) `firepath drain --switch
spine-1`, (d) its undrain, (e)/(f) the same drain and undrain as one REST call from this process (no new
process). Prints the probe's loss per case and the load average; tears the lab down. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lab.fabric import Lab, teardown

NAME = "cliexp"
CLOS = {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2, "hosts_per_tor": 1, "masters": 3}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    d = Path("/tmp") / f"fplab-{NAME}"
    lab = Lab.up(name=NAME, lab_dir=d, clos=CLOS, clean=True, timeout=90.0, log=lambda m: None)

    def cli(*argv: str) -> Callable[[], None]:
        return lambda: subprocess.run([sys.executable, "-m", "proto.cli", *argv, "--lab", NAME],
                                      capture_output=True, text=True, timeout=60, check=False)

    def rest(method: str) -> Callable[[], None]:
        def go() -> None:
            token = (d / "admin.token").read_text().strip()
            leader = lab.current_master()
            assert leader is not None
            port = lab.fabric.master(leader[0]).rest_port

            def call() -> int:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/drain", method=method,
                                             data=json.dumps({"switch": "spine-1"}).encode(),
                                             headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    return r.status
            lab.http._pool.submit(call).result(5)     # a worker thread inside the lab namespace
        return go

    def probed(action: Callable[[], None], label: str) -> None:
        lab.wait_converged(20.0)
        time.sleep(1.0)
        probe = lab.probe("h-1-1-1", "h-2-2-1", flows=4, rate=1000.0, port=7100)
        probe.start()
        try:
            time.sleep(1.0)
            action()
            time.sleep(1.5)
            r = probe.stop()
        finally:
            probe.close()
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"{label:<36} sent {r['sent']:>6} lost {r['lost']:>5} max gap {r['max_gap_ms']} ms  load {load}",
              flush=True)

    try:
        for _ in range(args.rounds):
            probed(lambda: None, "nothing")
            probed(cli("lsd"), "firepath lsd (read only)")
            probed(cli("drain", "--switch", "spine-1"), "firepath drain --switch spine-1")
            probed(cli("undrain", "--switch", "spine-1"), "firepath undrain --switch spine-1")
            probed(rest("POST"), "REST POST /v1/drain (no new process)")
            probed(rest("DELETE"), "REST DELETE /v1/drain")
    finally:
        lab.close()
        teardown(d, name=NAME, log=lambda m: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
