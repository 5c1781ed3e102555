"""The lab's data plane: switches (an Open vSwitch bridge each), fabric veths, hosts; built by `Lab.up`
(lab/fabric.py) and grown by `lab.grow` through the same functions. Two layouts:

**One OVS for the lab** (the default): one ovsdb-server + ovs-vswitchd (run dir ``<dir>/ovs``) holds every
switch's bridge; every bridge and veth end is in the lab namespace.

**One OVS per switch** (`lab up --ovs-per-switch`): each switch gets its own namespace ``fplab-N-sw<i>``
(lab.state `switch_netns`, `i` its position in `switches:`) with its own ovsdb-server and ovs-vswitchd
(run dir ``<dir>/ovs/<bridge>``), one bridge, and its ends of the fabric and host veths — as a switch of a
real fabric has its own forwarding process and a handful of ports. OVS re-reads every bridge's
configuration when the kernel reports any link change in its namespace (`bridge_reconfigure`), and every
bridge of one instance shares one datapath, so with one instance for the lab a link change makes it
re-check all the lab's ports and revalidate all its flows; with one per switch the change costs the two
instances at its ends. The price: an idle ovs-vswitchd per switch (CPU and ~17 MiB each). BENCHMARKS.md
"One OVS per switch" has both sides measured.

Either way the daemons run in the lab namespace; with one OVS per switch a client reaches its switch's OVS
with ``--netns <switch namespace>`` (the OpenFlow socket; a border's ExaBGP runs there too) and
``--ovsdb unix:<run dir>/db.sock``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import netns as nsutil
from lab.iputil import disable_tx_checksum, ip_batch, quiet_ipv6
from lab.ovs import OvsInstance
from lab.state import LabError, LabState, host_netns, proc_starttime, switch_netns

__all__ = ["HOST_IFNAME", "add_hosts", "add_ports", "add_switches", "bridge_name", "cable", "check_ofports",
           "instances", "instances_on_disk", "ovs_of", "parallel", "plan_ifaces", "plan_switches", "stopped_ovs"]

HOST_IFNAME = "eth0"
#: OVS instances started (or reconfigured) at once: each start is a few short processes.
PARALLEL = 8


def bridge_name(switch: Any) -> str:
    name = switch.name
    if len(name.encode()) <= nsutil.IFNAMSIZ_MAX and all(c.isalnum() or c in "-_." for c in name):
        return name
    return f"sw{switch.id}"


def ovs_of(st: LabState, switch: str) -> OvsInstance:
    """The OVS instance that holds `switch`'s bridge."""
    if st.switch_ns:
        return OvsInstance(Path(st.ovs_dir) / st.bridges[switch], st.switch_ns[switch])
    return OvsInstance(st.ovs_dir, st.netns or None)


def instances(st: LabState) -> list[OvsInstance]:
    """Every OVS instance of the lab (one per switch, or the shared one)."""
    if st.switch_ns:
        return [ovs_of(st, sw) for sw in st.switch_ns]
    return [OvsInstance(st.ovs_dir, st.netns or None)]


def stopped_ovs(st: LabState) -> list[str]:
    """"SWITCH: DAEMON" for each OVS daemon of the lab that is not running (with a shared OVS: "every switch:
    DAEMON"). A crashed ovs-vswitchd is a switch that stopped forwarding, which no lab fault records: `lab status`
    says so, as `lab heal` does not restart it."""
    owners = [(sw, ovs_of(st, sw)) for sw in st.switch_ns] if st.switch_ns else [("every switch", instances(st)[0])]
    def stopped(ovs: OvsInstance, daemon: str) -> bool:      # a zombie (reaped late by init) counts as stopped
        pid = ovs.pid(daemon)
        return pid is None or proc_starttime(pid) is None

    return [f"{who}: {daemon}" for who, ovs in owners for daemon in ("ovs-vswitchd", "ovsdb-server")
            if stopped(ovs, daemon)]


def instances_on_disk(ovs_dir: Path, netns: str | None) -> list[OvsInstance]:
    """Every OVS run dir under `ovs_dir` (the shared one and one per switch), for teardown without a record:
    stopping one only needs its PID files."""
    dirs = [ovs_dir] + (sorted(p for p in ovs_dir.iterdir() if p.is_dir()) if ovs_dir.is_dir() else [])
    return [OvsInstance(d, netns) for d in dirs]


