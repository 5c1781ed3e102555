"""Control-plane protection on the real lab (OVS, namespaces, master and client processes).

A server floods ND frames (ethertype 0x88B5) at its ToR: the ToR punts ND only from fabric ports, so
nothing reaches its client and no link flaps. A neighbour floods on a fabric link: that port's meter
bounds what reaches the client, and the switch's other links stay up. Floods are bounded in time and
in frame count.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procstat import cpu_s
from client.ofplan import nd_meter_rate
from lab import netns as nsutil
from lab.fabric import HOST_IFNAME, LAB_DEFAULT_TIMERS, Lab, teardown
from proto.clos import ClosParams, generate_clos_yaml

pytestmark = [pytest.mark.ovs, pytest.mark.timeout(240)]

LEAF = "leaf-1"
FLOOD_S = 2.0
FLOOD_MAX_FRAMES = 400_000

# The host flood: 20 kpps (its client then spent 77 % of a core on ND frames). A flood as fast as
# one process can send also starves this emulated datapath (ovs-vswitchd shares the 2 cores): that is
# the lab's limit, not the client's, so the host test stays at the rate.
HOST_PPS = 20_000

# Sends raw frames on one interface of the namespace it runs in, in bursts of 100 at up to `pps` frames/s
# (0: as fast as it can), within the time and count bounds.
FLOODER = r"""
import socket, sys, time
ifname, seconds, limit, pps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
frame = bytes.fromhex("0180c200000e" "020000abcdef" "88b5") + b"FP-not-a-real-nd-frame".ljust(46, b"x")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
t0 = time.monotonic()
sent = 0
while sent < limit and time.monotonic() - t0 < seconds:
    for _ in range(100):
        try:
            s.send(frame)
            sent += 1
        except BlockingIOError:
            pass
    if pps:
        ahead = sent / pps - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
print(sent, time.monotonic() - t0)
"""


def flood(netns: str, ifname: str, pps: float = 0) -> tuple[int, float]:
    out = subprocess.run(nsutil.exec_cmd(netns, [sys.executable, "-c", FLOODER, ifname, str(FLOOD_S),
                                                 str(FLOOD_MAX_FRAMES), str(pps)]),
                         capture_output=True, text=True, timeout=FLOOD_S + 30, check=True)
    sent, seconds = out.stdout.split()
    return int(sent), float(seconds)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Brought up as a new user would: `lab up --config F` with a config that has no `ovs:` targets and
    no REST ports (the lab assigns them)."""
    name = f"clicore{os.getpid() % 100000}"
    d = Path("/tmp") / f"fplab-{name}"
    cfg_dir = tmp_path_factory.mktemp("flood")
    (cfg_dir / "fabric.key").write_text(secrets.token_hex(32) + "\n")
    config = cfg_dir / "fabric.yaml"
    config.write_text(generate_clos_yaml(ClosParams(name=name, spines=2, pods=0, leaves=2, hosts_per_tor=1,
                                                    masters=1, timers=LAB_DEFAULT_TIMERS, key_file="fabric.key")))
    said: list[str] = []
    fabric_lab = Lab.up(name=name, lab_dir=d, config=config, clean=True, timeout=90.0, log=said.append)
    try:
        assert any("assigned `ovs:` targets" in m for m in said), said
        reserved = subprocess.run(nsutil.exec_cmd(fabric_lab.state.netns, ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]),
                                  capture_output=True, text=True, check=True).stdout
        held: set[int] = set()
        for part in reserved.strip().split(","):
            lo, _, hi = part.partition("-")
            held.update(range(int(lo), int(hi or lo) + 1))
        assert fabric_lab.ports is not None and fabric_lab.ports.all <= held
        yield fabric_lab
    finally:
        fabric_lab.close()
        teardown(d, name=name, log=lambda m: None)
        shutil.rmtree(d, ignore_errors=True)


def cpu_seconds(lab: Lab, switch: str) -> float:
    """User + system CPU time of a switch's client process so far."""
    cpu = cpu_s(lab.state.processes[f"client:{switch}"].pid)
    assert cpu is not None, f"{switch}'s client is gone"
    return cpu


def leaf_state(lab: Lab) -> dict:
    st = lab.client_states(timeout=2.0)[LEAF]
    assert not isinstance(st, Exception), st
    return st


def punted(st: dict) -> int:
    return sum(v for k, v in st["counters"].items() if k.startswith("nd_rejected_"))


def test_a_host_flood_never_reaches_the_client_and_no_link_flaps(lab: Lab) -> None:
    assert lab.wait_converged(30.0), lab.convergence_problem()
    version = lab.lsd_version()
    before = leaf_state(lab)
    host = next(h for h in lab.fabric.hosts if h.tor == LEAF)
    c0, t0 = cpu_seconds(lab, LEAF), time.monotonic()
    time.sleep(FLOOD_S)
    c1, t1 = cpu_seconds(lab, LEAF), time.monotonic()
    sent, seconds = flood(lab.state.host_netns[host.name], HOST_IFNAME, HOST_PPS)
    c2, t2 = cpu_seconds(lab, LEAF), time.monotonic()
    time.sleep(0.5)
    after = leaf_state(lab)
    print(f"\nhost flood: {sent} frames in {seconds:.2f}s; punted to the client: "
          f"{punted(after) - punted(before)}; {LEAF} client CPU {100 * (c2 - c1) / (t2 - t1):.1f} % "
          f"(idle before: {100 * (c1 - c0) / (t1 - t0):.1f} %); load {Path('/proc/loadavg').read_text().split()[:3]}")
    assert sent >= HOST_PPS * FLOOD_S * 0.5, "the flood did not happen: the test would prove nothing"
    assert punted(after) == punted(before)           # not one garbage frame reached the client
    assert all(p["usable"] and not p["damped"] for p in after["ports"])
    assert lab.lsd_version() == version               # no link went down anywhere
    assert lab.wait_converged(5.0), lab.convergence_problem()


def test_a_fabric_port_flood_is_bounded_by_its_meter_and_other_links_stay_up(lab: Lab) -> None:
    assert lab.wait_converged(30.0), lab.convergence_problem()
    link = lab.fabric.link_at(LEAF, 1)
    far = link.b if link.a.switch == LEAF else link.a
    before = leaf_state(lab)
    # Frames sent on the neighbour's veth end arrive on the leaf's port 1.
    c0, t0 = cpu_seconds(lab, LEAF), time.monotonic()
    far_if = lab.state.ifaces[f"{far.switch}:{far.port}"]
    sent, seconds = flood(lab.state.netns_of(far_if), far_if)
    c1, t1 = cpu_seconds(lab, LEAF), time.monotonic()
    time.sleep(0.5)
    after = leaf_state(lab)
    got = punted(after) - punted(before)
    rate = nd_meter_rate(lab.fabric.timers.nd_interval)
    bound = rate * (seconds + 0.5) * 1.5 + rate      # rate over the flood (+ slack), plus a burst
    print(f"\nfabric flood: {sent} frames in {seconds:.2f}s; punted to the client: {got} "
          f"(meter {rate} pps, bound {bound:.0f}); {LEAF} client CPU {100 * (c1 - c0) / (t1 - t0):.1f} %; load {Path('/proc/loadavg').read_text().split()[:3]}")
    assert sent >= 10_000
    assert 0 < got <= bound
    others = [p for p in after["ports"] if p["port"] != 1]
    assert others and all(p["usable"] for p in others)
