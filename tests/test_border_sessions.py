"""Issue #13: each border's eBGP sessions reach the master in its reports (`PortReport.bgp`) and its REST
(`GET /v1/borders`): the wire, the reporter's send rule, the border core's summary, the master's view."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from client.border import MAX_PREFIX_RESTART, BorderCore
from client.reporter import Reporter
from controller.core import MasterCore
from controller.rest import make_app
from controller.server import MasterServer
from proto.auth import KeyRing, generate_secret, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import Fabric, load_fabric, parse_fabric
from proto.messages import (
    MAX_DATAGRAM,
    BgpSession,
    Codec,
    MessageError,
    PortReport,
    PortStatus,
    RelayedReport,
    _from_wire,
    _to_wire,
)

PARAMS = ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True)
DEFAULT = IPv4Network("0.0.0.0/0")


def fabric() -> Fabric:
    return parse_fabric(generate_clos_yaml(PARAMS), source="<test>")


def ports(f: Fabric, switch: str) -> tuple[PortStatus, ...]:
    return tuple(PortStatus(p, True, True, True, True, False) for p in f.fabric_ports(switch))


# ------------------------------------------------------------------------------------------------ wire

def test_sessions_round_trip_are_relayed_and_bad_ones_refused() -> None:
    bgp = (BgpSession(0, BgpSession.STATE_ESTABLISHED, 73, 1, 1, 0), BgpSession(1, BgpSession.STATE_HELD, 4, 0, 0, 2))
    r = PortReport("border-1-1", "0" * 64, 5, 1, (PortStatus(1, True, True, True, True, False),), 3, 1, bgp)
    assert _from_wire(PortReport, _to_wire(r)) == r
    assert _from_wire(RelayedReport, _to_wire(RelayedReport.of("m2", 1, r))).report() == r
    wire = _to_wire(r)
    for bad, message in (([[0, 3, 0, 0, 0, 0]], r"bgp\[0\]\.state: Expected `int` <= 2"),
                         ([[0, 1, -1, 0, 0, 0]], r"bgp\[0\]\.seconds: Expected `int` >= 0"),
                         ([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], r"bgp\[1\]: peer 0 reported twice"),
                         ([[0, 1, 0, 0, 0]], r"bgp\[0\]: Expected `array` of at least length 6"),
                         ([[0, True, 0, 0, 0, 0]], r"bgp\[0\]\.state: Expected `int`, got `bool`"),
                         ([[k, 1, 0, 0, 0, 0] for k in range(257)], r"bgp: Expected `array` of length <= 256")):
        with pytest.raises(MessageError, match=message):
            _from_wire(PortReport, [*wire[:-1], bad])


def test_a_border_with_256_sessions_still_fits_a_datagram() -> None:
    f = fabric()
    bgp = tuple(BgpSession(k, 1, 2**32 - 1, 10**6, 255, 2**32 - 1) for k in range(256))
    r = PortReport("border-1-1", f.digest, 2**62, 1, ports(f, "border-1-1"), 1, 1, bgp)
    keys = KeyRing.from_secret(generate_secret())
    codec = Codec(keys, "border-1-1", [s.name for s in f.switches], [m.id for m in f.masters])
    data = codec.encode(r, to="m1")
    assert len(data) < MAX_DATAGRAM // 2


# ------------------------------------------------------------------------------------------------ client

def test_reporter_sends_a_state_change_at_once_and_counts_on_the_next_report() -> None:
    f = fabric()
    rep = Reporter(f, "border-1-1")
    rep.update(ports(f, "border-1-1"), 0.0)
    seq = rep.report_seq
    sends = rep.set_bgp(((0, 1, 10.0, 1, 1, 0),), 12.5)
    assert sends and sends[0].msg.report_seq == seq + 1
    assert sends[0].msg.bgp == (BgpSession(0, 1, 2, 1, 1, 0),)          # 12.5 - 10.0 s, whole seconds
    assert rep.set_bgp(((0, 1, 10.0, 5, 1, 0),), 13.0) == []              # counts only: no report now
    refresh = rep.tick(rep.next_deadline())
    assert refresh and refresh[0].msg.bgp[0].prefixes_in == 5
    assert rep.set_bgp(((0, 0, 20.0, 0, 0, 0),), 20.0)                    # down: at once


def test_border_core_summary_follows_sessions_and_max_prefix() -> None:
    text = generate_clos_yaml(PARAMS).replace("hold_time: 3", "max_prefix: 2, hold_time: 3")
    core = BorderCore(parse_fabric(text, source="<test>"), "border-1-1", now=5.0)
    peer = next(iter(core.peers))
    assert core.summary(6.0) == ((0, 0, 5.0, 0, 0, 0),)
    core.fabric_reach([IPv4Network("10.0.1.0/24")], 6.0)
    core.session(peer, True, 7.0)
    core.update(peer, {DEFAULT: "100.64.0.2"}, (), 7.1)
    assert core.summary(8.0) == ((0, 1, 7.0, 1, len(core.aggregates), 0),)
    core.update(peer, {IPv4Network(f"203.0.113.{i}/32"): "100.64.0.2" for i in range(3)}, (), 9.0)
    assert core.summary(9.5) == ((0, 2, 9.0, 0, 0, 1),)                   # held down after max-prefix
    assert core.summary(9.0 + MAX_PREFIX_RESTART) == ((0, 0, 9.0, 0, 0, 1),)


# ------------------------------------------------------------------------------------------------ master

def test_master_view_names_the_peers_and_ages_the_times() -> None:
    f = fabric()
    core = MasterCore(f, "m1")
    core.become_master(1, 0.0)
    core.end_hold(0.0)
    bgp = (BgpSession(0, BgpSession.STATE_ESTABLISHED, 30, 1, 1, 0),)
    core.handle("border-1-1", PortReport("border-1-1", f.digest, 1, 1, ports(f, "border-1-1"), 0, 1, bgp), 10.0)
    view = core.borders.view(f, 12.0, core.external_states(), alive=lambda name: core.switch_alive(name, 12.0))
    peer = f.switch("border-1-1").bgp.peers[0]
    assert view["border-1-1"] == {
        "report_age_s": 2.0, "alive": True, "provides": {"0.0.0.0/0": True},
        "sessions": [{"peer": str(peer.address), "peer_as": peer.peer_as, "max_prefix": peer.max_prefix,
                      "state": "established", "prefixes_in": 1, "prefixes_out": 1, "teardowns": 0,
                      "uptime_s": 32.0}]}
    assert view["border-1-2"]["report_age_s"] is None and view["border-1-2"]["sessions"][0]["state"] == "unknown"
    assert "tor-1-1" not in view
    # a stale summary never comes back: a border's newer report without sessions replaces it
    core.handle("border-1-1", PortReport("border-1-1", f.digest, 2, 1, ports(f, "border-1-1"), 0, 0), 13.0)
    assert core.borders.view(f, 13.0, {})["border-1-1"]["sessions"][0]["state"] == "unknown"


def test_rest_borders_endpoint(tmp_path: Path) -> None:
    write_secret_file(tmp_path / "fabric.key")
    (tmp_path / "f.yaml").write_text(generate_clos_yaml(PARAMS))
    f = load_fabric(tmp_path / "f.yaml")

    async def main() -> dict:
        server = MasterServer(f, "m1", KeyRing.load(tmp_path / "fabric.key"), tmp_path / "state",
                              bind="127.0.0.1", client_port=0, peer_port=0, rest_port=0)
        await server.start(rest=False)
        server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
        bgp = (BgpSession(0, BgpSession.STATE_IDLE, 3, 0, 0, 1),)
        server.core.handle("border-1-2", PortReport("border-1-2", f.digest, 1, 1, ports(f, "border-1-2"), 0, 0, bgp),
                           server.now())
        client = TestClient(TestServer(make_app(server)))
        await client.start_server()
        try:
            r = await client.get("/v1/borders")
            assert r.status == 200
            return await r.json()
        finally:
            await client.close()
            await server.stop()

    out = asyncio.run(main())
    assert out["role"] == "master" and set(out["borders"]) == {"border-1-1", "border-1-2"}
    row = out["borders"]["border-1-2"]["sessions"][0]
    assert row["state"] == "idle" and row["teardowns"] == 1 and row["down_s"] >= 3
    assert out["borders"]["border-1-2"]["provides"] == {"0.0.0.0/0": False}


# ------------------------------------------------------------------------------------------------ lab status

def test_lab_status_falls_back_to_the_masters_view_for_a_silent_border_client() -> None:
    """`firepath lab status`: a border whose client REST does not answer gets its sessions from the
    master's GET /v1/borders (its last reports), marked as such."""
    from types import SimpleNamespace

    from lab.report import format_status

    f = fabric()
    peer = f.switch("border-1-2").bgp.peers[0]
    own = {"sessions": [{"peer": "100.64.0.2", "state": "established", "uptime_s": 5.0, "prefixes_in": 1,
                         "prefixes_out": ["10.0.0.0/8"]}], "provided": {"0.0.0.0/0": ["100.64.0.2"]}}
    clients = {sw.name: {"ports": [], "routes": 1, "groups": 1} for sw in f.switches}
    clients["border-1-1"]["border"] = own
    clients["border-1-2"] = ConnectionRefusedError("down")
    master = {"borders": {"border-1-2": {"report_age_s": 2.5, "provides": {"0.0.0.0/0": True}, "sessions": [
        {"peer": str(peer.address), "state": "established", "uptime_s": 9.5, "prefixes_in": 1, "prefixes_out": 1}]}}}
    asked: list[tuple[int, str]] = []
    http = SimpleNamespace(get=lambda port, path: asked.append((port, path)) or master)
    lab = SimpleNamespace(fabric=f, http=http, state=SimpleNamespace(external_masters=False, processes={}, faults=[]),
                          master_states=lambda: {"m1": {"role": "master", "term": 1, "version": 3}},
                          client_states=lambda: clients, current_master=lambda: ("m1", {"role": "master"}))
    text = format_status(lab)
    assert asked == [(f.masters[0].rest_port, "/v1/borders")]
    lines = [line for line in text.splitlines() if line.startswith("border-1-")]
    assert any("100.64.0.2" in line and "5.0s" in line and "10.0.0.0/8" in line for line in lines)
    fallback = next(line for line in lines if str(peer.address) in line)
    assert "9.5s" in fallback and "master's view, report 2.5s old" in fallback and "0.0.0.0/0" in fallback


