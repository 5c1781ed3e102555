"""Issue #19 case 2 against three real `firepath master` processes on loopback: hellos captured from the
master and replayed to a replica that just restarted must not make it follow that (now dead) master; the
survivors elect a new master as after any master death."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from proto.messages import HEADER_LEN, Hello
from tests.harness.loopcluster import LoopCluster

pytestmark = pytest.mark.timeout(120)
TIMERS = (("hello_interval_ms", 50), ("master_dead_ms", 400))
BRING_UP = 40.0
FAILOVER = 15.0


def _sender(data: bytes) -> str:
    n = data[HEADER_LEN]
    return data[HEADER_LEN + 1:HEADER_LEN + 1 + n].decode(errors="replace")


def test_hellos_replayed_to_a_restarted_replica_are_ignored(tmp_path: Path) -> None:
    cluster = LoopCluster(tmp_path, masters=3, timers=TIMERS)
    peer = {m.id: (str(m.address), m.peer_port) for m in cluster.fabric.masters}
    capture = attacker = None
    try:
        cluster.start_all()
        got = cluster.wait(lambda: cluster.single_master(), BRING_UP)
        assert got, cluster.versions()
        leader, view = got
        victim, third = [m for m in cluster.ids if m != leader]
        # The victim goes down; the attacker takes its peer address and records the master's hellos.
        cluster.kill(victim)
        cluster.wait_exit(victim)
        capture = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        capture.bind(peer[victim])
        capture.settimeout(0.05)
        hellos: list[bytes] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data = capture.recv(65535)
            except TimeoutError:
                continue
            if len(data) > HEADER_LEN + 1 and data[3] == Hello.TYPE and _sender(data) == leader:
                hellos.append(data)
        capture.close()
        capture = None
        assert len(hellos) >= 5
        # The master dies; the victim restarts and is fed the captured hellos, again and again.
        cluster.kill(leader)
        cluster.wait_exit(leader)
        cluster.start(victim)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.monotonic()
        followed_dead = []
        elected = None
        i = 0
        while time.monotonic() - t0 < FAILOVER:
            attacker.sendto(hellos[i % len(hellos)], peer[victim])
            i += 1
            v = cluster.get(victim, "/v1/lsd/version", 0.3)
            if isinstance(v, dict) and v.get("leader") == leader:
                followed_dead.append(v)
            elected = cluster.single_master([victim, third], above_term=view["term"])
            if elected and isinstance(v, dict) and v.get("role") in ("master", "backup"):
                break
            time.sleep(0.01)
        assert not followed_dead, followed_dead[:2]
        assert elected, cluster.versions([victim, third])
        print(f"new master {elected[0]} term {elected[1]['term']} (dead master's {view['term']}) "
              f"{time.monotonic() - t0:.2f} s after the victim's restart, {i} hellos replayed")
        # keep replaying a while: the elected master stays, nobody follows the dead one
        for _ in range(50):
            attacker.sendto(hellos[i % len(hellos)], peer[victim])
            i += 1
            time.sleep(0.01)
        assert cluster.single_master([victim, third]) is not None
        v = cluster.get(victim, "/v1/lsd/version", 1.0)
        assert isinstance(v, dict) and v.get("leader") != leader, v
    finally:
        for s in (capture, attacker):
            if s is not None:
                s.close()
        cluster.stop_all()