def parallel(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    if len(items) <= 1:
        return [func(i) for i in items]
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="plumbing") as pool:
        return list(pool.map(func, items))


def plan_switches(st: LabState, fabric: Any, switches: Iterable[Any], per_switch: bool) -> None:
    """Record the bridge (and, per switch, the namespace) of each of `switches` (intent first)."""
    index = {sw.name: i for i, sw in enumerate(fabric.switches)}
    owner = {br: name for name, br in st.bridges.items()}
    for sw in switches:
        br = bridge_name(sw)
        if owner.setdefault(br, sw.name) != sw.name:    # a name over 15 bytes becomes sw<id>: another's name?
            raise LabError(f"{fabric.source}: switches {owner[br]} and {sw.name} would both be OVS bridge {br!r} (a "
                           f"name longer than {nsutil.IFNAMSIZ_MAX} bytes or with other characters than letters, "
                           f"digits, '-', '_', '.' becomes sw<id>): rename one")
    for sw in switches:
        st.bridges[sw.name] = bridge_name(sw)
        if per_switch:
            st.switch_ns[sw.name] = switch_netns(st.name, index[sw.name])


def check_netns(st: LabState, fabric: Any, external: Iterable[str] = ()) -> None:
    """Refuse (LabError naming both) a lab whose network namespaces would share a name before any is made:
    a host's is ``fplab-N-<host>``, so a host named ``sw3`` would be switch 3's own namespace with
    `--ovs-per-switch`, and one named like an `external` namespace (``ext-router``, ``ext-host`` of
    lab.bgp) would be that one."""
    owner: dict[str, str] = {}
    named = [(f"switch {sw}", ns) for sw, ns in st.switch_ns.items()]
    named += [(f"host {h.name}", host_netns(st.name, h.name)) for h in fabric.hosts]
    named += [(f"the eBGP borders' {x}", host_netns(st.name, x)) for x in external]
    for who, ns in named:
        if owner.setdefault(ns, who) != who:
            raise LabError(f"{fabric.source}: {owner[ns]} and {who} would both be network namespace {ns!r} in this "
                           f"lab: rename the host")


def plan_ifaces(st: LabState) -> None:
    """Record the namespace of every interface of a switch that has its own (`st.netns_of`)."""
    for key, ifn in st.ifaces.items():
        ns = st.switch_ns.get(key.rsplit(":", 1)[0])
        if ns is not None:
            st.iface_netns[ifn] = ns


def add_switches(st: LabState, fabric: Any, switches: Sequence[Any], ovs_port: Callable[[str], int]) -> None:
    """Namespaces (per switch), OVS instances and one bridge per switch of `switches`; `ovs_port(name)`: the
    TCP port its OpenFlow listener takes on its namespace's 127.0.0.1."""
    def bridge_args(sw: Any) -> list[str]:
        br = st.bridges[sw.name]
        return ["--", "--may-exist", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                "fail_mode=secure", "protocols=OpenFlow13,OpenFlow15", f"other-config:datapath-id={sw.id:016x}",
                "other-config:disable-in-band=true", "--", "set-controller", br, f"ptcp:{ovs_port(sw.name)}:127.0.0.1"]

    if not st.switch_ns:
        shared = instances(st)[0]
        if not shared.running():
            shared.start()
        shared.boost()        # the emulated data plane must not be starved by the control plane
        args = [a for sw in switches for a in bridge_args(sw)]
        if args:
            shared.vsctl(*args[1:], timeout=60)
        return

    def one(sw: Any) -> None:
        ns = st.switch_ns[sw.name]
        nsutil.create_netns(ns)
        quiet_ipv6(ns)
        ovs = ovs_of(st, sw.name)
        ovs.start()
        ovs.boost()
        ovs.vsctl(*bridge_args(sw)[1:], timeout=60)

    parallel(one, switches)


def cable(st: LabState, pairs: Sequence[tuple[str, str]]) -> None:
    """Create the veth pairs (each end in its switch's namespace: `st.netns_of`) and bring them up."""
    if not pairs:
        return
    ip_batch(None, [f"link add {a} netns {st.netns_of(a)} type veth peer name {b} netns {st.netns_of(b)}"
                    for a, b in pairs])
    by_ns: dict[str, list[str]] = {}
    for a, b in pairs:
        for end in (a, b):
            by_ns.setdefault(st.netns_of(end), []).append(f"link set {end} up")
    for ns, lines in by_ns.items():
        ip_batch(ns, lines)


