"""Grow a running lab to a config with more switches, links and hosts (issue #21: adding a ToR).

`grow(lab, new)` builds what `new` has and the running lab does not — bridges, fabric veths (on existing
bridges too), hosts — without touching anything that exists, and starts the clients of the new switches
on `new` (the lab's fabric.yaml must already hold it). Then `lab reload all` rolls the change out: the
masters prepare it, every existing client moves to it, the new switches report under it from the start,
and the commit publishes the new links and the new ToR's prefix.

Only additions whose names line up with the running lab: every existing switch keeps its position in
`switches:` (interface names derive from it), its id and its ports; an existing link or host must not move.
Anything else is refused with LabError (nothing built). Removing is not this module's job: a removed link or
switch simply stops being in the config (its veths and bridge stay until `lab down`).
"""

from __future__ import annotations

import subprocess
from typing import Any

from lab import netns as nsutil
from lab.fabric import (
    HOST_IFNAME,
    Lab,
    LabError,
    LabPorts,
    _reserve_ports,
    bridge_name,
)
from lab.iputil import disable_tx_checksum, ip_batch, quiet_ipv6
from lab.state import host_netns

__all__ = ["grow"]


def _check_additive(st: Any, new: Any) -> None:
    """Every interface the lab built keeps its name under `new` (names derive from a switch's position in
    `switches:`), and no built host moved to another ToR port. Read from the lab's record (lab.state), not from
    its fabric.yaml, which the operator has already edited."""
    index = {s.name: i for i, s in enumerate(new.switches)}
    for key, ifn in st.ifaces.items():
        sw, port = key.rsplit(":", 1)
        if sw in index and ifn.startswith("s") and ifn != f"s{index[sw]}p{port}":
            raise LabError(f"{new.source}: switch {sw} moved in switches: (now #{index[sw]}, its interface {ifn} says "
                           f"otherwise); a running lab can only grow at the end")
    for h in new.hosts:
        if h.name in st.host_netns and f"{h.tor}:{h.port}" not in st.ifaces:
            raise LabError(f"{new.source}: host {h.name} moved to {h.tor}:{h.port}")


def grow(lab: Lab, new: Any, log: Any = print) -> dict[str, list[str]]:
    """Build the additions of `new` over the running lab and start the new switches' clients. Returns
    {"switches": [...], "links": [...], "hosts": [...]} added."""
    st = lab.state
    _check_additive(st, new)
    index = {sw.name: i for i, sw in enumerate(new.switches)}

    def ifname(switch: str, port: int) -> str:
        return f"s{index[switch]}p{port}"

    switches = [s for s in new.switches if s.name not in st.bridges]
    links = [link for link in new.links if f"{link.a.switch}:{link.a.port}" not in st.ifaces
             and f"{link.b.switch}:{link.b.port}" not in st.ifaces]
    hosts = [h for h in new.hosts if h.name not in st.host_netns]
    ports = LabPorts(new)
    # record intent first (teardown removes by name / namespace)
    for sw in switches:
        st.bridges[sw.name] = bridge_name(sw)
    pairs = []
    for link in links:
        a, b = ifname(link.a.switch, link.a.port), ifname(link.b.switch, link.b.port)
        st.ifaces[f"{link.a.switch}:{link.a.port}"] = a
        st.ifaces[f"{link.b.switch}:{link.b.port}"] = b
        st.cabling.append([a, b])
        pairs.append((a, b))
    for h in hosts:
        st.host_netns[h.name] = host_netns(st.name, h.name)
        st.ifaces[f"{h.tor}:{h.port}"] = ifname(h.tor, h.port)
    st.save()
    _reserve_ports(st.netns, ports.all)
    args: list[str] = []
    for sw in switches:
        br = st.bridges[sw.name]
        args += ["--", "--may-exist", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                 "fail_mode=secure", "protocols=OpenFlow13,OpenFlow15", f"other-config:datapath-id={sw.id:016x}",
                 "other-config:disable-in-band=true", "--", "set-controller", br,
                 f"ptcp:{ports.ovs[sw.name]}:127.0.0.1"]
    if args:
        lab.ovs.vsctl(*args[1:], timeout=60)
    lines = []
    for a, b in pairs:
        lines += [f"link add {a} type veth peer name {b}", f"link set {a} up", f"link set {b} up"]
    if lines:
        ip_batch(st.netns, lines)
    for h in hosts:
        hns = st.host_netns[h.name]
        nsutil.create_netns(hns)
        quiet_ipv6(hns)
        lab_end = st.ifaces[f"{h.tor}:{h.port}"]
        subprocess.run(["ip", "link", "add", lab_end, "netns", st.netns, "type", "veth", "peer", "name",
                        HOST_IFNAME, "netns", hns], check=True, capture_output=True, timeout=10)
        tor = new.switch(h.tor)
        prefix = next((p for p in tor.prefixes if h.ip in p), None)
        if prefix is None:
            raise LabError(f"host {h.name}: {h.ip} is in none of {h.tor}'s prefixes")
        ip_batch(hns, [f"link set {HOST_IFNAME} address {h.mac}", f"addr add {h.ip}/{prefix.prefixlen} dev "
                        f"{HOST_IFNAME}", f"link set {HOST_IFNAME} up",
                        f"route add default via {tor.gateway} dev {HOST_IFNAME}"])
        disable_tx_checksum(hns, HOST_IFNAME)
        ip_batch(st.netns, [f"link set {lab_end} up"])
    new_ifaces = [(key, ifn) for key, ifn in st.ifaces.items()
                  if key.rsplit(":", 1)[0] in {s.name for s in switches}
                  or ifn in {x for pair in pairs for x in pair}
                  or any(key == f"{h.tor}:{h.port}" for h in hosts)]
    args = []
    for key, ifn in new_ifaces:
        sw, port = key.rsplit(":", 1)
        args += ["--", "--may-exist", "add-port", st.bridges[sw], ifn, "--", "set", "interface", ifn,
                 f"ofport_request={port}"]
    if args:
        lab.ovs.vsctl(*args[1:], timeout=60)
    lab.fabric, lab.ports = new, ports
    lab._check_ofports()
    lab.ovs.boost()
    for sw in switches:
        lab.start_client(sw.name)
        log(f"switch {sw.name}: bridge, {sum(1 for link in links if sw.name in (link.a.switch, link.b.switch))} "
            f"links and its client started on config {new.digest[:12]}...")
    return {"switches": [s.name for s in switches], "links": [link.name for link in links],
            "hosts": [h.name for h in hosts]}