def test_lab_status_says_no_master_and_which_switches_are_fail_static() -> None:
    """A tester killed two of three masters: `lab status` still showed each switch's last master and LSD
    version, with no word that they were fail-static."""
    from types import SimpleNamespace

    from lab.report import format_status

    f = fabric()
    clients = {sw.name: {"ports": [], "routes": 1, "groups": 1, "master": "m1", "fail_static": False}
               for sw in f.switches}
    lab = SimpleNamespace(fabric=f, http=SimpleNamespace(get=lambda port, path: {"borders": {}}),
                          state=SimpleNamespace(external_masters=False, processes={}, faults=[]),
                          master_states=lambda: {"m1": {"role": "master", "term": 1, "version": 3}},
                          client_states=lambda: clients, current_master=lambda: ("m1", {"role": "master"}))
    text = format_status(lab)
    assert "fail-static" not in text and "no master" not in text
    clients["border-1-1"]["fail_static"] = True
    lab.master_states = lambda: {"m1": {"role": "inactive", "term": 2, "version": 3}}
    text = format_status(lab)
    assert "no master: no replica is serving" in text
    assert "fail-static (no master heard, forwarding on the last LSD; '(m)' = the last master it heard): " \
           "border-1-1" in text
    row = next(line for line in text.splitlines() if line.startswith("border-1-1 "))
    assert row.split()[2] == "(m1)", row          # its last master, marked as not heard now (tester, stop 31)
    other = next(line for line in text.splitlines() if line.startswith("border-1-2 "))
    assert other.split()[2] == "m1", other


