"""End-to-end: the lab on real Open vSwitch, real namespaces, real master and client processes.

Two labs, each built once per module (bring-up is the expensive part):

* ``plumbing``: bridges, veths and hosts only (no daemons). Checks what the lab itself builds, using static
  OpenFlow rules for a data path, and that every failure injection acts on the data plane and is undone.
* ``lab``: the full fabric with 3 masters and a client per switch. Checks routing behaviour end to end.

All waits are bounded; nothing here asserts a timing target (those are in bench/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import inject, nft
from lab import netns as nsutil
from lab.fabric import (
    CLIENT_RESTART_HOLD_S,
    LAB_DEFAULT_TIMERS,
    Lab,
    LabError,
    generate_config,
    lab_leftovers,
    load_fabric,
    teardown,
    wait_until,
)
from lab.state import LabState, LabStateError, ProcRecord, check_lab_name, proc_starttime
from proto.config import Role

ovs = pytest.mark.ovs

CLOS = {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2, "hosts_per_tor": 1, "masters": 3}
CONVERGE_S = 30.0
# Probes: 4 flows x 250 pps (4 ms resolution). OVS's userspace datapath drops packets when ovs-vswitchd is
# starved of CPU long enough for its AF_PACKET receive buffers (net.core.rmem_default, ~270 small frames)
# to overflow; at 4 x 1000 pps that is a ~70 ms stall, which a loaded 2-core machine produces while a
# Python daemon starts. At 250 pps it takes a ~1 s stall; an outage caused by the control plane (a flush,
# a reroute, a missing group) is still seen packet by packet.
PROBE = {"flows": 4, "rate": 250.0}


def _name(kind: str) -> str:
    return f"{kind}{os.getpid() % 100000}"


# ---------------------------------------------------------------------------------------------- no root needed

def test_state_round_trip_and_errors(tmp_path: Path) -> None:
    st = LabState(name="x1", dir=str(tmp_path), config="/nope.yaml", netns="fplab-x1")
    st.processes["master:m1"] = ProcRecord("master", "m1", 123, 456, ["a", "b"], "/log")
    st.faults.append({"kind": "link", "link": 3})
    st.save()
    back = LabState.load(tmp_path)
    assert back.processes["master:m1"].argv == ["a", "b"] and back.faults == [{"kind": "link", "link": 3}]
    (tmp_path / "lab.json").write_text("{not json")
    with pytest.raises(LabStateError, match="unreadable"):
        LabState.load(tmp_path)
    with pytest.raises(LabStateError, match="no lab here"):
        LabState.load(tmp_path / "missing")
    for bad in ("", "UPPER", "with-dash", "x" * 13):
        with pytest.raises(LabStateError):
            check_lab_name(bad)


def test_process_record_never_signals_a_reused_pid(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen(["sleep", "30"])
    try:
        start = proc_starttime(proc.pid)
        assert start is not None
        impostor = ProcRecord("client", "s", proc.pid, start + 1, ["sleep"], "")   # same PID, other process
        assert not impostor.alive() and not impostor.send_signal(9)
        assert proc.poll() is None
        ours = ProcRecord("client", "s", proc.pid, start, ["sleep"], "")
        assert ours.alive()
        ours.stop(timeout=5)
        proc.wait(5)          # reap: a zombie is not alive either
        assert not ours.alive()
    finally:
        proc.kill()
        proc.wait()


def test_lab_lock_is_reentrant_in_a_thread_and_exclusive_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from lab.state import locked

    other = [sys.executable, "-c", "import sys; from lab.state import locked\n"
             "try:\n    with locked(sys.argv[1], timeout=0.2): pass\nexcept Exception as e: print(e); sys.exit(3)",
             str(tmp_path)]
    with locked(tmp_path):
        with locked(tmp_path):          # nested (heal inside a CLI command): no self-deadlock
            pass
        busy = subprocess.run(other, capture_output=True, text=True, timeout=30)
        assert busy.returncode == 3 and "holds the lock" in busy.stdout
    free = subprocess.run(other, capture_output=True, text=True, timeout=30)
    assert free.returncode == 0, free.stdout + free.stderr


def test_expected_usable_follows_the_fault_record(tmp_path: Path) -> None:
    fabric = load_fabric(generate_config(tmp_path, "x1", **CLOS))
    st = LabState(name="x1", dir=str(tmp_path), config=str(tmp_path / "fabric.yaml"), netns="fplab-x1")
    lab = Lab(st, fabric)
    full = lab.expected_usable()
    assert full == {sw.name: len(fabric.fabric_ports(sw.name)) for sw in fabric.switches}
    link = fabric.links[0]
    st.faults.append({"kind": "link", "link": 0})
    after = lab.expected_usable()
    assert after[link.a.switch] == full[link.a.switch] - 1 and after[link.b.switch] == full[link.b.switch] - 1
    st.faults = [{"kind": "switch", "switch": link.b.switch}]
    after = lab.expected_usable()
    assert after[link.b.switch] == 0
    assert sum(full.values()) - sum(after.values()) == 2 * full[link.b.switch]


def test_cli_parses_every_lab_command() -> None:
    from proto.cli import build_parser

    parser = build_parser("lab")
    assert parser is not None
    for argv in (["lab", "up", "--spines", "2", "--pods", "2", "--clean"], ["lab", "down", "--name", "x"],
                 ["lab", "status"], ["lab", "ping", "--sample", "5"], ["lab", "fail", "link", "a", "b", "--silent"],
                 ["lab", "fail", "switch", "agg-1-1"], ["lab", "kill", "master"], ["lab", "kill", "master", "m2"],
                 ["lab", "kill", "client", "tor-1-1"], ["lab", "restart", "client", "tor-1-1"],
                 ["lab", "miscable", "tor-1-1:1", "tor-1-2:1"], ["lab", "heal"], ["lab", "demo"],
                 ["lab", "groups", "tor-1-1"], ["lab", "probe", "h1", "h2", "--seconds", "1"]):
        args = parser.parse_args(argv)
        assert callable(args.func), argv


# ---------------------------------------------------------------------------------------------- plumbing

@pytest.fixture(scope="module", params=["shared", "per-switch"])
def plumbing(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The plumbing alone, in both layouts (lab/plumbing.py): one OVS for the lab, and one per switch."""
    name = _name("pl" if request.param == "shared" else "ps")
    d = Path("/tmp") / f"fplab-{name}"      # short: OVS unix socket paths are limited
    lab = Lab.up(name=name, lab_dir=d, clos=CLOS, daemons=False, clean=True, log=lambda m: None,
                 ovs_per_switch=request.param == "per-switch")
    try:
        yield lab
    finally:
        lab.close()
        teardown(d, name=name, log=lambda m: None, keep_logs=False)
        shutil.rmtree(d, ignore_errors=True)


