"""proto/clos.py: the Clos generator produces valid, deterministic fabrics of the asked shape."""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.clos import PRESETS, ClosParams, clos_fabric, generate_clos_yaml
from proto.config import Fabric, Role, parse_fabric

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def connected(fabric: Fabric) -> bool:
    adjacency: dict[str, set[str]] = {s.name: set() for s in fabric.switches}
    for link in fabric.links:
        adjacency[link.a.switch].add(link.b.switch)
        adjacency[link.b.switch].add(link.a.switch)
    start = fabric.switches[0].name
    seen = {start}
    todo = deque([start])
    while todo:
        for peer in adjacency[todo.popleft()] - seen:
            seen.add(peer)
            todo.append(peer)
    return len(seen) == len(adjacency)


def neighbours(fabric: Fabric, name: str) -> Counter[str]:
    return Counter(fabric.peer_of(name, port).switch for port in fabric.fabric_ports(name))


def check_shape(p: ClosParams, f: Fabric) -> None:
    """Everything the generator promises, checked on the loaded fabric."""
    roles = Counter(s.role for s in f.switches)
    assert len(f.switches) == p.n_switches
    assert len(f.links) == p.n_links
    assert len(f.hosts) == p.n_hosts
    assert roles[Role.SPINE] == p.spines and roles[Role.TOR] == p.n_tors
    assert roles[Role.AGG] == p.n_aggs and roles[Role.BORDER] == p.n_borders
    assert len(f.masters) == p.masters
    assert [s.id for s in f.switches] == list(range(1, p.n_switches + 1))
    assert connected(f)
    spines = [s.name for s in f.switches if s.role is Role.SPINE]
    planes = [spines[k * p.spines_per_plane : (k + 1) * p.spines_per_plane] for k in range(p.planes)]
    for s in f.switches:
        ports = f.fabric_ports(s.name)
        assert ports == tuple(range(1, len(ports) + 1)), "fabric ports count from 1"
        peers = neighbours(f, s.name)
        assert set(peers.values()) <= {p.uplinks}, "every adjacent pair has `uplinks` parallel links"
        if s.role is Role.TOR:
            if p.pods:
                pod = s.name.split("-")[1]
                assert set(peers) == {f"agg-{pod}-{j}" for j in range(1, p.aggs_per_pod + 1)}
            else:
                assert set(peers) == set(spines)
            (subnet,) = s.prefixes
            assert subnet.prefixlen == 24 and subnet.subnet_of(IPv4Network(p.base_prefix))
            assert s.gateway == subnet.network_address + 1
            assert len(s.hosts) == p.hosts_per_tor
            for h in s.hosts:
                assert h.ip in subnet and h.port >= 100 and h.port not in ports
        elif s.role in (Role.AGG, Role.BORDER):
            j = int(s.name.split("-")[2]) - 1
            up = {peer for peer in peers if peer.startswith("spine-")}
            assert up == set(planes[j % p.planes])
            if s.role is Role.BORDER:
                assert s.prefixes == (IPv4Network("0.0.0.0/0"),) and set(peers) == up
        assert s.loopback is not None and s.loopback.subnet_of(IPv4Network(p.base_prefix))


@st.composite
def clos_params(draw: st.DrawFn) -> ClosParams:
    spines_per_plane = draw(st.integers(1, 3))
    planes = draw(st.integers(1, 3))
    pods = draw(st.integers(0, 3))
    aggs = draw(st.integers(planes, planes + 2))
    return ClosParams(
        name="h",
        spines=spines_per_plane * planes,
        planes=planes,
        pods=pods,
        aggs_per_pod=aggs,
        tors_per_pod=draw(st.integers(1, 3)),
        leaves=draw(st.integers(1, 5)),
        hosts_per_tor=draw(st.integers(0, 3)),
        border_pods=draw(st.integers(0, 2)),
        uplinks=draw(st.integers(1, 2)),
        masters=draw(st.integers(1, 4)),
        base_prefix=draw(st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])),
        ovs_base_port=draw(st.none() | st.just(16000)),
        rest_base_port=draw(st.none() | st.just(9000)),
        timers=draw(st.sampled_from([(), (("nd_interval_ms", 20.0), ("nd_dead_ms", 70.0))])),
        external=draw(st.booleans()),
    )