def test_lab_status_names_a_route_held_by_the_borders_flap_damping() -> None:
    """Tester: after three withdraw/announce cycles of the external router the default route was damped for up
    to 60 s; `lab status` showed the sessions established, 1 prefix in, providing `-`, and no reason (only
    `lab heal --wait` named the damping, which the client's REST has in `border.suppressed`)."""
    from types import SimpleNamespace

    from lab.report import format_status

    f = fabric()
    clients = {sw.name: {"ports": [], "routes": 1, "groups": 1} for sw in f.switches}
    for name, peer in (("border-1-1", "100.64.0.2"), ("border-1-2", "100.64.0.6")):
        clients[name]["border"] = {"sessions": [{"peer": peer, "state": "established", "uptime_s": 23.7,
                                                 "prefixes_in": 1, "prefixes_out": ["10.0.0.0/8"]}],
                                   "provided": {}, "suppressed": []}
    clients["border-1-1"]["border"]["suppressed"] = [["100.64.0.2", "0.0.0.0/0"]]
    lab = SimpleNamespace(fabric=f, http=SimpleNamespace(get=lambda port, path: {"borders": {}}),
                          state=SimpleNamespace(external_masters=False, processes={}, faults=[]),
                          master_states=lambda: {"m1": {"role": "master", "term": 1, "version": 3}},
                          client_states=lambda: clients, current_master=lambda: ("m1", {"role": "master"}))
    lines = {line.split()[0]: line for line in format_status(lab).splitlines() if line.startswith("border-1-")}
    assert lines["border-1-1"].endswith("- (damped: 0.0.0.0/0)"), lines
    assert "damped" not in lines["border-1-2"], lines


def test_lab_status_names_a_switch_that_refuses_its_masters_lsd_as_another_config() -> None:
    """Tester: mid-rollout (`lab reload tor-1-1` after preparing the masters) `lab status` showed tor-1-1 with
    lsd -1, prog -1, routes 0 (its switch still forwarding on the flows it held) and no word why: its client
    runs the next config and refuses the masters' LSD of the current one (`config_mismatch`)."""
    from types import SimpleNamespace

    from lab.report import format_status

    f = fabric()
    clients = {sw.name: {"ports": [], "routes": 1, "groups": 1, "master": "m1", "config_mismatch": None}
               for sw in f.switches}
    lab = SimpleNamespace(fabric=f, http=SimpleNamespace(get=lambda port, path: {"borders": {}}),
                          state=SimpleNamespace(external_masters=False, processes={}, faults=[]),
                          master_states=lambda: {"m1": {"role": "master", "term": 1, "version": 3}},
                          client_states=lambda: clients, current_master=lambda: ("m1", {"role": "master"}))
    assert "another config" not in format_status(lab)
    name = f.switches[0].name
    clients[name].update(config_mismatch="5b7cd7c0c47e" * 5, lsd_version=-1, programmed_version=-1, routes=0)
    line = next(li for li in format_status(lab).splitlines() if "another config" in li)
    assert line.endswith(f"local repair): {name}"), line
