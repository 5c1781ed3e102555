"""Key rollover (issue #21): key sets by id, the key id in the envelope, the runtime swap, the config's
`security.keys`, and a rollover of a small fabric of Codecs with no frame lost at any step."""

from __future__ import annotations

import hashlib
import hmac
import logging
from contextlib import suppress
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from controller.fanout import FanoutEncoder
from proto.auth import AuthError, KeyRing, KeySet, MissingKeyError
from proto.config import ConfigError, Endpoint, load_fabric
from proto.messages import (
    HEADER_LEN,
    Codec,
    DecodeError,
    Keepalive,
    LsdRequest,
    NdFrame,
    PortReport,
    PortStatus,
)
from tests.harness.fresh import establish, establish_nd

SWITCHES = ("tor-1", "tor-2")
MASTERS = ("m1", "m2")
OLD = KeyRing.from_secret(bytes(range(32)))
NEW = KeyRing.from_secret(bytes(range(100, 132)))
DIGEST = "ab" * 32


def ring_for(name: str, ring: KeyRing) -> KeyRing:
    return ring if name in MASTERS else ring.bundle_for_switch(name)


def keys_for(name: str, rings: dict[int, KeyRing], send: int) -> KeySet:
    return KeySet({i: ring_for(name, r) for i, r in rings.items()}, send)


def codec(name: str, rings: dict[int, KeyRing] | None = None, send: int = 1) -> Codec:
    return Codec(keys_for(name, rings or {1: OLD}, send), name, SWITCHES, MASTERS)


def report(n: int) -> PortReport:
    return PortReport("tor-1", DIGEST, n, 1, (PortStatus(1, True, True, True, True, False),))


