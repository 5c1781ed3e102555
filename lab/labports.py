"""The TCP ports a lab listens on (OpenFlow per bridge, REST per switch, the masters'), assigned where
the config has none, checked for clashes, and listed for the namespace's reserved-ports sysctl."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lab.state import LabError

# Lab ports lie below the kernel's ephemeral range (32768-60999), where the lab's own processes get their
# outgoing ports (a REST port at 40000+i was once taken by a client's outgoing connection); every port the
# lab listens on is also reserved in the lab namespace (net.ipv4.ip_local_reserved_ports), so a config
# with ports inside the range is safe too.
OVS_BASE_PORT = 20000      # switch id i listens for its client on 127.0.0.1:OVS_BASE_PORT+i (lab netns)
REST_BASE_PORT = 28000     # switch id i serves REST on 127.0.0.1:REST_BASE_PORT+i (lab netns)


class LabPorts:
    """The TCP ports of a lab: each switch's OpenFlow (OVS listens) and REST port, taken from the config
    where it has them (`ovs:` target, `rest_port`), else assigned OVS_BASE_PORT + id / REST_BASE_PORT + id.
    Raises LabError naming the clash when two of the lab's listening ports (masters' included) of one protocol
    are equal: a master's UDP client port may share its number with a switch's TCP REST port."""

    def __init__(self, fabric: Any) -> None:
        self.ovs: dict[str, int] = {}
        self.rest: dict[str, int] = {}
        self.assigned_ovs: list[str] = []
        self.assigned_rest: list[str] = []
        users: dict[tuple[str, int], str] = {}     # (protocol, port) -> who listens there

        fixes: dict[str, str] = {}       # who -> how to stop the lab assigning that port

        def take(port: int, who: str, proto: str = "tcp") -> int:
            if (proto, port) in users:
                other = users[proto, port]
                fix = "; ".join(dict.fromkeys(f for f in (fixes.get(other), fixes.get(who)) if f))
                raise LabError(f"{proto.upper()} port {port} is used twice in the lab: {other} and {who}"
                               + (f" ({fix})" if fix else ""))
            if not 0 < port < 65536:
                raise LabError(f"{who}: port {port} out of range 1..65535" + (f" ({fixes[who]})" if who in fixes else ""))
            users[proto, port] = who
            return port

        def assigned(sw: Any, kind: str, base: int) -> int:
            who = f"switch {sw.name} {kind} (assigned)"
            key = "`ovs: tcp:127.0.0.1:PORT`" if kind == "ovs" else "`rest_port: PORT`"
            fixes[who] = f"the lab assigns {base} + id {sw.id}: give {sw.name} its own {key} in the config"
            return take(base + sw.id, who)

        for m in fabric.masters:
            for kind, proto in (("client_port", "udp"), ("peer_port", "udp"), ("rest_port", "tcp")):
                if getattr(m, kind, None):
                    take(int(getattr(m, kind)), f"master {m.id} {kind}", proto)
        dist = fabric.distribution
        if getattr(dist, "port", None):
            take(int(dist.port), "multicast distribution", "udp")
        for sw in fabric.switches:
            if sw.ovs:
                self.ovs[sw.name] = take(int(str(sw.ovs).rsplit(":", 1)[1]), f"switch {sw.name} ovs")
            else:
                self.ovs[sw.name] = assigned(sw, "ovs", OVS_BASE_PORT)
                self.assigned_ovs.append(sw.name)
            if sw.rest_port:
                self.rest[sw.name] = take(int(sw.rest_port), f"switch {sw.name} rest_port")
            else:
                self.rest[sw.name] = assigned(sw, "rest_port", REST_BASE_PORT)
                self.assigned_rest.append(sw.name)
        self.all = frozenset(port for _proto, port in users)     # the reserved-ports sysctl covers both

    def ovs_target(self, switch: str) -> str:
        return f"tcp:127.0.0.1:{self.ovs[switch]}"


def port_ranges(ports: Iterable[int]) -> str:
    """'20001-20004,28001' for the sysctl net.ipv4.ip_local_reserved_ports."""
    out: list[str] = []
    run: list[int] = []
    for p in sorted(set(ports)):
        if run and p == run[-1] + 1:
            run.append(p)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [p]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
