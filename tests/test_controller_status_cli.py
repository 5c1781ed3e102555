"""`firepath status` against a real master process on loopback (and against masters that are down)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from proto.auth import KeyRing
from tests.harness.loopcluster import ROOT, LoopCluster, write_cluster_config
from tests.harness.simclient import SimFleet

pytestmark = pytest.mark.timeout(90)


def status(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proto.cli", "status", "--config", str(cfg), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


@contextmanager
def serving(tmp_path: Path, ack_updates: bool = True) -> Iterator[tuple[LoopCluster, int]]:
    """One master on loopback serving a simulated fleet that reported and was acknowledged: (cluster, term)."""
    cluster = LoopCluster(tmp_path, masters=1)
    fleet = SimFleet(cluster.fabric, KeyRing.load(cluster.fabric.security.key_file), cluster.client_addr,
                     ack_updates=ack_updates)
    try:
        cluster.start_all()
        fleet.report()
        got = cluster.wait(lambda: cluster.single_master(), 40.0, fleet.pump)
        assert got, cluster.versions()
        term = got[1]["term"]
        assert cluster.wait(lambda: fleet.on_term(term) and fleet.all_acked(), 15.0, fleet.pump)
        fleet.pump(0.2)                  # the acknowledging LsdRequests (if any) reach the master
        yield cluster, term
    finally:
        cluster.stop_all()
        fleet.close()


def test_status_of_a_serving_master_and_its_clients(tmp_path: Path) -> None:
    with serving(tmp_path) as (cluster, term):
        res = status(cluster.config, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        state = json.loads(res.stdout)
        assert state["leader"] == "m1" and state["serving"] == ["m1"]
        assert state["masters"]["m1"]["version"]["term"] == term
        c = state["clients"]
        assert c["total"] == c["alive"] == c["on_term"] == len(cluster.fabric.switches)
        assert c["max_lag"] == 0 and c["behind"] == [] and c["silent"] == []
        assert c["confirmed"] == len(cluster.fabric.switches) and c["unconfirmed"] == 0   # they all acked
        text = status(cluster.config)
        assert text.returncode == 0
        assert "m1" in text.stdout and "master" in text.stdout
        assert f"{len(cluster.fabric.switches)}/{len(cluster.fabric.switches)} alive" in text.stdout


def test_status_never_shows_an_unconfirmed_lag(tmp_path: Path) -> None:
    """Fresh-user finding: clients that never confirm a version (real clients ask only on a gap) made
    `status` say "max lag 0" from what the master had merely sent. Now the lag is unknown, the count of
    clients sent the current version without confirming it is shown, and the fabric is still healthy."""
    with serving(tmp_path, ack_updates=False) as (cluster, _term):
        n = len(cluster.fabric.switches)
        res = status(cluster.config, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        c = json.loads(res.stdout)["clients"]
        assert c["max_lag"] is None and c["confirmed"] == 0 and c["unconfirmed"] == n and c["behind"] == [], c
        text = status(cluster.config).stdout
        assert f"max confirmed lag unknown (0 confirmed, {n} sent the current version" in text, text
        assert "max lag 0" not in text
        res = subprocess.run([sys.executable, "-m", "proto.cli", "clients", "--config", str(cluster.config)],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        rows = [line.split() for line in res.stdout.splitlines() if line.startswith(("leaf", "spine", "tor"))]
        assert len(rows) == n and all(r[-1] == "unknown" for r in rows), res.stdout


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


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "x"])
def test_status_timeout_must_be_positive(tmp_path: Path, bad: str) -> None:
    """Tester finding 7: --timeout 0 / -1 were accepted (every request then failed as "down")."""
    cfg = write_cluster_config(tmp_path, masters=1)
    res = status(cfg, f"--timeout={bad}")
    assert res.returncode == 2 and "--timeout" in res.stderr, res.stderr
    assert "positive" in res.stderr or "not a number" in res.stderr, res.stderr


@pytest.mark.parametrize("command", [["drains"], ["lsd"], ["masters"], ["config", "rollout", "x.yaml"]])
def test_operator_commands_timeout_must_be_positive(tmp_path: Path, command: list[str]) -> None:
    cfg = write_cluster_config(tmp_path, masters=1)
    res = subprocess.run([sys.executable, "-m", "proto.cli", *command, "--config", str(cfg), "--timeout", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--timeout" in res.stderr and "positive" in res.stderr, res.stderr


def test_status_takes_lab_like_the_other_commands(tmp_path: Path) -> None:
    """Tester finding 6: `firepath status` lacked --lab. A lab that is not up: a clear error, exit 2; --lab
    and --config together: a usage error."""
    res = subprocess.run([sys.executable, "-m", "proto.cli", "status", "--lab", "nosuchlab7"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "lab nosuchlab7: no " in res.stderr and "firepath lab up" in res.stderr, res.stderr
    cfg = write_cluster_config(tmp_path, masters=1)
    res = subprocess.run([sys.executable, "-m", "proto.cli", "status", "--lab", "x", "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "not allowed with argument" in res.stderr, res.stderr
