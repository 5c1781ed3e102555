"""`firepath status` against a real master process on loopback (and against masters that are down)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proto.auth import KeyRing
from tests.harness.loopcluster import ROOT, LoopCluster, write_cluster_config
from tests.harness.simclient import SimFleet

pytestmark = pytest.mark.timeout(90)


def status(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proto.cli", "status", "--config", str(cfg), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_status_of_a_serving_master_and_its_clients(tmp_path: Path) -> None:
    cluster = LoopCluster(tmp_path, masters=1)
    fleet = SimFleet(cluster.fabric, KeyRing.load(cluster.fabric.security.key_file), cluster.client_addr)
    try:
        cluster.start_all()
        fleet.report()
        got = cluster.wait(lambda: cluster.single_master(), 40.0, fleet.pump)
        assert got, cluster.versions()
        term = got[1]["term"]
        assert cluster.wait(lambda: fleet.on_term(term) and fleet.all_acked(), 15.0, fleet.pump)
        fleet.pump(0.2)                  # the acknowledging LsdRequests reach the master
        res = status(cluster.config, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        state = json.loads(res.stdout)
        assert state["leader"] == "m1" and state["serving"] == ["m1"]
        assert state["masters"]["m1"]["version"]["term"] == term
        c = state["clients"]
        assert c["total"] == c["alive"] == c["on_term"] == len(cluster.fabric.switches)
        assert c["max_lag"] == 0 and c["behind"] == [] and c["silent"] == []
        text = status(cluster.config)
        assert text.returncode == 0
        assert "m1" in text.stdout and "master" in text.stdout
        assert f"{len(cluster.fabric.switches)}/{len(cluster.fabric.switches)} alive" in text.stdout
    finally:
        cluster.stop_all()
        fleet.close()


def test_status_with_every_master_down(tmp_path: Path) -> None:
    cfg = write_cluster_config(tmp_path, masters=3)          # free ports, nothing listening
    res = status(cfg, "--timeout", "0.5")
    assert res.returncode == 1
    assert "NO MASTER SERVING" in res.stdout
    assert res.stdout.count("down") == 3
    state = json.loads(status(cfg, "--json", "--timeout", "0.5").stdout)
    assert state["leader"] is None and all("error" in m for m in state["masters"].values())


def test_status_bad_config(tmp_path: Path) -> None:
    res = status(tmp_path / "missing.yaml")
    assert res.returncode == 2 and "firepath status" in res.stderr
