"""Control-plane protection in the OpenFlow plan: ND is punted only from fabric ports, each through its
own meter; meters are planned, reconciled and removed like the rest of the switch state (fake table)."""

from __future__ import annotations

from client.ofmsg import OFPP_CONTROLLER, InstalledMeter, Meter, MeterCommand, MeterMod, Output
from client.ofplan import (
    ETH_TYPE_ND,
    METER_ID_MIN,
    PRIORITY_ND,
    OfPlanner,
    nd_meter_id,
    nd_meter_rate,
)
from client.routes import RouteComputer
from proto.clos import clos_fabric
from tests.fakes.oftable import FakeOFTable

FABRIC = clos_fabric(pods=0, leaves=2, spines=2, masters=1)   # leaf-1: fabric ports 1, 2; host port 100
UP = bytes([1]) * len(FABRIC.links)


def programmed(rate: int = 400) -> tuple[OfPlanner, FakeOFTable]:
    planner = OfPlanner(FABRIC, "leaf-1", nd_meter_pps=rate)
    table = FakeOFTable()
    table.apply_all(planner.set_routes(RouteComputer(FABRIC, "leaf-1").compute(UP)))
    return planner, table


def test_nd_meter_rate_follows_the_nd_interval() -> None:
    assert nd_meter_rate(0.010) == 400
    assert nd_meter_rate(1.0) == 50        # floor for slow ND


def test_nd_punted_only_from_fabric_ports_each_through_its_meter() -> None:
    planner, table = programmed()
    msgs = planner.set_routes(RouteComputer(FABRIC, "leaf-1").compute(UP))
    assert msgs == []                       # the model already matches
    for port in (1, 2):
        flow = table.best_flow({"eth_type": ETH_TYPE_ND, "in_port": port})
        assert flow is not None and flow.priority == PRIORITY_ND
        assert flow.actions == (Meter(nd_meter_id(port)), Output(OFPP_CONTROLLER, 0xFFFF))
    host = table.best_flow({"eth_type": ETH_TYPE_ND, "in_port": 100})
    assert host is not None and host.actions == ()   # a host's ND frames are dropped in the datapath
    assert table.installed_meters() == [
        InstalledMeter(nd_meter_id(1), 400, 100), InstalledMeter(nd_meter_id(2), 400, 100)
    ]


def test_meters_come_first_in_a_plan_and_reconcile_to_nothing() -> None:
    planner = OfPlanner(FABRIC, "leaf-1", nd_meter_pps=400)
    msgs = planner.set_routes(RouteComputer(FABRIC, "leaf-1").compute(UP))
    assert [type(m) for m in msgs[:2]] == [MeterMod, MeterMod]
    table = FakeOFTable()
    table.apply_all(msgs)                   # strict: a flow through a missing meter would raise
    restarted = OfPlanner(FABRIC, "leaf-1", nd_meter_pps=400)
    restarted.set_routes(RouteComputer(FABRIC, "leaf-1").compute(UP))
    assert restarted.reconcile(table.installed_flows(), table.installed_groups(), table.installed_meters()) == []


def test_a_new_rate_modifies_the_meters_only_and_stale_meters_go_last() -> None:
    _, table = programmed(400)
    table.apply(MeterMod(MeterCommand.ADD, METER_ID_MIN + 77, 5, 5))   # ours, left over
    table.apply(MeterMod(MeterCommand.ADD, 7, 5, 5))                   # not ours: untouched
    restarted = OfPlanner(FABRIC, "leaf-1", nd_meter_pps=100)
    restarted.set_routes(RouteComputer(FABRIC, "leaf-1").compute(UP))
    msgs = restarted.reconcile(table.installed_flows(), table.installed_groups(), table.installed_meters())
    assert msgs[:2] == [MeterMod(MeterCommand.MODIFY, nd_meter_id(p), 100, 25) for p in (1, 2)]
    assert msgs[-2] == MeterMod(MeterCommand.DELETE, METER_ID_MIN + 77)
    assert len(msgs) == 4                   # two modifies, one delete, the barrier: no flow touched
    table.apply_all(msgs)
    assert {m.meter_id for m in table.installed_meters()} == {7, nd_meter_id(1), nd_meter_id(2)}


def test_incremental_plans_never_touch_meters() -> None:
    planner, table = programmed()
    rc = RouteComputer(FABRIC, "leaf-1")
    rc.compute(UP)
    down = bytearray(UP)
    down[FABRIC.link_at("leaf-1", 1).index] = 0
    msgs = planner.update(rc.update(bytes(down), [FABRIC.link_at("leaf-1", 1).index]))
    assert msgs and not any(isinstance(m, MeterMod) for m in msgs)
