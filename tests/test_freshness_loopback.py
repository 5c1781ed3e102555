"""Issue #19 case 1 against a real `firepath master` process on loopback: a port report captured before the
master restarted and replayed after it changes nothing and draws no LSD, while the real switch is heard
again within one exchange."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
import urllib.request
from pathlib import Path

from proto.auth import KeyRing
from proto.config import load_fabric
from proto.messages import Challenge, PortReport, PortStatus
from tests.harness.simclient import SimFleet
from tests.test_master_integration import Master, converge, write_config


def _wait_master(m: Master, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = m.get("/v1/lsd/version")
            if v["role"] == "master":
                return v
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no master: {m.log.read_text()[-2000:]}")


def test_report_captured_before_a_master_restart_is_stale_after_it(tmp_path: Path) -> None:
    m = Master(write_config(tmp_path), tmp_path / "state", tmp_path / "master.log")
    fabric = load_fabric(m.cfg)
    keyring = KeyRing.load(fabric.security.key_file)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    attacker.settimeout(0.05)
    try:
        m.start()
        _wait_master(m)
        fleet = SimFleet(fabric, keyring, {"m1": ("127.0.0.1", m.client_port)}, n_sockets=2)
        names = [link.name for link in fabric.links]
        fleet.report()
        converge(fleet, m, dict.fromkeys(names, "up"))
        # The attacker captures a genuine report of leaf-1 (all ports usable) that the master accepts.
        sw = fleet.switches["leaf-1"]
        ports = tuple(PortStatus(p, True, True, True, True, False) for p in fabric.fabric_ports("leaf-1"))
        sw.report_seq += 1
        captured = sw.codec.encode(PortReport("leaf-1", fabric.digest, sw.report_seq, sw.term, ports), to="m1")
        fleet.socks[sw.sock].sendto(captured, ("127.0.0.1", m.client_port))
        fleet.pump(0.3)
        # leaf-1 then loses port 1
        fleet.set_usable("leaf-1", {2})
        fleet.report(["leaf-1"])
        want = dict.fromkeys(names, "up") | {"leaf-1:1-spine-1:1": "down"}
        converge(fleet, m, want)
        # The master restarts; before any switch speaks, the captured report is replayed (many times).
        m.stop(signal.SIGKILL)
        m.start()
        _wait_master(m)
        for _ in range(5):
            attacker.sendto(captured, ("127.0.0.1", m.client_port))
            time.sleep(0.02)
        got: list[bytes] = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                got.append(attacker.recv(65535))
        # at most the (rate-limited) challenges, never the LSD; the switch is not known at that address
        assert all(d[3] == Challenge.TYPE for d in got), [d[3] for d in got]
        leaf1 = next(c for c in m.get("/v1/clients")["clients"] if c["switch"] == "leaf-1")
        assert leaf1["address"] is None and not leaf1["alive"] and leaf1["last_report_age"] is None, leaf1
        # the real switches are heard again within one exchange (stale report -> challenge -> report)
        t0 = time.monotonic()
        fleet.report()
        converge(fleet, m, want)
        elapsed = time.monotonic() - t0
        print(f"restarted master: every switch heard again and converged in {elapsed * 1000:.0f} ms; "
              f"{len(got)} challenge(s) to the replaying address")
        assert elapsed < 5.0
        with urllib.request.urlopen(m.url("/metrics"), timeout=5) as r:
            metrics = r.read().decode()
        assert 'firepath_master_datagrams_rejected_total{reason="stale"}' in metrics
        fleet.close()
    finally:
        attacker.close()
        m.stop(signal.SIGKILL)
