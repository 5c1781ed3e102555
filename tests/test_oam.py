"""Link OAM verdicts (client.oam) and how the port core folds them into the usable bit (pure, fake clock)."""

from __future__ import annotations

import pytest

from client.nd import NdState, SendNd
from client.oam import (
    CFM_SILENT_RESTART_EVERY,
    ConfigureOam,
    OamChanged,
    OamObservation,
    OamPorts,
    OamState,
    decode_mpid,
    mpid,
)
from client.ports import PortChanged, PortTable
from proto.clos import clos_fabric
from proto.config import Endpoint
from tests.fakes.clock import FakeClock


@pytest.fixture(scope="module")
def fabric():
    # leaf-1 (id 3):1 - spine-1 (id 1):1, leaf-1:2 - spine-2 (id 2):1, leaf-2 (id 4):1 - spine-1:2, ...
    return clos_fabric(pods=0, leaves=2, spines=2, masters=1)


def test_mpid_encodes_switch_id_and_port_and_round_trips() -> None:
    assert mpid(3, 1) == 3 << 16 | 1
    assert decode_mpid(mpid(2**31 - 1, 65279)) == (2**31 - 1, 65279)
    for bad in ((0, 1), (1, 0), (2**31, 1), (1, 2**16)):
        with pytest.raises(ValueError):
            mpid(*bad)


def _ids(fabric, name: str, port: int) -> tuple[int, int]:
    peer = fabric.peer_of(name, port)
    return mpid(fabric.switch(name).id, port), mpid(fabric.switch(peer.switch).id, peer.port)


def test_start_asks_for_cfm_on_every_fabric_port_with_its_mpid(fabric) -> None:
    oam = OamPorts(fabric, "leaf-1")
    (action,) = oam.start(0.0)
    assert isinstance(action, ConfigureOam)
    assert action.mpids == {p: _ids(fabric, "leaf-1", p)[0] for p in fabric.fabric_ports("leaf-1")}
    assert action.interval_ms == round(fabric.timers.oam_interval * 1000) and action.disable == ()
    assert all(oam.state(p) is OamState.PENDING and not oam.oam_ok(p) and oam.uses_oam(p)
               for p in fabric.fabric_ports("leaf-1"))


def test_verdicts_follow_the_interface_row(fabric) -> None:
    oam = OamPorts(fabric, "leaf-1")
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)

    def see(**kw) -> list:
        return oam.on_observation(OamObservation(1, **{"mpid": local, "fault": False, **kw}), 0.1)

    assert see(mpid=None, fault=None) == []                                 # not applied yet: PENDING
    assert see(remote_mpids=()) == [OamChanged(1, OamState.FAULT)]         # CFM runs, nobody heard yet
    assert see(remote_mpids=(remote,)) == [OamChanged(1, OamState.UP)]
    assert oam.oam_ok(1)
    assert see(fault=True, remote_mpids=(remote,)) == [OamChanged(1, OamState.FAULT)]   # silent drop / RDI
    assert not oam.oam_ok(1)
    assert see(remote_mpids=(remote,), bfd_forwarding=False) == []          # still FAULT: BFD says no
    assert see(remote_mpids=(remote,), bfd_forwarding=True) == [OamChanged(1, OamState.UP)]
    # spine-2:1 (a real switch, wrong port of the fabric) answers on leaf-1:1: miscabled, named
    wrong = mpid(fabric.switch("spine-2").id, 1)
    assert see(remote_mpids=(wrong,)) == [OamChanged(1, OamState.MISCABLED, Endpoint("spine-2", 1))]
    assert see(remote_mpids=(remote, mpid(999, 7))) == [OamChanged(1, OamState.MISCABLED, Endpoint("id999", 7))]
    assert not oam.oam_ok(1)
    assert see(remote_mpids=(remote,)) == [OamChanged(1, OamState.UP)]


