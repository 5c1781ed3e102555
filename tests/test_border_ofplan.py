"""The border's data path in the OpenFlow plan (issue #13): the own IP stack's plumbing to the external port,
external routes overriding the fabric route with an ECMP group over the peers, local repair."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from client.ofmsg import OFPP_LOCAL, GroupAction, Output, SetField
from client.ofplan import COOKIE_EXTERNAL, OfPlanner, PlanError
from client.routes import DEFAULT_ROUTE, RouteComputer
from proto.clos import EXTERNAL_PORT, ClosParams, generate_clos_yaml
from proto.config import parse_fabric

MAC1, MAC2 = "02:aa:00:00:00:01", "02:aa:00:00:00:02"


def setup():  # noqa: ANN201 - test helper
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True))
    text = text.replace("      peers:\n", "      peers:\n        - {address: 100.65.0.2, peer_as: 65000, port: 60001, "
                        "local_address: 100.65.0.1/30}\n", 1)
    f = parse_fabric(text, source="<t>")
    planner = OfPlanner(f, "border-1-1")
    rc = RouteComputer(f, "border-1-1")
    return f, planner, rc.compute(bytes([1]) * f.lsd_size)


def default_flow(planner: OfPlanner):  # noqa: ANN201
    return next(fl for fl in planner.desired.flows.values() if fl.priority == 1000 and len(fl.match) == 1)


def test_local_ip_stack_reaches_each_peer_and_nothing_drops_the_default() -> None:
    _f, planner, routes = setup()
    flows = planner.desired.flows.values()
    ext = [fl for fl in flows if fl.cookie == COOKIE_EXTERNAL]
    outs = {(dict(fl.match).get("in_port"), fl.actions) for fl in ext}
    assert (EXTERNAL_PORT, (Output(OFPP_LOCAL),)) in outs and (OFPP_LOCAL, (Output(EXTERNAL_PORT),)) in outs
    assert (60001, (Output(OFPP_LOCAL),)) in outs and (OFPP_LOCAL, (Output(60001),)) in outs
    assert len(ext) == 8        # ARP + IP, each way, per peer
    # 0.0.0.0/0 is not an "own prefix" of a bgp border: no drop flow; the fabric route (other border) is used
    planner.set_routes(routes)
    assert isinstance(default_flow(planner).actions[0], GroupAction) and DEFAULT_ROUTE in routes


def test_external_route_overrides_the_fabric_route_then_gives_way() -> None:
    _f, planner, routes = setup()
    planner.set_routes(routes)
    fabric_gid = default_flow(planner).actions[0].group_id
    planner.set_external({DEFAULT_ROUTE: [(60001, MAC2), (EXTERNAL_PORT, MAC1)]})
    msgs = planner.set_routes(routes)
    flow = default_flow(planner)
    gid = flow.actions[0].group_id
    assert flow.cookie == COOKIE_EXTERNAL and gid != fabric_gid and msgs
    group = planner.desired.groups[gid]
    assert [b.watch_port for b in group.buckets] == [EXTERNAL_PORT, 60001]
    assert group.buckets[0].actions[1] == SetField("eth_dst", MAC1)
    # local repair: an external port going down leaves the group at once
    planner.local_port_down(EXTERNAL_PORT)
    assert [b.watch_port for b in planner.desired.groups[gid].buckets] == [60001]
    planner.local_port_up(EXTERNAL_PORT)
    # withdrawn: back to the fabric route, the external group deleted
    planner.set_external({})
    planner.set_routes(routes)
    assert default_flow(planner).cookie != COOKIE_EXTERNAL and gid not in planner.desired.groups


def test_external_route_must_use_a_peer_port() -> None:
    _f, planner, _routes = setup()
    with pytest.raises(PlanError, match="not eBGP peer ports"):
        planner.set_external({IPv4Network("0.0.0.0/0"): [(1, MAC1)]})
