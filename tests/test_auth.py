"""Key derivation, key files and bundles, replay window."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.auth import (
    MAX_SECRET_FILE,
    AuthError,
    KeyKind,
    KeyRing,
    MissingKeyError,
    ReplayWindow,
    read_admin_token,
    read_tcp_md5_key,
    write_secret_file,
)

SECRET = bytes(range(32))


def test_derivation_matches_the_contract():
    ring = KeyRing.from_secret(SECRET)
    assert ring.switch_key("tor-1") == hmac.new(SECRET, b"switch:tor-1", hashlib.sha256).digest()
    assert ring.master_key("m1") == hmac.new(SECRET, b"master:m1", hashlib.sha256).digest()
    assert ring.group_key() == hmac.new(SECRET, b"group", hashlib.sha256).digest()
    assert ring.nd_key() == hmac.new(SECRET, b"nd", hashlib.sha256).digest()
    assert len({ring.switch_key("a"), ring.switch_key("b"), ring.master_key("a"), ring.group_key()}) == 4


def test_load_hex_secret_file(tmp_path):
    path = write_secret_file(tmp_path / "fabric.key", SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyRing.load(path).switch_key("x") == KeyRing.from_secret(SECRET).switch_key("x")
    (tmp_path / "spaced.key").write_text("# comment\n" + SECRET.hex()[:32] + "\n  " + SECRET.hex()[32:] + "\n")
    assert KeyRing.load(tmp_path / "spaced.key").nd_key() == KeyRing.from_secret(SECRET).nd_key()
    generated = write_secret_file(tmp_path / "new.key")
    assert len(KeyRing.load(generated)._secret) == 32


@pytest.mark.parametrize(("content", "problem"), [
    ("", "empty"),
    ("abcd", "too short"),
    ("zz" * 32, "not hex"),
    ("abc" * 11, "odd number"),
    ("kind: something\n", "neither a hex secret nor a key bundle"),
    ("{{{:", "neither a hex secret nor a valid key bundle"),
])
def test_bad_key_files_name_the_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(AuthError, match=problem) as info:
        KeyRing.load(path)
    assert str(path) in str(info.value)


def test_unreadable_key_files(tmp_path):
    with pytest.raises(AuthError, match="not found"):
        KeyRing.load(tmp_path / "missing.key")
    with pytest.raises(AuthError, match="cannot read"):
        KeyRing.load(tmp_path)  # a directory
    (tmp_path / "bin.key").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(AuthError, match="cannot read"):
        KeyRing.load(tmp_path / "bin.key")


def _secret_readers(tmp_path):
    """Every reader of a node-local secret file named in the config: the fabric key / key bundle, the admin
    token, an eBGP peer's TCP MD5 key."""
    return [KeyRing.load, lambda p: read_admin_token(p, "f.yaml:3: security.admin_token_file"), read_tcp_md5_key]


@pytest.mark.timeout(20)
def test_secret_files_that_are_not_regular_files_are_refused_at_once(tmp_path):
    """A FIFO used to block the reader forever (config check, a master or client start, a reload), and a
    character device such as /dev/zero to be read until memory ran out: only a regular file is a secret."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for read in _secret_readers(tmp_path):
        for path in (fifo, Path("/dev/zero"), tmp_path):
            with pytest.raises(AuthError, match="not a regular file") as info:
                read(path)
            assert str(path) in str(info.value) or read is read_tcp_md5_key


def test_oversized_and_nul_named_secret_files_are_refused(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"a" * (MAX_SECRET_FILE + 1))
    big.chmod(0o600)
    for read in _secret_readers(tmp_path):
        with pytest.raises(AuthError, match=f"over {MAX_SECRET_FILE} bytes"):
            read(big)
        with pytest.raises(AuthError, match="NUL"):
            read(Path("a\0b"))


def test_switch_bundle_round_trip_and_restriction(tmp_path):
    full = KeyRing.from_secret(SECRET)
    bundle = full.bundle_for_switch("tor-1")
    path = bundle.save_bundle(tmp_path / "tor-1.keys")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyRing.load(path)
    assert loaded.restricted_to == "tor-1"
    assert loaded.switch_key("tor-1") == full.switch_key("tor-1")
    assert loaded.group_key() == full.group_key() and loaded.nd_key() == full.nd_key()
    assert loaded.has_key(KeyKind.SWITCH, "tor-1") and not loaded.has_key(KeyKind.SWITCH, "tor-2")
    with pytest.raises(MissingKeyError, match="tor-2"):
        loaded.switch_key("tor-2")
    with pytest.raises(MissingKeyError):
        loaded.master_key("m1")
    with pytest.raises(MissingKeyError):
        loaded.bundle_for_switch("tor-2")
    assert SECRET.hex() not in path.read_text() and "KeyRing(switch 'tor-1'" in repr(loaded)


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: t.replace("nd_key", "ndkey"), "unknown key bundle field"),
    (lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("group_key")), "lacks"),
    (lambda t: t.replace("version: 1", "version: 2"), "unsupported key bundle version"),
    (lambda t: t.replace("switch_key: ", "switch_key: ab"), "must be 32 bytes"),
    (lambda t: t.replace("nd_key: ", "nd_key: x"), "nd_key is not hex"),
])
def test_bad_bundles(tmp_path, edit, problem):
    text = KeyRing.from_secret(SECRET).bundle_for_switch("tor-1").dump_bundle()
    path = tmp_path / "b.keys"
    path.write_text(edit(text))
    with pytest.raises(AuthError, match=problem) as info:
        KeyRing.load(path)
    assert str(path) in str(info.value)


def test_replay_window_basics():
    w = ReplayWindow()
    assert w.accept(100)
    assert not w.accept(100)  # duplicate
    assert w.accept(99) and w.accept(163)
    assert not w.accept(99)  # now 64 behind the top: too old
    assert w.accept(100) is False and w.accept(101)
    assert w.check(1000) and w.top == 163


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=80))
def test_replay_window_matches_a_reference_model(seqs):
    w = ReplayWindow(64)
    seen: set[int] = set()
    top = None
    for seq in seqs:
        expected = seq not in seen and (top is None or seq > top - 64)
        assert w.accept(seq) == expected
        if expected:
            seen.add(seq)
            top = seq if top is None else max(top, seq)
