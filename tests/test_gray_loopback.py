"""Issue #16 with real processes: three `firepath master` processes on loopback and six switches running the
real client cores (tests/harness/corefleet.py), one-way control-network faults dropped in the harness.

- reports to the master dropped (deaf master): no link goes down anywhere, a backup takes over, and a real
  link failure during the fault reaches every switch;
- the master's datagrams to the switches dropped (mute master): hand-over, the failure reaches everyone;
- the drastic-change guard holds an uncorroborated mass down (REST /v1/guard) and releases it on an
  operator's confirm (admin token);
- one switch cut from the master only: no hand-over, the switch is served by a backup's LSD and follows a
  failure elsewhere;
- SIGSTOP of the master (kept from before): a backup takes over, the old master rejoins as a backup, no LSD
  churn.

Timers are relaxed a little for a loaded machine (hello 50 ms, master dead 400 ms, hand-over dwell 1 s;
switch_dead 2 s so the old rule — a silent switch's links go down — would have shown within the fault). Bounds here are behaviour
bounds with margins for a shared 2-core machine; the latency targets are measured in bench/.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import pytest

from proto.auth import KeyRing
from proto.config import load_fabric
from proto.lsd import LinkState
from tests.harness.corefleet import CoreFleet
from tests.harness.loopcluster import LoopCluster

pytestmark = pytest.mark.timeout(150)

TIMERS = (("hello_interval_ms", 50), ("master_dead_ms", 400), ("switch_dead_ms", 2000))
BRING_UP = 40.0
SETTLE = 15.0
FAULT = 4.0          # > switch_dead: the deaf master hears nobody for longer than switch_dead
PROPAGATE = 5.0      # behaviour bound on a loaded machine (the 1 s target is measured in bench/ and the sim)
TOKEN = "gray-token"
UP, DOWN = LinkState.UP, LinkState.DOWN


@pytest.fixture
def setup(tmp_path: Path):
    cluster = LoopCluster(tmp_path, masters=3, timers=TIMERS, name="graycore")
    cfg = cluster.config
    # reach_dwell 1 s instead of 0.3 s: on this shared machine a replica stalls for a few hundred ms at
    # times, and a stall looks like a brief reachability loss (the trade-off is in ARCHITECTURE.md)
    cfg.write_text(cfg.read_text().replace('  key_file: "fabric.key"\n',
                                           '  key_file: "fabric.key"\n  admin_token_file: admin.token\n')
                   + "guard: {reach_dwell_ms: 1000}\n")
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    cluster.fabric = load_fabric(cfg)
    fleet = CoreFleet(cluster.fabric, KeyRing.load(cluster.fabric.security.key_file), cluster.client_addr)
    try:
        cluster.start_all()
        fleet.start()
        got = cluster.wait(lambda: cluster.single_master(), BRING_UP, fleet.pump)
        assert got, f"no single master: {cluster.versions()}"
        all_up = bytes([UP]) * len(cluster.fabric.links)
        assert fleet.pump(SETTLE, until=lambda: fleet.all_have(all_up) and _backups_ready(cluster)), \
            f"backups not ready: {cluster.versions()}; switches at " \
            f"{ {n: sw.replica.version for n, sw in fleet.switches.items()} }"
        yield cluster, fleet, got[0]
    finally:
        fleet.close()
        cluster.stop_all()


def _backups_ready(cluster: LoopCluster) -> bool:
    """Every replica is up, one master, the others its backups at its version."""
    vs = cluster.versions()
    if not all(isinstance(v, dict) for v in vs.values()):
        return False
    ms = [m for m, v in vs.items() if v["role"] == "master"]
    return len(ms) == 1 and all(v["role"] in ("master", "backup") and v["version"] == vs[ms[0]]["version"]
                                for v in vs.values())


def _port_to(fabric, switch: str, peer: str) -> int:
    for i in fabric.links_of(switch):
        link = fabric.links[i]
        if peer in (link.a.switch, link.b.switch):
            return link.a.port if link.a.switch == switch else link.b.port
    raise KeyError((switch, peer))


def _fail_link(cluster: LoopCluster, fleet: CoreFleet, a: str, b: str) -> int:
    """A real link failure seen by both ends (PHY/ND down on both sides, as the real client reports it)."""
    fabric = cluster.fabric
    for x, y in ((a, b), (b, a)):
        fleet.set_usable(x, set(fleet.switches[x].usable) - {_port_to(fabric, x, y)})
    return fabric.link_at(a, _port_to(fabric, a, b)).index


def _no_link_down_anywhere(fleet: CoreFleet) -> bool:
    return all(DOWN not in sw.replica.states() for sw in fleet.switches.values())


def _pump_checking(fleet: CoreFleet, seconds: float, check, what: str) -> None:
    end = fleet.now() + seconds
    while fleet.now() < end:
        fleet.pump(0.05)
        assert check(), what


def _new_master(cluster: LoopCluster, fleet: CoreFleet, old: str, timeout: float) -> str:
    def other():
        ms = cluster.masters_now()
        return ms[0][0] if len(ms) == 1 and ms[0][0] != old else None

    new = fleet.pump(timeout, until=other)
    assert new, f"no hand-over from {old}: {cluster.versions()}"
    return new


def _post(port: int, path: str, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _metric(cluster: LoopCluster, mid: str, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.rest_port[mid]}/metrics", timeout=3) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# ------------------------------------------------------------------------------------------------ tests
def test_deaf_master_takes_no_link_down_and_hands_over(setup):
    cluster, fleet, leader = setup
    v0 = cluster.versions([leader])[leader]
    fleet.block("to", leader)                 # every report and request to the master is dropped
    new = _new_master(cluster, fleet, leader, PROPAGATE)
    _pump_checking(fleet, FAULT, lambda: _no_link_down_anywhere(fleet), "a link went down while nothing failed")
    assert cluster.masters_now()[0][0] == new                # sticky: no flapping during the fault
    old_view = cluster.versions([leader])[leader]
    assert isinstance(old_view, dict) and old_view["role"] == "backup" and old_view["term"] > v0["term"]
    assert _metric(cluster, leader, "firepath_master_handovers_total") == 1.0
    # a real failure during the fault reaches every switch
    idx = _fail_link(cluster, fleet, "leaf-1", "spine-1")
    assert fleet.pump(PROPAGATE, until=lambda: fleet.link_state_everywhere(idx, DOWN))
    assert fleet.states("leaf-2").count(DOWN) == 1


def test_mute_master_hands_over_and_a_failure_reaches_everyone(setup):
    cluster, fleet, leader = setup
    fleet.block("from", leader)               # nothing the master sends reaches a switch
    new = _new_master(cluster, fleet, leader, PROPAGATE)
    assert new != leader
    idx = _fail_link(cluster, fleet, "leaf-3", "spine-2")
    assert fleet.pump(PROPAGATE, until=lambda: fleet.link_state_everywhere(idx, DOWN))
    _pump_checking(fleet, 1.0, lambda: cluster.masters_now()[0][0] == new, "mastership moved again")
    assert all(sw.replica.states().count(DOWN) == 1 for sw in fleet.switches.values())


def test_drastic_change_is_held_then_released_on_confirm(setup):
    cluster, fleet, _ = setup
    leader = cluster.masters_now()[0][0]
    port = cluster.rest_port[leader]
    # leaf-1 and leaf-2 say all their uplinks are unusable; the spines still see them: 4 of 8 links on a
    # single witness > 25 %: the first two go (budget), the rest is held
    fleet.set_usable("leaf-1", set())
    fleet.pump(0.3)
    fleet.set_usable("leaf-2", set())

    def held():
        g = cluster.get(leader, "/v1/guard", 1.0)
        return g if isinstance(g, dict) and g["guard_held"] == 2 else None

    g = fleet.pump(PROPAGATE, until=held)
    assert g, cluster.get(leader, "/v1/guard", 1.0)
    held_idx = [h["index"] for h in g["held_links"]]
    assert {cluster.fabric.links[i].a.switch for i in held_idx} | {cluster.fabric.links[i].b.switch
                                                                  for i in held_idx} >= {"leaf-2"}
    fleet.pump(0.5)
    assert all(fleet.states(n)[i] == UP for n in fleet.switches for i in held_idx)   # not published
    assert _metric(cluster, leader, "firepath_master_guard_held_links") == 2.0
    assert _post(port, "/v1/guard/confirm", None)[0] == 401
    status, body = _post(port, "/v1/guard/confirm", TOKEN)
    assert status == 200 and len(body["released"]) == 2
    assert fleet.pump(PROPAGATE, until=lambda: all(fleet.link_state_everywhere(i, DOWN) for i in held_idx))
    assert cluster.get(leader, "/v1/guard", 1.0)["guard_held"] == 0


def test_switch_cut_from_the_master_only_gets_a_backups_lsd(setup):
    cluster, fleet, leader = setup
    fleet.block("to", leader, "leaf-1")
    fleet.block("from", leader, "leaf-1")
    cut = fleet.switches["leaf-1"].replica

    def served():
        return cut.server is not None and cut.server != leader and not cut.fail_static

    assert fleet.pump(PROPAGATE, until=served), cut.counters
    # a failure elsewhere reaches the cut switch through the backup
    idx = _fail_link(cluster, fleet, "leaf-4", "spine-2")
    assert fleet.pump(PROPAGATE, until=lambda: fleet.link_state_everywhere(idx, DOWN))
    # one switch is not a reason to move mastership (margin: 2 switches)
    assert [m for m, _ in cluster.masters_now()] == [leader]
    assert cut.master == leader and cut.counters["served_by_backup"] >= 1


def test_frozen_master_is_replaced_and_rejoins_as_backup_without_lsd_churn(setup):
    cluster, fleet, leader = setup
    before = {n: sw.replica.states() for n, sw in fleet.switches.items()}
    version = cluster.versions([leader])[leader]["version"]
    cluster.kill(leader, signal.SIGSTOP)
    try:
        new = _new_master(cluster, fleet, leader, PROPAGATE + 5)
        fleet.pump(2.0)
    finally:
        cluster.kill(leader, signal.SIGCONT)

    def rejoined():
        v = cluster.versions([leader])[leader]
        return isinstance(v, dict) and v["role"] == "backup"

    assert fleet.pump(PROPAGATE + 5, until=rejoined), cluster.versions()
    assert [m for m, _ in cluster.masters_now()] == [new]
    assert {n: sw.replica.states() for n, sw in fleet.switches.items()} == before
    assert cluster.versions([new])[new]["version"] == version       # no LSD churn: not one new version
