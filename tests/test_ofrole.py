"""client.ofrole: the pure decision that another firepath client took the switch over (fake events)."""

from __future__ import annotations

import time

from client import ofmsg
from client.ofmsg import Role
from client.ofrole import (
    OFPBRC_IS_SLAVE,
    OFPET_BAD_REQUEST,
    OFPET_ROLE_REQUEST_FAILED,
    OFPRRFC_STALE,
    RoleGuard,
)


def test_master_reply_keeps_the_switch() -> None:
    g = RoleGuard("s1", 100)
    assert g.request() == Role.MASTER
    assert g.on_role_reply(Role.MASTER, 100) is None
    assert g.role == Role.MASTER and g.taken_over is None
    # errors that say nothing about roles decide nothing
    assert g.on_error(OFPET_BAD_REQUEST, 1) is None
    assert g.on_error(5, 0) is None
    assert g.taken_over is None


def test_role_status_demotion_is_a_takeover_with_both_generations() -> None:
    g = RoleGuard("s1", 100)
    g.on_role_reply(Role.MASTER, 100)
    d = g.on_role_status(Role.SLAVE, 200)
    assert d is not None and (d.switch, d.ours, d.theirs, d.cause) == ("s1", 100, 200, "role_status")
    msg = d.message()
    assert "s1" in msg and "another firepath client took over" in msg and "100" in msg and "200" in msg
    # decided once: later evidence returns nothing new
    assert g.on_error(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE) is None
    assert g.on_role_status(Role.SLAVE, 300) is None
    assert g.taken_over is d and g.role == Role.SLAVE
    g.on_connected()
    assert g.role == Role.SLAVE


def test_stale_generation_means_a_newer_process_owns_the_switch() -> None:
    g = RoleGuard("leaf1", 100)
    d = g.on_error(OFPET_ROLE_REQUEST_FAILED, OFPRRFC_STALE)
    assert d is not None and d.cause == "stale_generation" and d.theirs is None
    assert "unknown" in d.message()


def test_is_slave_error_is_a_takeover() -> None:
    g = RoleGuard("leaf1", 100)
    d = g.on_error(OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE)
    assert d is not None and d.cause == "is_slave"


def test_non_slave_status_and_reconnect() -> None:
    g = RoleGuard("s1", 100)
    assert g.on_role_status(Role.MASTER, 100) is None
    g.on_role_reply(Role.MASTER, 100)
    g.on_connected()
    assert g.role is None and g.taken_over is None
    assert g.on_role_reply(Role.MASTER, 100) is None and g.role == Role.MASTER


def test_role_request_is_translated_to_osken() -> None:
    from types import SimpleNamespace

    from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

    from client.of import translate

    dp = SimpleNamespace(ofproto=ofproto_v1_5, ofproto_parser=ofproto_v1_5_parser, id=1)
    msg = translate.to_osken(ofmsg.RoleRequest(Role.MASTER, 1_700_000_000_000_000_000), dp)
    assert type(msg).__name__ == "OFPRoleRequest"
    assert msg.role == ofproto_v1_5.OFPCR_ROLE_MASTER and msg.generation_id == 1_700_000_000_000_000_000
    first = translate.setup_messages(dp, ofmsg.RoleRequest(Role.MASTER, 7))
    assert type(first[0]).__name__ == "OFPRoleRequest" and type(first[-1]).__name__ == "OFPPortDescStatsRequest"


def test_daemon_on_takeover_says_it_once_stops_nd_and_calls_on_fatal() -> None:
    from client.of.events import Connected, OfError, RoleChanged
    from tests.test_client_daemon import leaf_daemon, wait_for

    d, drv = leaf_daemon()
    fatal: list[str] = []
    d.on_fatal = fatal.append
    d.start()
    try:
        drv.connected = True
        drv.emit(Connected(dpid=1, ports={1: True, 2: True}))
        drv.emit(RoleChanged(Role.MASTER, d.generation_id, "reply"))
        wait_for(lambda: d.core.counters["nd_sent"] > 0)
        assert not fatal
        drv.emit(RoleChanged(Role.SLAVE, d.generation_id + 1, "status"))
        drv.emit(OfError(None, OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, "is slave"))
        assert len(fatal) == 1 and str(d.generation_id + 1) in fatal[0]
        assert d.core.counters["taken_over"] == 1
        time.sleep(0.1)
        sent = d.core.counters["nd_sent"]
        time.sleep(0.5)
        assert d.core.counters["nd_sent"] == sent      # no more ND: no fight
    finally:
        d.stop(restart_hold=1.0)
