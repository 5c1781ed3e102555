"""Issue #13, the contract: a border's dynamic external prefixes (config `bgp:`, LSD slots after the links,
`PortReport.external`, the master publishing them, clients routing the default only towards borders that
have it)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from client.replica import LsdReplica
from client.reporter import Reporter
from client.routes import DEFAULT_ROUTE, RouteComputer
from controller.core import MasterCore
from proto.clos import PRESETS, ClosParams, generate_clos_yaml
from proto.config import ConfigError, Fabric, parse_fabric
from proto.lsd import LinkState, LinkStateDB, decode_changes, encode_changes, encode_snapshot
from proto.messages import MAX_LSD_BYTES, PortReport, PortStatus, RelayedReport, _from_wire, _to_wire


def fabric(extra: str = "", **kw: object) -> Fabric:
    p = ClosParams(**{"spines": 2, "pods": 1, "tors_per_pod": 2, "border_pods": 1, "masters": 1,
                      "external": True, **kw})  # type: ignore[arg-type]
    return parse_fabric(generate_clos_yaml(p) + extra, source="<test>")


BORDER = """\
  - name: b1
    id: 90
    role: border
    prefixes: [0.0.0.0/0]
    bgp:
      local_as: 64512
      peers:
        - {address: 100.64.0.2, peer_as: 65000, port: 7, local_address: 100.64.0.1/30}
