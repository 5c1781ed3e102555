"""client.routeview: computed routes next to a (fake) switch's flows and groups, every difference marked."""

from __future__ import annotations

from ipaddress import IPv4Network

from client.ofmsg import FlowCommand, FlowMod, GroupAction, GroupCommand, GroupMod, GroupType
from client.ofplan import COOKIE_ROUTE, ROUTE_BASE, OfPlanner, prefix_match
from client.routes import RouteComputer
from client.routeview import route_rows
from proto.clos import clos_fabric
from proto.lsd import LinkState
from tests.fakes.oftable import FakeOFTable


def setup():
    f = clos_fabric(pods=2, spines=2, aggs_per_pod=2, tors_per_pod=2, masters=1)
    sw = "tor-1-1"
    rc = RouteComputer(f, sw)
    routes = rc.compute(bytes([LinkState.UP]) * len(f.links))
    planner = OfPlanner(f, sw)
    table = FakeOFTable()
    table.apply_all(planner.set_routes(routes))
    group_of = {s: planner.group_id(s) for s in set(routes.values())}
    return f, sw, routes, planner, table, group_of


def rows_of(f, sw, routes, group_of, table, excluded=(), prefix=None):
    return route_rows(f, sw, routes, group_of, excluded, table.installed_flows(), table.installed_groups(), prefix)


def test_all_ok_with_neighbour_names_and_lookup() -> None:
    f, sw, routes, _planner, table, group_of = setup()
    rows = rows_of(f, sw, routes, group_of, table)
    assert len(rows) == len(routes) and {r["status"] for r in rows} == {"ok"}
    far = next(r for r in rows if r["prefix"] == str(f.switch("tor-2-2").prefixes[0]))
    assert [h["neighbour"] for h in far["computed"]["next_hops"]] == ["agg-1-1", "agg-1-2"]
    assert [(b["neighbour"], b["weight"]) for b in far["installed"]["buckets"]] == [("agg-1-1", 1), ("agg-1-2", 1)]
    assert far["installed"]["group"] == far["computed"]["group"] and far["installed"]["type"] == "select"
    # a lookup: an address inside tor-2-2's subnet gives exactly that route
    addr = IPv4Network(f"{f.switch('tor-2-2').prefixes[0].network_address + 5}/32")
    (one,) = rows_of(f, sw, routes, group_of, table, prefix=addr)
    assert one["prefix"] == far["prefix"]
    assert rows_of(f, sw, routes, group_of, table, prefix=IPv4Network("192.0.2.0/24")) == []


def test_differences_are_marked() -> None:
    f, sw, routes, planner, table, group_of = setup()
    p_far = f.switch("tor-2-2").prefixes[0]
    p_gone = f.switch("tor-1-2").prefixes[0]
    gid = group_of[routes[p_far]]
    # a bucket missing in OVS; a route flow deleted; a stray route flow; a flow to a missing group
    table.apply(GroupMod(GroupCommand.MODIFY, gid, GroupType.SELECT, table.groups[gid].buckets[:1]))
    table.apply(FlowMod(FlowCommand.DELETE_STRICT, ROUTE_BASE + p_gone.prefixlen, prefix_match(p_gone)))
    stray = IPv4Network("10.99.0.0/16")
    table.apply(FlowMod(FlowCommand.ADD, ROUTE_BASE + 16, prefix_match(stray), (GroupAction(gid),),
                        cookie=COOKIE_ROUTE))
    status = {r["prefix"]: r for r in rows_of(f, sw, routes, group_of, table)}
    assert status[str(p_far)]["status"] == "differs" and "not in OVS: port(s) [2]" in status[str(p_far)]["detail"]
    assert status[str(p_gone)]["status"] == "missing" and status[str(p_gone)]["installed"] is None
    assert status[str(stray)]["status"] == "extra" and status[str(stray)]["computed"] is None
    # the same missing bucket is expected while local repair excludes its port
    status = {r["prefix"]: r for r in rows_of(f, sw, routes, group_of, table, excluded={2})}
    assert status[str(p_far)]["status"] == "excluded"
    # OVS not read at all
    rows = route_rows(f, sw, routes, group_of, (), None, None)
    assert {r["status"] for r in rows} == {"unknown"} and all(r["installed"] is None for r in rows)


def test_border_external_default_route_is_understood() -> None:
    """Tester finding 3: on a border providing 0.0.0.0/0 itself, its flow points to the external group
    (cookie COOKIE_EXTERNAL); it was reported "missing" (and `firepath routes` exited 1)."""
    from client.routes import DEFAULT_ROUTE
    from tests.test_border_ofplan import MAC2
    from tests.test_border_ofplan import setup as border_setup

    f, planner, routes = border_setup()
    sw = "border-1-1"
    table = FakeOFTable()
    table.apply_all(planner.set_routes(routes))
    external = {DEFAULT_ROUTE: ((60001, MAC2),)}
    planner.set_external(external)
    table.apply_all(planner.set_routes(routes))
    group_of = {s: gid for s in set(routes.values()) if (gid := planner.group_id(s)) is not None}
    rows = {r["prefix"]: r for r in route_rows(f, sw, routes, group_of, (), table.installed_flows(),
                                                  table.installed_groups(), external=planner.external_routes())}
    default = rows["0.0.0.0/0"]
    assert default["status"] == "ok", default
    assert default["computed"]["external"] is True
    assert [h["neighbour"] for h in default["computed"]["next_hops"]] == ["eBGP 100.65.0.2"]
    assert [b["port"] for b in default["installed"]["buckets"]] == [60001]
    assert {r["status"] for r in rows.values()} == {"ok"}
    # a lookup of an outside address finds it
    (one,) = route_rows(f, sw, routes, group_of, (), table.installed_flows(), table.installed_groups(),
                        IPv4Network("198.51.100.7/32"), external=planner.external_routes())
    assert one["prefix"] == "0.0.0.0/0" and one["status"] == "ok"
    # OVS still routing it into the fabric while the client sends it out: a difference
    stale = FakeOFTable()
    planner2 = border_setup()[1]
    stale.apply_all(planner2.set_routes(routes))
    rows = {r["prefix"]: r for r in route_rows(f, sw, routes, group_of, (), stale.installed_flows(),
                                                  stale.installed_groups(), external=external)}
    assert rows["0.0.0.0/0"]["status"] == "differs", rows["0.0.0.0/0"]
    # the border no longer provides it: the fabric route (towards the other border) is shown, ok
    planner.set_external({})
    table.apply_all(planner.set_routes(routes))
    rows = {r["prefix"]: r for r in route_rows(f, sw, routes, group_of, (), table.installed_flows(),
                                                  table.installed_groups(), external={})}
    assert rows["0.0.0.0/0"]["status"] == "ok" and not rows["0.0.0.0/0"]["computed"].get("external")
