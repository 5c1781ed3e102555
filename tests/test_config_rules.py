"""proto/config.py: addresses that clash across the fabric are refused, and racks that only a non-transit relay
joins are warned of (helper's finding: `firepath config check` passed an eBGP peer on a host's IP, a master on a
loopback, and said nothing of a ToR cabled only to another ToR). Already refused before, and tested in tests/test_config.py: a host outside
its ToR's prefixes, two hosts with one IP, a loopback inside a ToR prefix, overlapping internal prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto import cli
from proto.clos import ClosParams, clos_fabric
from proto.config import parse_fabric
from proto.transit import transit_warning
from tests.test_config import BASE, edit, expect_error
from tests.test_config_reach import with_tor_3

ROOT = Path(__file__).resolve().parent.parent

# BASE (tests/test_config.py) with an eBGP border cabled to spine-1: its peers line is 32
BORDER = edit("links:\n", """\
  - name: b1
    id: 9
    role: border
    loopback: 10.255.0.9/32
    prefixes: [0.0.0.0/0]
    bgp:
      local_as: 64512
      peers:
        - {address: 100.64.0.2, peer_as: 65000, port: 7, local_address: 100.64.0.1/30}
links:
  - {a: "b1:1", b: "spine-1:9"}
""")
PEERING = "address: 100.64.0.2, peer_as: 65000, port: 7, local_address: 100.64.0.1/30"
OUTSIDE = "an eBGP peering is outside the fabric, not on its prefixes, loopbacks or hosts"
CPN = "masters are on the control-plane network, outside the fabric's prefixes, loopbacks and hosts"


def peering(address: str, local: str) -> str:
    return edit(PEERING, f"address: {address}, peer_as: 65000, port: 7, local_address: {local}", BORDER)


# ----------------------------------------------------------------------------------------- eBGP peers


@pytest.mark.parametrize(("address", "local", "field", "problem"), [
    ("10.1.0.10", "10.1.0.9/30", "address",
     "eBGP peer address 10.1.0.10 of border b1 is the IP of host h1 of tor tor-1 (line 16)"),
    ("10.2.0.201", "10.2.0.202/30", "address", "eBGP peer address 10.2.0.201 of border b1 lies inside 10.2.0.0/24 "
                                               "of tor-2 (line 21)"),
    ("10.255.0.3", "10.255.0.2/29", "address",
     "eBGP peer address 10.255.0.3 of border b1 is the loopback 10.255.0.3 of tor-2 (line 20)"),
    ("10.1.1.1", "10.1.0.254/23", "local_address",
     "eBGP local address 10.1.0.254 of border b1 lies inside 10.1.0.0/24 of tor-1 (line 14)"),
    ("10.255.0.0", "10.255.0.1/31", "local_address",
     "eBGP local address 10.255.0.1 of border b1 is the loopback 10.255.0.1 of spine-1 (line 9)"),
    ("10.255.0.5", "10.255.0.6/29", "local_address",
     "the eBGP peer subnet 10.255.0.0/29 of border b1 contains the loopback 10.255.0.1 of spine-1 (line 9)"),
])
def test_an_ebgp_peering_on_a_fabric_address_is_refused(address: str, local: str, field: str, problem: str) -> None:
    expect_error(peering(address, local), 32, f"switches[3].bgp.peers[0].{field}", f"{problem}: {OUTSIDE}")


@pytest.mark.parametrize(("address", "local", "field", "problem"), [
    ("224.0.0.6", "224.0.0.5/30", "address", "224.0.0.6 is multicast (224.0.0.0/4, RFC 5771): not a unicast address"),
    ("0.0.0.2", "0.0.0.1/30", "address", '0.0.0.2 is in 0.0.0.0/8 ("this network", RFC 1122 3.2.1.3): not a unicast address'),
    ("100.64.0.0", "100.64.0.1/30", "address", "100.64.0.0 is the network address of 100.64.0.0/30: not a host's"),
    ("100.64.0.2", "100.64.0.3/30", "local_address",
     "100.64.0.3 is the broadcast address of 100.64.0.0/30: not a host's"),
])
def test_an_ebgp_peering_on_a_non_host_address_is_refused(address: str, local: str, field: str, problem: str) -> None:
    expect_error(peering(address, local), 32, f"switches[3].bgp.peers[0].{field}", problem)


def test_an_ebgp_point_to_point_31_uses_both_addresses() -> None:
    assert parse_fabric(peering("100.64.0.0", "100.64.0.1/31")).switch("b1").bgp is not None   # RFC 3021


def test_an_ebgp_peering_outside_the_fabric_loads() -> None:
    assert parse_fabric(BORDER).switch("b1").bgp is not None
    assert parse_fabric(peering("10.9.0.2", "10.9.0.1/30")).switch("b1").bgp is not None  # 10/8, no one's prefix


def test_a_peer_port_out_of_range_says_it_is_the_openflow_port() -> None:
    """F15: peers[].port is the border's OpenFlow port facing the peer (1..65279), not the session's TCP port."""
    expect_error(edit("port: 7,", "port: 65500,", BORDER), 32, "switches[3].bgp.peers[0].port",
                 "65500 out of range 1..65279: the border's OpenFlow port facing the peer (the session is TCP port 179)")


def test_a_peer_on_the_local_address_says_they_are_equal() -> None:
    """F15: the peer's address on its own local_address is not 'off the subnet': they are one address."""
    expect_error(peering("100.64.0.1", "100.64.0.1/30"), 32, "switches[3].bgp.peers[0].local_address",
                 "100.64.0.1 is the peer's address too: local_address is the border's own address on the link")
    expect_error(peering("100.64.0.9", "100.64.0.1/30"), 32, "switches[3].bgp.peers[0].local_address",
                 "100.64.0.1/30 must be ADDRESS/LEN on the peer's subnet (peer 100.64.0.9)")