@settings(max_examples=40, deadline=None)
@given(clos_params())
def test_generated_fabrics_are_valid_and_shaped(p: ClosParams) -> None:
    text = generate_clos_yaml(p)
    f = parse_fabric(text)
    check_shape(p, f)
    assert generate_clos_yaml(p) == text, "deterministic"
    if p.ovs_base_port is not None:
        assert all(s.ovs == f"tcp:127.0.0.1:{16000 + s.id}" for s in f.switches)
    if p.rest_base_port is not None:
        assert all(s.rest_port == 9000 + s.id for s in f.switches)


@pytest.mark.parametrize("name", ["leafspine", "clos3"])
def test_small_presets(name: str) -> None:
    p = PRESETS[name]
    f = clos_fabric(**{fld.name: getattr(p, fld.name) for fld in dataclasses.fields(p)})
    check_shape(p, f)


def test_three_tier_details() -> None:
    f = clos_fabric(spines=4, planes=2, pods=2, aggs_per_pod=2, tors_per_pod=2, hosts_per_tor=2, border_pods=1)
    assert neighbours(f, "agg-1-1") == Counter({"tor-1-1": 1, "tor-1-2": 1, "spine-1": 1, "spine-2": 1})
    assert neighbours(f, "agg-2-2") == Counter({"tor-2-1": 1, "tor-2-2": 1, "spine-3": 1, "spine-4": 1})
    assert neighbours(f, "border-1-2") == Counter({"spine-3": 1, "spine-4": 1})
    assert neighbours(f, "spine-1") == Counter({"agg-1-1": 1, "agg-2-1": 1, "border-1-1": 1})
    tor = f.switch("tor-1-1")
    assert tor.prefixes == (IPv4Network("10.0.0.0/24"),) and tor.gateway == IPv4Address("10.0.0.1")
    assert [(h.name, h.port, str(h.ip), h.mac) for h in tor.hosts] == [
        ("h-1-1-1", 100, "10.0.0.10", "02:00:00:00:00:01"),
        ("h-1-1-2", 101, "10.0.0.11", "02:00:00:00:00:02"),
    ]
    assert f.switch("spine-1").loopback == IPv4Network("10.255.255.1/32")
    # LSD order: ToR-agg links first, then agg-spine, then border-spine
    kinds = [(lk.a.switch.split("-")[0], lk.b.switch.split("-")[0]) for lk in f.links]
    assert kinds == [("tor", "agg")] * 8 + [("agg", "spine")] * 8 + [("border", "spine")] * 4
    assert f.links[0].name == "tor-1-1:1-agg-1-1:1"


def test_uplinks_and_host_port_base() -> None:
    f = clos_fabric(spines=2, pods=0, leaves=2, uplinks=3)
    assert f.fabric_ports("leaf-1") == (1, 2, 3, 4, 5, 6)
    assert neighbours(f, "leaf-1") == Counter({"spine-1": 3, "spine-2": 3})
    many = ClosParams(spines=120, pods=0, leaves=1, hosts_per_tor=1)
    assert many.host_port_base == 200
    assert clos_fabric(spines=120, pods=0, leaves=1).switch("leaf-1").hosts[0].port == 200


def test_timers_and_key_file_pass_through(tmp_path: Path) -> None:
    f = clos_fabric(base_dir=tmp_path, key_file="k/fabric.key", timers=(("nd_interval_ms", 5), ("nd_dead_ms", 25)))
    assert f.security.key_file == tmp_path / "k" / "fabric.key"
    assert f.timers.nd_interval == pytest.approx(0.005) and f.timers.nd_dead == pytest.approx(0.025)