def reason(c: Codec, data: bytes, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        c.decode(data, **kw)
    return info.value.reason


# ------------------------------------------------------------------------------------------- KeySet

@pytest.mark.parametrize("rings, send, match", [
    ({0: OLD}, 0, "key id 0 out of range 1..255"),
    ({256: OLD}, 256, "key id 256 out of range"),
    ({1: OLD}, 2, "send key 2 is not among the accepted keys"),
    ({}, 1, "at least one key"),
    ({1: OLD.bundle_for_switch("tor-1"), 2: NEW.bundle_for_switch("tor-2")}, 1,
     r"different scopes \(a bundle of tor-1, a bundle of tor-2\)"),
    ({1: OLD, 2: NEW.bundle_for_switch("tor-2")}, 1, r"different scopes \(a bundle of tor-2, a fabric secret\)"),
])
def test_key_set_refuses_bad_sets(rings, send, match) -> None:
    with pytest.raises(AuthError, match=match):
        KeySet(rings, send)


def test_key_set_single_is_key_id_1_and_codec_takes_a_plain_ring() -> None:
    ks = KeySet.single(OLD)
    assert (ks.send_id, ks.accepted, ks.retired) == (1, frozenset({1}), frozenset())
    assert Codec(OLD, "m1", SWITCHES, MASTERS).keys.accepted == {1}
    with pytest.raises(MissingKeyError):
        ks.ring(2)
    assert "secret" not in repr(ks) and OLD.key(1, "tor-1").hex() not in repr(ks)


def test_codec_refuses_a_key_set_of_another_switch() -> None:
    with pytest.raises(ValueError, match="cannot be used by"):
        Codec(keys_for("tor-2", {1: OLD}, 1), "tor-1", SWITCHES, MASTERS)
    c = codec("tor-1")
    with pytest.raises(ValueError, match="cannot be used by"):
        c.set_keys(keys_for("tor-2", {1: OLD}, 1))
    assert c.keys.restricted_to == "tor-1"       # nothing changed


# ----------------------------------------------------------------------------------------- envelope

def test_frames_name_their_key_id_and_are_verified_with_that_key() -> None:
    sw, m = codec("tor-1", {1: OLD, 7: NEW}, send=7), codec("m1", {1: OLD, 7: NEW}, send=1)
    establish(sw, m)
    data = sw.encode(report(1), to="m1")
    assert data[5] == 7
    assert m.decode(data)[1] == report(1)
    assert m.encode(Keepalive("m1", 1, 1), to="tor-1")[5] == 1
    # the key id is authenticated: relabelling a frame with another accepted id breaks the tag
    relabelled = data[:5] + bytes([1]) + data[6:]
    assert reason(m, sw.encode(report(2), to="m1")[:5] + bytes([1]) + data[6:]) == "bad_hmac"
    assert reason(m, relabelled) == "bad_hmac"
    # the same secret under two ids: the tag still binds the id (no cross-id replay of a frame)
    same = codec("m2", {1: OLD, 2: OLD}, send=1)
    sw2 = codec("tor-1", {1: OLD, 2: OLD}, send=2)
    establish(sw2, same)
    frame = sw2.encode(report(3), to="m2")
    assert reason(same, frame[:5] + bytes([1]) + frame[6:]) == "bad_hmac"
    assert same.decode(frame)[1] == report(3)


def test_a_frame_under_a_key_not_accepted_is_dropped_counted_and_logged(caplog) -> None:
    sw, m = codec("tor-1", {1: OLD, 2: NEW}, send=1), codec("m1", {1: OLD, 2: NEW}, send=1)
    establish(sw, m)
    assert m.decode(sw.encode(report(1), to="m1"))[1] == report(1)
    m.set_keys(KeySet({2: NEW}, 2, retired=frozenset({1})))          # m1 retired key 1
    sessions = {k: (s.inc, s.chal, s.offer, s.win.top) for k, s in m._sessions.items()}
    caplog.set_level(logging.WARNING, logger="proto.messages")
    frames = [sw.encode(report(n), to="m1") for n in range(2, 12)]
    assert [reason(m, f) for f in frames] == ["unknown_key_id"] * 10
    assert m.rejected["unknown_key_id"] == 10 and m.rejected_key_ids == {("tor-1", 1): 10}
    assert {k: (s.inc, s.chal, s.offer, s.win.top) for k, s in m._sessions.items()} == sessions
    lines = [r.getMessage() for r in caplog.records if "key_id_rejected" in r.getMessage()]
    assert len(lines) == 4                                            # 1st, 2nd, 4th, 8th: rate-limited
    assert "peer=tor-1 key_id=1 why=retired" in lines[0] and "count=8" in lines[-1]
    # a key id the set never had is "unknown"; the switch moves to key 2 and is heard again, no handshake
    caplog.clear()
    assert reason(m, codec("tor-1", {9: NEW}, send=9).encode(report(12), to="m1")) == "unknown_key_id"
    assert "key_id=9 why=unknown" in caplog.records[0].getMessage()
    sw.set_keys(keys_for("tor-1", {1: OLD, 2: NEW}, 2))
    assert m.decode(sw.encode(report(13), to="m1"))[1] == report(13)


def test_nd_frames_carry_the_key_id_and_the_rejection_names_the_port(caplog) -> None:
    a, b = codec("tor-1", {1: OLD, 2: NEW}, send=2), codec("tor-2", {1: OLD, 2: NEW}, send=1)
    establish_nd(a, 3, b, 4)
    b.set_keys(keys_for("tor-2", {1: OLD}, 1))
    caplog.set_level(logging.WARNING, logger="proto.messages")
    assert reason(b, a.encode(NdFrame("tor-1", 3, Endpoint("tor-2", 4))), port=4) == "unknown_key_id"
    assert "peer=tor-1 key_id=2 why=unknown port=4" in caplog.records[0].getMessage()


def test_set_keys_keeps_freshness_and_is_one_store() -> None:
    """A swap keeps every session (no new handshake, windows intact: a replay stays a replay)."""
    sw, m = codec("tor-1"), codec("m1")
    establish(sw, m)
    first = sw.encode(report(1), to="m1")
    m.decode(first)
    before = dict(m._sessions)
    m.set_keys(KeySet({1: OLD, 2: NEW}, 2))
    assert m._sessions == before and m.established("tor-1")
    assert reason(m, first) == "replay"
    reply = m.encode(Keepalive("m1", 1, 1), to="tor-1")
    assert reply[5] == 2 and reason(sw, reply) == "unknown_key_id"   # tor-1 does not have key 2 yet
    sw.set_keys(keys_for("tor-1", {1: OLD, 2: NEW}, 1))
    assert sw.decode(m.encode(Keepalive("m1", 1, 2), to="tor-1"))[1] == Keepalive("m1", 1, 2)


def test_fanout_signs_with_the_current_send_key() -> None:
    m = codec("m1", {1: OLD, 2: NEW}, send=1)
    enc = FanoutEncoder(m, None, "tor-1")
    assert enc.enabled
    both, old_only = codec("tor-1", {1: OLD, 2: NEW}), codec("tor-2", {1: OLD})
    establish(both, m)
    establish(old_only, m)
    ka = Keepalive("m1", 1, 1)
    enc.encode(ka, "tor-1")
    fast = enc.encode(ka, "tor-2")
    assert enc.fast == 1 and fast[5] == 1 and old_only.decode(fast)[1] == ka
    m.set_keys(KeySet({1: OLD, 2: NEW}, 2))                          # swapped between two fan-outs
    enc.reset()
    enc.encode(ka, "tor-2")
    fast = enc.encode(ka, "tor-1")
    assert enc.fast == 2 and fast[5] == 2 and both.decode(fast)[1] == ka


# ------------------------------------------------------------------------------ rollover, node by node

NODES = MASTERS + SWITCHES
PHASES = (  # what each node holds after it took the step: (rings, send key)
    ({1: OLD, 2: NEW}, 1),    # 1: accept the new key
    ({1: OLD, 2: NEW}, 2),    # 2: sign with it
    ({2: NEW}, 2),            # 3: retire the old key
)


def _exchange_all(nodes: dict[str, Codec], n: int) -> list[str]:
    """Every unicast pair (master <-> switch, master <-> master) and the ND link, both ways: what failed."""
    failed = []
    pairs = [(a, b) for a in NODES for b in NODES if a != b and (a in MASTERS or b in MASTERS)]
    for a, b in pairs:
        src, dst = nodes[a], nodes[b]
        msg = report(n) if a == "tor-1" else (LsdRequest(a, 1, n) if a in SWITCHES else Keepalive(a, 1, n))
        if a == "tor-1" and b != "m1" and b in MASTERS:
            msg = LsdRequest(a, 1, n)
        try:
            dst.decode(src.encode(msg, to=b))
        except DecodeError as e:
            failed.append(f"{a}->{b}: {e.reason}")
    for a, pa, b, pb in (("tor-1", 1, "tor-2", 1), ("tor-2", 1, "tor-1", 1)):
        try:
            nodes[b].decode(nodes[a].encode(NdFrame(a, pa, Endpoint(b, pb))), port=pb)
        except DecodeError as e:
            failed.append(f"nd {a}->{b}: {e.reason}")
    return failed


def _establish_all(nodes: dict[str, Codec]) -> None:
    for a in MASTERS:
        for b in NODES:
            if a != b and not (nodes[a].established(b) and nodes[b].established(a)):
                with suppress(AssertionError):
                    establish(nodes[a], nodes[b])
    establish_nd(nodes["tor-1"], 1, nodes["tor-2"], 1)


@settings(max_examples=40, deadline=None)
@given(orders=st.lists(st.permutations(NODES), min_size=3, max_size=3), restart=st.booleans())
def test_rollover_node_by_node_loses_no_frame(orders, restart) -> None:
    """The three steps, each taken by one node after the other in any order (by swap, or by a restart
    with the new set and then the usual freshness handshake): every pair hears every frame at every step,
    and after the last step a frame under the old key is rejected everywhere."""
    nodes = {n: codec(n) for n in NODES}
    _establish_all(nodes)
    n = 1
    assert _exchange_all(nodes, n) == []
    for (rings, send), order in zip(PHASES, orders, strict=True):
        for name in order:
            keys = keys_for(name, rings, send)
            if restart:
                nodes[name] = Codec(keys, name, SWITCHES, MASTERS)
                _establish_all(nodes)
            else:
                nodes[name].set_keys(keys)
            n += 1
            assert _exchange_all(nodes, n) == [], (rings, send, name)
    stale = codec("tor-1").encode(LsdRequest("tor-1", 1, 99), to="m1")
    assert reason(nodes["m1"], stale) == "unknown_key_id"


def test_a_single_step_out_of_order_is_what_loses_frames() -> None:
    """The procedure matters: signing with a key before every node accepts it loses frames."""
    nodes = {n: codec(n) for n in NODES}
    _establish_all(nodes)
    nodes["tor-1"].set_keys(keys_for("tor-1", {1: OLD, 2: NEW}, 2))   # step 2 on tor-1 before step 1 elsewhere
    failed = _exchange_all(nodes, 2)
    assert failed and all(f.startswith(("tor-1->", "nd tor-1->")) and f.endswith("unknown_key_id") for f in failed)


# ------------------------------------------------------------------------------------------- config

BASE = """name: keys
security:
{security}
masters:
  - {{id: m1, address: 127.0.0.1, client_port: 6601, peer_port: 6701, rest_port: 6801}}
switches:
  - {{name: tor-1, id: 1, role: tor}}
"""


def _write(tmp_path: Path, security: str) -> Path:
    for i in (1, 2, 3):
        (tmp_path / f"k{i}.key").write_text(bytes(range(i, i + 32)).hex() + "\n")
    path = tmp_path / "fabric.yaml"
    path.write_text(BASE.format(security=security))
    return path


def test_config_key_set_form(tmp_path: Path) -> None:
    fabric = load_fabric(_write(tmp_path, "  keys:\n    - {id: 1, file: k1.key}\n    - {id: 2, file: k2.key}\n"
                                          "    - {id: 3, file: gone.key}\n  send_key: 2\n  accept: [1, 2]"))
    sec = fabric.security
    assert (sec.send_key, sec.accepted_ids(), sec.key_file) == (2, (1, 2), tmp_path / "k2.key")
    ks = KeySet.from_security(sec)            # the retired key's file is never read (it may be gone)
    assert (ks.send_id, ks.accepted, ks.retired) == (2, {1, 2}, {3})
    assert ks.ring(2).key(1, "tor-1") == KeyRing.from_secret(bytes(range(2, 34))).key(1, "tor-1")


def test_config_single_secret_form_is_key_id_1_and_keeps_the_digest(tmp_path: Path) -> None:
    one = load_fabric(_write(tmp_path, "  key_file: k1.key"))
    ks = KeySet.from_security(one.security)
    assert (ks.send_id, ks.accepted) == (1, {1})
    many = load_fabric(_write(tmp_path, "  keys: [{id: 1, file: k1.key}, {id: 2, file: k2.key}]\n  send_key: 2"))
    assert one.digest == many.digest        # the security section is node-local: not in the digest


@pytest.mark.parametrize("security, line, field, problem", [
    ("  keys: [{id: 1, file: k1.key}, {id: 1, file: k2.key}]\n  send_key: 1", 3, "security.keys[1].id",
     "duplicate key id 1 (first at"),
    ("  keys: [{id: 0, file: k1.key}]", 3, "security.keys[0].id", "0 out of range 1..255"),
    ("  keys: [{id: 256, file: k1.key}]", 3, "security.keys[0].id", "256 out of range 1..255"),
    ("  keys: [{id: 1, file: k1.key}]\n  send_key: 2", 4, "security.send_key", "unknown send key 2"),
    ("  keys: [{id: 1, file: k1.key}, {id: 2, file: k2.key}]\n  send_key: 2\n  accept: [1]", 4,
     "security.send_key", "send key 2 is not accepted"),
    ("  keys: [{id: 1, file: k1.key}]\n  accept: [1, 5]", 4, "security.accept[1]", "key id 5 is not in"),
    ("  keys: [{id: 1, file: k1.key}, {id: 2, file: k2.key}]", 3, "security.send_key", "missing: which of"),
    ("  keys: []", 3, "security.keys", "empty key set"),
    ("  keys: [{id: 1}]", 3, "security.keys[0].file", "missing required field"),
    ("  key_file: k1.key\n  send_key: 1", 4, "security.send_key", "needs a key set"),
    ("  key_file: k1.key\n  keys: [{id: 1, file: k1.key}]", 4, "security.keys", "not both"),
])
def test_config_key_set_errors(tmp_path: Path, security: str, line: int, field: str, problem: str) -> None:
    path = _write(tmp_path, security)
    with pytest.raises(ConfigError) as info:
        load_fabric(path)
    e = info.value
    assert (e.file, e.line, e.field) == (str(path), line, field), str(e)
    assert problem in e.problem, str(e)


def test_a_switch_holds_one_bundle_per_key_id(tmp_path: Path) -> None:
    """A switch given bundles instead of the secrets lists one bundle file per key id."""
    path = _write(tmp_path, "  keys:\n    - {id: 1, file: b1.yaml}\n    - {id: 2, file: b2.yaml}\n  send_key: 2")
    one, two = KeyRing.load(tmp_path / "k1.key"), KeyRing.load(tmp_path / "k2.key")
    one.bundle_for_switch("tor-1").save_bundle(tmp_path / "b1.yaml")
    two.bundle_for_switch("tor-1").save_bundle(tmp_path / "b2.yaml")
    ks = KeySet.from_security(load_fabric(path).security)
    assert ks.restricted_to == "tor-1" and ks.accepted == {1, 2}
    sw = Codec(ks, "tor-1", SWITCHES, MASTERS)
    m = Codec(KeySet({1: one, 2: two}, 1), "m1", SWITCHES, MASTERS)
    establish(sw, m)
    assert m.decode(sw.encode(report(1), to="m1"))[1] == report(1)
    with pytest.raises(ValueError, match="cannot be used by"):
        Codec(ks, "tor-2", SWITCHES, MASTERS)


@pytest.mark.parametrize("content, problem", [(None, "key file not found"), ("zz" * 32, "not hex"),
                                              ("ab" * 4, "too short")])
def test_unreadable_key_file_names_the_config_entry(tmp_path: Path, content: str | None, problem: str) -> None:
    path = _write(tmp_path, "  keys:\n    - {id: 1, file: k1.key}\n    - {id: 4, file: k4.key}\n  send_key: 1")
    if content is not None:
        (tmp_path / "k4.key").write_text(content)
    sec = load_fabric(path).security
    with pytest.raises(AuthError) as info:
        KeySet.from_security(sec)
    assert str(info.value).startswith(f"{path}:5: security.keys[1].file: {tmp_path / 'k4.key'}: "), str(info.value)
    assert problem in str(info.value)


def test_header_len_matches_the_frame() -> None:
    sw = codec("tor-1")
    data = sw.encode(LsdRequest("tor-1", 1, 1), to="m1")
    assert data[HEADER_LEN] == len(b"tor-1") and data[HEADER_LEN + 1:HEADER_LEN + 6] == b"tor-1"
    # the tag is HMAC-SHA256 over everything before it plus the destination: the key id byte included
    key = OLD.key(1, "tor-1")
    assert data[-32:] == hmac.new(key, data[:-32] + b"\x02m1", hashlib.sha256).digest()


# ----------------------------------------------------------------------------------- config keygen

def _keygen(capsys, *argv: str) -> tuple[int, str, str]:
    from proto import cli

    code = cli.main(["config", "keygen", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_add_writes_a_new_key_id_and_the_three_steps(capsys, tmp_path: Path) -> None:
    from proto.keyroll import replace_security

    cfg = _write(tmp_path, "  key_file: k1.key\n  admin_token_file: t.token")
    before = load_fabric(cfg)
    code, out, err = _keygen(capsys, "--add", str(cfg), "--write")
    assert code == 0, err
    new = tmp_path / "k1-2.key"
    assert (new.stat().st_mode & 0o777) == 0o600 and len(bytes.fromhex(new.read_text())) == 32
    after = load_fabric(cfg)
    assert after.digest == before.digest and after.security.admin_token_file == tmp_path / "t.token"
    ks = KeySet.from_security(after.security)
    assert (ks.send_id, ks.accepted) == (1, {1, 2})                   # step 1 written
    blocks = ["security:" + b for b in out.split("\nsecurity:")[1:]]
    assert len(blocks) == 3
    want = [(1, {1, 2}), (2, {1, 2}), (2, {2})]
    for block, (send, accepted) in zip(blocks, want, strict=True):
        block = block.split("\n# ")[0].rstrip("\n") + "\n"
        cfg.write_text(replace_security(cfg.read_text(), block))
        ks = KeySet.from_security(load_fabric(cfg).security)
        assert (ks.send_id, ks.accepted) == (send, accepted), block
        assert load_fabric(cfg).digest == before.digest
    # without --write nothing is written (tester finding 5: the key file was, then --write refused it)
    text = cfg.read_text()
    code, out, err = _keygen(capsys, "--add", str(cfg))
    assert code == 0 and "k1-3.key" in out and "dry run" in err and not (tmp_path / "k1-3.key").exists()
    assert cfg.read_text() == text
    code, out, err = _keygen(capsys, "--add", str(cfg), "--write")    # then --write does it all
    assert code == 0, err
    assert (tmp_path / "k1-3.key").exists() and KeySet.from_security(load_fabric(cfg).security).accepted >= {3}
    # the next key after 3 is 4; an id in use or out of range is refused and writes nothing
    for bad in ("3", "0", "256"):
        code, _, err = _keygen(capsys, "--add", str(cfg), "--id", bad, str(tmp_path / f"x{bad}.key"))
        assert code == 2 and "need an unused key id in 1..255" in err and not (tmp_path / f"x{bad}.key").exists()
    assert _keygen(capsys, "--write")[0] == 2                          # no FILE, no --add


def test_config_check_loads_the_key_files(capsys, tmp_path: Path) -> None:
    from proto import cli

    cfg = _write(tmp_path, "  keys:\n    - {id: 1, file: k1.key}\n    - {id: 2, file: k2.key}\n"
                           "    - {id: 3, file: k9.key}\n  send_key: 2\n  accept: [1, 2]")
    assert cli.main(["config", "check", str(cfg)]) == 0
    assert "keys:     send 2, accept 1, 2, retired 3" in capsys.readouterr().out
    cfg.write_text(cfg.read_text().replace("accept: [1, 2]", "accept: [1, 2, 3]"))
    assert cli.main(["config", "check", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{cfg}:6: security.keys[2].file: {tmp_path / 'k9.key'}: key file not found"), err


# ------------------------------------------------------------------------------------------------ REST

def test_master_rest_shows_the_key_set_and_follows_a_swap(tmp_path: Path) -> None:
    from tests.test_controller_rest import run

    async def body(server, c) -> None:
        doc = await (await c.get("/v1/keys")).json()
        assert doc == {"master": "m1", "send_key": 1, "accepted": [1], "retired": [], "rejected_key_ids": [],
                       "rejected_key_id_totals": [], "rejected_key_ids_evicted": {"pairs": 0, "frames": 0}}
        server.codec.set_keys(KeySet({1: OLD, 2: NEW}, 2, retired=frozenset({3})))
        stale = Codec(KeySet({3: OLD.bundle_for_switch("leaf-1")}, 3), "leaf-1", server.codec.switches,
                      server.codec.masters).encode(LsdRequest("leaf-1", 1, 1), to="m1")
        server._on_datagram(stale, ("127.0.0.1", 9))
        doc = await (await c.get("/v1/keys")).json()
        assert doc == {"master": "m1", "send_key": 2, "accepted": [1, 2], "retired": [3],
                       "rejected_key_ids": [{"peer": "leaf-1", "key_id": 3, "count": 1}],
                       "rejected_key_id_totals": [{"key_id": 3, "count": 1}],
                       "rejected_key_ids_evicted": {"pairs": 0, "frames": 0}}
        metrics = await (await c.get("/metrics")).text()
        assert 'firepath_master_datagrams_rejected_total{reason="unknown_key_id"} 1.0' in metrics

    run(tmp_path, body)


# ------------------------------------------------------------------------------------------------ fuzz

@settings(max_examples=300, deadline=None)
@given(key_id=st.integers(0, 255), pos=st.integers(0, 200), bit=st.integers(0, 7), mutate=st.booleans())
@example(key_id=34, pos=5, bit=5, mutate=True)     # the flip restores the genuine id: accepted, rightly
def test_fuzz_key_ids_and_mutations_raise_only_decode_errors_and_change_nothing(key_id, pos, bit, mutate) -> None:
    """Any key id byte (and a bit flip anywhere) on an authentic frame: either it is the genuine frame, or
    DecodeError and the receiver's freshness state is unchanged."""
    sw = codec("tor-1", {1: OLD, 2: NEW}, send=2)
    m = codec("m1", {1: OLD, 2: NEW, 3: OLD}, send=1)
    establish(sw, m)
    genuine = sw.encode(report(5), to="m1")
    data = bytearray(genuine)
    data[5] = key_id
    if mutate:
        data[pos % len(data)] ^= 1 << bit          # may also restore the genuine key id (34 ^ 32 = 2)
    before = {k: (s.inc, s.chal, s.offer, s.win.top) for k, s in m._sessions.items()}
    try:
        sender, msg = m.decode(bytes(data))
    except DecodeError as e:
        assert {k: (s.inc, s.chal, s.offer, s.win.top) for k, s in m._sessions.items()} == before
        if not mutate:     # the id alone changed: not accepted here, or accepted but not the signing key
            assert e.reason == ("bad_hmac" if key_id in (1, 3) else "unknown_key_id")
    else:                  # only the genuine frame is accepted
        assert bytes(data) == genuine and (sender, msg) == ("tor-1", report(5))


def test_reload_keys_swaps_a_live_codec_or_changes_nothing(tmp_path: Path) -> None:
    from proto.keyroll import reload_keys

    cfg = _write(tmp_path, "  key_file: k1.key")
    sw = Codec(KeySet.from_security(load_fabric(cfg).security).bundle_for_switch("tor-1"), "tor-1", SWITCHES, MASTERS)
    cfg.write_text(cfg.read_text().replace("  key_file: k1.key", "  keys: [{id: 1, file: k1.key}, {id: 2, file: k9.key}]\n"
                                                                 "  send_key: 2"))
    with pytest.raises(AuthError, match=r"security.keys\[1\].file: .*k9.key: key file not found"):
        reload_keys(sw, cfg)
    assert sw.keys.status() == {"send_key": 1, "accepted": [1], "retired": []}
    cfg.write_text(cfg.read_text().replace("k9.key", "k2.key"))
    assert reload_keys(sw, cfg).status() == {"send_key": 2, "accepted": [1, 2], "retired": []}
    assert sw.keys.send_id == 2 and sw.encode(report(1), to="m1")[5] == 2


# ----------------------------------------------------------------------------------- tester finding 11
def test_duplicate_key_id_names_both_fields(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "  keys:\n    - {id: 1, file: k1.key}\n    - {id: 1, file: k2.key}")
    with pytest.raises(ConfigError) as info:
        load_fabric(cfg)
    assert str(info.value) == f"{cfg}:5: security.keys[1].id: duplicate key id 1 (first at {cfg}:4: security.keys[0].id)"


def test_the_same_key_file_under_two_key_ids_is_refused(tmp_path: Path) -> None:
    """A rollover with the old file under the new id rolls nothing: refused, naming both entries."""
    cfg = _write(tmp_path, "  keys:\n    - {id: 1, file: k1.key}\n    - {id: 2, file: ./k1.key}\n  send_key: 1")
    with pytest.raises(ConfigError) as info:
        load_fabric(cfg)
    msg = str(info.value)
    assert msg.startswith(f"{cfg}:5: security.keys[1].file: {tmp_path / 'k1.key'} is already key id 1 "
                          f"({cfg}:4: security.keys[0].file)"), msg


def test_group_or_world_readable_key_file_is_warned_about(tmp_path: Path, capsys) -> None:
    from proto import cli
    from proto.auth import key_file_warning

    cfg = _write(tmp_path, "  key_file: k1.key")
    key = tmp_path / "k1.key"
    key.chmod(0o600)
    assert key_file_warning(key) is None
    assert cli.main(["config", "check", str(cfg)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    for mode in (0o644, 0o640, 0o604, 0o660):
        key.chmod(mode)
        assert f"mode {mode:04o}" in (key_file_warning(key) or "")
        assert cli.main(["config", "check", str(cfg)]) == 0            # a warning, not an error (like ssh-keygen)
        err = capsys.readouterr().err
        assert err.count("WARNING") == 1 and f"{cfg}:3: security.key_file: WARNING: key file {key}" in err, err
        assert f"chmod 600 {key}" in err