def announcing(*prefixes: str) -> str:
    return edit("      local_as: 64512\n", f"      local_as: 64512\n      announce: [{', '.join(prefixes)}]\n", BORDER)


@pytest.mark.parametrize("prefixes", [("10.0.0.0/8",), ("10.1.0.0/24",), ("10.1.0.0/16", "10.2.0.0/16"),
                                      ("10.1.0.0/25",), ("10.255.0.0/24",)])
def test_an_announce_of_the_fabrics_space_loads(prefixes: tuple[str, ...]) -> None:
    bgp = parse_fabric(announcing(*prefixes)).switch("b1").bgp
    assert bgp is not None and [str(p) for p in bgp.announce] == list(prefixes)


@pytest.mark.parametrize(("prefixes", "field", "problem"), [
    (("8.8.8.0/24",), "announce[0]", "8.8.8.0/24 holds none of the fabric's prefixes and loopbacks: a border "
                                     "announces the cluster's own aggregate(s), not other space"),
    (("10.0.0.0/8", "192.168.0.0/16"), "announce[1]", "192.168.0.0/16 holds none of the fabric's prefixes"),
    (("0.0.0.0/0",), "announce[0]", "0.0.0.0/0 is a default route: a border announces the cluster's aggregate(s) "
                                    "outside, never a default"),
    # tester bb40b: a half-default (a default route by other means) and a supernet reaching into public space
    (("0.0.0.0/1",), "announce[0]", "0.0.0.0/1 contains 0.0.0.0/8"),
    (("10.0.0.0/7",), "announce[0]", "10.0.0.0/7 is shorter than /8"),
    (("10.0.0.0/8", "128.0.0.0/1"), "announce[1]", "128.0.0.0/1 contains"),
])
def test_an_announce_of_other_space_or_a_default_is_refused(prefixes: tuple[str, ...], field: str,
                                                             problem: str) -> None:
    """F15: README: announce is "the cluster aggregate(s)"."""
    expect_error(announcing(*prefixes), 31, f"switches[3].bgp.{field}", problem)