def test_no_status_in_time_or_a_refusal_falls_back_to_software_nd(fabric) -> None:
    oam = OamPorts(fabric, "leaf-1", setup_timeout=2.0)
    oam.start(10.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    oam.on_observation(OamObservation(1, local, False, (remote,)), 10.5)   # port 1 works
    assert oam.next_deadline() == 12.0                                      # port 2 must show a status
    assert oam.tick(11.9) == []
    out = oam.tick(12.0)
    assert [type(a) for a in out] == [OamChanged, ConfigureOam]
    assert out[0].port == 2 and out[0].state is OamState.FAILED and "no CFM status" in out[0].reason
    assert out[1].mpids == {1: local} and out[1].disable == (2,)          # CFM off where it failed
    assert not oam.uses_oam(2) and oam.oam_ok(2)          # ND heartbeat is now the liveness check
    assert oam.failures == 1
    # sticky: a late status does not flip the port back
    assert oam.on_observation(OamObservation(2, _ids(fabric, "leaf-1", 2)[0], False, ()), 13.0) == []
    out = oam.on_failed(None, "OVSDB refused the CFM config: error", 13.0)
    assert [(a.port, a.state) for a in out if isinstance(a, OamChanged)] == [(1, OamState.FAILED)]
    assert oam.failures == 2


def test_lost_config_is_pending_again_and_must_come_back(fabric) -> None:
    oam = OamPorts(fabric, "leaf-1", setup_timeout=1.0)
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    oam.on_observation(OamObservation(1, local, False, (remote,)), 0.1)
    assert oam.on_observation(OamObservation(1, None, None), 5.0) == [OamChanged(1, OamState.PENDING)]
    assert not oam.oam_ok(1) and oam.next_deadline() == pytest.approx(1.0)   # port 2 still pending since 0
    oam.on_observation(OamObservation(2, _ids(fabric, "leaf-1", 2)[0], False, (_ids(fabric, "leaf-1", 2)[1],)), 5.0)
    assert oam.next_deadline() == 6.0
    assert [a.state for a in oam.tick(6.0) if isinstance(a, OamChanged)] == [OamState.FAILED]


def test_a_carrier_down_long_enough_gets_a_fresh_cfm_once_nd_identity_is_back(fabric) -> None:
    """After a carrier loss both ends' CFM flag RDI until they hear each other, which faults a whole extra
    fault interval (OVS lib/cfm.c): a port down for `restart_after` has CFM removed, and configured afresh
    when the carrier is back and ND identity two-way. That fresh CFM counts as UP until its first verdict
    (ND just proved the link two-way); from then on CFM alone speaks."""
    oam = OamPorts(fabric, "leaf-1", setup_timeout=2.0)
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    other = _ids(fabric, "leaf-1", 2)
    for port, (lo, re) in ((1, (local, remote)), (2, other)):
        assert oam.set_carrier(port, True, 0.0) == []          # the first carrier seen changes nothing
        oam.on_observation(OamObservation(port, lo, False, (re,)), 0.1)
    assert oam.state(1) is OamState.UP and oam.restart_after >= 2 * 3.5 * fabric.timers.oam_interval
    # a blip shorter than restart_after: CFM kept as it is, nothing for OVSDB
    assert oam.set_carrier(1, False, 1.0) == []
    assert oam.next_deadline() == pytest.approx(1.0 + oam.restart_after)
    assert oam.set_carrier(1, True, 1.05) == [] and oam.next_deadline() == float("inf")
    assert oam.set_identity(1, True, 1.06) == []            # CFM was never removed: nothing to restart
    assert oam.tick(1.0 + oam.restart_after) == [] and oam.restarts == 0
    # down for longer: CFM removed from that port alone, the port FAULT (not PENDING: no setup timeout)
    assert oam.set_carrier(1, False, 2.0) == []
    assert oam.tick(2.0 + oam.restart_after - 0.001) == []
    out = oam.tick(2.0 + oam.restart_after)
    assert out == [OamChanged(1, OamState.FAULT), ConfigureOam({2: other[0]}, oam.interval_ms, (1,))]
    assert oam.on_observation(OamObservation(1, None, None), 3.0) == []
    assert oam.next_deadline() == float("inf") and oam.tick(60.0) == [] and oam.state(1) is OamState.FAULT
    assert oam.set_identity(1, True, 60.5) == []            # no carrier: nothing to configure
    # the carrier returns: CFM waits for ND identity, then is configured again
    assert oam.set_carrier(1, True, 61.0) == []
    assert oam.next_deadline() == pytest.approx(61.0 + oam.readd_after)
    # UP on ND's two-way identity at once: not after OVSDB applied the fresh CFM (a bridge reconfiguration)
    assert oam.set_identity(1, True, 61.01) == [OamChanged(1, OamState.UP),
                                                ConfigureOam({1: local, 2: other[0]}, oam.interval_ms, ())]
    assert oam.restarts == 1 and oam.oam_ok(1)
    assert oam.next_deadline() == pytest.approx(61.01 + oam.boot_grace)
    assert oam.on_observation(OamObservation(1, None, None), 61.011) == []    # the removed CFM's row: stale
    assert oam.on_observation(OamObservation(1, local, None), 61.012) == []   # ours, no status yet: wait
    # the fresh CFM, before its first verdict: no fault, nobody heard yet -- still UP, ND having just proved it
    assert oam.on_observation(OamObservation(1, local, False, ()), 61.013) == []
    assert oam.oam_ok(1) and oam.next_deadline() == float("inf")
    assert oam.on_observation(OamObservation(1, local, False, (remote,)), 61.04) == []   # the verdict: UP
    # from now on "no fault, nobody heard" is no evidence
    assert oam.on_observation(OamObservation(1, local, False, ()), 62.0) == [OamChanged(1, OamState.FAULT)]
    # a first verdict that is a fault (the peer's CFM came too late) takes the port out at once
    oam.set_carrier(1, False, 70.0)
    oam.tick(70.0 + oam.restart_after)
    oam.set_carrier(1, True, 71.0)
    assert oam.set_identity(1, True, 71.01)[0] == OamChanged(1, OamState.UP)
    assert oam.on_observation(OamObservation(1, local, False, ()), 71.02) == []
    assert oam.on_observation(OamObservation(1, local, True, ()), 71.04) == [OamChanged(1, OamState.FAULT)]
    assert oam.on_observation(OamObservation(1, local, False, ()), 71.05) == []          # still FAULT
    assert oam.restarts == 2


def test_a_fresh_cfm_that_does_not_show_in_time_takes_the_port_out_until_it_does(fabric) -> None:
    """UP on ND's identity lasts `boot_grace` at most without OVSDB showing the new CFM: then PENDING (out of
    use, the setup timeout running), and the late CFM must hear the peer before the port is UP again."""
    oam = OamPorts(fabric, "leaf-1", setup_timeout=2.0, boot_grace=0.25)
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    local2, remote2 = _ids(fabric, "leaf-1", 2)
    oam.set_carrier(1, True, 0.0)
    oam.on_observation(OamObservation(1, local, False, (remote,)), 0.1)
    oam.on_observation(OamObservation(2, local2, False, (remote2,)), 0.1)
    oam.set_carrier(1, False, 1.0)
    oam.tick(1.0 + oam.restart_after)
    oam.set_carrier(1, True, 5.0)
    assert oam.set_identity(1, True, 5.01)[0] == OamChanged(1, OamState.UP)
    assert oam.tick(5.25) == [] and oam.state(1) is OamState.UP
    assert oam.on_observation(OamObservation(1, None, None), 5.2) == []        # stale rows change nothing
    out = oam.tick(5.26)
    assert out[0] == OamChanged(1, OamState.PENDING) and not oam.oam_ok(1)
    assert oam.next_deadline() == pytest.approx(5.26 + 2.0)                    # then software ND
    # it shows late: no longer trusted before its verdict
    assert oam.on_observation(OamObservation(1, local, False, ()), 5.5) == [OamChanged(1, OamState.FAULT)]
    assert oam.on_observation(OamObservation(1, local, False, (remote,)), 5.53) == [OamChanged(1, OamState.UP)]
    # a carrier lost while UP on ND's word ends the grace: no PENDING later from it
    oam.set_carrier(1, False, 6.0)
    oam.tick(6.0 + oam.restart_after)
    oam.set_carrier(1, True, 7.0)
    oam.set_identity(1, True, 7.01)
    oam.set_carrier(1, False, 7.05)
    assert all(not isinstance(a, OamChanged) or a.state is not OamState.PENDING for a in oam.tick(7.3))


def test_without_nd_identity_cfm_comes_back_untrusted_and_fallen_back_ports_stay_on_nd(fabric) -> None:
    oam = OamPorts(fabric, "leaf-1", setup_timeout=2.0)
    oam.start(0.0)
    local2, remote2 = _ids(fabric, "leaf-1", 2)
    oam.set_carrier(2, False, 0.0)                # port-desc at connect: port 2 has no carrier
    out = oam.tick(oam.restart_after)
    assert out[-1] == ConfigureOam({1: _ids(fabric, "leaf-1", 1)[0]}, oam.interval_ms, (2,))
    out = oam.tick(5.0)                            # port 1 never showed a status: software ND
    assert [(a.port, a.state) for a in out[:-1]] == [(1, OamState.FAILED)]
    assert out[-1] == ConfigureOam({}, oam.interval_ms, (1, 2))
    assert oam.set_carrier(1, False, 6.0) == [] and oam.tick(6.0 + oam.restart_after) == []
    assert oam.set_carrier(1, True, 7.0) == [] and oam.set_identity(1, True, 7.0) == []   # stays on ND
    # port 2's carrier returns, its peer's client is not running (no ND): CFM after readd_after anyway
    assert oam.set_carrier(2, True, 9.0) == []
    assert oam.tick(9.0 + oam.readd_after - 0.001) == []
    assert oam.tick(9.0 + oam.readd_after) == [ConfigureOam({2: local2}, oam.interval_ms, (1,))]
    assert oam.on_observation(OamObservation(2, local2, False, ()), 10.5) == []       # untrusted: still FAULT
    assert oam.state(2) is OamState.FAULT
    assert oam.on_observation(OamObservation(2, local2, False, (remote2,)), 10.6) == [OamChanged(2, OamState.UP)]


def test_cfm_back_without_nd_starts_afresh_too_when_nd_identity_comes(fabric) -> None:
    """Tester finding: the peer's client paused past readd_after; our CFM came back untrusted and, hearing
    nobody, sent RDI; the peer's fresh CFM, configured when ND became two-way, heard that RDI in its first
    fault interval: a flap every time. Now ours starts afresh as well (removed, then configured, trusted)."""
    oam = OamPorts(fabric, "leaf-1")
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    local2, remote2 = _ids(fabric, "leaf-1", 2)
    oam.set_carrier(2, True, 0.0)
    oam.on_observation(OamObservation(2, local2, False, (remote2,)), 0.1)
    oam.set_carrier(1, False, 1.0)
    oam.tick(1.0 + oam.restart_after)
    oam.set_carrier(1, True, 2.0)
    assert oam.tick(2.0 + oam.readd_after) == [ConfigureOam({1: local, 2: local2}, oam.interval_ms, ())]
    assert oam.on_observation(OamObservation(1, local, True, ()), 3.1) == []     # hears nobody: FAULT
    out = oam.set_identity(1, True, 3.5)                                       # the peer's client is back
    assert out == [ConfigureOam({2: local2}, oam.interval_ms, (1,))]           # removed first
    assert oam.set_identity(1, True, 3.501) == []
    assert oam.on_observation(OamObservation(1, local, True, ()), 3.502) == []  # not gone yet
    # gone: configured afresh, trusted like any fresh CFM after ND identity
    assert oam.on_observation(OamObservation(1, None, None), 3.51) == [
        OamChanged(1, OamState.UP), ConfigureOam({1: local, 2: local2}, oam.interval_ms, ())]
    assert oam.on_observation(OamObservation(1, local, False, ()), 3.52) == []
    assert oam.restarts == 2              # configured again twice: untrusted, then afresh
    # an untrusted CFM that heard the peer on its own is left alone
    oam.set_carrier(1, False, 5.0)
    oam.tick(5.0 + oam.restart_after)
    oam.set_carrier(1, True, 6.0)
    oam.tick(6.0 + oam.readd_after)
    oam.on_observation(OamObservation(1, local, False, (remote,)), 7.1)
    assert oam.state(1) is OamState.UP and oam.set_identity(1, True, 7.2) == []
    # OVSDB never shows the removal: configured again (untrusted) after readd_after
    oam.set_carrier(1, False, 8.0)
    oam.tick(8.0 + oam.restart_after)
    oam.set_carrier(1, True, 9.0)
    oam.tick(9.0 + oam.readd_after)
    oam.on_observation(OamObservation(1, local, True, ()), 10.1)
    assert oam.set_identity(1, True, 10.2)[0].disable == (1,)
    assert oam.tick(10.2 + oam.readd_after) == [ConfigureOam({1: local, 2: local2}, oam.interval_ms, ())]


def test_a_client_that_starts_with_a_carrier_down_removes_that_ports_cfm(fabric) -> None:
    """Tester finding: a restarted client never removed the CFM of a port whose carrier was already down
    (the port table starts with the PHY down, so no change was seen), and that port's repair took the slow
    path. Every carrier report reaches OAM, the first one too."""
    clock = FakeClock(0.0)
    table = PortTable(fabric, "leaf-1", now=clock.now)
    table.start_oam(clock.now)
    table.on_port_desc({1: False, 2: True}, clock.now)
    clock.advance(table.oam.restart_after)
    out = table.tick(clock.now)
    assert [a.disable for a in out if isinstance(a, ConfigureOam)] == [(1,)]


def test_a_fault_at_bring_up_is_no_silent_failure(fabric) -> None:
    """PENDING -> FAULT (our CFM runs, the peer's is not there yet) at bring-up: CFM is left alone however
    long it takes; only a working link's fault (UP -> FAULT) with the carrier up restarts it."""
    oam = OamPorts(fabric, "leaf-1")
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    oam.set_carrier(1, True, 0.0)
    assert oam.on_observation(OamObservation(1, local, True, ()), 0.1) == [OamChanged(1, OamState.FAULT)]
    assert oam.next_deadline() > 10.0 and oam.tick(10.0) == [] and oam.take_silent_stops() == []
    oam.on_observation(OamObservation(1, local, False, (remote,)), 11.0)
    oam.on_observation(OamObservation(1, local, True, ()), 12.0)              # a silent failure
    assert oam.next_deadline() == pytest.approx(12.0 + oam.restart_after)
    assert oam.tick(12.0 + oam.restart_after)[-1].disable == (1,) and oam.take_silent_stops() == [1]


def test_silent_failure_restarts_are_budgeted_so_two_ends_cannot_keep_restarting_each_other(fabric) -> None:
    """A silent-failure restart faults the peer's CFM until the fresh one speaks; if that takes longer than
    restart_after the peer restarts in turn, which faults ours again. Each port restarts at most once per
    `silent_every`: a second long fault inside it is left to CFM (counted), one after it restarts again."""
    oam = OamPorts(fabric, "leaf-1")
    oam.start(0.0)
    local, remote = _ids(fabric, "leaf-1", 1)
    oam.set_carrier(1, True, 0.0)
    assert oam.silent_every >= CFM_SILENT_RESTART_EVERY

    def fault_for_restart_after(t: float) -> list:
        oam.on_observation(OamObservation(1, local, False, (remote,)), t)          # UP
        oam.on_observation(OamObservation(1, local, True, ()), t + 0.01)           # silent: FAULT
        return oam.tick(t + 0.01 + oam.restart_after)

    out = fault_for_restart_after(1.0)
    assert out[-1].disable == (1,) and oam.take_silent_stops() == [1] and oam.silent_restarts == 1
    # ND two-way again: the fresh CFM, which the monitor shows as ours, then the peer's fault faults it
    assert oam.set_identity(1, True, 2.0)[-1].disable == ()
    out = fault_for_restart_after(2.1)
    assert all(a.disable == () for a in out if isinstance(a, ConfigureOam))        # CFM left as it is
    assert oam.take_silent_stops() == [] and oam.silent_restarts == 1 and oam.silent_skipped == 1
    assert oam.state(1) is OamState.FAULT
    out = fault_for_restart_after(1.0 + oam.silent_every + 0.1)                      # budget renewed
    assert out[-1].disable == (1,) and oam.take_silent_stops() == [1] and oam.silent_restarts == 2


def test_every_port_faulted_at_once_is_a_stall_not_silent_links_and_keeps_its_cfm(fabric) -> None:
    """All (more than half) of a switch's ports faulted together with the carrier up is its ovs-vswitchd or
    CPU stalling: no CFM rewrite (each one reconfigures the bridge on top of the stall). One of the two
    faulted alone is a silent link and restarts."""
    oam = OamPorts(fabric, "leaf-1")
    oam.start(0.0)
    ids = {port: _ids(fabric, "leaf-1", port) for port in (1, 2)}
    for port, (local, remote) in ids.items():
        oam.set_carrier(port, True, 0.0)
        oam.on_observation(OamObservation(port, local, False, (remote,)), 1.0)
        assert oam.state(port) is OamState.UP
    for port, (local, _remote) in ids.items():
        oam.on_observation(OamObservation(port, local, True, ()), 2.0)
    out = oam.tick(2.0 + oam.restart_after)
    assert all(a.disable == () for a in out if isinstance(a, ConfigureOam))
    assert oam.take_silent_stops() == [] and oam.silent_restarts == 0 and oam.silent_skipped == 2
    # the stall ends, then port 2's link goes silent on its own: a silent failure, restarted
    for port, (local, remote) in ids.items():
        oam.on_observation(OamObservation(port, local, False, (remote,)), 3.0)
    oam.on_observation(OamObservation(2, ids[2][0], True, ()), 4.0)
    assert oam.tick(4.0 + oam.restart_after)[-1].disable == (2,) and oam.take_silent_stops() == [2]


def test_port_table_repairs_a_long_carrier_loss_at_nd_speed(fabric) -> None:
    """Both ends: carrier down, CFM removed; carrier up, ND two-way, each end asks for CFM again and its
    booting CFM makes the port usable before the first CFM verdict."""
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    assert p.usable("leaf-1") and p.usable("spine-1")
    for sw in ("leaf-1", "spine-1"):
        p.phy(sw, 1, False)
    p.run(p.tables["leaf-1"].oam.restart_after)
    assert [c.disable for sw, c in p.configs[-2:]] == [(1,), (1,)]
    p.configs.clear()
    for sw in ("leaf-1", "spine-1"):
        p.phy(sw, 1, True)                     # carrier back: ND probes at once, CFM not yet
    assert all(1 in c.mpids for _, c in p.configs) and {sw for sw, _ in p.configs} == {"leaf-1", "spine-1"}
    # usable on ND's two-way identity, while OVSDB applies the fresh CFM
    assert p.usable("leaf-1") and p.usable("spine-1")
    for sw in ("leaf-1", "spine-1"):
        p.cfm(sw, 1, remote=())                # the fresh CFM, before its first verdict
    p.run(2 * p.tables["leaf-1"].oam.boot_grace)
    assert p.usable("leaf-1") and p.usable("spine-1")
    assert p.tables["leaf-1"].oam.restarts == 1


def test_liveness_nd_mode_has_no_oam(fabric) -> None:
    nd_fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    oam = OamPorts(nd_fabric, "leaf-1")
    assert oam.start(0.0) == []
    assert all(oam.state(p) is OamState.OFF and oam.oam_ok(p) and not oam.uses_oam(p) for p in (1, 2))
    table = PortTable(nd_fabric, "leaf-1")
    assert table.nd.fast(1) and table.nd.fast(2)


# ---------------------------------------------------------------------------------------------- port core


class Pair:
    """leaf-1 and spine-1 port tables on the cable leaf-1:1 <-> spine-1:1 (zero latency), OAM mode."""

    def __init__(self, fabric, clock: FakeClock, cable: dict | None = None) -> None:
        self.fabric = fabric
        self.clock = clock
        self.tables = {n: PortTable(fabric, n, now=clock.now) for n in ("leaf-1", "spine-1")}
        self.cable = cable or {("leaf-1", 1): ("spine-1", 1), ("spine-1", 1): ("leaf-1", 1)}
        self.drop: set[tuple[str, int]] = set()       # (switch, port) whose transmissions are lost
        self.changes: list[tuple[float, str, PortChanged]] = []
        self.sent: list[tuple[float, str, int]] = []
        self.configs: list[tuple[str, ConfigureOam]] = []
        for name, table in self.tables.items():
            self.handle(name, table.start_oam(clock.now))

    def handle(self, switch: str, actions) -> None:
        pending = [(switch, a) for a in actions]
        for _ in range(10_000):
            if not pending:
                return
            sw, action = pending.pop(0)
            if isinstance(action, PortChanged):
                self.changes.append((self.clock.now, sw, action))
            elif isinstance(action, ConfigureOam):
                self.configs.append((sw, action))
            elif isinstance(action, SendNd):
                self.sent.append((self.clock.now, sw, action.port))
                far = self.cable.get((sw, action.port))
                if far is not None and (sw, action.port) not in self.drop:
                    more = self.tables[far[0]].on_nd_frame(far[1], sw, action.frame, self.clock.now)
                    pending.extend((far[0], a) for a in more)
        raise AssertionError("does not settle")

    def phy(self, switch: str, port: int, live: bool, carrier: bool | None = None) -> None:
        self.handle(switch, self.tables[switch].on_phy(port, live, self.clock.now, carrier))

    def cfm(self, switch: str, port: int, fault: bool = False, remote: tuple[int, ...] | None = None) -> None:
        """What ovs-vswitchd would report for switch:port given the cable."""
        local = mpid(self.fabric.switch(switch).id, port)
        if remote is None:
            far = self.cable.get((switch, port))
            remote = () if far is None else (mpid(self.fabric.switch(far[0]).id, far[1]),)
        obs = OamObservation(port, local, fault, remote)
        self.handle(switch, self.tables[switch].on_oam(obs, self.clock.now))

    def run(self, seconds: float) -> None:
        until = self.clock.now + seconds
        for _ in range(1_000_000):
            deadline = min(t.next_deadline() for t in self.tables.values())
            if deadline > until:
                self.clock.now = until
                return
            self.clock.now = max(deadline, self.clock.now)
            for name, t in self.tables.items():
                self.handle(name, t.tick(self.clock.now))
        raise AssertionError("too many ticks")

    def usable(self, switch: str = "leaf-1", port: int = 1) -> bool:
        return self.tables[switch].usable(port)


def _up(p: Pair) -> None:
    for sw in ("leaf-1", "spine-1"):
        p.cfm(sw, 1)
        p.phy(sw, 1, True)
    p.run(0.01)


def test_usable_needs_phy_oam_and_nd_identity(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    p.phy("leaf-1", 1, True)
    p.phy("spine-1", 1, True)
    p.run(0.01)
    t = p.tables["leaf-1"]
    assert t.view(1, clock.now).nd is NdState.UP and not p.usable()      # ND alone is not enough: OAM pending
    p.cfm("leaf-1", 1)
    assert p.usable() and t.view(1, clock.now).oam is OamState.UP and not t.view(1, clock.now).nd_fast


def test_identity_nd_is_slow_and_goes_out_at_once_on_every_oam_change(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    p.sent.clear()
    p.run(5.0)
    leaf = [t for t, sw, port in p.sent if sw == "leaf-1" and port == 1]
    assert 4 <= len(leaf) <= 6                               # 1 s identity cadence, not 10 ms heartbeats
    assert p.usable()
    p.sent.clear()
    p.cfm("leaf-1", 1, fault=True)
    assert ("leaf-1", 1) in {(sw, port) for _, sw, port in p.sent}


def test_silent_drop_is_an_oam_fault_and_repair_is_back_at_oam_speed(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    p.changes.clear()
    p.drop |= {("leaf-1", 1), ("spine-1", 1)}
    p.cfm("leaf-1", 1, fault=True, remote=())               # vswitchd: no CCM for 3.5 intervals
    assert not p.usable()
    (change,) = [c for _, sw, c in p.changes if sw == "leaf-1"]
    assert change.usable_changed and not change.usable       # the local-repair trigger, at once
    p.run(0.2)
    p.drop.clear()
    p.cfm("leaf-1", 1)                                       # CCMs back; ND identity is still fresh
    assert p.usable()


def test_liveness_lost_with_carrier_up_keeps_nd_identity_and_returns_at_oam_speed(fabric) -> None:
    """OVS clears OFPPS_LIVE on a CFM fault but the carrier stays: unusable at once, ND identity kept (no
    cable moves without a carrier loss), usable again as soon as the port is live, with an ND frame out at
    once to re-check; PortStatus and OVSDB may arrive in either order."""
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    t = p.tables["leaf-1"]
    p.changes.clear()
    p.drop |= {("leaf-1", 1), ("spine-1", 1)}
    p.phy("leaf-1", 1, live=False, carrier=True)             # PortStatus first (the datapath's verdict)
    assert not p.usable() and t.status(1).phy and not t.live(1)
    (change,) = [c for _, sw, c in p.changes if sw == "leaf-1"]
    assert change.usable_changed and not change.usable
    assert t.view(1, clock.now).nd is NdState.UP              # identity not forgotten
    p.cfm("leaf-1", 1, fault=True, remote=())
    p.run(t.oam.restart_after * 0.8)                          # shorter than a silent failure's CFM restart
    p.drop.clear()
    p.sent.clear()
    p.cfm("leaf-1", 1)                                        # OVSDB first this time: still not live
    assert not p.usable()
    p.phy("leaf-1", 1, live=True, carrier=True)
    assert p.usable()                                         # no ND round trip needed
    assert ("leaf-1", 1) in {(sw, port) for _, sw, port in p.sent}    # but identity is re-checked at once


def test_a_long_silent_failure_gets_a_fresh_cfm_with_nd_identity_verified_anew(fabric) -> None:
    """A CFM fault with the carrier up for restart_after: CFM removed (its RDI would cost a second fault
    interval when the link heals), ND forgets and probes at the heartbeat cadence, and once frames pass
    both ways again the fresh CFM is configured and trusted until its first verdict."""
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    t = p.tables["leaf-1"]
    p.drop |= {("leaf-1", 1), ("spine-1", 1)}
    p.phy("leaf-1", 1, live=False, carrier=True)
    p.cfm("leaf-1", 1, fault=True, remote=())
    p.configs.clear()
    p.run(t.oam.restart_after * 0.9)
    assert p.configs == [] and t.view(1, clock.now).nd is NdState.UP      # not yet: identity kept
    p.run(t.oam.restart_after * 0.2)
    assert [(sw, c.disable) for sw, c in p.configs] == [("leaf-1", (1,))]   # removed
    assert t.view(1, clock.now).nd is not NdState.UP and not p.usable()
    p.phy("leaf-1", 1, live=True, carrier=True)          # no CFM: the datapath's liveness is the carrier
    assert not p.usable()
    sent = len(p.sent)
    p.run(0.1)
    assert len([s for s in p.sent[sent:] if s[1] == "leaf-1"]) >= 5      # heartbeat-cadence probes
    assert len(p.configs) == 1 and not p.usable()        # nothing passes: no CFM, not usable
    p.drop.clear()                                       # the link heals
    p.run(2 * fabric.timers.nd_interval)
    assert [(sw, 1 in c.mpids) for sw, c in p.configs[1:]] == [("leaf-1", True)]   # CFM afresh
    assert p.usable()                                    # on ND's two-way identity, the CFM on its way
    p.cfm("leaf-1", 1, remote=())                        # the fresh CFM before its first verdict
    p.run(2 * t.oam.boot_grace)
    assert p.usable() and t.oam.restarts == 1
    p.cfm("leaf-1", 1)                                   # its verdict hears the peer
    assert p.usable()


def test_identity_outlives_a_fault_only_within_its_dead_interval(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    p.drop |= {("leaf-1", 1), ("spine-1", 1)}
    p.phy("leaf-1", 1, live=False, carrier=True)
    p.cfm("leaf-1", 1, fault=True, remote=())
    p.run(fabric.timers.nd_identity_dead + 0.5)
    assert p.tables["leaf-1"].view(1, clock.now).nd is not NdState.UP
    p.cfm("leaf-1", 1)
    p.phy("leaf-1", 1, live=True, carrier=True)
    assert not p.usable()                                     # needs the peer's ND again ...
    p.drop.clear()
    step, waited = fabric.timers.nd_interval / 4, 0.0
    while not p.usable() and waited < fabric.timers.nd_identity_interval + 0.1:
        p.run(step)
        waited += step
    assert p.usable()                                         # ... which comes back by itself
    p.cfm("leaf-1", 1)                                        # and the fresh CFM hears the peer
    p.run(fabric.timers.nd_identity_interval)
    assert p.usable()


def test_carrier_up_runs_nd_while_oam_is_still_faulted(fabric) -> None:
    """A repaired cable: ND identity is checked while CFM clears its fault (in parallel, not after)."""
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    for sw in ("leaf-1", "spine-1"):
        p.phy(sw, 1, live=False, carrier=False)
        assert p.tables[sw].view(1, clock.now).nd is NdState.DOWN    # carrier loss forgets the neighbour
    p.run(0.2)
    for sw in ("leaf-1", "spine-1"):
        p.phy(sw, 1, live=False, carrier=True)
    p.run(0.01)
    for sw in ("leaf-1", "spine-1"):
        assert p.tables[sw].view(1, clock.now).nd is NdState.UP and not p.usable(sw)
        p.phy(sw, 1, live=True, carrier=True)
        assert p.usable(sw)


def test_oam_miscabling_is_reported_before_nd_and_never_usable(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    p.cfm("leaf-1", 1, remote=(mpid(fabric.switch("spine-2").id, 2),))
    st = p.tables["leaf-1"].status(1)
    assert not st.usable and st.miscabled_by == Endpoint("spine-2", 2)
    assert p.tables["leaf-1"].view(1, clock.now).nd is NdState.UP            # ND has not noticed yet


def test_one_way_link_is_refused_by_nd_identity_even_with_oam_up(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    p.drop.add(("leaf-1", 1))                 # leaf-1 -> spine-1 broken; CFM (RDI) is lied about here
    for sw in ("leaf-1", "spine-1"):
        p.cfm(sw, 1)
        p.phy(sw, 1, True)
    p.run(3.0)
    assert p.tables["leaf-1"].view(1, clock.now).nd is NdState.ONE_WAY
    assert not p.usable("leaf-1") and not p.usable("spine-1")


def test_fallback_port_runs_nd_heartbeats_and_needs_them(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    _up(p)
    t = p.tables["leaf-1"]
    out = t.on_oam_failed((1,), "OVSDB refused the CFM config", clock.now)
    assert any(isinstance(a, OamChanged) and a.state is OamState.FAILED for a in out)
    assert any(isinstance(a, ConfigureOam) and a.disable == (1,) for a in out)
    p.handle("leaf-1", out)
    assert t.nd.fast(1) and t.view(1, clock.now).oam is OamState.FAILED
    # the peer falls back too (its own OVS refused, or it runs liveness: nd) so both send heartbeats
    p.handle("spine-1", p.tables["spine-1"].on_oam_failed((1,), "test", clock.now))
    p.run(0.5)
    assert p.usable()
    p.sent.clear()
    p.run(0.1)
    assert len([1 for _, sw, _port in p.sent if sw == "leaf-1"]) >= 8          # 10 ms heartbeats
    p.drop |= {("leaf-1", 1), ("spine-1", 1)}                                  # silent: ND must see it
    p.run(fabric.timers.nd_dead + 0.011)
    assert not p.usable()


def test_identity_mode_probes_fast_until_up_so_a_lost_first_frame_costs_no_identity_interval(fabric) -> None:
    clock = FakeClock(100.0)
    p = Pair(fabric, clock)
    p.drop.add(("spine-1", 1))       # spine-1's first frames are lost (its peer has no punt flow yet, say)
    for sw in ("leaf-1", "spine-1"):
        p.cfm(sw, 1)
        p.phy(sw, 1, True)
    p.run(0.2)
    assert not p.usable()
    p.drop.clear()
    p.run(2.5 * fabric.timers.nd_interval)
    assert p.usable("leaf-1") and p.usable("spine-1")
    p.sent.clear()
    p.run(2.0)
    assert len([1 for _, sw, _port in p.sent if sw == "leaf-1"]) <= 3     # UP: back to the identity cadence


def test_client_core_asks_for_oam_and_falls_back_loudly_once_per_cause(fabric, caplog) -> None:
    from client.core import ClientCore
    from proto.auth import KeyRing

    core = ClientCore(fabric, "leaf-1", KeyRing.from_secret(b"k" * 32), now=0.0)
    (action,) = core.start_oam(0.0)
    assert isinstance(action, ConfigureOam) and set(action.mpids) == {1, 2}
    with caplog.at_level("WARNING", logger="firepath.client"):
        out = core.on_oam_failed(None, "no OVSDB target", 0.1)
    lines = [r.getMessage() for r in caplog.records if "oam unavailable" in r.getMessage()]
    assert len(lines) == 1 and "ports=[1, 2]" in lines[0] and "no OVSDB target" in lines[0]
    assert core.counters["oam_fallback_ports"] == 2
    assert any(isinstance(a, ConfigureOam) and a.disable == (1, 2) for a in out)
    ports = core.status(0.1)["ports"]
    assert [(p["oam"], p["nd_mode"]) for p in ports] == [("failed", "heartbeat")] * 2
