"""Hitless restart at the fabric's default timers with link OAM: the first-report hold of a restarted
client (pure core, fake clock). With OAM the peers hold our links through the restart and run ND at the
identity cadence (~1 s), so verifying a port takes up to that long, far beyond nd_dead (30 ms). The old
hold ran out after max(5 x nd_dead, 0.2 s) and reported the not-yet-verified ports unusable: the master
took working links down on every restart."""

from __future__ import annotations

import pytest

from client.core import SendFrames, verification_bound
from client.oam import OamObservation, mpid
from proto.clos import clos_fabric
from proto.messages import Codec, decode_nd_ethernet
from tests.test_client_core import ME, World

#: A peer's identity tick lands anywhere in its 1 s interval: these are late but ordinary answers.
ANSWER_1 = 0.6
ANSWER_2 = 0.95


@pytest.fixture(scope="module")
def fabric():
    f = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="oam")
    assert (f.timers.nd_interval, f.timers.nd_dead, f.timers.nd_identity_interval) == (0.010, 0.030, 1.0)
    return f


def oam(w: World, port: int, *, fault: bool = False, remote: tuple[str, int] | None = None) -> list:
    """What the OVSDB monitor reports for `port` (CFM was configured by the previous life: status at once)."""
    f = w.fabric
    peer = f.peer_of("leaf-1", port) if remote is None else None
    sw, p = (peer.switch, peer.port) if peer is not None else remote
    obs = OamObservation(port, w.core.ports.oam.local_mpid(port), fault, (mpid(f.switch(sw).id, p),))
    return w.feed(w.core.on_oam_observed(obs, w.clock.now))


def restarted(fabric) -> tuple[World, float]:
    """A client just restarted: OAM asked for, switch connected, OVSDB status UP on both ports."""
    w = World(fabric)
    w.feed(w.core.start_oam(w.clock.now))
    w.connect()
    t0 = w.clock.now
    w.run(0.03)
    oam(w, 1)
    oam(w, 2)
    return w, t0


def test_the_bound_follows_the_identity_cadence_not_nd_dead(fabric):
    t = fabric.timers
    assert verification_bound(fabric) >= 2 * t.nd_identity_interval
    assert verification_bound(clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")) == 0.2


def test_restart_at_default_timers_reports_no_port_unusable_while_peers_answer_at_identity_cadence(fabric):
    w, t0 = restarted(fabric)
    w.run(t0 + ANSWER_1 - w.clock.now)
    w.nd_up([1])
    w.run(t0 + ANSWER_2 - w.clock.now)
    assert w.reports() == [], "reported before every port was verified"
    w.nd_up([2])
    reports = w.reports()
    assert reports, "not released once every port was verified"
    assert w.first_report_time() == pytest.approx(t0 + ANSWER_2)
    w.run(2.0)
    # Old code: the first report went at t0 + 0.2 s with both ports usable=False nd=False.
    for r in w.reports():
        assert all(p.usable for p in r.ports if p.port in (1, 2)), r


def test_a_port_never_verified_is_reported_unusable_at_the_bound_not_before(fabric):
    w, t0 = restarted(fabric)
    w.run(t0 + ANSWER_1 - w.clock.now)
    w.nd_up([1])
    w.run(t0 + verification_bound(fabric) - 0.01 - w.clock.now)
    assert w.reports() == []
    w.run(0.02)
    first = w.reports()[0]
    assert w.first_report_time() == pytest.approx(t0 + verification_bound(fabric))
    assert {p.port: p.usable for p in first.ports if p.port in (1, 2)} == {1: True, 2: False}


def test_one_way_port_is_held_then_reported_unusable_never_usable(fabric):
    w, t0 = restarted(fabric)
    w.nd_up([1])
    w.feed(w.core.on_packet_in(2, w.nd_frame(2, two_way=False), w.clock.now))    # the peer does not hear us
    w.run(0.5)
    assert w.reports() == []
    w.run(verification_bound(fabric))
    assert w.reports() and all(not p.usable for r in w.reports() for p in r.ports if p.port == 2)


@pytest.mark.parametrize("failure", ["cfm_fault", "miscabled", "carrier"])
def test_a_port_that_really_fails_during_the_hold_is_reported_at_once(fabric, failure):
    w, t0 = restarted(fabric)
    w.nd_up([1])
    assert w.reports() == []                          # port 2 not verified yet: held
    if failure == "cfm_fault":                        # OVS clears OFPPS_LIVE, keeps the carrier
        w.feed(w.core.on_port_status(2, False, w.clock.now, carrier=True))
    elif failure == "miscabled":                      # CFM hears another switch's MPID
        oam(w, 2, remote=("leaf-2", 1))
    else:
        w.feed(w.core.on_port_status(2, False, w.clock.now))
    reports = w.reports()
    assert reports, f"{failure}: the failed port kept the report held"
    ports = {p.port: p for p in reports[-1].ports}
    assert ports[1].usable and not ports[2].usable
    if failure == "miscabled":
        assert ports[2].miscabled_by is not None and ports[2].miscabled_by.switch == "leaf-2"
    w.run(3.0)
    assert all(not p.usable for r in w.reports() for p in r.ports if p.port == 2)


def test_a_restarted_peer_is_answered_at_once_not_at_the_identity_cadence(fabric):
    """The restarted peer's first ND frames carry a new incarnation: the codec rejects them as stale and
    learns its offer. Our next frame on that port lets the peer verify us; with OAM that frame used to
    come at the identity cadence (up to 1 s later), so the restarted client could not verify the link
    within its hold. It is sent at once now (at most once per nd_interval)."""
    w = World(fabric)
    w.feed(w.core.start_oam(w.clock.now))
    w.connect()
    oam(w, 1)
    oam(w, 2)
    w.nd_up()
    w.run(1.5)                                            # steady state: identity cadence
    switches = [s.name for s in fabric.switches]
    spine = Codec(w.ring.bundle_for_switch("spine-1"), "spine-1", switches, [m.id for m in fabric.masters])
    w.peers["spine-1"] = spine                            # spine-1's client restarted: a new incarnation
    t = w.clock.now
    first = w.nd_frame(1, two_way=False)
    out = w.feed(w.core.on_packet_in(1, first, t))
    assert w.core.counters["nd_rejected_stale"] == 1
    sends = [f for a in out if isinstance(a, SendFrames) for f in a.frames]
    assert [f.port for f in sends] == [1], out           # old code: nothing until the next identity tick
    peer = fabric.peer_of(ME, 1)
    sender, msg = spine.decode(decode_nd_ethernet(sends[0].data), port=peer.port)
    assert sender == ME and msg.discovered == peer         # the restarted peer verifies us: link two-way again
    again = w.core.on_packet_in(1, w.nd_frame(1, two_way=False), t + 0.001)
    assert not [a for a in again if isinstance(a, SendFrames)]     # rate-limited: once per nd_interval
