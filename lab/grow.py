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

import copy
from typing import Any

from lab import plumbing
from lab.bgp import EXT_HOST, ROUTER
from lab.fabric import Lab, LabError, LabPorts, _reserve_ports
from lab.labconfig import check_cpn_addresses
from lab.state import host_netns, say

__all__ = ["check_grow", "grow"]


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


def check_grow(lab: Lab, new: Any) -> LabPorts:
    """Everything that refuses `new` as a growth of the running lab, with no side effect: run before the
    masters prepare it (`lab reload all --grow`), so that a refused file leaves no rollout prepared, and
    again by grow() itself. LabError naming the problem; else the lab's ports under `new`."""
    st = lab.state
    if st.growing:
        raise LabError(f"an earlier `lab reload all --grow` stopped while building {', '.join(st.growing)}: they "
                       f"may be half built and this lab cannot tell; `firepath lab up --clean` rebuilds the lab from "
                       f"its fabric.yaml (`lab down` first to keep nothing)")
    _check_additive(st, new)
    ports = LabPorts(new)
    switches = [s for s in new.switches if s.name not in st.bridges]
    if not st.external_masters:
        check_cpn_addresses(new, switches)
    trial = copy.deepcopy(st)          # the names grow() would give, on a copy: bridges, namespaces
    plumbing.plan_switches(trial, new, switches, per_switch=bool(st.switch_ns))
    plumbing.check_netns(trial, new, (ROUTER, EXT_HOST) if EXT_HOST in st.host_netns else ())
    return ports


def grow(lab: Lab, new: Any, log: Any = say) -> dict[str, list[str]]:
    """Build the additions of `new` over the running lab and start the new switches' clients. Returns
    {"switches": [...], "links": [...], "hosts": [...]} added."""
    st = lab.state
    ports = check_grow(lab, new)
    index = {sw.name: i for i, sw in enumerate(new.switches)}

    def ifname(switch: str, port: int) -> str:
        return f"s{index[switch]}p{port}"

    switches = [s for s in new.switches if s.name not in st.bridges]
    links = [link for link in new.links if f"{link.a.switch}:{link.a.port}" not in st.ifaces
             and f"{link.b.switch}:{link.b.port}" not in st.ifaces]
    hosts = [h for h in new.hosts if h.name not in st.host_netns]
    # record intent first (teardown removes by name / namespace); a new switch gets its own OVS if the lab's
    # switches have theirs
    plumbing.plan_switches(st, new, switches, per_switch=bool(st.switch_ns))
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
    plumbing.check_netns(st, new, (ROUTER, EXT_HOST) if EXT_HOST in st.host_netns else ())
    plumbing.plan_ifaces(st)
    st.growing = [s.name for s in switches] + [link.name for link in links] + [h.name for h in hosts]
    st.save()
    _reserve_ports(st.netns, ports.all)
    plumbing.add_switches(st, new, switches, lambda sw: ports.ovs[sw])
    plumbing.cable(st, pairs)
    plumbing.add_hosts(st, new, hosts)
    new_ifaces = [key for key, ifn in st.ifaces.items()
                  if key.rsplit(":", 1)[0] in {s.name for s in switches}
                  or ifn in {x for pair in pairs for x in pair}
                  or any(key == f"{h.tor}:{h.port}" for h in hosts)]
    plumbing.add_ports(st, new_ifaces)
    lab.fabric, lab.ports = new, ports
    for sw in switches:
        lab.start_client(sw.name)
        log(f"switch {sw.name}: bridge, {sum(1 for link in links if sw.name in (link.a.switch, link.b.switch))} "
            f"links and its client started on config {new.digest[:12]}...")
    st.growing = []
    st.save()
    return {"switches": [s.name for s in switches], "links": [link.name for link in links],
            "hosts": [h.name for h in hosts]}
