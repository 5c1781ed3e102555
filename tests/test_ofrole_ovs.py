"""Two client processes for one switch on real OVS: the newer one takes the switch over (client.ofrole).

    [bridge leaf-1] 1 --veth-- 1 [bridge spine-1]      (private OVS in its own namespace, names rolet-<tok>)

leaf-1's first client (a `firepath client` process) runs and its link is up at spine-1 (an in-process
client); a second `firepath client` for leaf-1 starts: it asks OVS for the MASTER role with a newer
generation_id, OVS demotes the first one (OFPT_ROLE_STATUS), which logs the takeover and exits 1 with the
message; the second keeps the switch: its ND works (the link is up at spine-1) and it stays running.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.daemon import ClientDaemon
from lab import netns
from lab.ovs import OvsInstance
from proto.auth import KeySet
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import load_fabric
from tests.harness.ovsns import ovs_in_netns

pytestmark = [pytest.mark.ovs, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
OF_PORT = 21101


@pytest.fixture
def ovs_ns() -> Iterator[tuple[str, OvsInstance, str]]:
    with ovs_in_netns("rolet") as got:
        yield got


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _client(config: Path, ns: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "proto.cli", "client", "--config", str(config),
                             "--switch", "leaf-1", "--ovs", f"tcp:127.0.0.1:{OF_PORT}", "--netns", ns,
                             "--rest-port", "0", "--restart-hold", "0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_second_client_takes_the_switch_over_and_the_first_exits(ovs_ns, tmp_path: Path) -> None:
    tok, ovs, ns = ovs_ns
    (tmp_path / "fabric.key").write_text(secrets.token_hex(32) + "\n")
    (tmp_path / "fabric.key").chmod(0o600)
    config = tmp_path / "fabric.yaml"
    config.write_text(generate_clos_yaml(ClosParams(
        name="rolet", spines=1, pods=0, leaves=1, masters=1, hosts_per_tor=0, liveness="nd",
        master_base_port=53000 + os.getpid() % 5000, key_file="fabric.key",
        timers=(("nd_interval_ms", 50), ("nd_dead_ms", 250)))))
    fabric = load_fabric(str(config))
    bridges = []
    for i, name in enumerate(("leaf-1", "spine-1")):
        bridges.append(f"rolet-{tok}-b{i}")
        ovs.add_bridge(bridges[-1], fabric.switch(name).id, listen_port=OF_PORT + i)
    a, b = f"rolet-{tok}-a", f"rolet-{tok}-b"
    netns.create_veth(a, b, netns_a=ns, netns_b=ns)
    for bridge, ifname in zip(bridges, (a, b), strict=True):
        ovs.add_port(bridge, ifname, 1)
        # the ND punt flow (client.ofplan), which the programmer installs only once it has an LSD
        ovs.add_flow(bridge, "priority=65535,dl_type=0x88b5,actions=CONTROLLER:65535")
    spine = ClientDaemon(fabric, "spine-1", KeySet.from_security(fabric.security),
                         ovs_target=f"tcp:127.0.0.1:{OF_PORT + 1}", netns=ns)
    spine.start()
    first = second = None
    try:
        def link_up() -> bool:
            return bool(spine.status()["ports"][0]["usable"])

        first = _client(config, ns, tmp_path / "first.log")
        assert _wait(link_up, 15.0), spine.status()["ports"]
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        second = _client(config, ns, tmp_path / "second.log")
        t0 = time.monotonic()
        first.wait(15.0)
        took = time.monotonic() - t0
        err = (tmp_path / "first.log").read_text()
        assert first.returncode == 1, err
        assert "another firepath client took over" in err and "leaf-1" in err, err
        assert "event=switch_taken_over" in err and "their_generation_id=" in err, err
        assert err.count("event=switch_taken_over") == 1, err
        # the second one keeps the switch: its ND brings (keeps) the link up at spine-1, and it stays
        assert _wait(link_up, 10.0), spine.status()["ports"]
        time.sleep(1.0)
        assert link_up(), spine.status()["ports"]
        assert second.poll() is None, (tmp_path / "second.log").read_text()
        assert "switch_taken_over" not in (tmp_path / "second.log").read_text()
        print(f"\nfirst client exited {took * 1000:.0f} ms after the second one started")
    finally:
        for proc in (first, second):
            if proc is not None:
                _stop(proc)
        spine.stop()
