"""The FRR peer's plan (bench/peers/frr.py): addresses, RFC 7938 ASNs, daemon configs, route-log parsing.

Pure: no FRR, no namespaces. The runtime half (daemons in namespaces) is exercised by `python -m
bench.bench_peer`, which needs `scripts/install-deps.sh --bench`; `make test` does not install FRR.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from bench.peers.frr import (
    SPINE_ASN,
    FrrError,
    expected_routes,
    expected_routes_bgp,
    link_addresses,
    parse_route_events,
    plan,
)
from lab.fabric import generate_config, load_fabric


@pytest.fixture(scope="module")
def leafspine(tmp_path_factory):
    return load_fabric(generate_config(tmp_path_factory.mktemp("ls"), "t", spines=2, pods=0, leaves=4))


@pytest.fixture(scope="module")
def clos3(tmp_path_factory):
    return load_fabric(generate_config(tmp_path_factory.mktemp("c3"), "t", spines=2, pods=2, aggs_per_pod=2,
                                       tors_per_pod=2))


def test_every_link_is_a_31_with_one_address_per_end(clos3):
    plans = plan(clos3, "t", "ospf")
    seen: set[str] = set()
    for link in clos3.links:
        a = plans[link.a.switch]
        b = plans[link.b.switch]
        a_if = f"s{a.index}p{link.a.port}"
        b_if = f"s{b.index}p{link.b.port}"
        net_a = ipaddress.ip_interface(a.addresses[a_if]).network
        net_b = ipaddress.ip_interface(b.addresses[b_if]).network
        assert net_a == net_b and net_a.prefixlen == 31
        assert a.addresses[a_if] != b.addresses[b_if]
        seen |= {a.addresses[a_if], b.addresses[b_if]}
        # each end's neighbour is the other end's address
        assert any(n.ifname == a_if and n.address == b.addresses[b_if].split("/")[0] for n in a.neighbors)
    assert len(seen) == 2 * len(clos3.links)
    with pytest.raises(FrrError, match="link index"):
        link_addresses(40000)


def test_rfc7938_asns_spines_shared_aggs_per_pod_tors_unique(clos3):
    plans = plan(clos3, "t", "bgp")
    asn = {name: p.asn for name, p in plans.items()}
    assert asn["spine-1"] == asn["spine-2"] == SPINE_ASN
    assert asn["agg-1-1"] == asn["agg-1-2"] != asn["agg-2-1"] == asn["agg-2-2"]
    tors = [asn[n] for n in plans if n.startswith("tor-")]
    assert len(set(tors)) == len(tors) and not set(tors) & {SPINE_ASN, asn["agg-1-1"], asn["agg-2-1"]}
    assert all(64512 <= a <= 65534 for a in asn.values())          # 2-byte private range
    cfg = plans["tor-1-1"].configs["bgpd"]
    assert f"router bgp {asn['tor-1-1']}" in cfg
    assert cfg.count(f"remote-as {asn['agg-1-1']}") == 2            # both aggs of its pod
    assert "network 10.0.0.0/24" in cfg and "maximum-paths 64" in cfg
    assert cfg.count(" bfd profile fabric") == 2


def test_ospf_configs_bfd_timers_and_the_nexthop_group_workaround(leafspine):
    plans = plan(leafspine, "t", "ospf", bfd_ms=20, bfd_mult=4)
    leaf = plans["leaf-1"]
    assert set(leaf.configs) == {"zebra", "bfdd", "ospfd"}
    assert "no zebra nexthop kernel enable" in leaf.configs["zebra"]
    assert "transmit-interval 20" in leaf.configs["bfdd"] and "detect-multiplier 4" in leaf.configs["bfdd"]
    ospf = leaf.configs["ospfd"]
    assert ospf.count(" ip ospf bfd profile fabric") == len(leaf.fabric_ifaces) == 2
    assert ospf.count(" ip ospf network point-to-point") == 2
    assert "interface s2p100\n ip ospf area 0\n ip ospf passive" in ospf      # the host port
    assert leaf.addresses["s2p100"] == "10.0.0.1/24"                           # the ToR's gateway
    assert plans["spine-1"].asn is None and plans["spine-1"].host_ifaces == []


def test_bad_variant_or_timers_are_refused(leafspine):
    with pytest.raises(FrrError, match="variant 'isis'"):
        plan(leafspine, "t", "isis")
    with pytest.raises(FrrError, match="BFD 5 ms"):
        plan(leafspine, "t", "ospf", bfd_ms=5)
    with pytest.raises(FrrError, match="multiplier"):
        plan(leafspine, "t", "bgp", bfd_mult=1)


def test_expected_routes_are_interface_names_and_drop_a_failed_link(leafspine):
    plans = plan(leafspine, "t", "ospf")
    full = expected_routes(leafspine, plans)
    assert full["leaf-1"]["10.0.1.0/24"] == {"s2p1", "s2p2"}
    assert full["spine-1"]["10.0.0.0/24"] == {"s0p1"}
    link = next(lk for lk in leafspine.links if {lk.a.switch, lk.b.switch} == {"leaf-1", "spine-1"})
    down = expected_routes(leafspine, plans, [link.index])
    assert down["leaf-1"]["10.0.1.0/24"] == {"s2p2"}
    assert down["leaf-2"]["10.0.0.0/24"] == {"s3p2"}             # remote leaves avoid spine-1 for leaf-1
    assert down["leaf-2"]["10.0.2.0/24"] == {"s3p1", "s3p2"}


def test_route_monitor_lines_are_parsed_for_data_prefixes_only():
    text = (
        "[2026-12-02T18:33:40.201115] 10.0.1.0/24 via 172.31.0.1 dev s2p1 proto ospf metric 20 \n"
        "[2026-12-02T18:33:40.201146] 10.255.255.1 via 172.31.0.1 dev s2p1 proto ospf metric 20 \n"
        "[2026-12-02T18:33:40.405421] 10.0.2.0/24 proto ospf metric 20 \n"
        "\tnexthop via 172.31.0.1 dev s2p1 weight 1 \n"
        "[2026-12-02T18:33:41.000001] Deleted 10.0.1.0/24 proto ospf metric 20 \n"
        "garbage\n"
    )
    events = parse_route_events(text, {"10.0.1.0/24", "10.0.2.0/24"})
    t = datetime(2026, 12, 2, 18, 33, 40, 201115, tzinfo=UTC).timestamp()
    assert [(round(ts - t, 6), p, d) for ts, p, d in events] == [
        (0.0, "10.0.1.0/24", False), (0.204306, "10.0.2.0/24", False), (0.798886, "10.0.1.0/24", True)]


@pytest.mark.parametrize("fabric_name", ["leafspine", "clos3"])
def test_bgp_expectation_is_client_routes_when_all_is_up(fabric_name, request):
    fabric = request.getfixturevalue(fabric_name)
    plans = plan(fabric, "t", "bgp")
    assert expected_routes_bgp(fabric, plans) == expected_routes(fabric, plans)


def test_bgp_expectation_has_no_valley_paths(leafspine, clos3):
    plans = plan(leafspine, "t", "bgp")
    link = next(lk for lk in leafspine.links if {lk.a.switch, lk.b.switch} == {"leaf-1", "spine-1"})
    ospf_like = expected_routes(leafspine, plans, [link.index])["spine-1"]
    bgp = expected_routes_bgp(leafspine, plans, [link.index])["spine-1"]
    assert ospf_like["10.0.0.0/24"] == {"s0p2", "s0p3", "s0p4"}     # down-up-down through another leaf
    assert "10.0.0.0/24" not in bgp                                   # spine ASN repeats: refused
    assert bgp["10.0.1.0/24"] == {"s0p2"}
    # 3 tiers: an agg that lost its ToR does not go through the pod's other agg (same pod ASN)
    plans3 = plan(clos3, "t", "bgp")
    link3 = next(lk for lk in clos3.links if {lk.a.switch, lk.b.switch} == {"agg-1-1", "tor-1-1"})
    assert "10.0.0.0/24" not in expected_routes_bgp(clos3, plans3, [link3.index])["agg-1-1"]
    assert "10.0.0.0/24" in expected_routes(clos3, plans3, [link3.index])["agg-1-1"]
