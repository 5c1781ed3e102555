"""A replica whose state directory is full (issue 19, case 11): real master processes on loopback.

The replica under test runs in its own mount namespace (`unshare -m`) with an 8 KiB tmpfs (an atomic save needs two pages) over its state
directory, filled before it starts: every save of its term or vote fails with ENOSPC. It must stay alive
and say so (REST `persist_error`), and neither vote nor stand, so with only two of three replicas running
no master can be elected; once space returns (the filler removed through /proc/PID/root) the cluster
elects a master within a few election rounds. Before the fix the first failed save escaped the timer
callback, the timer was never re-armed and the replica stayed silent for good.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from controller.durable import STATE_FILE
from tests.harness.loopcluster import LoopCluster

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")]

TIMERS = (("hello_interval_ms", 50), ("master_dead_ms", 400))


def test_full_state_disk_neither_votes_nor_stands_and_recovers(tmp_path: Path) -> None:
    assert shutil.which("unshare"), "util-linux unshare is needed"
    cluster = LoopCluster(tmp_path, masters=3, timers=TIMERS)
    full = cluster.state_dir("m2")
    full.mkdir(parents=True)
    # Mount a two-page tmpfs over the state dir and fill it, then exec the master.
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=8k tmpfs "$0" && dd if=/dev/zero of="$0/fill" bs=4096 count=2 '
            '2>/dev/null; exec "$@"', str(full)]
    try:
        cluster.start("m1")
        proc = cluster.start("m2", wrap=wrap)

        def says_so() -> dict | None:
            v = cluster.get("m2", "/v1/lsd/version", 0.5)
            return v if isinstance(v, dict) and v.get("persist_error") else None

        v = cluster.wait(says_so, 40.0)
        assert v is not None, f"m2 never reported its failed save: {cluster.versions()}"
        assert "No space left" in v["persist_error"] and proc.poll() is None
        # m1 needs m2's vote: m2 must not give one it could not persist, nor win with its own.
        assert cluster.wait(lambda: cluster.masters_now(["m1", "m2"]), 3.0) is None, cluster.versions()
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.rest_port['m2']}/metrics", timeout=2) as r:
            text = r.read().decode()
        assert "firepath_master_state_persist_ok 0.0" in text
        # and the operator's commands say why (a tester saw "inactive / electing" with an empty note)
        shown = subprocess.run([sys.executable, "-m", "proto.cli", "masters", "--config", str(cluster.config)],
                               capture_output=True, text=True, timeout=30)
        row = next(line for line in shown.stdout.splitlines() if line.startswith("m2 "))
        assert "cannot save its state" in row and "No space left" in row, shown.stdout

        inside = Path(f"/proc/{proc.pid}/root") / str(full).lstrip("/")
        (inside / "fill").unlink()
        assert cluster.wait(lambda: (inside / STATE_FILE).exists(), 20.0), (sorted(os.listdir(inside)),
                                                                           cluster.log_path("m2").read_text()[-800:])
        got = cluster.wait(lambda: cluster.single_master(["m1", "m2"]), 45.0)
        assert got is not None, (cluster.get("m1", "/v1/masters")["replicas"], cluster.get("m2", "/v1/masters")["replicas"])
        assert cluster.versions(["m2"])["m2"]["persist_error"] is None
    finally:
        cluster.stop_all()