def test_an_announce_is_checked_against_tors_listed_after_the_border() -> None:
    first = edit("switches:\n", """switches:
  - name: b1
    id: 9
    role: border
    prefixes: [0.0.0.0/0]
    bgp: {local_as: 64512, announce: [10.2.0.0/16], peers: [{address: 100.64.0.2, peer_as: 65000, port: 7,
                                                              local_address: 100.64.0.1/30}]}
""", edit("links:\n", 'links:\n  - {a: "b1:1", b: "spine-1:9"}\n'))
    assert [str(p) for p in parse_fabric(first).switch("b1").bgp.announce] == ["10.2.0.0/16"]
    expect_error(edit("[10.2.0.0/24]", "[10.3.0.0/24]", edit("ip: 10.2.0.10", "ip: 10.3.0.10", first)), 10,
                 "switches[0].bgp.announce[0]", "10.2.0.0/16 holds none of the fabric's prefixes and loopbacks")


# A second border b2 on spine-1 in the same AS.
TWO_BORDERS = edit("links:\n", """\
  - name: b2
    id: 10
    role: border
    loopback: 10.255.0.10/32
    prefixes: [0.0.0.0/0]
    bgp:
      local_as: 64512
      peers:
        - {address: 100.64.0.6, peer_as: 65000, port: 7, local_address: 100.64.0.5/30}
links:
  - {a: "b2:1", b: "spine-1:10"}
""", BORDER)


def test_two_borders_with_distinct_bgp_identifiers_load() -> None:
    fabric = parse_fabric(TWO_BORDERS)
    assert fabric.switch("b1").bgp is not None and fabric.switch("b2").bgp is not None


def test_a_bgp_identifier_shared_by_two_borders_of_one_as_is_refused() -> None:
    # explicit router_id on both
    both = TWO_BORDERS.replace("      local_as: 64512\n", "      local_as: 64512\n      router_id: 192.0.2.1\n")
    assert both.count("router_id") == 2
    expect_error(both, 41, "switches[4].bgp.router_id",
                 "BGP identifier 192.0.2.1 in AS 64512 is also border b1's (line 31): it must be unique within an AS")
    # without router_id the identifier is the session's local address: b2's is b1's router_id
    b2_local = TWO_BORDERS.replace("      local_as: 64512\n", "      local_as: 64512\n      router_id: 100.64.0.5\n", 1)
    expect_error(b2_local, 42, "switches[4].bgp.peers[0].local_address",
                 "BGP identifier 100.64.0.5 in AS 64512 is also border b1's (line 31)")
    # in another AS it is no conflict (RFC 6286 asks uniqueness within an AS)
    head, tail = both.split("  - name: b2\n")
    other_as = head + "  - name: b2\n" + tail.replace("local_as: 64512", "local_as: 64513")
    assert parse_fabric(other_as).switch("b2").bgp.local_as == 64513


@pytest.mark.parametrize(("b2_peering", "b2_as"), [
    ("address: 100.64.0.2, peer_as: 65000, port: 7, local_address: 100.64.0.1/30", 64512),
    ("address: 100.64.0.2, peer_as: 65000, port: 7, local_address: 100.64.0.1/30", 64513),
    ("address: 100.64.0.3, peer_as: 65000, port: 7, local_address: 100.64.0.1/29", 64512),
])
def test_a_local_address_shared_by_two_borders_is_refused(b2_peering: str, b2_as: int) -> None:
    """Two borders on one eBGP local address loaded as soon as their BGP identifiers differed (router_id, or
    another AS): an address conflict that `firepath config check` let through."""
    ids = TWO_BORDERS.replace("      local_as: 64512\n", "      local_as: 64512\n      router_id: 192.0.2.1\n", 1)
    ids = ids.replace("      local_as: 64512\n      peers:\n        - {address: 100.64.0.6",
                      f"      local_as: {b2_as}\n      router_id: 192.0.2.2\n      peers:\n        - {{address: 100.64.0.6")
    assert parse_fabric(ids).switch("b2").bgp.router_id is not None            # distinct ids: it loads
    shared = edit("address: 100.64.0.6, peer_as: 65000, port: 7, local_address: 100.64.0.5/30", b2_peering, ids)
    expect_error(shared, 43, "switches[4].bgp.peers[0].local_address",
                 "eBGP local address 100.64.0.1 of border b2 is also border b1's (line 33): a local address belongs "
                 "to one border only")