def _shortest_path(fabric, a: str, b: str) -> list[tuple[str, int]]:
    """(switch, out port) hops from switch a to switch b (BFS over the config's links)."""
    prev: dict[str, tuple[str, int] | None] = {a: None}
    queue = deque([a])
    while queue:
        sw = queue.popleft()
        for index in fabric.links_of(sw):
            link = fabric.links[index]
            me, other = (link.a, link.b) if link.a.switch == sw else (link.b, link.a)
            if other.switch not in prev:
                prev[other.switch] = (sw, me.port)
                queue.append(other.switch)
    hops = []
    cur = b
    while (step := prev[cur]) is not None:
        hops.append(step)
        cur = step[0]
    return hops[::-1]


def _static_route(lab: Lab, src: str, dst: str) -> None:
    """Static OpenFlow rules src -> dst along a shortest path (the plumbing test's own routing)."""
    fabric = lab.fabric
    hs, hd = fabric.host(src), fabric.host(dst)
    for sw, port in _shortest_path(fabric, hs.tor, hd.tor):
        lab.ovs_of(sw).add_flow(lab.state.bridges[sw], f"priority=100,ip,nw_dst={hd.ip},actions=output:{port}")
    lab.ovs_of(hd.tor).add_flow(lab.state.bridges[hd.tor],
                     f"priority=100,ip,nw_dst={hd.ip},actions=mod_dl_dst:{hd.mac},output:{hd.port}")
    tor = fabric.switch(hs.tor)
    nsutil.add_neighbor(str(tor.gateway), tor.mac, "eth0", lab.state.host_netns[src])


def _port_link(lab: Lab, switch: str, port: int, *, up: bool, timeout: float = 10.0) -> bool:
    """Bounded wait until OVS reports the port's carrier as `up`."""
    return wait_until(lambda: lab.ovs_of(switch).port_state(lab.state.bridges[switch], port).link_up == up, timeout,
                      0.02)


def _veth_peer(lab: Lab, ifname: str) -> str | None:
    """The name of the far end of veth `ifname`, whichever namespace it is in (its ifindex there)."""
    me = json.loads(nsutil.run_in(lab.state.netns_of(ifname), ["ip", "-j", "link", "show", "dev", ifname]).stdout)[0]
    if "link_netnsid" not in me:        # the peer is in the same namespace: iproute2 names it
        return me.get("link")
    for other in lab.state.ifaces.values():
        if other == ifname:
            continue
        out = nsutil.run_in(lab.state.netns_of(other), ["ip", "-j", "link", "show", "dev", other]).stdout
        row = json.loads(out)[0] if out.strip() else {}
        if row.get("ifindex") == me.get("link_index") and row.get("link_index") == me.get("ifindex"):
            return other
    return None


def _pair(lab: Lab) -> tuple[str, str]:
    hosts = [h.name for h in lab.fabric.hosts]
    return hosts[0], hosts[-1]


