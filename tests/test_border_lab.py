"""End-to-end (issue #13): eBGP borders (ExaBGP in each border client) peering with a real FRR bgpd router,
in the lab on real Open vSwitch: sessions, host <-> external host, withdraw and re-announce, border failure,
max-prefix. Timings are measured in bench/bench_border.py, not asserted here (bounds are generous)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import bgp, inject
from lab.fabric import Lab, LabError, teardown, wait_until

pytestmark = pytest.mark.ovs

CLOS = {"spines": 2, "pods": 1, "aggs_per_pod": 2, "tors_per_pod": 2, "hosts_per_tor": 1, "masters": 1,
        "border_pods": 1, "external": True}
WAIT_S = 15.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    name = f"bdr{os.getpid() % 100000}"
    d = Path("/tmp") / f"fplab-{name}"
    try:
        the_lab = Lab.up(name=name, lab_dir=d, clos=CLOS, clean=True, timeout=90.0, log=lambda m: None)
    except LabError as e:
        pytest.fail(f"lab with eBGP borders did not come up: {e}", pytrace=False)
    try:
        yield the_lab
    finally:
        the_lab.close()
        teardown(d, name=name, log=lambda m: None)
        shutil.rmtree(d, ignore_errors=True)


def borders(lab: Lab) -> list[str]:
    return [s.name for s in lab.fabric.switches if s.bgp is not None]


def tors(lab: Lab) -> list[str]:
    return [s.name for s in lab.fabric.switches if str(s.role) == "tor"]


def has_default(lab: Lab, switch: str) -> bool:
    """The switch's installed flow for 0.0.0.0/0 (priority ROUTE_BASE + 0, match `ip` only)."""
    return any(",priority=1000,ip actions=" in line.replace(" priority", ",priority") for line in lab.dump_flows(switch))


def sessions_up(lab: Lab) -> bool:
    states = lab.client_states()
    return all(isinstance(states[b], dict) and states[b].get("border", {}).get("provided")
               and all(s["state"] == "established" for s in states[b]["border"]["sessions"]) for b in borders(lab))


def ext_pairs(lab: Lab) -> list[tuple[str, str]]:
    hosts = [h.name for h in lab.fabric.hosts]
    return [(h, bgp.EXT_HOST) for h in hosts] + [(bgp.EXT_HOST, h) for h in hosts]


def test_sessions_establish_and_hosts_reach_the_outside(lab: Lab) -> None:
    assert wait_until(lambda: sessions_up(lab), WAIT_S), lab.client_states()
    router = bgp.router_sessions(lab)
    assert len(router) == len(borders(lab)) and all(s["state"] == "Established" for s in router.values()), router
    # the router learnt the cluster aggregate from every border (ECMP back into the fabric)
    assert wait_until(lambda: len(bgp.router_routes(lab).get("10.0.0.0/8", [])) == len(borders(lab)), WAIT_S)
    assert wait_until(lambda: all(has_default(lab, t) for t in tors(lab)), WAIT_S)
    lsd = lab.master_get("/v1/lsd")
    assert lsd["external"] == {b: {"0.0.0.0/0": True} for b in borders(lab)}
    results = lab.ping(ext_pairs(lab), count=3)
    assert all(n == 3 for n in results.values()), results


def test_withdraw_and_reannounce_reach_every_tor(lab: Lab) -> None:
    assert wait_until(lambda: sessions_up(lab), WAIT_S)
    fault = bgp.fail_external(lab)
    try:
        assert wait_until(lambda: not any(has_default(lab, t) for t in tors(lab)), WAIT_S)
        assert lab.master_get("/v1/lsd")["external"] == {b: {"0.0.0.0/0": False} for b in borders(lab)}
        # the sessions stay up: only the route went away
        assert all(s["state"] == "Established" for s in bgp.router_sessions(lab).values())
        assert all(n == 0 for n in lab.ping(ext_pairs(lab)[:1], count=1).values())
    finally:
        assert inject.heal(lab) == [fault]
    assert wait_until(lambda: all(has_default(lab, t) for t in tors(lab)), WAIT_S)
    assert wait_until(lambda: all(n == 2 for n in lab.ping(ext_pairs(lab), count=2).values()), WAIT_S)