"""


def with_border(text: str) -> str:
    base = generate_clos_yaml(ClosParams(spines=2, pods=0, leaves=2, masters=1))
    return base.replace("switches:\n", "switches:\n" + text, 1)


# ------------------------------------------------------------------------------------------------ config

def test_config_bgp_section_and_slots() -> None:
    f = fabric()
    assert [sw for sw, _p in f.external_slots] == ["border-1-1", "border-1-2"]
    assert f.lsd_size == len(f.links) + 2
    assert f.slots_of("border-1-2") == (len(f.links) + 1,)
    assert f.slots_of("tor-1-1") == ()
    b = f.switch("border-1-1").bgp
    assert b is not None and b.local_as == 64512 and str(b.announce[0]) == "10.0.0.0/8"
    peer = b.peers[0]
    assert (str(peer.address), peer.peer_as, peer.hold_time, peer.keepalive, peer.max_prefix) == \
        ("100.64.0.2", 65000, 3, 1, 100)
    # the bgp section is part of the digest; a fabric without it keeps its old slots-free LSD
    plain = fabric(external=False)
    assert plain.digest != f.digest and plain.external_slots == () and plain.lsd_size == len(plain.links)


@pytest.mark.parametrize(("edit", "message"), [
    (("role: border\n    prefixes: [0.0.0.0/0]", "role: agg"), "only a border speaks eBGP"),
    (("peer_as: 65000", "peer_as: 64512"), "eBGP needs another"),
    (("local_address: 100.64.0.1/30", "local_address: 100.64.9.1/30"), "on the peer's subnet"),
    (("port: 7", "port: 1"), "already used"),
    (("{address", "{hold_time: 2, address"), "0 or at least 3"),
    (("{address", "{keepalive: 9, address"), "below the hold time"),
    (("local_as: 64512", "local_as: 0"), "out of range"),
])
def test_config_bad_bgp_is_refused_with_the_field(edit: tuple[str, str], message: str) -> None:
    text = with_border(BORDER.replace(*edit, 1))
    text = text.replace("  - {a: \"leaf-1:1\"", "  - {a: \"b1:1\", b: \"spine-1:9\"}\n  - {a: \"leaf-1:1\"", 1)
    with pytest.raises(ConfigError, match=message) as e:
        parse_fabric(text, source="f.yaml")
    assert "switches[0].bgp" in str(e.value) or "links[0]" in str(e.value)


# ------------------------------------------------------------------------------------------------ wire

def test_report_external_bits_round_trip_and_are_relayed() -> None:
    r = PortReport("border-1-1", "0" * 64, 5, 1, (PortStatus(1, True, True, True, True, False),), 3, 1)
    assert _from_wire(PortReport, _to_wire(r)) == r
    relayed = RelayedReport.of("m2", 1, r)
    assert _from_wire(RelayedReport, _to_wire(relayed)).report() == r


def test_reporter_sends_at_once_when_the_external_bits_change() -> None:
    f = fabric()
    rep = Reporter(f, "border-1-1")
    ports = tuple(PortStatus(p, True, True, True, True, False) for p in f.fabric_ports("border-1-1"))
    rep.update(ports, 0.0)
    seq = rep.report_seq
    sends = rep.set_external(1, 0.01)
    assert sends and sends[0].msg.external == 1 and sends[0].msg.report_seq == seq + 1
    assert rep.set_external(1, 0.02) == []


# ------------------------------------------------------------------------------------------------ master

def report(f: Fabric, switch: str, seq: int, external: int = 0) -> PortReport:
    ports = tuple(PortStatus(p, True, True, True, True, False) for p in f.fabric_ports(switch))
    return PortReport(switch, f.digest, seq, 1, ports, 0, external)


def test_master_publishes_external_slots_in_the_lsd_and_clients_follow() -> None:
    f = fabric()
    core = MasterCore(f, "m1")
    core.become_master(1, 0.0)
    core.end_hold(0.0)
    for sw in f.switches:
        core.handle(sw.name, report(f, sw.name, 1), 0.0)
    n = len(f.links)
    assert core.lsd.n_links == f.lsd_size
    assert core.lsd.states()[:n] == bytes([1]) * n and core.lsd.states()[n:] == bytes(2)
    v = core.version
    out = core.handle("border-1-1", report(f, "border-1-1", 2, external=1), 0.1)
    assert core.version == v + 1 and core.lsd.state(n) == LinkState.UP
    assert any(type(a).__name__ == "VersionChanged" for a in out)
    assert core.external_states() == {"border-1-1": {"0.0.0.0/0": True}, "border-1-2": {"0.0.0.0/0": False}}
    # the delta a client gets carries just the slot, and a replica of the right size applies it
    changes = decode_changes(encode_changes(core.lsd.changes_since(v)), f.lsd_size)
    assert changes == {n: LinkState.UP}
    replica = LsdReplica(f, "tor-1-1")
    assert replica.db.n_links == f.lsd_size
    # a withdraw (bit cleared) is published as DOWN; bits past the switch's slots are ignored
    core.handle("border-1-1", report(f, "border-1-1", 3, external=0b10), 0.2)
    assert core.lsd.state(n) == LinkState.DOWN and core.lsd.state(n + 1) == LinkState.DOWN
    # a switch without slots cannot set any
    core.handle("tor-1-1", report(f, "tor-1-1", 4, external=0b11), 0.3)
    assert core.lsd.states()[n:] == bytes(2)


# ------------------------------------------------------------------------------------------------ routes

def states(f: Fabric, slots: tuple[int, ...]) -> bytes:
    return bytes([1]) * len(f.links) + bytes(slots)


def test_default_route_only_towards_borders_that_have_it() -> None:
    f = fabric()
    spine = RouteComputer(f, "spine-1")
    port_to = {f.peer_of("spine-1", p).switch: p for p in f.fabric_ports("spine-1")}
    assert DEFAULT_ROUTE not in spine.compute(states(f, (0, 0)))
    d = spine.update(states(f, (1, 0)), [len(f.links)])
    assert d.changed == {DEFAULT_ROUTE: frozenset({port_to["border-1-1"]})}
    d = spine.update(states(f, (1, 1)), [len(f.links) + 1])
    assert d.changed == {DEFAULT_ROUTE: frozenset({port_to["border-1-1"], port_to["border-1-2"]})}
    d = spine.update(states(f, (0, 0)), [len(f.links), len(f.links) + 1])
    assert d.removed == {DEFAULT_ROUTE} and DEFAULT_ROUTE not in spine.routes
    # a ToR: the default route comes and goes with the borders' slots, through its aggs
    tor = RouteComputer(f, "tor-1-1")
    assert DEFAULT_ROUTE not in tor.compute(states(f, (0, 0)))
    assert tor.update(states(f, (0, 1)), [len(f.links) + 1]).changed[DEFAULT_ROUTE] == \
        frozenset(f.fabric_ports("tor-1-1"))
    # a border without the prefix sends it to the other border through the fabric; its own slot is ignored
    border = RouteComputer(f, "border-1-1")
    assert DEFAULT_ROUTE in border.compute(states(f, (1, 1)))
    assert DEFAULT_ROUTE not in border.compute(states(f, (1, 0)))


def test_incremental_equals_full_with_slots_and_links_changing() -> None:
    f = fabric(border_pods=2, pods=2)
    rng = random.Random(7)
    n, size = len(f.links), f.lsd_size
    for name in ("tor-1-1", "spine-2", "border-2-1"):
        inc = RouteComputer(f, name)
        cur = bytearray([1]) * size
        inc.compute(bytes(cur))
        for _ in range(60):
            changed = rng.sample(range(size), rng.choice((1, 2, 3)))
            for i in changed:
                cur[i] = rng.choice((0, 1)) if i >= n else rng.choice((0, 1, 1))
            before = dict(inc.routes)
            delta = inc.update(bytes(cur), changed)
            full = RouteComputer(f, name).compute(bytes(cur))
            assert dict(inc.routes) == full
            for p in delta.removed:
                assert p in before and p not in full
            for p, ports in delta.changed.items():
                assert full[p] == ports != before.get(p)


def test_jupiter_lsd_with_external_slots_fits_one_datagram() -> None:
    jupiter = PRESETS["jupiter"]
    borders = replace(jupiter, external=False).n_borders
    size = jupiter.n_links + borders      # one slot (the default route) per border
    rng = random.Random(1)
    worst = bytes(rng.choice((0, 1, 2)) for _ in range(size))   # random states: the least compressible
    assert len(encode_snapshot(worst)) <= MAX_LSD_BYTES
    db = LinkStateDB(size)
    db.apply({jupiter.n_links + k: LinkState.UP for k in range(borders)})
    # every border's default route coming up at once is one delta that fits one datagram too
    assert len(encode_changes(db.changes_since(0))) <= MAX_LSD_BYTES


def test_drain_dry_run_works_on_a_fabric_with_external_slots() -> None:
    from controller.ops.dryrun import drain_impact

    f = fabric()
    spine_links = f.links_of("spine-1")
    links_only = bytes([1]) * len(f.links)          # what /v1/lsd's "links" give the operator CLI
    impact = drain_impact(f, links_only, spine_links)
    assert impact == drain_impact(f, links_only + bytes([1, 1]), spine_links)
    with pytest.raises(ValueError, match="link states"):
        drain_impact(f, links_only[:-1], spine_links)


def test_a_rollout_carries_external_slots_by_border_and_prefix() -> None:
    """A commit on a new link index keeps each border's default route (no withdraw until the borders report
    again); a fabric with one more ToR has more links, so the slots move but keep their state."""
    from controller.rollout import carry_states

    old, new = fabric(), fabric(tors_per_pod=3)
    assert len(new.links) > len(old.links) and new.external_slots == old.external_slots
    states = bytearray([LinkState.UP]) * old.lsd_size
    states[len(old.links)] = LinkState.UP          # border-1-1 provides 0.0.0.0/0
    states[len(old.links) + 1] = LinkState.DOWN    # border-1-2 does not
    carried = carry_states(old, bytes(states), new, lambda sw, p: False)
    assert len(carried) == new.lsd_size
    assert carried[len(new.links)] == LinkState.UP and carried[len(new.links) + 1] == LinkState.DOWN
