"""client.bgpspeaker (issue #13): ExaBGP's JSON API parsed, its config and commands (pure parts).

tests/data/exabgp-4.2-events.jsonl was recorded from Debian's ExaBGP 4.2.21 peering with FRR 8.4 bgpd
(default-originate; the cluster aggregate reflected back; default withdrawn; neighbour shut down)."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from client.bgpspeaker import PasswordError, SessionEvent, UpdateEvent, command, exabgp_config, parse_event
from client.border import Announce, Teardown, Withdraw
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import parse_fabric

EVENTS = Path(__file__).parent / "data" / "exabgp-4.2-events.jsonl"
PEER = "100.64.0.2"
DEFAULT = IPv4Network("0.0.0.0/0")


def test_recorded_exabgp_events_parse_into_sessions_and_updates() -> None:
    events = [parse_event(line) for line in EVENTS.read_bytes().splitlines()]
    got = [e for e in events if e is not None]
    assert got[0] == SessionEvent(PEER, True, "")
    assert got[1] == UpdateEvent(PEER, ((DEFAULT, PEER),), ())
    # our own aggregate reflected back (AS path 65000 64512): dropped as a loop, not learned
    assert got[2] == UpdateEvent(PEER, (), (), looped=1)
    assert got[3] == UpdateEvent(PEER, (), (DEFAULT,))
    assert isinstance(got[4], SessionEvent) and not got[4].up and "Administrative Shutdown" in got[4].reason
    assert all(isinstance(e, SessionEvent) and not e.up for e in got[5:])


@pytest.mark.parametrize("line", [b"", b"done", b"[]", b"{}", b'{"type": "state"}', b"\xff\xfe",
                                  b"[" * 50_000 + b"]" * 50_000,      # a RecursionError, once
                                  b'{"type": "update", "neighbor": {"address": {"peer": "1.2.3.4"}, '
                                  b'"message": {"update": {"announce": {"ipv4 unicast": {"1.2.3.4": '
                                  b'[{"nlri": "10.0.0.1/8"}, {"nlri": "garbage"}]}}}}}}'])
def test_garbage_never_raises(line: bytes) -> None:
    event = parse_event(line)
    assert event is None or (isinstance(event, UpdateEvent) and event.malformed == 2 and not event.announced)


def test_config_and_commands(tmp_path: Path) -> None:
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True))
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)
    text = text.replace("hold_time: 3", "password_file: pw, hold_time: 3", 1)
    f = parse_fabric(text, source="<t>", base_dir=tmp_path)
    conf = exabgp_config(f, "border-1-1", ["/usr/bin/python3", "bridge.py", "/tmp/s"])
    assert "run /usr/bin/python3 bridge.py /tmp/s;" in conf and "encoder json;" in conf
    for line in ("neighbor 100.64.0.2 {", "local-address 100.64.0.1;", "local-as 64512;", "peer-as 65000;",
                 "hold-time 3;", 'md5-password "s3cret";', "receive { parsed; update; }"):
        assert line in conf
    assert "md5-password" not in exabgp_config(f, "border-1-2", ["x"])
    agg = IPv4Network("10.0.0.0/8")
    assert command(Announce(PEER, agg)) == "neighbor 100.64.0.2 announce route 10.0.0.0/8 next-hop self"
    assert command(Withdraw(PEER, agg)) == "neighbor 100.64.0.2 withdraw route 10.0.0.0/8 next-hop self"
    assert command(Teardown(PEER, 1, "max-prefix")) == "neighbor 100.64.0.2 teardown 1"


@pytest.mark.parametrize(("content", "mode", "message"), [
    (None, 0o600, "cannot read"),
    (b"", 0o600, "empty"),
    (b"x" * 81, 0o600, "81 bytes, TCP MD5 keys have at most 80"),
    (b'say "hi"', 0o600, "without quotes"),
    (b"two\nlines\n", 0o600, "one line"),
    (b"s3cret", 0o644, "mode 644 lets others read"),
])
def test_password_file_refused_with_peer_file_and_reason(tmp_path: Path, content: bytes | None, mode: int,
                                                         message: str) -> None:
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True))
    text = text.replace("hold_time: 3", "password_file: pw, hold_time: 3", 1)
    if content is not None:
        (tmp_path / "pw").write_bytes(content)
        (tmp_path / "pw").chmod(mode)
    f = parse_fabric(text, source="f.yaml", base_dir=tmp_path)
    with pytest.raises(PasswordError, match=message) as e:
        exabgp_config(f, "border-1-1", ["x"])
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "password_file" in ln)
    assert str(e.value).startswith(f"f.yaml:{line}: switches["), e.value          # file:line: field
    assert f"].bgp.peers[0].password_file (switch border-1-1, peer 100.64.0.2): {tmp_path}/pw: " in str(e.value)
    assert exabgp_config(f, "border-1-2", ["x"])          # the other border has no password: unaffected