def test_every_timer_the_generator_accepts_loads() -> None:
    """`config clos`/`lab config --timer` wrote `nd_interval_ms: inf`, `1e-05` or `2e+07` (YAML 1.1 reads
    those as strings) and the file it had just written did not load; now it refuses what the parser would."""
    f = clos_fabric(timers=(("switch_dead_ms", 20_000_000), ("pacing_ms", 0.5), ("max_update_rate", 0.25)))
    assert f.timers.switch_dead == pytest.approx(20_000) and f.timers.pacing == pytest.approx(0.0005)
    assert f.timers.max_update_rate == pytest.approx(0.25)
    for key, value in (("nd_interval_ms", float("inf")), ("nd_interval_ms", float("nan")),
                       ("nd_interval_ms", 1e-5), ("switch_dead_ms", 1e12), ("flap_threshold", 2.5)):
        with pytest.raises(ValueError, match=f"timer {key}"):
            ClosParams(timers=((key, value),))
    # the same timer twice wrote the key twice, and the file did not load ("duplicate key"): bench_stages
    # --timer oam_interval_ms=7 over its own default failed so (stop 37)
    with pytest.raises(ValueError, match="timer oam_interval_ms given twice"):
        ClosParams(timers=(("oam_interval_ms", 7), ("nd_dead_ms", 60), ("oam_interval_ms", 9)))


def test_the_generator_refuses_timers_out_of_order_and_switches_over_the_report_bound() -> None:
    """Tester: `config clos --timer nd_dead_ms=5` (below the default nd_interval_ms 10), `--timer
    master_dead_ms=10` and `--pods 0 --leaves 2 --spines 601` wrote files that `config check` then refused
    (nd_dead_ms must exceed nd_interval_ms; more than 600 fabric ports on a switch). The generator now refuses
    them, naming the same rule as the loader."""
    for timers, fragment in (((("nd_dead_ms", 5),), r"timers\.nd_dead_ms: nd_dead_ms \(5\) must exceed nd_interval_ms"),
                             ((("master_dead_ms", 10),), r"must exceed hello_interval_ms"),
                             ((("nd_interval_ms", 300), ("nd_dead_ms", 250)), r"nd_dead_ms \(250\) must exceed")):
        with pytest.raises(ValueError, match=fragment):
            ClosParams(timers=timers)
    with pytest.raises(ValueError, match="a tor would need 601 fabric ports, more than the 600"):
        ClosParams(pods=0, leaves=2, spines=601)
    f = clos_fabric(pods=0, leaves=2, spines=600, hosts_per_tor=0)        # the bound itself loads
    assert max(len(f.links_of(sw.name)) for sw in f.switches) == 600
    assert clos_fabric(timers=(("nd_dead_ms", 50), ("nd_interval_ms", 10))).timers.nd_dead == pytest.approx(0.05)


def test_determinism_and_header() -> None:
    p = ClosParams(spines=4, pods=3, aggs_per_pod=2, tors_per_pod=3, border_pods=1, uplinks=2)
    a, b = generate_clos_yaml(p), generate_clos_yaml(dataclasses.replace(p))
    assert a == b
    assert a.startswith(
        "# Generated by: firepath config clos --spines 4 --pods 3 --tors-per-pod 3 --border-pods 1 --uplinks 2\n"
    )
    assert generate_clos_yaml(dataclasses.replace(p, uplinks=1)) != a


