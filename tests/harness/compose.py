"""The containerised master cluster of docker/compose.yaml, driven from a test: build, up, kill, down.

    base = ensure_base_image()                      # debootstrap base, built once and kept (image store)
    build_image("firepath:test", base)              # wheels from this checkout, then docker build
    cluster = ComposeCluster("fpctr123", config_dir, "firepath:test")
    cluster.up(); cluster.kill("m1"); cluster.start("m1"); cluster.down(); cluster.leftovers() == []

Everything is named after the compose project (containers ``<project>_<service>_1``, volumes
``<project>_<service>-state``) and removed by those names; nothing here lists or removes other objects.
Every command is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from proto.logsetup import parse_event
from tests.harness.loopcluster import ROOT

DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
SERVICES = ("m1", "m2", "m3")
MASTER_ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


def missing_tools() -> list[str]:
    """Tools the containers test needs that are not installed or not working (engine not answering)."""
    missing = [t for t in ("docker", "docker-compose", "debootstrap") if shutil.which(t) is None]
    if not missing and run(["docker", "info"], check=False, timeout=30).returncode != 0:
        missing.append("a running Docker engine (scripts/start-dockerd.sh)")
    return missing


def run(argv: list[str], *, check: bool = True, timeout: float = 120.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def image_id(tag: str) -> str | None:
    proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], check=False, timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_base_image() -> tuple[str, float, bool]:
    """(tag, seconds, built?) of the local base image, built by docker/build-base.sh unless cached."""
    t0 = time.monotonic()
    proc = run(["bash", str(DOCKER_DIR / "build-base.sh")], timeout=600)
    tag = "firepath-base:" + run(["bash", "-c", ". /etc/os-release && echo ${VERSION_CODENAME:-bookworm}"]
                                 ).stdout.strip()
    return tag, time.monotonic() - t0, "cached" not in proc.stdout


def build_image(tag: str, base: str, python: str) -> float:
    """docker/build-image.sh TAG on `base`; the image previously tagged TAG is removed by id. Seconds."""
    old = image_id(tag)
    t0 = time.monotonic()
    run(["bash", str(DOCKER_DIR / "build-image.sh"), tag], timeout=600,
        env={"BASE_IMAGE": base, "PYTHON": python})
    elapsed = time.monotonic() - t0
    if old is not None and old != image_id(tag):
        run(["docker", "image", "rm", old], check=False, timeout=60)
    return elapsed


def free_master_base_port(lo: int = 7000, hi: int = 9500) -> int:
    """A base B with B+1..3, B+101..103 and B+201..203 free (UDP and TCP) on 127.0.0.11-13."""
    for base in range(lo, hi, 10):
        ports = [base + off + i for off in (0, 100, 200) for i in (1, 2, 3)]
        if all(_free(addr, p) for addr in MASTER_ADDRESSES for p in ports):
            return base
    raise AssertionError(f"no free master ports in {lo}..{hi} on {MASTER_ADDRESSES}")


def _free(addr: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


class ComposeCluster:
    """docker/compose.yaml as project `project`, with the config and key of `config_dir`."""

    def __init__(self, project: str, config_dir: Path, image: str) -> None:
        self.project = project
        # every host file the compose file mounts, from config_dir (`lab config` writes them there): a default
        # path left to compose (./admin.token beside compose.yaml) that does not exist becomes a directory
        self.env = {"FIREPATH_IMAGE": image, "FIREPATH_FABRIC": str(config_dir / "fabric.yaml"),
                    "FIREPATH_KEY": str(config_dir / "fabric.key"),
                    "FIREPATH_ADMIN_TOKEN": str(config_dir / "admin.token")}

    def compose(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args], timeout=timeout,
                   env=self.env, check=check)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"            # compose v1 naming

    def volume(self, service: str) -> str:
        return f"{self.project}_{service}-state"

    def up(self) -> None:
        self.compose("up", "-d", "--no-build")

    def kill(self, service: str) -> None:
        run(["docker", "kill", self.container(service)], timeout=30)

    def stop(self, service: str) -> None:
        run(["docker", "stop", "-t", "5", self.container(service)], timeout=30)

    def start(self, service: str) -> None:
        run(["docker", "start", self.container(service)], timeout=30)

    def inspect(self, service: str) -> dict:
        return json.loads(run(["docker", "inspect", self.container(service)], timeout=30).stdout)[0]

    def logs(self, service: str) -> str:
        proc = run(["docker", "logs", self.container(service)], check=False, timeout=30)
        return proc.stdout + proc.stderr

    def event_time(self, service: str, event: str, **fields: object) -> float:
        """Unix time (s) of the service's last log event `event` whose fields include `fields` (compared as
        text; either log rendering, proto.logsetup). Its `ts` is the host's clock, which containers share."""
        logs = self.logs(service)
        t = last_event_time(logs, event, **fields)
        if t is None:
            raise AssertionError(f"{service}: no {event} event with {fields}: {logs[-1500:]}")
        return t

    def exit_time(self, service: str) -> float:
        """Unix time (s) the service's process ended (docker's State.FinishedAt, ns truncated to us)."""
        finished = self.inspect(service)["State"]["FinishedAt"]        # 2026-12-02T17:56:03.123456789Z
        head, _, frac = finished.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()

    def exec(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return run(["docker", "exec", self.container(service), *argv], check=False, timeout=30)

    def down(self) -> None:
        """Containers (SIGTERM, then SIGKILL after 5 s), their volumes and any network, by project."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=120, check=False)
        for service in SERVICES:           # whatever compose did not remove, by name
            run(["docker", "rm", "-f", "-v", self.container(service)], check=False, timeout=30)
            run(["docker", "volume", "rm", self.volume(service)], check=False, timeout=30)

    def leftovers(self) -> list[str]:
        """Containers, volumes and networks of this project that still exist (by compose's project label)."""
        label = f"label=com.docker.compose.project={self.project}"
        left = []
        for kind, argv in (("container", ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"]),
                           ("volume", ["docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}"]),
                           ("network", ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"])):
            left += [f"{kind} {n}" for n in run(argv, timeout=30).stdout.split()]
        for service in SERVICES:
            if run(["docker", "volume", "inspect", self.volume(service)], check=False, timeout=30).returncode == 0:
                left.append(f"volume {self.volume(service)}")
        return sorted(set(left))


def serving(states: dict[str, Any]) -> tuple[str, int] | None:
    """(id, term) of the one master whose /v1/lsd/version says role master; None if none or several."""
    leaders = [(m, int(s["term"])) for m, s in states.items() if isinstance(s, dict) and s.get("role") == "master"]
    return leaders[0] if len(leaders) == 1 else None


def last_event_time(logs: str, event: str, **fields: object) -> float | None:
    """Unix time (s) of the last `event` line of `logs` whose fields include `fields`; None if there is none."""
    found = None
    for line in logs.splitlines():
        name, got = parse_event(line)
        if name == event and all(str(got.get(k)) == str(v) for k, v in fields.items()):
            found = got.get("ts")
    if found is None:
        return None
    if isinstance(found, int | float):
        return float(found)
    return datetime.fromisoformat(str(found).replace("Z", "+00:00")).timestamp()