def test_a_border_peering_with_another_border_is_refused() -> None:
    crossed = edit("address: 100.64.0.6, peer_as: 65000, port: 7, local_address: 100.64.0.5/30",
                   "address: 100.64.0.1, peer_as: 65000, port: 7, local_address: 100.64.0.2/30", TWO_BORDERS)
    expect_error(crossed, 41, "switches[4].bgp.peers[0].address",
                 "100.64.0.1 is a local address of border b1 (line 32): a border's peer is outside the fabric")


def test_a_zero_bgp_identifier_is_refused() -> None:
    expect_error(edit("      local_as: 64512\n", "      local_as: 64512\n      router_id: 0.0.0.0\n", BORDER),
                 31, "switches[3].bgp.router_id", "0.0.0.0: a BGP identifier is non-zero (RFC 6286)")


# ----------------------------------------------------------------------------------------- masters


@pytest.mark.parametrize(("address", "problem"), [
    ("10.1.0.10", "master address 10.1.0.10 is the IP of host h1 of tor tor-1 (line 16)"),
    ("10.2.0.77", "master address 10.2.0.77 lies inside 10.2.0.0/24 of tor-2 (line 21)"),
    ("10.255.0.1", "master address 10.255.0.1 is the loopback 10.255.0.1 of spine-1 (line 9)"),
])
def test_a_master_on_a_fabric_address_is_refused(address: str, problem: str) -> None:
    expect_error(edit("address: 127.0.0.1", f"address: {address}"), 4, "masters[0].address", f"{problem}: {CPN}")


@pytest.mark.parametrize(("address", "problem"), [
    ("100.64.0.2", "master address 100.64.0.2 is eBGP peer address 100.64.0.2 of border b1"),
    ("100.64.0.1", "master address 100.64.0.1 is eBGP local address 100.64.0.1 of border b1"),
    ("100.64.0.3", "master address 100.64.0.3 lies in the eBGP peer subnet 100.64.0.0/30 of border b1"),
])
def test_a_master_on_an_ebgp_peering_is_refused(address: str, problem: str) -> None:
    expect_error(edit("address: 127.0.0.1", f"address: {address}", BORDER), 4, "masters[0].address",
                 f"{problem}: masters are on the control-plane network, not on an eBGP peering")


@pytest.mark.parametrize(("address", "kind"), [
    ("224.0.0.1", "multicast (224.0.0.0/4, RFC 5771)"), ("0.0.0.0", 'in 0.0.0.0/8 ("this network", RFC 1122 3.2.1.3)'),
    ("255.255.255.255", "the limited broadcast address (RFC 919)"), ("240.0.0.1", "reserved (240.0.0.0/4, RFC 1112 4)"),
])
def test_a_master_on_a_non_unicast_address_is_refused(address: str, kind: str) -> None:
    expect_error(edit("address: 127.0.0.1", f"address: {address}"), 4, "masters[0].address",
                 f"{address} is {kind}: not a unicast address")


@pytest.mark.parametrize(("old", "line", "field"), [
    ('mac: "02:00:00:00:00:01"', 16, "switches[1].hosts[0].mac"),
    ("    id: 3\n", 19, "switches[2].mac"),
])
def test_the_all_zero_mac_is_refused(old: str, line: int, field: str) -> None:
    """Tester: a host with mac 00:00:00:00:00:00 passed `config check`, and `lab up` failed after building
    the fabric ('RTNETLINK answers: Cannot assign requested address'): no interface can have that address."""
    new = 'mac: "00:00:00:00:00:00"' if old.startswith("mac") else old + '    mac: "00:00:00:00:00:00"\n'
    expect_error(edit(old, new), line, field, "00:00:00:00:00:00 is the all-zero MAC address")
    assert parse_fabric(edit(old, new.replace("00:00:00:00:00:00", "02:00:00:00:00:00"))) is not None


def test_masters_on_loopback_or_the_control_network_load() -> None:
    assert str(parse_fabric(BASE).masters[0].address) == "127.0.0.1"          # the lab's
    assert str(parse_fabric(edit("address: 127.0.0.1", "address: 10.9.0.1")).masters[0].address) == "10.9.0.1"