@ovs
def test_plumbing_bridges_ports_and_hosts(plumbing: Lab) -> None:
    lab, fabric = plumbing, plumbing.fabric
    per_switch = bool(lab.state.switch_ns)
    if per_switch:      # one OVS per switch, each with its one bridge, in the switch's own namespace
        assert len({o.run_dir for o in lab.ovs_instances()}) == len(fabric.switches)
    else:
        assert sorted(lab.ovs_instances()[0].bridges()) == sorted(lab.state.bridges.values())
    for sw in fabric.switches:
        br, ovs = lab.state.bridges[sw.name], lab.ovs_of(sw.name)
        assert ovs.netns == lab.state.ns_of_switch(sw.name)
        assert (ovs.bridges() == [br] and ovs.netns != lab.state.netns) if per_switch else ovs.netns == lab.state.netns
        assert ovs.vsctl("get", "bridge", br, "fail_mode").strip() == "secure"
        assert ovs.vsctl("get", "bridge", br, "other-config:datapath-id").strip().strip('"') == f"{sw.id:016x}"
        assert f"ptcp:{sw.ovs.rsplit(':', 1)[1]}:127.0.0.1" in ovs.vsctl("get-controller", br)
        assert {lab.state.netns_of(lab.state.ifaces[f"{sw.name}:{p}"]) for p in fabric.fabric_ports(sw.name)} \
            == {ovs.netns}
        for port in fabric.fabric_ports(sw.name):
            assert _port_link(lab, sw.name, port, up=True)
    lab._check_ofports()       # every interface got the config's OpenFlow port number
    for host in fabric.hosts:
        ns = lab.state.host_netns[host.name]
        info = nsutil.link_info("eth0", ns)
        assert info is not None and info.carrier and info.mac == host.mac
        addrs = nsutil.run_in(ns, ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
        assert f"{host.ip}/24" in addrs
        routes = nsutil.run_in(ns, ["ip", "route", "show", "default"]).stdout
        assert f"via {fabric.switch(host.tor).gateway}" in routes
    # nothing of the lab in the root namespace
    assert not [i for i in nsutil.list_links(None) if re.match(r"^s\d+p\d+$", i)]


@ovs
def test_plumbing_static_path_carries_ping_and_udp_probe(plumbing: Lab) -> None:
    src, dst = _pair(plumbing)
    _static_route(plumbing, src, dst)
    _static_route(plumbing, dst, src)
    assert plumbing.ping([(src, dst)]) == {(src, dst): 3}
    probe = plumbing.probe(src, dst, **PROBE)
    probe.start()
    try:
        time.sleep(1.0)          # the run being measured
        result = probe.stop()
    finally:
        probe.close()
    assert result["sent"] >= 4 * 200
    assert result["lost"] == 0, _probe_summary(result)       # UDP survives OVS's userspace datapath (tx csum offload off)


@ovs
def test_plumbing_injections_act_and_heal(plumbing: Lab) -> None:
    lab, fabric = plumbing, plumbing.fabric
    src, dst = _pair(lab)
    _static_route(lab, src, dst)
    _static_route(lab, dst, src)
    tor = fabric.host(src).tor
    first_hop = _shortest_path(fabric, tor, fabric.host(dst).tor)[0][1]
    link = fabric.link_at(tor, first_hop)
    peer = fabric.peer_of(tor, first_hop)

    inject.fail_link(lab, f"{tor}:{first_hop}", f"{peer.switch}:{peer.port}")
    # OVS learns carrier changes from netlink asynchronously: bounded waits, not snapshots
    assert _port_link(lab, tor, first_hop, up=False) and _port_link(lab, peer.switch, peer.port, up=False)
    assert lab.ping([(src, dst)], count=2) == {(src, dst): 0}
    inject.heal(lab)
    assert _port_link(lab, tor, first_hop, up=True)
    assert lab.ping([(src, dst)]) == {(src, dst): 3}

    fault = inject.fail_link(lab, tor, peer.switch, silent=True)
    assert fault["link"] == link.index
    assert lab.ovs_of(tor).port_state(lab.state.bridges[tor], first_hop).link_up     # silent: carrier stays up
    tor_ns = lab.state.ns_of_switch(tor)
    assert nft.table_name(str(fault["table"])) in nft.tables(tor_ns)
    assert lab.ping([(src, dst)], count=2) == {(src, dst): 0}
    inject.heal(lab)
    assert nft.table_name(str(fault["table"])) not in nft.tables(tor_ns)
    assert lab.ping([(src, dst)]) == {(src, dst): 3}

    inject.fail_switch(lab, peer.switch)
    assert all(_port_link(lab, peer.switch, p, up=False) for p in fabric.fabric_ports(peer.switch))
    inject.heal(lab)
    assert all(_port_link(lab, peer.switch, p, up=True) for p in fabric.fabric_ports(peer.switch))

    # miscabling: swap the far ends of the first hop and another port of the same neighbour
    other_port = next(p for p in fabric.fabric_ports(peer.switch) if p != peer.port)
    far = fabric.peer_of(peer.switch, other_port)
    cabling_before = sorted(map(sorted, lab.state.cabling))
    fault = inject.miscable(lab, f"{tor}:{first_hop}", f"{far.switch}:{far.port}")
    me = lab.state.ifaces[f"{tor}:{first_hop}"]
    now_peer = nsutil.link_info(me, lab.state.netns_of(me))
    assert now_peer is not None and now_peer.carrier
    assert _veth_peer(lab, me) == lab.state.ifaces[f"{peer.switch}:{other_port}"]    # now cabled to the other port
    assert lab.ping([(src, dst)], count=2) == {(src, dst): 0}             # static rules point at the old peer
    inject.heal(lab)
    assert sorted(map(sorted, lab.state.cabling)) == cabling_before
    lab._check_ofports()
    assert lab.ping([(src, dst)]) == {(src, dst): 3}
    assert lab.state.faults == []


@ovs
def test_plumbing_up_refuses_a_lab_that_exists(plumbing: Lab) -> None:
    with pytest.raises(LabError, match="already exists"):
        Lab.up(name=plumbing.state.name, lab_dir=plumbing.state.dir, clos=CLOS, daemons=False, log=lambda m: None)
    assert all(o.running() for o in plumbing.ovs_instances())       # and the refusal did not touch it


@ovs
def test_plumbing_down_is_complete_and_idempotent(plumbing: Lab) -> None:
    name, d = plumbing.state.name, plumbing.state.dir
    pids = [o.pid(d) for o in plumbing.ovs_instances() for d in ("ovsdb-server", "ovs-vswitchd")]
    plumbing.down(log=lambda m: None)
    assert lab_leftovers(name, d) == []
    assert all(not os.path.exists(f"/proc/{p}") or _zombie_or_gone(p) for p in pids if p)
    assert teardown(d, name=name, log=lambda m: None) == []      # second time: nothing left to remove


def _zombie_or_gone(pid: int) -> bool:
    return proc_starttime(pid) is None


# ---------------------------------------------------------------------------------------------- full lab
#
# One lab for all the tests below (bring-up is the expensive part). Every test starts from a healed,
# converged fabric (`_baseline`) and heals what it breaks. Waits are bounded with margins for a 2-core
# machine shared with other labs; what is asserted is behaviour (which links are down, where packets go),
# never a timing target (bench/ measures those). Detection bounds are "the mechanism under test did it",
# e.g. a silent failure is noticed by ND within nd_dead plus a scheduling margin, long before anything
# else (switch_dead, report refresh) could have noticed it.

DETECT_MARGIN_S = 3.0       # REST polling + scheduling on a loaded 2-core machine


# The lab defaults (ND 50/250 ms) with ND slowed to 100/500 ms: `make test` runs while other engineers' labs
# (some with 10/30 ms ND, ~2 cores) share the machine; at 50/250 a bring-up next to such a lab flapped and got
# damped (measured). Detection is still asserted against nd_dead (silent failure: ND alone).
# Likewise CFM at 100 ms instead of 10 (a fault after 350-700 ms without hellos, like ND's 500 ms): at 10 and
# 30 ms, runs next to other labs at load average 40-86 faulted every link and damped the whole fabric
# (measured 2026-12-02). What is asserted is which mechanism acts, not how fast (bench/ measures that).
# Flap damping off (client: flap_threshold; master: damping.enabled): these tests break and heal the same
# uplink six times within a few seconds, and damping rightly holds such a link down (the client after more
# than 3 flaps in 10 s, the master above a penalty of 3000 with a 5 s half-life), so whether a heal was
# published depended on how fast the machine ran the tests (CI, 2026-12-04: the link stayed suppressed after
# the miscabling's heal, and an UP released right after the convergence check was read half-programmed).
# Damping is tested where it is the subject: test_damping*, test_master_damping*, test_lab_storm, test_border_lab.
TEST_TIMERS = tuple((k, v) for k, v in LAB_DEFAULT_TIMERS
                    if k not in ("nd_interval_ms", "nd_dead_ms", "oam_interval_ms")) \
    + (("nd_interval_ms", 100), ("nd_dead_ms", 500), ("oam_interval_ms", 100), ("flap_threshold", 1000))
TEST_DAMPING = (("enabled", False),)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    name = _name("e2e")
    d = Path("/tmp") / f"fplab-{name}"
    problem = None
    try:
        fabric_lab = Lab.up(name=name, lab_dir=d, clos={**CLOS, "timers": TEST_TIMERS, "damping": TEST_DAMPING}, clean=True, timeout=90.0,
                            log=lambda m: None)
    except LabError as e:
        problem = str(e)
    if problem is not None:
        pytest.fail(f"lab did not come up (masters/clients): {problem}", pytrace=False)
    try:
        yield fabric_lab
    finally:
        fabric_lab.close()
        teardown(d, name=name, log=lambda m: None)
        shutil.rmtree(d, ignore_errors=True)     # a lab that failed to come up keeps its logs (see above)


def _converge(lab: Lab, after_version: int | None = None) -> None:
    # holds_ok=False: nothing held by the master either. Damping is off here, but the drastic-change guard is
    # not: a chassis failure within its 10 s window of an earlier test's uncorroborated downs is held until
    # the chassis' own report corroborates it, and a wait that counted the hold as converged let the test
    # read the LSD before the release (how fast the tests ran decided it, as for damping before 8c4349a).
    min_version = None if after_version is None else after_version + 1
    assert lab.wait_converged(CONVERGE_S, min_version=min_version, holds_ok=False), \
        lab.convergence_problem(min_version=min_version, holds_ok=False)


def _baseline(lab: Lab) -> None:
    """Start from a healed fabric that every live client has programmed (a failed test may leave faults)."""
    if lab.state.faults:
        inject.heal(lab)
    _converge(lab)
    # and no port is still held out of the groups by local repair (it returns a keepalive after ND is up)
    assert wait_until(lambda: all(isinstance(s, dict) and not s.get("excluded_ports")
                                  for s in lab.client_states().values()), CONVERGE_S, 0.05), \
        {n: s.get("excluded_ports") for n, s in lab.client_states().items() if isinstance(s, dict)}
    # and nothing is damped (off in this lab, TEST_DAMPING): a heal must be published, not held
    assert lab.master_get("/v1/damping").get("suppressed") == []
    assert not [(n, p["port"]) for n, s in lab.client_states().items() if isinstance(s, dict)
                for p in s["ports"] if p.get("damped")]


def _all_pairs_ok(lab: Lab, exclude: set[str] = frozenset()) -> dict[tuple[str, str], int]:
    hosts = [h.name for h in lab.fabric.hosts if h.name not in exclude]
    pairs = [(a, b) for a in hosts for b in hosts if a != b]
    # bounded retry: right after convergence, ARP for the gateway may still be resolving
    results: dict[tuple[str, str], int] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        results = lab.ping(pairs, count=3)
        if all(v >= 2 for v in results.values()):
            break
    return {p: v for p, v in results.items() if v < 2}


def _select_groups(lines: list[str]) -> list[list[int]]:
    """Output ports of the buckets of every select group in `ovs-ofctl dump-groups` output."""
    return [[int(p) for p in re.findall(r"output:(\d+)", line)] for line in lines if "type=select" in line]


def _ports_in_groups(lab: Lab, switch: str) -> set[int]:
    return {p for group in _select_groups(lab.dump_groups(switch)) for p in group}


def _port(states: dict, switch: str, port: int) -> dict:
    s = states[switch]
    assert isinstance(s, dict), (switch, s)
    return next(p for p in s["ports"] if p["port"] == port)


def _probe_summary(result: dict) -> str:
    """Loss per flow with its holes ([first seq, count]; seq / rate = seconds after the probe started)."""
    flows = "; ".join(f"flow {f['flow']}: lost {f['lost']} holes {f['holes'][:6]}" for f in result["flows"])
    return f"sent {result['sent']} lost {result['lost']} at {1000 / result['interval_ms']:.0f} pps/flow: {flows}"


def _lsd_links(lab: Lab) -> dict[str, str]:
    return lab.master_get("/v1/lsd")["links"]


def _heal(lab: Lab) -> None:
    v = lab.lsd_version()
    had_link_faults = any(f["kind"] != "master" for f in lab.state.faults)
    inject.heal(lab)
    _converge(lab, v if had_link_faults else None)


def _uplink(lab: Lab) -> tuple[str, int, object]:
    """The first host's ToR, its first fabric port and the link on it."""
    tor = lab.fabric.hosts[0].tor
    port = lab.fabric.fabric_ports(tor)[0]
    return tor, port, lab.fabric.link_at(tor, port)


@ovs
def test_bringup_full_reachability(lab: Lab) -> None:
    assert lab.state.bringup_s is not None
    _converge(lab)          # up() waited for it; a flap since then must settle again
    assert _all_pairs_ok(lab) == {}
    # Every client verified its ports and reported before its first-report hold ran out: a fresh switch
    # gets its ND punt flows at the connection, not with the first LSD (which only follows the report).
    logs = Path(lab.state.dir) / "logs"
    expired = {p.name: ln for p in logs.glob("client-*.log") for ln in p.read_text().splitlines()
               if "report_hold_expired" in ln}
    assert expired == {}, expired


@ovs
def test_nd_up_both_ways_and_master_lsd_shows_every_link_up(lab: Lab) -> None:
    _baseline(lab)
    states = lab.client_states()
    for link in lab.fabric.links:
        for me, peer in ((link.a, link.b), (link.b, link.a)):
            p = _port(states, me.switch, me.port)
            assert p["phy"] and p["nd"] == "up" and p["usable"], (link.name, me, p)
            assert p["discovered"] == f"{peer.switch}:{peer.port}", (link.name, p)
            assert p["miscabled_by"] is None and not p["damped"], p
    lsd = _lsd_links(lab)
    assert set(lsd) == {link.name for link in lab.fabric.links}
    assert set(lsd.values()) == {"up"}, lsd


@ovs
def test_ecmp_buckets_on_every_multipath_switch(lab: Lab) -> None:
    # In this Clos every uplink is on some equal-cost multi-path: ToR uplinks (to the other pods and the
    # other ToR of the pod), agg uplinks (other pods), spine ports (each pod through its two aggs). An agg's
    # downlinks are not: the ToRs do not relay (transit policy), so the other agg of the pod is reached over
    # the spines, and each ToR over its own single link.
    _baseline(lab)
    for sw in lab.fabric.switches:
        groups = _select_groups(lab.dump_groups(sw.name))
        multi = [g for g in groups if len(g) >= 2]
        assert multi, (sw.name, lab.dump_groups(sw.name))
        ports = set(lab.fabric.fabric_ports(sw.name))
        up = {p for p in ports if sw.role is not Role.AGG or lab.fabric.peer_of(sw.name, p).switch.startswith("spine")}
        assert {p for g in multi for p in g} == up, (sw.name, groups)
        if sw.role is Role.AGG:  # no ECMP group through a ToR: every ToR port stands alone
            assert all(len(g) == 1 for g in groups if not set(g) <= up), (sw.name, groups)


@ovs
@pytest.mark.parametrize("silent", [False, True], ids=["carrier", "silent"])
def test_link_failure_detected_rerouted_and_healed(lab: Lab, silent: bool) -> None:
    _baseline(lab)
    tor, port, link = _uplink(lab)
    peer = lab.fabric.peer_of(tor, port)
    v = lab.lsd_version()
    fault = inject.fail_link(lab, link.a.switch, link.b.switch, silent=silent)
    try:
        # Detection on BOTH ends. Carrier loss: PortStatus at once. Silent (carrier stays up, frames
        # dropped): ovs-vswitchd's CFM (liveness: oam) after 3.5-7 OAM intervals, or software ND after nd_dead.
        oam = lab.fabric.liveness == "oam"
        t = lab.fabric.timers
        bound = ((7 * t.oam_interval if oam else t.nd_dead) if silent else 0.0) + DETECT_MARGIN_S

        def both_down() -> bool:
            states = lab.client_states()
            return all(isinstance(states[sw], dict) and not _port(states, sw, p)["usable"]
                       for sw, p in ((tor, port), (peer.switch, peer.port)))

        assert wait_until(both_down, bound, 0.01), (bound, lab.client_states()[tor])
        detected_s = time.monotonic() - float(fault["at"])
        _converge(lab, v)
        states = lab.client_states()
        for sw, p in ((tor, port), (peer.switch, peer.port)):
            ps = _port(states, sw, p)
            # silent: the carrier stays up ("phy"); with OAM the CFM fault clears OFPPS_LIVE ("live") and ND
            # keeps the identity it verified on this PHY session (client.ports), else ND alone says down
            assert not ps["usable"] and ps["phy"] == silent, ps
            assert ps["live"] == (silent and not oam), ps
            if oam and silent:
                assert ps["oam"] == "fault", ps                       # the CFM fault, seen through OVSDB
                assert ps["nd"] == "up", ps
            else:
                assert ps["nd"] == "down", ps
            if not oam:
                assert ps["oam"] == "off", ps
        assert _lsd_links(lab)[link.name] == "down"
        assert _all_pairs_ok(lab) == {}                              # every pair still has a path
        assert port not in _ports_in_groups(lab, tor)               # pruned from the ECMP groups
        assert peer.port not in _ports_in_groups(lab, peer.switch)
        print(f"{'silent' if silent else 'carrier'} failure of {link.name} detected on both ends in "
              f"{detected_s * 1000:.0f} ms (liveness {lab.fabric.liveness})")
    finally:
        _heal(lab)
    assert _lsd_links(lab)[link.name] == "up"
    assert port in _ports_in_groups(lab, tor)                       # the link is back in the ECMP groups


@ovs
def test_agg_chassis_failure_keeps_reachability(lab: Lab) -> None:
    _baseline(lab)
    agg = next(sw.name for sw in lab.fabric.switches if sw.role == "agg")
    v = lab.lsd_version()
    inject.fail_switch(lab, agg)
    try:
        _converge(lab, v)
        lsd = _lsd_links(lab)
        for index in lab.fabric.links_of(agg):
            assert lsd[lab.fabric.links[index].name] == "down"
        assert _all_pairs_ok(lab) == {}
        for port in lab.fabric.fabric_ports(agg):          # no neighbour sends anything towards it
            peer = lab.fabric.peer_of(agg, port)
            assert peer.port not in _ports_in_groups(lab, peer.switch), peer
    finally:
        _heal(lab)


@ovs
def test_tor_chassis_failure_removes_its_routes_elsewhere(lab: Lab) -> None:
    _baseline(lab)
    host = lab.fabric.hosts[0]
    tor = lab.fabric.switch(host.tor)
    prefix = str(tor.prefixes[0])
    spine = next(sw.name for sw in lab.fabric.switches if sw.role == "spine")
    routes_before = lab.client_states()[spine]["routes"]
    assert any(f"nw_dst={prefix}" in line for line in lab.dump_flows(spine))
    v = lab.lsd_version()
    inject.fail_switch(lab, host.tor)
    try:
        _converge(lab, v)
        assert lab.client_states()[spine]["routes"] < routes_before
        for sw in lab.fabric.switches:                   # removed, not black-holed, everywhere else
            if sw.name != host.tor:
                assert not any(f"nw_dst={prefix}" in line for line in lab.dump_flows(sw.name)), sw.name
        assert _all_pairs_ok(lab, exclude={host.name}) == {}
        others = [h.name for h in lab.fabric.hosts if h.name != host.name]
        assert lab.ping([(others[0], host.name)], count=2) == {(others[0], host.name): 0}
    finally:
        _heal(lab)
    assert any(f"nw_dst={prefix}" in line for line in lab.dump_flows(spine))


@ovs
def test_miscabling_is_detected_on_both_clients_and_kept_out_of_routing(lab: Lab) -> None:
    _baseline(lab)
    fabric = lab.fabric
    tor, port, link = _uplink(lab)
    agg_end = fabric.peer_of(tor, port)
    other = next(p for p in fabric.fabric_ports(agg_end.switch) if p != agg_end.port)
    far = fabric.peer_of(agg_end.switch, other)      # the far end of another link of the same agg
    other_link = fabric.link_at(agg_end.switch, other)
    v = lab.lsd_version()
    # tor:port now reaches agg:other, and far reaches agg:agg_end.port: four ports see the wrong peer
    inject.miscable(lab, f"{tor}:{port}", f"{far.switch}:{far.port}")
    try:
        _converge(lab, v)
        wrong = {(tor, port): f"{agg_end.switch}:{other}", (agg_end.switch, other): f"{tor}:{port}",
                 (far.switch, far.port): f"{agg_end.switch}:{agg_end.port}",
                 (agg_end.switch, agg_end.port): f"{far.switch}:{far.port}"}

        def all_miscabled() -> bool:       # the links leave routing as soon as PHY flaps; ND names the culprit
            states = lab.client_states()
            return all(isinstance(states[sw], dict) and _port(states, sw, p)["nd"] == "miscabled"
                       for sw, p in wrong)

        wait_until(all_miscabled, lab.fabric.timers.nd_dead + DETECT_MARGIN_S, 0.05)
        states = lab.client_states()
        for (sw, p), seen in wrong.items():
            ps = _port(states, sw, p)
            assert ps["nd"] == "miscabled" and not ps["usable"], (sw, p, ps)
            assert ps["miscabled_by"] == seen, (sw, p, ps)
        lsd = _lsd_links(lab)
        assert lsd[link.name] == "down" and lsd[other_link.name] == "down", lsd
        assert port not in _ports_in_groups(lab, tor)
        assert _all_pairs_ok(lab) == {}
    finally:
        _heal(lab)
    states = lab.client_states()
    assert _port(states, tor, port)["nd"] == "up" and _lsd_links(lab)[link.name] == "up"


MASTER_FAILOVER_XFAIL = None        # set to a reason string while master failover is known to lose probes

#: Zero probe loss is the claim for a master failover and a client restart, and every control-plane
#: invariant behind it (one new master, no client reprogrammed, identical flows, untouched LSD) is
#: asserted strictly on every attempt. The emulated data plane is OVS's userspace datapath on a 2-core
#: machine, which drops packets when vswitchd is starved of CPU with the forwarding state untouched (seen
#: at load 20+). So a lossy attempt whose invariants hold is repeated once, and the second must be clean:
#: a routing defect loses packets every time, a CPU hiccup does not. bench_convergence measures the loss.
LOSSLESS_ATTEMPTS = 2


def _of_batches(lab: Lab) -> dict[str, int]:
    return {n: int(s["of_batches"]) for n, s in lab.client_states().items() if isinstance(s, dict)}


def _master_kill_once(lab: Lab) -> dict:
    _baseline(lab)
    hosts = [h.name for h in lab.fabric.hosts]
    src, dst = hosts[0], hosts[-1]
    before = lab.current_master()
    assert before is not None
    batches_before = _of_batches(lab)
    probe = lab.probe(src, dst, port=7100, **PROBE)
    probe.start()
    try:
        time.sleep(0.3)          # traffic before the kill (what the probe measures, not an assertion)
        inject.kill_master(lab)
        assert wait_until(lambda: (m := lab.current_master()) is not None and m[0] != before[0], 10.0, 0.01), \
            lab.master_states()
        new_id, new_state = lab.current_master()
        assert int(new_state["term"]) > int(before[1]["term"])
        survivors = {m: s for m, s in lab.master_states().items() if m != before[0]}
        roles = sorted(s.get("role") for s in survivors.values() if isinstance(s, dict))
        assert roles == ["backup", "master"], survivors        # exactly one new master
        _converge(lab)
        states = lab.client_states()
        assert all(s["master"] == new_id and int(s["term"]) == int(new_state["term"]) for s in states.values()), \
            {n: (s.get("master"), s.get("term")) for n, s in states.items()}
        time.sleep(0.3)          # traffic after the failover
        result = probe.stop()
    finally:
        probe.close()
    assert _of_batches(lab) == batches_before        # the failover did not touch any switch's tables
    assert _all_pairs_ok(lab) == {}
    inject.heal(lab)            # the killed replica comes back as a backup: still exactly one master
    assert wait_until(lambda: isinstance(lab.master_states()[before[0]], dict), 15.0)
    assert wait_until(lambda: lab.master_states()[before[0]].get("role") == "backup", 10.0), lab.master_states()
    roles = [s.get("role") for s in lab.master_states().values() if isinstance(s, dict)]
    assert roles.count("master") == 1, roles
    assert lab.current_master()[0] == new_id    # sticky: the incumbent stays
    return result


@ovs
def test_master_kill_elects_exactly_one_new_master_and_forwarding_continues(lab: Lab) -> None:
    for attempt in range(1, LOSSLESS_ATTEMPTS + 1):
        result = _master_kill_once(lab)
        if result["lost"] == 0:
            return
        print(f"attempt {attempt}: invariants held but the probe lost packets: {_probe_summary(result)}")
    if MASTER_FAILOVER_XFAIL:
        pytest.xfail(f"{MASTER_FAILOVER_XFAIL}: {result['lost']} probe packets lost")
    assert result["lost"] == 0, _probe_summary(result)


def _client_restart_once(lab: Lab) -> dict:
    _baseline(lab)
    hosts = [h.name for h in lab.fabric.hosts]
    src, dst = hosts[0], hosts[-1]
    tor = lab.fabric.host(src).tor
    v = lab.lsd_version()
    old_pid = lab.state.processes[f"client:{tor}"].pid
    flows_before = sorted(lab.dump_flows(tor))
    probe = lab.probe(src, dst, port=7200, **PROBE)
    probe.start()
    try:
        time.sleep(0.3)
        t_stop = time.monotonic()
        inject.restart_client(lab, tor)
        assert lab.state.processes[f"client:{tor}"].pid != old_pid
        assert wait_until(lambda: isinstance(s := lab.client_states()[tor], dict) and s.get("connected")
                          and s.get("programmed_version") == lab.lsd_version(), CONVERGE_S, 0.05), \
            lab.client_states()[tor]
        without_client_s = time.monotonic() - t_stop
        _converge(lab)
        time.sleep(0.3)
        result = probe.stop()
    finally:
        probe.close()
    print(f"client {tor} restarted: {without_client_s:.2f} s until it had programmed the LSD again")
    # reconciled without a flush: the same flows as before (ovs-ofctl --no-stats: no counters, no ages)
    assert sorted(lab.dump_flows(tor)) == flows_before
    # graceful restart: the neighbours held their ND links, so no link of the switch left the LSD -- as long
    # as the new client was back within the hold (a restart slower than that is routed around, by design)
    hold = min(CLIENT_RESTART_HOLD_S, lab.fabric.timers.switch_dead)
    if without_client_s < hold - 0.5:
        changes = lab.master_get(f"/v1/lsd?since={v}")
        mine = {n: st for n, st in changes["links"].items() if n.startswith(f"{tor}:") or f"-{tor}:" in n}
        touched = [n for n, st in mine.items() if st != "up"] if changes.get("full") else list(mine)
        assert touched == [], changes
    return result


@ovs
def test_client_restart_without_probe_loss(lab: Lab) -> None:
    for attempt in range(1, LOSSLESS_ATTEMPTS + 1):
        result = _client_restart_once(lab)
        if result["lost"] == 0:
            return
        print(f"attempt {attempt}: invariants held but the probe lost packets: {_probe_summary(result)}")
    assert result["lost"] == 0, _probe_summary(result)


@ovs
def test_client_kill_routes_around_the_switch(lab: Lab) -> None:
    _baseline(lab)
    agg = next(sw.name for sw in lab.fabric.switches if sw.role == "agg")
    v = lab.lsd_version()
    inject.kill_client(lab, agg)
    try:
        _converge(lab, v)           # neighbours' ND goes down: the agg leaves routing
        lsd = _lsd_links(lab)
        assert all(lsd[lab.fabric.links[i].name] == "down" for i in lab.fabric.links_of(agg)), lsd
        assert _all_pairs_ok(lab) == {}
    finally:
        _heal(lab)


@ovs
def test_heal_starts_again_a_daemon_killed_outside_the_labs_faults(lab: Lab) -> None:
    """A master and a client killed by PID (not `lab kill`: no fault records them) stayed dead through
    `lab heal`, which said "nothing to heal". Heal now starts every lab daemon that is not running and
    names it; the fabric converges with both back."""
    import signal

    _baseline(lab)
    agg = next(sw.name for sw in lab.fabric.switches if sw.role == "agg")
    master = sorted(lab.state.processes[k].name for k in lab.state.processes if k.startswith("master:"))[0]
    recs = [lab.state.processes[f"client:{agg}"], lab.state.processes[f"master:{master}"]]
    for rec in recs:
        os.kill(rec.pid, signal.SIGKILL)
    assert wait_until(lambda: not any(r.alive() for r in recs), 5.0)
    # `lab kill` of a daemon that is not running records nothing (it said "injected: ... killed")
    faults = list(lab.state.faults)
    with pytest.raises(LabError, match="is not running"):
        inject.kill_client(lab, agg)
    with pytest.raises(LabError, match="is not running"):
        inject.kill_master(lab, master)
    assert lab.state.faults == faults
    undone = inject.heal(lab)
    assert {(f["kind"], f.get("id", f.get("switch")), f.get("outside")) for f in undone} == {
        ("client", agg, True), ("master", master, True)}, undone
    assert all(lab.state.processes[r.key].alive() for r in recs)
    assert inject.heal(lab) == []                      # nothing left: a second heal starts nothing
    _converge(lab)
    assert _all_pairs_ok(lab) == {}


@ovs
def test_lab_down_leaves_nothing(lab: Lab) -> None:
    name, d = lab.state.name, lab.state.dir
    pids = [p.pid for p in lab.state.processes.values()]
    ifaces = list(lab.state.ifaces.values())
    ovs_pids = [o.pid(d) for o in lab.ovs_instances() for d in ("ovsdb-server", "ovs-vswitchd")]
    assert all(ovs_pids)
    lab.down(log=lambda m: None)
    assert lab_leftovers(name, d, ifaces=ifaces) == []
    assert all(_zombie_or_gone(p) for p in pids + ovs_pids)
    assert not [n for n in nsutil.list_netns() if n.startswith(f"fplab-{name}")]
    assert teardown(d, name=name, log=lambda m: None) == []
