"""Integration (issue 4): three real `firepath master` processes on loopback + scripted clients (SimFleet).

SIGKILL the master: exactly one new master serves, with a higher term, continuing the LSD version sequence;
every scripted client resyncs to the new term and its LSD content never changed (zero data-plane impact);
the killed replica, restarted with its state dir, stays Backup (sticky). SIGTERM: the master steps down
(StepDown), a backup takes over, the old process exits 0.

Timers are relaxed a little (hello 50 ms, dead 400 ms) so a loaded 2-core CI box does not elect spuriously;
the timing itself is measured in bench/bench_failover.py, not asserted here.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from proto.auth import KeyRing
from tests.harness.loopcluster import LoopCluster
from tests.harness.simclient import SimFleet

pytestmark = pytest.mark.timeout(120)

TIMERS = (("hello_interval_ms", 50), ("master_dead_ms", 400))
BRING_UP = 40.0          # python start-up of three processes on a loaded machine
FAILOVER = 15.0


def _fleet(cluster: LoopCluster) -> SimFleet:
    keyring = KeyRing.load(cluster.fabric.security.key_file)
    return SimFleet(cluster.fabric, keyring, cluster.client_addr, n_sockets=2)


def _check_clients(cluster: LoopCluster, leader: str, term: int) -> None:
    """REST /v1/clients of the master: every switch acknowledged the new term with lag 0."""
    view = cluster.get(leader, "/v1/clients", 2.0)
    assert isinstance(view, dict), view
    rows = {c["switch"]: c for c in view["clients"]}
    assert set(rows) == {s.name for s in cluster.fabric.switches}
    for name, c in rows.items():
        assert c["alive"] and c["acked_term"] == term and c["lag"] == 0, (name, c)


def _bring_up(cluster: LoopCluster, fleet: SimFleet) -> tuple[str, dict]:
    cluster.start_all()
    fleet.report()
    got = cluster.wait(lambda: cluster.single_master(), BRING_UP, fleet.pump)
    assert got, f"no single master: {cluster.versions()}"
    leader, v = got
    all_up = bytes([1]) * len(cluster.fabric.links)
    assert cluster.wait(lambda: fleet.converged(v["term"], cluster.versions([leader])[leader]["version"], all_up)
                        and fleet.all_acked(), FAILOVER, fleet.pump), "clients did not converge"
    return leader, cluster.versions([leader])[leader]


def _failover(cluster: LoopCluster, fleet: SimFleet, old: str, old_view: dict, sig: int) -> tuple[str, dict]:
    states_before = {name: sw.lsd.states() for name, sw in fleet.switches.items()}
    cluster.kill(old, sig)
    others = [m for m in cluster.ids if m != old]
    got = cluster.wait(lambda: cluster.single_master(others, above_term=old_view["term"]), FAILOVER, fleet.pump)
    assert got, f"no new master after {signal.Signals(sig).name}: {cluster.versions(others)}"
    new, v = got
    assert new != old and v["term"] > old_view["term"]
    # exactly one master among the survivors, the others follow it
    assert [m for m, _ in cluster.masters_now(others)] == [new]
    # the version sequence continues from the replicated LSD (nothing changed: same version)
    assert v["version"] == old_view["version"], (v, old_view)
    assert cluster.wait(lambda: fleet.on_term(v["term"]) and fleet.all_acked(), FAILOVER, fleet.pump), \
        {n: (sw.term, sw.data_term) for n, sw in fleet.switches.items()}
    # zero data-plane impact: every client's LSD content is what it was
    assert {name: sw.lsd.states() for name, sw in fleet.switches.items()} == states_before
    assert all(sw.lsd.version == old_view["version"] for sw in fleet.switches.values())
    assert cluster.wait(lambda: _acked(cluster, new, v["term"]), FAILOVER, fleet.pump)
    _check_clients(cluster, new, v["term"])
    return new, v


def _acked(cluster: LoopCluster, leader: str, term: int) -> bool:
    view = cluster.get(leader, "/v1/clients", 1.0)
    return isinstance(view, dict) and all(c["acked_term"] == term and c["lag"] == 0 for c in view["clients"])


def _backup_of(cluster: LoopCluster, mid: str, leader: str) -> bool:
    v = cluster.get(mid, "/v1/lsd/version", 0.5)
    return isinstance(v, dict) and v["role"] == "backup" and v["leader"] == leader


def test_sigkill_failover_sticky_rejoin_then_sigterm_step_down(tmp_path: Path) -> None:
    """One cluster for both cases (a bring-up of three Python processes is the slow part)."""
    cluster = LoopCluster(tmp_path, masters=3, timers=TIMERS)
    fleet = _fleet(cluster)
    try:
        leader, v1 = _bring_up(cluster, fleet)
        # --- SIGKILL
        new, v2 = _failover(cluster, fleet, leader, v1, signal.SIGKILL)
        third = next(m for m in cluster.ids if m not in (leader, new))
        assert cluster.wait(lambda: _backup_of(cluster, third, new), FAILOVER, fleet.pump)
        # the killed replica comes back with its state dir: it must follow, not take over (sticky)
        cluster.start(leader)
        assert cluster.wait(lambda: _backup_of(cluster, leader, new), BRING_UP, fleet.pump), \
            cluster.versions()
        fleet.pump(0.5)
        after = cluster.versions()
        assert [m for m, _ in cluster.masters_now()] == [new]
        assert after[new]["term"] == v2["term"], after              # no election happened
        assert after[leader]["role"] == "backup" and after[leader]["term"] == v2["term"]
        assert fleet.on_term(v2["term"])
        # --- SIGTERM: the master steps down (StepDown), one of the two others takes over at once
        newer, v3 = _failover(cluster, fleet, new, v2, signal.SIGTERM)
        assert newer in (leader, third)
        assert cluster.wait_exit(new, 10.0) == 0
        assert "event=master_stop" in cluster.log_path(new).read_text()
    finally:
        cluster.stop_all()
        fleet.close()