def add_hosts(st: LabState, fabric: Any, hosts: Sequence[Any]) -> None:
    """A namespace per host with `eth0` (MAC, address, default route via its ToR); the ToR end in the ToR's
    namespace."""
    for host in hosts:
        hns = st.host_netns[host.name]
        nsutil.create_netns(hns)
        quiet_ipv6(hns)
        tor_end = st.ifaces[f"{host.tor}:{host.port}"]
        tor_ns = st.netns_of(tor_end)
        subprocess.run(["ip", "link", "add", tor_end, "netns", tor_ns, "type", "veth", "peer", "name",
                        HOST_IFNAME, "netns", hns], check=True, capture_output=True, timeout=10)
        tor = fabric.switch(host.tor)
        prefix = next((p for p in tor.prefixes if host.ip in p), None)
        if prefix is None:
            raise LabError(f"host {host.name}: {host.ip} is in none of {host.tor}'s prefixes")
        ip_batch(hns, [f"link set {HOST_IFNAME} address {host.mac}",
                       f"addr add {host.ip}/{prefix.prefixlen} dev {HOST_IFNAME}",
                       f"link set {HOST_IFNAME} up",
                       f"route add default via {tor.gateway} dev {HOST_IFNAME}"])
        disable_tx_checksum(hns, HOST_IFNAME)
        ip_batch(tor_ns, [f"link set {tor_end} up"])


def _per_instance(st: LabState, keys: Sequence[str],
                  args_of: Callable[[str, str], list[str]]) -> list[tuple[OvsInstance, list[str]]]:
    """ovs-vsctl arguments of `keys` ("switch:port"), one transaction per OVS instance."""
    groups: dict[str, tuple[OvsInstance, list[str]]] = {}
    for key in keys:
        sw = key.rsplit(":", 1)[0]
        ovs = ovs_of(st, sw)
        groups.setdefault(str(ovs.run_dir), (ovs, []))[1].extend(args_of(key, sw))
    return list(groups.values())


def add_ports(st: LabState, keys: Iterable[str], *, reopen: bool = False) -> None:
    """Attach the interfaces of `keys` ("switch:port" of `st.ifaces`) to their bridges under their port
    numbers (one transaction per OVS instance), then check every port number. `reopen`: the devices were
    re-created under the same names (miscabling): vswitchd does not re-open them by itself (nothing is
    received), and a del-port + add-port in ONE transaction is a no-op for it, so the ports are deleted in a
    transaction of their own first."""
    keys = list(keys)
    if reopen:
        dels = _per_instance(st, keys, lambda key, sw: ["--", "--if-exists", "del-port", st.bridges[sw], st.ifaces[key]])
        parallel(lambda group: group[0].vsctl(*group[1][1:], timeout=60), dels)

    def add(key: str, sw: str) -> list[str]:
        ifn, port = st.ifaces[key], key.rsplit(":", 1)[1]
        return ["--", "--may-exist", "add-port", st.bridges[sw], ifn, "--", "set", "interface", ifn,
                f"ofport_request={port}"]

    def one(group: tuple[OvsInstance, list[str]]) -> None:
        group[0].vsctl(*group[1][1:], timeout=60)
        group[0].boost()     # threads vswitchd started for the new ports

    parallel(one, _per_instance(st, keys, add))
    check_ofports(st)


def check_ofports(st: LabState) -> None:
    """Every recorded interface has its configured OpenFlow port number; LabError names those that do not."""
    got: dict[str, int] = {}

    def listed(ovs: OvsInstance) -> dict[str, int]:
        out = ovs.vsctl("--format=json", "--columns=name,ofport", "list", "interface")
        return {row[0]: row[1] for row in json.loads(out)["data"]}

    for part in parallel(listed, instances(st)):
        got.update(part)
    wrong = [f"{ifn}: ofport {got.get(ifn)} != {key}" for key, ifn in st.ifaces.items()
             if got.get(ifn) != int(key.rsplit(':', 1)[1])]
    if wrong:
        raise LabError("OVS did not give the configured port numbers: " + "; ".join(wrong[:5]))