def test_jupiter_preset_size_by_arithmetic() -> None:
    """The Jupiter preset's size, from the generator's arithmetic (the timed run is in the report/bench)."""
    p = PRESETS["jupiter"]
    assert p.n_switches >= 30_000
    assert 100_000 <= p.n_links <= 150_000  # LSD at 2 bits/link stays far below 64 KB
    assert p.n_links * 2 / 8 < 40 * 1024  # raw 2-bit snapshot, before compression
    assert max(p.max_ports().values()) <= 65279


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"spines": 0}, "spines must be at least 1"),
        ({"pods": -1}, "pods must not be negative"),
        ({"spines": 3, "planes": 2}, "multiple of planes"),
        ({"planes": 3, "spines": 3, "aggs_per_pod": 2}, "planes must not exceed aggs_per_pod"),
        ({"hosts_per_tor": 245}, "hosts_per_tor must be at most 244"),
        ({"base_prefix": "10.0.0.0/24"}, "/23 or shorter"),
        ({"base_prefix": "10.0.0.1/8"}, "base_prefix"),
        ({"base_prefix": "10.0.0.0/20", "pods": 4, "tors_per_pod": 4}, "too small for 16 ToR /24 subnets"),
        ({"ovs_base_port": 65530}, "ovs_base_port too high"),
        ({"timers": (("nd_interval", 5),)}, "unknown timer 'nd_interval'"),
        ({"masters": 0}, "masters must be at least 1"),
        ({"name": "a b"}, "bad name"),
        ({"pods": 0, "leaves": 0}, "leaves must be at least 1"),
        ({"pods": 0, "leaves": 70000, "base_prefix": "32.0.0.0/3"}, "fabric ports"),
        # F10: a port base below 1 is too low, not too high
        ({"ovs_base_port": 0}, "ovs_base_port must be at least 1"),
        ({"rest_base_port": -5}, "rest_base_port must be at least 1"),
        ({"master_base_port": 65300}, "master_base_port too high: at most 65236"),
        # F9: the address plan is unicast-routable space (proto.configyaml.special_use)
        ({"base_prefix": "224.0.0.0/4"}, "base_prefix 224.0.0.0/4 is multicast (224.0.0.0/4, RFC 5771): the "
                                         "fabric's ToR subnets and loopbacks must be unicast-routable"),
        ({"base_prefix": "127.0.0.0/8"}, "base_prefix 127.0.0.0/8 is loopback (127.0.0.0/8"),
        ({"base_prefix": "169.254.0.0/16"}, "is link-local (169.254.0.0/16, RFC 3927)"),
        ({"base_prefix": "240.0.0.0/4"}, "is reserved (240.0.0.0/4"),
        ({"base_prefix": "0.0.0.0/0"}, 'base_prefix 0.0.0.0/0 contains 0.0.0.0/8 ("this network"'),
        ({"base_prefix": "96.0.0.0/3"}, "base_prefix 96.0.0.0/3 contains 127.0.0.0/8 (loopback"),
    ],
)
def test_invalid_params(kw: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ClosParams(**kw)


@pytest.mark.parametrize("name", ["leafspine", "clos3"])
def test_examples_are_current_generator_output(name: str) -> None:
    """examples/*.yaml are exactly what their header command generates (regenerate when this fails)."""
    text = (EXAMPLES / f"{name}.yaml").read_text()
    expected = generate_clos_yaml(dataclasses.replace(PRESETS[name], key_file="test-only-insecure.key"))
    assert text == expected
    f = parse_fabric(text, base_dir=EXAMPLES)
    assert f.security.key_file == EXAMPLES / "test-only-insecure.key"
    assert f.security.key_file.is_file()
    assert len(f.masters) == 3


@pytest.mark.parametrize("base", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "32.0.0.0/3"])
def test_private_shared_and_public_base_prefixes_generate_a_valid_fabric(base: str) -> None:
    p = ClosParams(base_prefix=base, ovs_base_port=1, rest_base_port=1)
    f = parse_fabric(generate_clos_yaml(p))
    assert all(s.loopback is not None and s.loopback.subnet_of(IPv4Network(base)) for s in f.switches)


def test_option_values_cannot_write_yaml_of_their_own() -> None:
    """Tester bb40b: a newline in --key-file / --admin-token-file wrote a live `liveness: nd` line (the header
    comment echoed the command line raw, and the values were quoted without escaping)."""
    import yaml

    from proto.clos import ClosParams, generate_clos_yaml

    evil = "tok\nliveness: nd #"
    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=2, key_file=evil, admin_token_file='a"b\\c'))
    doc = yaml.safe_load(text)
    assert "liveness" not in doc
    assert doc["security"] == {"key_file": evil, "admin_token_file": 'a"b\\c'}
    assert text.splitlines()[0].startswith("# Generated by: ") and not text.splitlines()[1].startswith("liveness")
