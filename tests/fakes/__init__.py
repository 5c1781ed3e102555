"""Test doubles shared by the tests: fabric builders here, the fake OpenFlow table in `oftable`.

`build_clos` makes a real `proto.config.Fabric` (the validated model's dataclasses, built directly,
without YAML) for a three-tier Clos with knobs the route tests need and the config generator does
not expose: per-link weights, parallel links, border switches, missing cables.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from proto.config import (
    Distribution,
    Endpoint,
    Fabric,
    Host,
    Link,
    LsdSettings,
    Role,
    Security,
    Switch,
    Timers,
)


def switch_mac(switch_id: int) -> str:
    """The contract's default router MAC: "0e:00:" + id as 4 bytes hex."""
    return "0e:00:" + ":".join(f"{b:02x}" for b in switch_id.to_bytes(4, "big"))


def build_clos(
    pods: int = 2,
    tors: int = 2,
    aggs: int = 2,
    spines_per_plane: int = 2,
    *,
    hosts_per_tor: int = 1,
    borders: int = 0,
    parallel: int = 1,
    weight: Callable[[int], int] | None = None,
    skip: Callable[[int], bool] | None = None,
    name: str = "test-clos",
) -> Fabric:
    """A Clos: `pods` pods of `tors` ToRs fully meshed to `aggs` aggs; agg a of every pod is cabled to the
    `spines_per_plane` spines of plane a (and `parallel` cables per agg-spine pair); border switches are
    cabled to every spine and originate 0.0.0.0/0. `weight(i)` gives link i's weight (default 1);
    `skip(i)` drops the i-th candidate cable (irregular, possibly partitioned fabrics).
    ToR t of pod p owns 10.p.t.0/24 with gateway .1 and hosts .10, .11, ... on ports 100, 101, ...
    """
    switches: list[Switch] = []
    links: list[Link] = []
    next_port: dict[str, int] = {}
    candidate = 0

    def add(sw_name: str, role: Role, prefixes: tuple[IPv4Network, ...] = (), hosts: int = 0) -> None:
        sid = len(switches) + 1
        gateway = None
        host_list: tuple[Host, ...] = ()
        if role is Role.TOR:
            gateway = prefixes[0][1]
            host_list = tuple(
                Host(f"h-{sw_name}-{k}", sw_name, 100 + k, prefixes[0][10 + k], f"02:00:00:{sid >> 8 & 255:02x}:{sid & 255:02x}:{k:02x}")
                for k in range(hosts)
            )
        switches.append(
            Switch(
                name=sw_name,
                id=sid,
                role=role,
                prefixes=prefixes,
                loopback=IPv4Network(f"10.255.{sid >> 8}.{sid & 255}/32"),
                mac=switch_mac(sid),
                gateway=gateway,
                hosts=host_list,
                ovs=None,
                rest_port=None,
            )
        )

    def cable(a: str, b: str) -> None:
        nonlocal candidate
        i = candidate
        candidate += 1
        if skip is not None and skip(i):
            return
        pa = next_port[a] = next_port.get(a, 0) + 1
        pb = next_port[b] = next_port.get(b, 0) + 1
        w = 1 if weight is None else weight(i)
        links.append(Link(len(links), Endpoint(a, pa), Endpoint(b, pb), w))

    for plane in range(aggs):
        for s in range(spines_per_plane):
            add(f"spine-{plane}-{s}", Role.SPINE)
    for b in range(borders):
        add(f"border-{b}", Role.BORDER, (IPv4Network("0.0.0.0/0"),))
    for p in range(pods):
        for a in range(aggs):
            add(f"agg-{p}-{a}", Role.AGG)
        for t in range(tors):
            add(f"tor-{p}-{t}", Role.TOR, (IPv4Network(f"10.{p}.{t}.0/24"),), hosts_per_tor)
    for p in range(pods):
        for t in range(tors):
            for a in range(aggs):
                cable(f"tor-{p}-{t}", f"agg-{p}-{a}")
        for a in range(aggs):
            for s in range(spines_per_plane):
                for _ in range(parallel):
                    cable(f"agg-{p}-{a}", f"spine-{a}-{s}")
    for b in range(borders):
        for plane in range(aggs):
            for s in range(spines_per_plane):
                cable(f"border-{b}", f"spine-{plane}-{s}")
    return Fabric(
        name=name,
        source="<tests.fakes.build_clos>",
        switches=tuple(switches),
        links=tuple(links),
        masters=(),
        config_timers=Timers(),
        security=Security(Path("fabric.key"), None),
        distribution=Distribution(),
        lsd=LsdSettings(),
    )


def host_ip(fabric: Fabric, host_name: str) -> IPv4Address:
    return next(h.ip for h in fabric.hosts if h.name == host_name)
