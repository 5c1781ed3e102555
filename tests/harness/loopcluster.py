"""A set of real `firepath master` processes on loopback — the harness of the failover test and benchmark.

    cluster = LoopCluster(tmp_dir, masters=3)            # writes fabric.yaml (+ key) with free ports
    cluster.start_all()
    leader, view = cluster.wait_single_master(timeout=20, pump=fleet.pump)
    cluster.kill(leader, signal.SIGKILL)
    ...
    cluster.stop_all()                                    # in a finally: kills by PID, never by name

Each master gets unique free ports on 127.0.0.1 (client/peer/REST) and its own state directory, so several
clusters (and other engineers' labs) can run at once. REST is read with urllib, every call bounded by a
short timeout; an unreachable replica reads as an exception object, not a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proto.auth import write_secret_file
from proto.clos import ClosParams, generate_clos_yaml

ROOT = Path(__file__).resolve().parents[2]
_MASTER_LINE = re.compile(r"^  - \{id: (m\d+), address: [0-9.]+, client_port: \d+, peer_port: \d+, rest_port: \d+\}$",
                          re.MULTILINE)


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections (ip_local_port_range; 32768 if unread)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: Ports for the servers a test starts: below the kernel's ephemeral range, so that no process's outgoing
#: connection can take one between the check here and the server's bind (a CI run lost a master to
#: "address already in use" on a REST port picked with bind(0)), and apart from the lab's own ranges
#: (lab.labports: 20000 + id, 28000 + id; the presets' OVS ports, 16000 + id).
_TEST_PORTS = range(10000, 16000)


def free_ports(n: int) -> list[int]:
    """n distinct ports free for both UDP and TCP on 127.0.0.1 right now, outside the ephemeral range."""
    ports: list[int] = []
    socks: list[socket.socket] = []
    top = min(_TEST_PORTS.stop, _ephemeral_low())
    for port in random.sample(range(_TEST_PORTS.start, top), top - _TEST_PORTS.start):
        if len(ports) == n:
            break
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", port))
            t.bind(("127.0.0.1", port))
        except OSError:
            u.close()
            t.close()
            continue
        socks += [u, t]
        ports.append(port)
    if len(ports) < n:
        raise OSError(f"free_ports: only {len(ports)} of {n} free ports in {_TEST_PORTS.start}..{top - 1}")
    for s in socks:
        s.close()
    return ports


def write_cluster_config(directory: Path, *, masters: int = 3, timers: tuple[tuple[str, float], ...] = (),
                         name: str = "loop", admin_token: str | None = None, **clos: Any) -> Path:
    """A generated Clos fabric (two-tier, 2 spines x 4 leaves unless overridden) whose masters listen on
    free loopback ports; writes fabric.key next to it (and admin.token, referenced by
    security.admin_token_file, when `admin_token` is given). Returns the config path."""
    params = {"pods": 0, "spines": 2, "leaves": 4, **clos}
    cp = ClosParams(name=name, masters=masters, timers=timers, **params)
    text = generate_clos_yaml(cp)
    ports = free_ports(3 * masters)

    def repl(m: re.Match[str]) -> str:
        i = int(m[1][1:]) - 1
        c, p, r = ports[3 * i: 3 * i + 3]
        return f"  - {{id: {m[1]}, address: 127.0.0.1, client_port: {c}, peer_port: {p}, rest_port: {r}}}"

    text, n = _MASTER_LINE.subn(repl, text)
    if n != masters:
        raise ValueError(f"generated config: expected {masters} master lines, rewrote {n}")
    directory.mkdir(parents=True, exist_ok=True)
    if admin_token is not None:
        key_line = f'  key_file: "{cp.key_file}"\n'
        if key_line not in text:
            raise ValueError("generated config: no key_file line to put admin_token_file after")
        text = text.replace(key_line, key_line + "  admin_token_file: admin.token\n", 1)
        (directory / "admin.token").write_text(admin_token + "\n")
    write_secret_file(directory / "fabric.key")
    cfg = directory / "fabric.yaml"
    cfg.write_text(text)
    return cfg


def http_get(port: int, path: str, timeout: float = 1.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


class LoopCluster:
    def __init__(self, directory: Path, *, masters: int = 3, timers: tuple[tuple[str, float], ...] = (),
                 log_level: str = "info", admin_token: str | None = None, **clos: Any) -> None:
        from proto.config import load_fabric

        self.dir = Path(directory)
        self.config = write_cluster_config(self.dir, masters=masters, timers=timers, admin_token=admin_token,
                                           **clos)
        self.fabric = load_fabric(self.config)
        self.ids = [m.id for m in self.fabric.masters]
        self.rest_port = {m.id: m.rest_port for m in self.fabric.masters}
        self.client_addr = {m.id: (str(m.address), m.client_port) for m in self.fabric.masters}
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------------------------ processes
    def log_path(self, mid: str) -> Path:
        return self.dir / f"master-{mid}.log"

    def state_dir(self, mid: str) -> Path:
        return self.dir / "state" / mid

    def start(self, mid: str, wrap: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Start replica `mid`; `wrap` is an argv prefix that ends by exec'ing the rest (e.g. unshare)."""
        cmd = [sys.executable, "-m", "proto.cli", "master", "--config", str(self.config), "--id", mid,
               "--state-dir", str(self.state_dir(mid)), "--log-level", self.log_level]
        cmd = [*(wrap or []), *cmd]
        with open(self.log_path(mid), "ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        self.procs[mid] = proc
        return proc

    def start_all(self) -> None:
        for mid in self.ids:
            self.start(mid)

    def alive(self, mid: str) -> bool:
        p = self.procs.get(mid)
        return p is not None and p.poll() is None

    def kill(self, mid: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the master's PID (no wait)."""
        p = self.procs[mid]
        if p.poll() is None:
            os.kill(p.pid, sig)

    def wait_exit(self, mid: str, timeout: float = 10.0) -> int | None:
        try:
            return self.procs[mid].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        """SIGKILL every process still running (by PID) and reap it. Safe in a finally."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)

    # ------------------------------------------------------------------------------------ REST
    def get(self, mid: str, path: str, timeout: float = 1.0) -> dict[str, Any] | Exception:
        try:
            return http_get(self.rest_port[mid], path, timeout)
        except Exception as e:  # noqa: BLE001 - unreachable / not up yet / dead: a value for the caller
            return e

    def versions(self, ids: list[str] | None = None) -> dict[str, dict[str, Any] | Exception]:
        return {mid: self.get(mid, "/v1/lsd/version", 0.5) for mid in (ids or self.ids)}

    def masters_now(self, ids: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(mid, v) for mid, v in self.versions(ids).items()
                if isinstance(v, dict) and v.get("role") == "master"]

    def wait(self, cond: Callable[[], Any], timeout: float, pump: Callable[[float], Any] | None = None,
             step: float = 0.02) -> Any:
        """Poll `cond()` until it returns a truthy value (returned) or `timeout` passes (returns None).
        Between polls run `pump(step)` (e.g. the scripted clients) or sleep `step`."""
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            if time.monotonic() >= deadline:
                return None
            if pump is not None:
                pump(step)
            else:
                time.sleep(step)

    def single_master(self, ids: list[str] | None = None, above_term: int = -1) -> tuple[str, dict[str, Any]] | None:
        """(id, /v1/lsd/version) if exactly one of `ids` is master, with term > above_term, not holding."""
        ms = self.masters_now(ids)
        if len(ms) == 1 and ms[0][1]["term"] > above_term and not ms[0][1].get("held"):
            return ms[0]
        return None
