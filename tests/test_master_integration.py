"""Integration: a real `firepath master` process on loopback, driven by scripted clients over real UDP."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proto.auth import KeyRing, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import Fabric, load_fabric
from proto.lsd import LinkState
from proto.messages import Keepalive, LsdDelta, LsdFull, ReportAck
from tests.harness.loopcluster import free_ports
from tests.harness.simclient import SimFleet

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-admin-token"


def write_config(d: Path, **kw: object) -> Path:
    text = generate_clos_yaml(ClosParams(**{"pods": 0, "spines": 2, "leaves": 4, "masters": 1, **kw}))  # type: ignore[arg-type]
    text = text.replace('  key_file: "fabric.key"\n', '  key_file: "fabric.key"\n  admin_token_file: admin.token\n')
    write_secret_file(d / "fabric.key")
    (d / "admin.token").write_text(TOKEN + "\n")
    cfg = d / "fabric.yaml"
    cfg.write_text(text)
    return cfg


def master_cmd() -> list[str]:
    module = "proto.cli" if importlib.util.find_spec("proto.cli") is not None else "controller.cli"
    return [sys.executable, "-m", module, "master"]


class Master:
    def __init__(self, cfg: Path, state: Path, log: Path) -> None:
        self.cfg, self.state, self.log = cfg, state, log
        self.client_port, self.peer_port, self.rest_port = free_ports(3)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = master_cmd() + ["--config", str(self.cfg), "--id", "m1", "--state-dir", str(self.state),
                              "--bind", "127.0.0.1", "--client-port", str(self.client_port),
                              "--peer-port", str(self.peer_port), "--rest-port", str(self.rest_port),
                              "--log-level", "debug"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            return None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.rest_port}{path}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=5) as r:
            return json.loads(r.read())

    def request(self, method: str, path: str, body: object, token: str | None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_master(self, term: int, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                last = v = self.get("/v1/lsd/version")
                if v["role"] == "master" and v["term"] == term:
                    return v
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"master not serving term {term}: {last}; log: {self.log.read_text()[-3000:]}")


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = Master(write_config(tmp_path), tmp_path / "state", tmp_path / "master.log")
    try:
        yield m
    finally:
        m.stop(signal.SIGKILL)


def lossy(seed: int, victims: set[str], p: float) -> Callable[[str, object], bool]:
    rng = random.Random(seed)

    def drop(switch: str, msg: object) -> bool:
        return switch in victims and isinstance(msg, LsdDelta | LsdFull | Keepalive | ReportAck) and rng.random() < p

    return drop


def converge(fleet: SimFleet, m: Master, want: dict[str, str], timeout: float = 15.0) -> dict:
    """Pump the fleet until the master's LSD equals `want` (link -> state) and every client holds it."""
    deadline = time.monotonic() + timeout
    lsd: dict = {}
    while time.monotonic() < deadline:
        fleet.pump(0.05)
        lsd = m.get("/v1/lsd")
        if lsd["links"] != want:
            continue
        states = bytes(LinkState[want[link.name].upper()] for link in fleet.fabric.links)
        term, version = lsd["term"], lsd["version"]
        if fleet.pump(0.5, until=lambda: fleet.converged(term, version, states)):  # noqa: B023 - used at once
            return lsd
    versions = {sw.name: (sw.data_term, sw.version) for sw in fleet.switches.values()}
    raise AssertionError(f"no convergence: master {lsd}, clients {versions}")


