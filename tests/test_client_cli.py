"""`firepath client` start-up errors end the process at once with a clear message and exit status 1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proto.clos import ClosParams, generate_clos_yaml

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "fabric.key").write_text("ab" * 32 + "\n")
    (tmp_path / "fabric.key").chmod(0o600)
    path = tmp_path / "fabric.yaml"
    path.write_text(generate_clos_yaml(ClosParams(name="cli", spines=1, pods=0, leaves=1, masters=1,
                                                  key_file="fabric.key")))
    return path


def client(config: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "proto.cli", "client", "--config", str(config),
                           "--switch", "leaf-1", "--ovs", "tcp:127.0.0.1:9", "--restart-hold", "5", *args],
                          capture_output=True, text=True, timeout=45, cwd=ROOT)
    return proc, time.monotonic() - t0


def test_rest_port_in_use_ends_the_client_at_once(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, seconds = client(config, "--rest-port", str(port))
    assert proc.returncode == 1, proc.stderr
    assert f"cannot serve REST on 127.0.0.1:{port}" in proc.stderr
    assert "in use" in proc.stderr.lower()
    assert seconds < 20          # no hang (imports included, on a loaded machine)


def test_udp_bind_failure_ends_the_client_at_once(config: Path) -> None:
    proc, _ = client(config, "--rest-port", "0", "--bind", "192.0.2.1")    # not an address of this host
    assert proc.returncode == 1, proc.stderr
    assert "cannot open the UDP socket towards the masters on 192.0.2.1" in proc.stderr


def test_a_network_namespace_that_is_not_there_ends_the_client_at_once(config: Path) -> None:
    """Tester finding: `--netns nosuch` retried entering it for ever (the driver's connect loop)."""
    proc, seconds = client(config, "--rest-port", "0", "--netns", "fp-no-such-namespace")
    assert proc.returncode == 1, proc.stderr
    assert "--netns fp-no-such-namespace: cannot enter that network namespace" in proc.stderr
    assert seconds < 20
    proc, _ = client(config, "--rest-port", "0", "--netns", "../etc")
    assert proc.returncode == 1 and "not a network namespace name" in proc.stderr