def test_border_failure_moves_external_traffic_to_the_other_border(lab: Lab) -> None:
    assert wait_until(lambda: sessions_up(lab), WAIT_S)
    dead, alive = borders(lab)
    inject.fail_switch(lab, dead)          # every fabric link of the border down; its eBGP link stays up
    try:
        # it can no longer reach the fabric: it stops announcing the aggregate (the router stops sending to it)
        assert wait_until(lambda: bgp.router_routes(lab).get("10.0.0.0/8") == [
            str(lab.fabric.switch(alive).bgp.peers[0].local_address.ip)], WAIT_S), bgp.router_routes(lab)
        assert wait_until(lambda: all(n == 2 for n in lab.ping(ext_pairs(lab), count=2).values()), WAIT_S)
    finally:
        inject.heal(lab)
    assert wait_until(lambda: len(bgp.router_routes(lab).get("10.0.0.0/8", [])) == 2, WAIT_S)


def test_lab_heal_waits_for_bgp_sessions_and_fails_when_not_converged(lab: Lab, capsys) -> None:
    """Tester finding 4: `lab heal` said "converged" before the BGP sessions were back, and exited 0 even
    when it printed "not converged"."""
    from proto.cli import main

    assert wait_until(lambda: sessions_up(lab), WAIT_S)
    common = ["lab", "heal", "--name", lab.state.name, "--dir", str(lab.state.dir)]
    bgp.fail_external(lab, session=True)                   # the outside drops every session
    assert wait_until(lambda: not sessions_up(lab), WAIT_S)
    assert lab.wait_converged(WAIT_S), lab.convergence_problem()     # the fabric itself has followed
    rc = main([*common, "--wait", "0.2"])                  # sessions re-establish, not within 0.2 s: exit 1
    out, err = capsys.readouterr()
    assert rc == 1 and "not converged" in err and "converged in" not in out, (out, err)
    fresh = Lab.open(lab.state.dir)                          # the CLI healed the record on disk
    try:
        bgp.fail_external(fresh, session=True)
    finally:
        fresh.close()
    rc = main([*common, "--wait", "60"])
    out = capsys.readouterr().out
    assert rc == 0 and "converged in" in out and "eBGP sessions established" in out, out
    assert sessions_up(lab) and bgp.bgp_problem(lab) is None      # said converged: the sessions are up


def test_max_prefix_tears_the_session_down(lab: Lab) -> None:
    """Last in the module: the torn-down peers are held down for client.border.MAX_PREFIX_RESTART."""
    assert wait_until(lambda: sessions_up(lab), WAIT_S)
    limit = lab.fabric.switch(borders(lab)[0]).bgp.peers[0].max_prefix
    nets = [f"network 192.0.2.{i}/32" if i < 256 else f"network 198.18.0.{i - 256}/32" for i in range(limit + 1)]
    asn = bgp.router_asn(lab.fabric)
    bgp.vtysh(lab, "configure terminal", f"router bgp {asn}", "address-family ipv4 unicast", *nets)
    try:
        def torn() -> bool:
            states = lab.client_states()
            return all(states[b]["border"]["sessions"][0]["teardowns"] >= 1 for b in borders(lab))
        assert wait_until(torn, WAIT_S), lab.client_states()
        assert wait_until(lambda: not any(has_default(lab, t) for t in tors(lab)), WAIT_S)
        states = lab.client_states()
        assert all(states[b]["border"]["sessions"][0]["blocked"] for b in borders(lab))
    finally:
        bgp.vtysh(lab, "configure terminal", f"router bgp {asn}", "address-family ipv4 unicast",
                  *[f"no {n}" for n in nets])
    time.sleep(0.1)
