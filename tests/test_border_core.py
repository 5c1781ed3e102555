"""client.border.BorderCore (issue #13): origination, aggregate announcement, max-prefix, damping (pure)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from client.border import (
    HALF_LIFE,
    MAX_PREFIX_RESTART,
    Announce,
    BorderCore,
    ExternalPorts,
    Provide,
    Teardown,
    Withdraw,
)
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import parse_fabric

DEFAULT = IPv4Network("0.0.0.0/0")
AGG = IPv4Network("10.0.0.0/8")
PARAMS = ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True)


def core(extra_peer: bool = False, max_prefix: int = 100) -> BorderCore:
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True))
    text = text.replace("hold_time: 3", f"max_prefix: {max_prefix}, hold_time: 3")
    if extra_peer:
        text = text.replace("      peers:\n", "      peers:\n        - {address: 100.65.0.2, peer_as: 65001, port: 60001, "
                            "local_address: 100.65.0.1/30}\n", 1)
    return BorderCore(parse_fabric(text, source="<t>"), "border-1-1")


P1, P2 = "100.64.0.2", "100.65.0.2"


def provides(actions: list) -> list[Provide]:
    return [a for a in actions if isinstance(a, Provide)]


def test_default_is_provided_only_while_a_session_announces_it() -> None:
    c = core()
    assert c.session(P1, True, 0.0) == []          # fabric not reached yet: nothing to announce, nothing provided
    out = c.update(P1, {DEFAULT: P1}, (), 0.1)
    assert provides(out) == [Provide(1, {DEFAULT: (P1,)})]
    assert c.update(P1, {IPv4Network("192.0.2.0/24"): P1}, (), 0.2) == []     # not one of our slots
    out = c.update(P1, {}, [DEFAULT], 0.3)
    assert provides(out) == [Provide(0, {})]
    c.update(P1, {DEFAULT: P1}, (), 0.4)
    assert provides(c.session(P1, False, 0.5)) == [Provide(0, {})]
    assert c.update(P1, {DEFAULT: P1}, (), 0.6) == []      # not established: ignored
    assert c.ignored == 1


def test_ecmp_across_the_peers_that_provide_it() -> None:
    c = core(extra_peer=True)
    c.session(P1, True, 0.0)
    c.session(P2, True, 0.0)
    c.update(P1, {DEFAULT: P1}, (), 0.1)
    assert provides(c.update(P2, {DEFAULT: P2}, (), 0.2)) == [Provide(1, {DEFAULT: (P1, P2)})]
    assert provides(c.session(P1, False, 0.3)) == [Provide(1, {DEFAULT: (P2,)})]


def test_aggregate_announced_only_while_the_fabric_reaches_it() -> None:
    c = core(extra_peer=True)
    c.session(P1, True, 0.0)
    ports = (ExternalPorts(True, c.ports),)
    assert c.fabric_reach([DEFAULT, IPv4Network("10.0.0.0/24")], 0.1) == [*ports, Announce(P1, AGG)]
    assert c.session(P2, True, 0.2) == [Announce(P2, AGG)]          # a new session gets it at once
    assert c.fabric_reach([DEFAULT, IPv4Network("10.0.1.0/24")], 0.3) == []
    assert sorted(bgp(c.fabric_reach([DEFAULT], 0.4)), key=str) == [Withdraw(P1, AGG), Withdraw(P2, AGG)]
    assert sorted(bgp(c.fabric_reach([IPv4Network("10.9.0.0/24")], 0.5)), key=str) == [
        Announce(P1, AGG), Announce(P2, AGG)]
    c.session(P1, False, 0.6)
    assert c.session(P1, True, 0.7) == [Announce(P1, AGG)]          # re-announced after a reconnect


def bgp(actions: list) -> list:
    return [a for a in actions if not isinstance(a, ExternalPorts)]


def test_external_ports_follow_fabric_reach_link_state_tracking() -> None:
    c = core(extra_peer=True)
    assert c.ports and c.fabric_reach([], 0.0) == []                 # starting: no routes yet, ports left alone
    assert c.fabric_reach([IPv4Network("10.0.0.0/24")], 0.1) == [ExternalPorts(True, c.ports)]  # up (idempotent)
    assert c.fabric_reach([IPv4Network("10.0.1.0/24")], 0.2) == []
    assert c.fabric_reach([DEFAULT], 0.3) == [ExternalPorts(False, c.ports)]    # cut off from the fabric
    assert c.fabric_reach([], 0.4) == []
    assert c.fabric_reach([IPv4Network("10.0.0.0/24")], 0.5) == [ExternalPorts(True, c.ports)]


def test_sessions_lost_to_our_own_port_shutdown_are_not_flaps() -> None:
    c = core()
    c.fabric_reach([IPv4Network("10.0.0.0/24")], 0.0)
    for k in range(4):              # four session losses while cut off from the fabric: no penalty
        c.session(P1, True, 1.0 + k)
        c.update(P1, {DEFAULT: P1}, (), 1.1 + k)
        assert c.fabric_reach([], 1.2 + k)[0] == ExternalPorts(False, c.ports)
        c.session(P1, False, 1.3 + k)
        c.fabric_reach([IPv4Network("10.0.0.0/24")], 1.4 + k)
    assert c.flaps == 0 and c.suppressed(5.0) == []
    c.session(P1, True, 6.0)
    c.update(P1, {DEFAULT: P1}, (), 6.1)
    assert provides(c.session(P1, False, 6.2)) == [Provide(0, {})] and c.flaps == 1   # a real loss counts


def test_no_link_state_tracking_when_disabled() -> None:
    text = generate_clos_yaml(PARAMS).replace("      local_as: 64512\n", "      local_as: 64512\n      track_fabric: false\n")
    f = parse_fabric(text, source="<test>")
    assert not f.switch("border-1-1").bgp.track_fabric
    assert f.digest != parse_fabric(generate_clos_yaml(PARAMS), source="<test>").digest
    c = BorderCore(f, "border-1-1")
    c.fabric_reach([IPv4Network("10.0.0.0/24")], 0.0)
    assert not any(isinstance(a, ExternalPorts) for a in c.fabric_reach([], 0.1))


def test_max_prefix_tears_down_and_holds_the_peer() -> None:
    c = core(max_prefix=3)
    c.session(P1, True, 0.0)
    c.update(P1, {DEFAULT: P1}, (), 0.1)
    out = c.update(P1, {IPv4Network(f"192.0.2.{i * 4}/30"): P1 for i in range(3)}, (), 0.2)
    assert isinstance(out[0], Teardown) and out[0].subcode == 1 and "4 prefixes > 3" in out[0].reason
    assert provides(out) == [Provide(0, {})]
    assert c.sessions(0.2)[0]["teardowns"] == 1 and c.sessions(0.2)[0]["blocked"]
    # it reconnects at once: torn down again while held
    assert c.session(P1, True, 1.0) == [Teardown(P1, 1, "max-prefix: still held down")]
    c.session(P1, False, 1.1)
    later = 0.2 + MAX_PREFIX_RESTART
    c.session(P1, True, later)
    assert provides(c.update(P1, {DEFAULT: P1}, (), later)) == [Provide(1, {DEFAULT: (P1,)})]


def test_a_flapping_default_is_damped_then_reused() -> None:
    c = core()
    c.session(P1, True, 0.0)
    t = 0.0
    for _ in range(3):              # three flaps in a few seconds: penalty ~3000 > SUPPRESS
        c.update(P1, {DEFAULT: P1}, (), t)
        c.update(P1, {}, [DEFAULT], t + 0.5)
        t += 1.0
    out = c.update(P1, {DEFAULT: P1}, (), t)
    assert provides(out) == []          # suppressed: still not provided
    assert c.provided.bits == 0 and c.suppressed(t) == [(P1, DEFAULT)]
    deadline = c.next_deadline(t)
    assert deadline is not None and t < deadline <= t + 2 * HALF_LIFE
    assert c.tick(deadline - 1.0) == []
    assert provides(c.tick(deadline + 0.01)) == [Provide(1, {DEFAULT: (P1,)})]


def test_no_damping_when_disabled() -> None:
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True))
    text = text.replace("local_as: 64512\n", "local_as: 64512\n      damping: false\n")
    c = BorderCore(parse_fabric(text, source="<t>"), "border-1-1")
    c.session(P1, True, 0.0)
    for i in range(5):
        c.update(P1, {DEFAULT: P1}, (), i)
        c.update(P1, {}, [DEFAULT], i + 0.5)
    assert provides(c.update(P1, {DEFAULT: P1}, (), 9.0)) == [Provide(1, {DEFAULT: (P1,)})]


def test_non_border_refused() -> None:
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1))
    with pytest.raises(ValueError, match="no bgp"):
        BorderCore(parse_fabric(text, source="<t>"), "border-1-1")