def test_the_generator_refuses_a_master_or_peering_it_would_put_on_a_fabric_address() -> None:
    with pytest.raises(ValueError, match="master_address 10.0.1.5 is a fabric address"):
        ClosParams(master_address="10.0.1.5")
    with pytest.raises(ValueError, match="overlaps the borders' eBGP links"):
        ClosParams(base_prefix="100.64.0.0/16", border_pods=1, external=True)
    assert clos_fabric(master_address="10.200.0.1").masters[0].address.packed == bytes([10, 200, 0, 1])


# ----------------------------------------------------------------------------------------- transit
# A rack reached only through a non-transit relay works (the route computation's last resort) and loads; the
# config check and lab up warn (proto.transit.transit_warning), naming the switch to fix and how.

TOR_3_VIA_TOR_2 = ("tor tor-3 has no path to tor tor-1 through switches that carry transit traffic: it "
                   "reaches the fabric only through tor-2, and ToRs do not carry transit traffic "
                   "(routing.transit_roles: agg, spine); the route computation relays through such a switch only "
                   "as a last resort (so their traffic shares that switch's links): cable tor-3 to a transit "
                   "switch or set transit: true on tor-2")


def warning(text: str) -> str | None:
    return transit_warning(parse_fabric(text))


def test_a_tor_cabled_only_to_another_tor_loads_with_a_warning() -> None:
    assert warning(with_tor_3('  - {a: "tor-3:1", b: "tor-2:2"}\n')) == TOR_3_VIA_TOR_2
    twice = with_tor_3('  - {a: "tor-3:1", b: "tor-2:2"}\n  - {a: "tor-3:2", b: "tor-2:3"}\n')
    assert warning(twice) == TOR_3_VIA_TOR_2                                     # parallel cables change nothing


def test_a_tor_behind_a_border_warns() -> None:
    text = with_tor_3('  - {a: "tor-3:1", b: "b1:2"}\n').replace(
        "links:\n", "  - {name: b1, id: 9, role: border, prefixes: [0.0.0.0/0]}\nlinks:\n", 1) + \
        '  - {a: "b1:1", b: "spine-1:9"}\n'
    assert warning(text).startswith("tor tor-3 has no path to tor tor-1 through switches that carry transit "
                                    "traffic: it reaches the fabric only through b1, and borders do not carry "
                                    "transit traffic")


def test_a_spine_joined_to_the_fabric_only_through_a_tor_warns() -> None:
    # tor-3 -- spine-2 -- tor-2 -- spine-1 -- tor-1: from tor-3 to tor-1, tor-2 must relay
    text = with_tor_3('  - {a: "tor-3:1", b: "spine-2:1"}\n  - {a: "tor-2:2", b: "spine-2:2"}\n').replace(
        "links:\n", "  - {name: spine-2, id: 5, role: spine}\nlinks:\n", 1)
    assert warning(text).startswith("tor tor-3 has no path to tor tor-1 through switches that carry transit "
                                    "traffic: the two are joined only through tor-2, and ToRs do not carry "
                                    "transit traffic (routing.transit_roles: agg, spine)")


def test_a_chain_of_non_transit_relays_warns() -> None:
    # tor-3 -- spine-2 -- tor-4 -- tor-2 -- spine-1 -- tor-1: no single relay joins them (tor-4 has no prefix)
    text = with_tor_3('  - {a: "tor-3:1", b: "spine-2:1"}\n  - {a: "tor-4:1", b: "spine-2:2"}\n'
                      '  - {a: "tor-4:2", b: "tor-2:2"}\n').replace(
        "links:\n", "  - {name: spine-2, id: 5, role: spine}\n  - {name: tor-4, id: 6, role: tor}\nlinks:\n", 1)
    assert "the two are joined only through chains of switches that do not carry transit traffic; the route " \
           "computation relays through such a switch only as a last resort" in warning(text)


def test_a_lone_spine_with_transit_false_warns() -> None:
    assert warning(edit("    role: spine\n", "    role: spine\n    transit: false\n")).startswith(
        "tor tor-2 has no path to tor tor-1 through switches that carry transit traffic: it reaches the fabric "
        "only through spine-1, and spine-1 has transit: false")


