"""End-to-end: a correlated control-plane stall must not become a fabric-wide outage (tester finding 1).

Real OVS (userspace datapath, CFM on every fabric link), three real masters, a real client per switch, on
the 2-spine x 4-leaf fabric. The stall: every fabric link loses carrier and every client process is
SIGSTOPped, together, for 1 s, six times, ~1.5 s apart — what two CPU hogs did to the lab (every CFM session
faulted at once for ~1 s). Every link "flaps" six times within ~15 s. Before the storm rule, the clients damped their ports
(4th flap within 10 s: 1 s, 2 s ... up to 60 s) and the master suppressed links (4th flap: up to 20 s): a
1.5 s stall became a 9-100 s outage. Asserted: within a few seconds of each stall every link is UP in
the serving master's LSD and programmed by every client, no client port is damped, the master suppresses
nothing and has recognised the storms, and the master did not hand over.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.fabric import Lab, wait_until
from lab.iputil import ip_batch
from tests.harness.labs import running_lab
from tests.harness.labwatch import down_links, serving

LEAFSPINE = {"spines": 2, "pods": 0, "leaves": 4, "hosts_per_tor": 1, "masters": 3}
STALLS = 6
STALL_S = 1.0
GAP_S = 1.0
CONVERGE_S = 60.0
RECOVER_S = 5.0           # "a few seconds" + REST polling and scheduling on a loaded 2-core machine


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("storm", LEAFSPINE, keep_logs_env="FIREPATH_KEEP_LOGS") as the_lab:
        yield the_lab


def _stall_pids(lab: Lab, ovs: bool = True) -> list[int]:
    pids = [rec.pid for rec in lab.state.processes.values() if rec.kind == "client"]
    if ovs:
        pids.append(int((Path(lab.state.ovs_dir) / "ovs-vswitchd.pid").read_text().strip()))
    return pids


def _fabric_ifaces(lab: Lab, switch: str | None = None, *, other: bool = False) -> dict[str, list[str]]:
    """Both ends of every fabric link (`switch`: of its links only; `other`: of the links not its own), by
    the namespace they live in."""
    st = lab.state
    out: dict[str, list[str]] = {}
    for link in lab.fabric.links:
        if switch is not None and (switch in (link.a.switch, link.b.switch)) == other:
            continue
        for end in (link.a, link.b):
            i = st.ifaces[f"{end.switch}:{end.port}"]
            out.setdefault(st.netns_of(i), []).append(i)
    return out


def _carrier(ifaces: dict[str, list[str]], up: bool) -> None:
    for ns, names in ifaces.items():
        ip_batch(ns, [f"link set {i} {'up' if up else 'down'}" for i in names])


def _correlated_drop(lab: Lab, ifaces: dict[str, list[str]], pids: list[int], seconds: float) -> None:
    """Every fabric link loses carrier at once while every client is stopped, for `seconds`: what a CPU
    stall does to CFM (every session faults together), made deterministic (a SIGSTOP of ovs-vswitchd
    faults CFM only when its timers happen to run before the first CCM after resuming)."""
    _carrier(ifaces, False)
    try:
        _stall(pids, seconds)
    finally:
        _carrier(ifaces, True)


def _stall(pids: list[int], seconds: float) -> None:
    try:
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        time.sleep(seconds)
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)


def _damped_ports(lab: Lab) -> dict[str, list[int]]:
    out = {}
    for name, s in lab.client_states().items():
        if isinstance(s, dict):
            damped = [p["port"] for p in s.get("ports", []) if p.get("damped")]
            if damped:
                out[name] = damped
    return out


def _damping(lab: Lab, master: str) -> dict:
    port = next(m.rest_port for m in lab.fabric.masters if m.id == master)
    got = lab.http.get_many([(port, "/v1/damping")], 1.0)[0]
    assert isinstance(got, dict), got
    return got


@pytest.mark.ovs
def test_repeated_fabric_wide_stalls_recover_within_seconds_without_damping(lab: Lab) -> None:
    assert lab.wait_converged(CONVERGE_S), lab.convergence_problem()
    leader = serving(lab)
    assert leader is not None
    pids = _stall_pids(lab, ovs=False)
    ifaces = _fabric_ifaces(lab)
    damped_seen: dict[str, list[int]] = {}
    suppressed_seen: set[str] = set()

    def recovered() -> bool:
        damped = _damped_ports(lab)
        damped_seen.update(damped)
        held = {h["link"] for h in _damping(lab, leader)["suppressed"]}
        suppressed_seen.update(held)
        return not damped and not held and lab.convergence_problem() is None and not down_links(lab)

    took = []
    for k in range(STALLS):
        if k:
            time.sleep(GAP_S)
        _correlated_drop(lab, ifaces, pids, STALL_S)
        t0 = time.monotonic()
        ok = wait_until(recovered, RECOVER_S, 0.1)
        took.append(time.monotonic() - t0)
        detail = {"problem": lab.convergence_problem(), "down": down_links(lab), "damped": damped_seen,
                  "suppressed": sorted(suppressed_seen)}
        assert ok, f"not recovered {RECOVER_S} s after correlated drop {k + 1}: {detail}"
        assert not damped_seen and not suppressed_seen, f"damped after correlated drop {k + 1}: {detail}"
    print(f"recovered after each of {STALLS} correlated drops of {STALL_S} s within "
          f"{', '.join(f'{t:.2f}' for t in took)} s")
    d = _damping(lab, leader)
    assert d["suppressions"] == 0 and d["storms"] >= STALLS, d
    assert serving(lab) == leader, "the master handed over during a fabric-wide stall"


@pytest.mark.ovs
def test_drops_on_both_sides_of_a_client_stall_are_one_event(lab: Lab) -> None:
    """The kind behind a CI failure of the test above (leaf-2's port 2 damped after the 4th drop): a client
    handled one port's drop just before it was stopped and the other's just after, 1 s apart in its clock.
    Made deterministic here: spine-1's links lose carrier, the clients handle that, then every client is
    stopped and spine-2's links lose carrier; 1 s later the clients resume and every link comes back. Every
    leaf sees its two drops on both sides of its own stall, six times within ~15 s. Asserted as above: no
    port damped (client.stallwatch tells the damper the time it did not run), nothing suppressed."""
    assert lab.wait_converged(CONVERGE_S), lab.convergence_problem()
    leader = serving(lab)
    assert leader is not None
    pids = _stall_pids(lab, ovs=False)
    first = _fabric_ifaces(lab, "spine-1")
    rest = _fabric_ifaces(lab, "spine-1", other=True)
    everything = _fabric_ifaces(lab)
    before = _damping(lab, leader)["suppressions"]
    damped: dict[str, list[int]] = {}

    def recovered() -> bool:
        damped.update(_damped_ports(lab))
        return not damped and lab.convergence_problem() is None and not down_links(lab)

    for k in range(STALLS):
        if k:
            time.sleep(GAP_S)
        _carrier(first, False)
        time.sleep(0.2)                        # every client handles spine-1's drops before it stops
        try:
            for p in pids:
                os.kill(p, signal.SIGSTOP)
            _carrier(rest, False)
            time.sleep(STALL_S)
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
            _carrier(everything, True)
        damped.clear()
        ok = wait_until(recovered, RECOVER_S, 0.1)
        assert not damped, f"damped after straddled drop {k + 1}: {damped}"
        assert ok, f"not recovered {RECOVER_S} s after straddled drop {k + 1}: {lab.convergence_problem()}"
    stalls = {name: s.get("counters", {}).get("process_stalls", 0) for name, s in lab.client_states().items()
              if isinstance(s, dict)}
    assert all(n >= STALLS for n in stalls.values()), f"clients that did not see their stalls: {stalls}"
    assert _damping(lab, leader)["suppressions"] == before
