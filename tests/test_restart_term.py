"""Tester bb40 F18: a restarted replica shows its durable term (REST header, `firepath_master_term`) from
its start, not 0 until it hears a leader."""

from __future__ import annotations

from controller.actions import RoleChanged
from controller.core import MasterCore, Role
from controller.node import MasterNode
from controller.roles import FmrpDriver
from proto.clos import clos_fabric


def test_an_fmrp_replica_starts_inactive_in_its_durable_term() -> None:
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=3)
    core = MasterCore(fabric, "m1")
    step = MasterNode(core, FmrpDriver(core, 13)).start(0.0)
    roles = [a for a in step.actions if isinstance(a, RoleChanged)]
    assert core.role is Role.INACTIVE and core.term == 13
    assert roles and roles[0].term == 13          # the server's log line and term gauge follow this event