def test_no_transit_role_at_all_warns() -> None:
    assert "spines do not carry transit traffic (routing.transit_roles is empty)" in warning(
        edit("name: t\n", "name: t\nrouting: {transit_roles: []}\n"))


def test_config_check_warns_of_a_leaf_cabled_only_to_another_leaf(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """examples/leafspine.yaml with leaf-4 moved from the spines to leaf-3: loads (exit 0), with a warning."""
    example = ROOT / "examples" / "leafspine.yaml"
    text = example.read_text()
    text = "".join(line for line in text.splitlines(True) if '"leaf-4:' not in line)
    text += '  - {a: "leaf-4:1", b: "leaf-3:3"}\n'
    cfg = tmp_path / "fabric.yaml"
    cfg.write_text(text)
    (tmp_path / "test-only-insecure.key").write_bytes((example.parent / "test-only-insecure.key").read_bytes())
    assert cli.main(["config", "check", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("fabric:") and f"{cfg}: warning: tor leaf-4 has no path to tor leaf-1 through " in err
    assert "it reaches the fabric only through leaf-3, and ToRs do not carry transit traffic" in err
    assert cli.main(["config", "check", str(example)]) == 0 and "warning: tor" not in capsys.readouterr().err


def test_irregular_fabrics_with_transit_paths_load() -> None:
    single = parse_fabric(with_tor_3('  - {a: "tor-3:1", b: "spine-1:3"}\n'))             # single-homed ToR
    assert single.links_of("tor-3") == (0,)
    parallel = parse_fabric(with_tor_3('  - {a: "tor-3:1", b: "spine-1:3"}\n  - {a: "tor-3:2", b: "spine-1:4"}\n'))
    assert parallel.links_of("tor-3") == (0, 1)
    # a ToR-ToR cable next to the uplinks is fine: the racks still meet at the spine
    extra = parse_fabric(with_tor_3('  - {a: "tor-3:1", b: "spine-1:3"}\n  - {a: "tor-3:2", b: "tor-2:2"}\n'))
    assert len(extra.links) == 4
    # the operator lets tor-2 relay: tor-3 behind it is then a design, not a miscabling
    relay = with_tor_3('  - {a: "tor-3:1", b: "tor-2:2"}\n').replace(
        "    loopback: 10.255.0.3/32\n", "    loopback: 10.255.0.3/32\n    transit: true\n")
    assert parse_fabric(relay).switch("tor-2").transit and warning(relay) is None
    assert parse_fabric(BORDER).switch("b1").bgp is not None                            # a border on the spine


def test_two_racks_cabled_to_each_other_alone_load() -> None:
    two = BASE.split("  - name: spine-1\n")[0] + (
        "  - {name: tor-1, id: 2, role: tor, prefixes: [10.1.0.0/24]}\n"
        "  - {name: tor-2, id: 3, role: tor, prefixes: [10.2.0.0/24]}\n"
        "links:\n  - {a: \"tor-1:1\", b: \"tor-2:1\"}\n  - {a: \"tor-1:2\", b: \"tor-2:2\"}\n")
    assert len(parse_fabric(two).links) == 2


def test_borders_of_different_planes_need_no_transit_path_between_them() -> None:
    """border-1-1 (plane 1) and border-1-2 (plane 2) meet only through ToRs; borders exchange no traffic."""
    f = clos_fabric(spines=4, planes=2, pods=2, aggs_per_pod=2, tors_per_pod=2, border_pods=1, external=True)
    assert {s.name for s in f.switches if s.role.value == "border"} == {"border-1-1", "border-1-2"}


def test_a_fifo_or_device_named_as_the_config_says_so(tmp_path: Path) -> None:
    """Tester 2: `config check` of a FIFO nobody writes (or of /dev/null) said "empty document"."""
    import os

    from proto.config import ConfigError, load_fabric

    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="a FIFO that gave no data, not a regular file"):
        load_fabric(fifo)
    with pytest.raises(ConfigError, match="a device that gave no data, not a regular file"):
        load_fabric("/dev/null")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty document"):                # a regular empty file: as before
        load_fabric(empty)