def test_master_process_with_scripted_clients(master: Master) -> None:
    fabric: Fabric = load_fabric(master.cfg)
    keyring = KeyRing.load(fabric.security.key_file)
    master.start()
    master.wait_master(term=1)
    victims = {"leaf-1", "spine-2"}
    fleet = SimFleet(fabric, keyring, {"m1": ("127.0.0.1", master.client_port)}, n_sockets=3,
                     drop=lossy(7, victims, 0.3))
    try:
        names = [link.name for link in fabric.links]
        # 1. everyone reports all ports usable: every link up, every client converged despite losses
        fleet.report()
        lsd = converge(fleet, master, dict.fromkeys(names, "up"))
        assert lsd["term"] == 1 and lsd["version"] >= 1
        assert sum(sw.counts["dropped"] for sw in fleet.switches.values()) > 0
        # 2. leaf-1 loses port 1: exactly that link goes down (one new version)
        v = lsd["version"]
        fleet.set_usable("leaf-1", {2})
        fleet.report(["leaf-1"])
        want = dict.fromkeys(names, "up") | {"leaf-1:1-spine-1:1": "down"}
        lsd = converge(fleet, master, want)
        assert lsd["version"] == v + 1
        # 3. drains: auth and validation, then a real drain through the LSD path
        link = "leaf-2:2-spine-2:2"
        assert master.request("POST", "/v1/drain", {"link": link}, None)[0] == 401
        assert master.request("POST", "/v1/drain", {"link": link}, "wrong")[0] == 403
        status, body = master.request("POST", "/v1/drain", {"link": "leaf-2:9-spine-2:2"}, TOKEN)
        assert status == 400 and "no such link" in body["error"]
        assert master.request("POST", "/v1/drain", {"switch": 3}, TOKEN)[0] == 400
        assert master.request("POST", "/v1/drain", b"not json", TOKEN)[0] == 400
        status, body = master.request("POST", "/v1/drain", {"link": link}, TOKEN)
        assert status == 200 and body["links"] == [link]
        lsd = converge(fleet, master, want | {link: "drained_down"})           # a link drain: out of use
        status, body = master.request("POST", "/v1/drain", {"switch": "spine-1"}, TOKEN)
        assert status == 200 and len(body["links"]) == 4
        spine1 = {n: "drained" for n in names if "spine-1:" in n}
        # the one that is down (step 2) is drained and failed: never used, still part of spine-1's drain
        spine1["leaf-1:1-spine-1:1"] = "drained_down"
        converge(fleet, master, want | {link: "drained_down"} | spine1)
        assert master.request("DELETE", "/v1/drain", {"switch": "spine-1"}, TOKEN)[0] == 200
        assert master.request("DELETE", "/v1/drain", {"link": link}, TOKEN)[0] == 200
        lsd = converge(fleet, master, want)
        # 4. views: clients all acked the current version; delta since; topology; masters; metrics
        fleet.pump(0.3)
        clients = master.get("/v1/clients")
        assert {c["switch"] for c in clients["clients"]} == set(fleet.switches)
        for c in clients["clients"]:
            assert c["alive"] and c["address"] and c["lag"] == 0, c
            assert c["acked_version"] == lsd["version"]
        delta = master.get(f"/v1/lsd?since={lsd['version'] - 1}")
        assert delta["full"] is False and delta["links"] == {link: "up"}
        topo = master.get("/v1/topology")
        assert len(topo["switches"]) == len(fabric.switches) and len(topo["links"]) == len(names)
        assert {s["role"] for s in topo["switches"]} == {"spine", "tor"}
        masters = master.get("/v1/masters")
        assert masters["replicas"][0]["id"] == "m1" and masters["replicas"][0]["state"] == "master"
        with urllib.request.urlopen(master.url("/metrics"), timeout=5) as r:
            metrics = r.read().decode()
        assert f"firepath_master_lsd_version {float(lsd['version'])}" in metrics
        assert 'firepath_master_messages_sent_total{dest="client",type="LsdDelta"}' in metrics
        assert "firepath_master_clients_connected 6.0" in metrics
        # 5. a forged datagram is rejected by reason
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"FP" + bytes(60), ("127.0.0.1", master.client_port))
        deadline = time.monotonic() + 5
        while 'firepath_master_datagrams_rejected_total{reason="' not in metrics and time.monotonic() < deadline:
            with urllib.request.urlopen(master.url("/metrics"), timeout=5) as r:
                metrics = r.read().decode()
        assert 'firepath_master_datagrams_rejected_total{reason="' in metrics
        # 6. clean shutdown on SIGTERM; the term is durable; a restart takes term 2 and clients resync
        assert master.stop(signal.SIGTERM) == 0
        state = json.loads((master.state / "master-state.json").read_text())
        assert state["term"] == 1
        master.start()
        master.wait_master(term=2)
        lsd = converge(fleet, master, want)
        assert lsd["term"] == 2
        assert all(sw.term == 2 for sw in fleet.switches.values())
    finally:
        fleet.close()


def test_master_process_multicast(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    gport = free_ports(1)[0]
    group = f"239.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    cfg.write_text(cfg.read_text() + f"distribution: {{mode: multicast, group: {group}, port: {gport}}}\n")
    m = Master(cfg, tmp_path / "state", tmp_path / "master.log")
    fabric = load_fabric(cfg)
    fleet = None
    try:
        m.start()
        m.wait_master(term=1)
        fleet = SimFleet(fabric, KeyRing.load(fabric.security.key_file), {"m1": ("127.0.0.1", m.client_port)},
                         n_sockets=2, group=(group, gport), drop=lossy(11, {"leaf-2"}, 0.3))
        names = [link.name for link in fabric.links]
        fleet.report()
        version = converge(fleet, m, dict.fromkeys(names, "up"))["version"]
        for usable in ({2}, {1, 2}, set(), {1, 2}):
            fleet.set_usable("leaf-3", usable)
            fleet.report(["leaf-3"])
            want = dict.fromkeys(names, "up") | {n: "down" for n in names if n.startswith("leaf-3:")
                                                  and int(n.split(":")[1].split("-")[0]) not in usable}
            lsd = converge(fleet, m, want)
            assert lsd["version"] == version + 1             # one report, one batch, one version
            version = lsd["version"]
        with urllib.request.urlopen(m.url("/metrics"), timeout=5) as r:
            metrics = r.read().decode()
        group_deltas = [line for line in metrics.splitlines()
                        if line.startswith('firepath_master_messages_sent_total{dest="group",type="LsdDelta"}')]
        assert group_deltas and float(group_deltas[0].split()[-1]) >= 4
        assert fleet.rejected == {}
    finally:
        if fleet is not None:
            fleet.close()
        m.stop(signal.SIGKILL)
