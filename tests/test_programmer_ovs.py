"""The programmer against a real Open vSwitch bridge: an OpenFlow error provoked in the switch (a full
flow table) leaves the version unprogrammed, is counted and retried until everything is installed."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.of.driver import OfDriver
from client.of.events import BarrierDone, Connected, DriverEvent, OfError
from client.programmer import Programmer
from client.replica import LsdApplied
from lab import netns
from lab.ovs import OvsInstance
from proto.clos import clos_fabric
from proto.lsd import LinkState

pytestmark = [pytest.mark.ovs, pytest.mark.timeout(120)]

OF_PORT = 16701


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def bridge() -> Iterator[tuple[OvsInstance, str, str]]:
    tok = secrets.token_hex(2)
    ns = f"clientcore-{tok}-prog"
    ovs = OvsInstance(Path(f"/tmp/clientcore-{tok}-prog"), netns=ns)
    try:
        netns.create_netns(ns)
        ovs.start()
        br = f"fpcc{tok}br"
        ovs.add_bridge(br, 0x11, listen_port=OF_PORT)
        yield ovs, br, ns
    finally:
        ovs.teardown(remove_run_dir=True)
        netns.cleanup(f"clientcore-{tok}")


def test_openflow_error_is_counted_and_retried_until_installed(bridge):
    ovs, br, ns = bridge
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1)
    # A flow table that refuses more than 3 flows: the programmer's first batch fails in part.
    ovs.vsctl("--", "--id=@ft", "create", "Flow_Table", "flow_limit=3", "overflow_policy=refuse",
              "--", "set", "Bridge", br, "flow_tables:0=@ft")
    prog: Programmer | None = None

    def on_event(ev: DriverEvent) -> None:
        assert prog is not None
        if isinstance(ev, BarrierDone | OfError):
            prog.on_driver_event(ev)
        elif isinstance(ev, Connected):
            prog.on_connected()

    driver = OfDriver(f"tcp:127.0.0.1:{OF_PORT}", on_event, netns=ns)
    prog = Programmer(fabric, "leaf-1", driver)
    prog.start()
    driver.start()
    try:
        states = bytes([LinkState.UP]) * len(fabric.links)
        prog.on_lsd(LsdApplied("m1", 1, 7, True, tuple(range(len(fabric.links))), states))
        wait_for(lambda: prog.of_retries >= 2)
        st = prog.status()
        assert st["programmed_version"] == -1           # the barrier came back, but flows are missing
        assert st["of_errors"] >= 2 and "TABLE_FULL" in st["last_of_error"].upper()
        assert len(ovs.dump_flows(br)) == 3
        ovs.vsctl("clear", "Bridge", br, "flow_tables")  # the table has room again
        wait_for(lambda: prog.programmed_version == 7)
        flows = ovs.dump_flows(br)
        assert len(flows) > 3 and len(flows) == len(prog.planner.desired.flows)
    finally:
        driver.stop()
        prog.stop()
