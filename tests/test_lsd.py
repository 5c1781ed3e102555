"""Versioned LSD: deltas equal the master, encodings round-trip, garbage is rejected with LsdError only."""

from __future__ import annotations

import contextlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.lsd import (
    LinkState,
    LinkStateDB,
    LsdError,
    decode_changes,
    decode_snapshot,
    encode_changes,
    encode_snapshot,
)

N = 40
states_st = st.sampled_from(list(LinkState))
batch_st = st.dictionaries(st.integers(0, N - 1), states_st, max_size=8)
batches_st = st.lists(batch_st, max_size=30)


def replay(batches: list[dict[int, LinkState]], n: int = N) -> list[bytes]:
    """States after each version, computed naively: index v = state at version v."""
    states = bytearray(n)
    history = [bytes(states)]
    for batch in batches:
        new = bytearray(states)
        for i, s in batch.items():
            new[i] = s
        if new != states:
            states = new
            history.append(bytes(states))
    return history


@settings(max_examples=60, deadline=None)
@given(batches=batches_st, history=st.integers(0, 12), max_changes=st.none() | st.integers(0, 40))
def test_changes_since_brings_any_replica_to_the_master_state(batches, history, max_changes):
    db = LinkStateDB(N, history=history, max_changes=max_changes)
    for batch in batches:
        db.apply(batch)
    expected = replay(batches)
    assert db.version == len(expected) - 1
    assert db.states() == expected[-1]
    answered = 0
    for v in range(-1, db.version + 2):
        delta = db.changes_since(v)
        if v < 0 or v > db.version:
            assert delta is None
            continue
        if v >= db.version - history and (max_changes is None or v == db.version):
            assert delta is not None  # within the version window and no change cap -> must answer
        if delta is None:
            assert v < db.oldest_version
            continue
        answered += 1
        replica = LinkStateDB(N)
        replica.load_snapshot(v, encode_snapshot(expected[v]))
        # minimal: exactly the links that differ
        assert set(delta) == {i for i in range(N) if expected[v][i] != expected[-1][i]}
        if v < db.version:
            replica.apply_delta(v, db.version, decode_changes(encode_changes(delta), N))
        assert replica.states() == db.states()
        assert replica.version == db.version
    assert answered >= 1  # the current version is always answerable


@settings(max_examples=40, deadline=None)
@given(batches=batches_st, split=st.integers(0, 30))
def test_replica_fed_by_deltas_serves_its_own_deltas(batches, split):
    master = LinkStateDB(N, history=64)
    replica = LinkStateDB(N, history=64)
    for i, batch in enumerate(batches):
        master.apply(batch)
        if i % 3 == 2 or i == split:
            delta = master.changes_since(replica.version)
            if master.version > replica.version:
                replica.apply_delta(replica.version, master.version, delta)
    if master.version > replica.version:
        replica.apply_delta(replica.version, master.version, master.changes_since(replica.version))
    assert replica.states() == master.states()
    # the replica answers for versions it saw, None for versions inside its gaps
    for v in range(replica.version + 1):
        delta = replica.changes_since(v)
        if delta is not None:
            assert delta == master.changes_since(v)


def test_minimal_delta_omits_links_that_flapped_back():
    db = LinkStateDB(5)
    db.apply({0: LinkState.UP, 1: LinkState.UP})
    db.apply({0: LinkState.DOWN})
    db.apply({0: LinkState.UP, 2: LinkState.DRAINED})
    assert db.version == 3
    assert db.changes_since(1) == {2: LinkState.DRAINED}
    assert db.changes_since(0) == {0: LinkState.UP, 1: LinkState.UP, 2: LinkState.DRAINED}
    assert db.changes_since(3) == {}


def test_apply_without_effective_change_keeps_version():
    db = LinkStateDB(3)
    assert db.apply({0: LinkState.DOWN}) == 0
    assert db.apply({}) == 0
    assert db.apply({0: LinkState.UP, 1: LinkState.DOWN}) == 1
    assert db.state(0) is LinkState.UP


def test_history_is_bounded_by_versions_and_changes():
    db = LinkStateDB(100, history=10)
    for k in range(50):
        db.apply({k % 100: LinkState.UP if k % 2 == 0 else LinkState.DRAINED})
    assert db.version == 50
    assert db.changes_since(39) is None
    assert db.changes_since(40) is not None
    capped = LinkStateDB(100, history=1000, max_changes=150)
    for k in range(4):
        capped.apply(dict.fromkeys(range(100), LinkState(k % 2)))
    assert capped.version == 3  # k=0 changed nothing
    assert capped.retained_changes == 100
    assert capped.changes_since(1) is None
    assert capped.changes_since(2) == dict.fromkeys(range(100), LinkState.UP)


@pytest.mark.parametrize("bad", [{100: LinkState.UP}, {-1: LinkState.UP}, {True: LinkState.UP},
                                 {"1": LinkState.UP}, {1: 4}, {1: True}, {1: "UP"}, {1: None}])
def test_apply_rejects_bad_input_and_keeps_state(bad):
    db = LinkStateDB(100)
    db.apply({5: LinkState.UP})
    before = (db.version, db.states())
    with pytest.raises(LsdError):
        db.apply({**{6: LinkState.UP}, **bad})
    assert (db.version, db.states()) == before


def test_apply_delta_requires_matching_versions_and_is_atomic():
    db = LinkStateDB(10, version=5)
    with pytest.raises(LsdError, match="replica is at 5"):
        db.apply_delta(4, 6, {1: LinkState.UP})
    with pytest.raises(LsdError, match="backwards"):
        db.apply_delta(5, 5, {1: LinkState.UP})
    with pytest.raises(LsdError):
        db.apply_delta(5, 6, {1: LinkState.UP, 10: LinkState.UP})
    assert db.version == 5 and db.states() == bytes(10)
    db.apply_delta(5, 9, {1: LinkState.UP})
    assert db.version == 9 and db.state(1) is LinkState.UP
    assert db.changes_since(7) is None  # inside the gap
    assert db.changes_since(5) == {1: LinkState.UP}


@settings(max_examples=80, deadline=None)
@given(st.lists(states_st, max_size=300))
def test_snapshot_round_trip(states):
    raw = bytes(states)
    assert decode_snapshot(encode_snapshot(raw), len(raw)) == raw
    db = LinkStateDB(len(raw))
    db.apply(dict(enumerate(states)))
    other = LinkStateDB(len(raw), version=3)
    other.load_snapshot(db.version, db.snapshot())
    assert other.states() == raw and other.version == db.version


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.integers(0, 2**20), states_st, max_size=50))
def test_changes_round_trip(changes):
    assert decode_changes(encode_changes(changes), 2**20 + 1) == changes


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200), n=st.integers(0, 500), prefix=st.sampled_from(["", "snapshot", "changes"]))
def test_decoding_garbage_raises_lsd_error_only(body, n, prefix):
    # plausible headers make the fuzzer reach the payload decoders, not just the magic check
    head = {"": b"", "snapshot": b"S\x01" + n.to_bytes(4, "big"), "changes": b"C\x01"}[prefix]
    for data in (head + body, head + zlib.compress(body)):
        for decode in (decode_snapshot, decode_changes):
            with contextlib.suppress(LsdError):
                out = decode(data, n)
                assert len(out) <= n


@settings(max_examples=150, deadline=None)
@given(states=st.lists(states_st, min_size=1, max_size=200), pos=st.integers(0, 10_000),
       bit=st.integers(0, 7), cut=st.integers(0, 10_000), extra=st.binary(max_size=5))
def test_mutated_snapshots_are_rejected_or_decode_to_valid_states(states, pos, bit, cut, extra):
    good = encode_snapshot(bytes(states))
    flipped = bytearray(good)
    flipped[pos % len(good)] ^= 1 << bit
    for data in (bytes(flipped), good[: cut % len(good)], good + extra if extra else good + b"\0"):
        try:
            out = decode_snapshot(data, len(states))
        except LsdError:
            continue
        # zlib's checksum makes a silent change practically impossible; anything accepted must be valid
        assert len(out) == len(states) and set(out) <= {0, 1, 2, 3}


def test_snapshot_specific_errors():
    good = encode_snapshot(bytes([1, 2, 0, 1, 1]))
    with pytest.raises(LsdError, match="for 5 links but the fabric has 6"):
        decode_snapshot(good, 6)
    with pytest.raises(LsdError, match="magic"):
        decode_snapshot(b"X" + good[1:], 5)
    with pytest.raises(LsdError, match="version"):
        decode_snapshot(good[:1] + b"\x09" + good[2:], 5)
    with pytest.raises(LsdError, match="truncated"):
        decode_snapshot(good[:-3], 5)
    with pytest.raises(LsdError, match="trailing"):
        decode_snapshot(good + b"x", 5)
    header = good[:6]
    # every two-bit value is a state: 3 is DRAINED_DOWN (drained and failed)
    assert decode_snapshot(header + zlib.compress(bytes([0b00110001, 0])), 5) == bytes([1, 0, 3, 0, 0])
    with pytest.raises(LsdError, match="padding"):
        decode_snapshot(header + zlib.compress(bytes([0, 0b00000100])), 5)
    with pytest.raises(LsdError, match="expands beyond"):
        decode_snapshot(header + zlib.compress(bytes(1_000_000)), 5)  # zip bomb stays bounded
    with pytest.raises(LsdError, match="invalid link state value 4"):
        encode_snapshot(bytes([0, 4]))
    assert decode_snapshot(encode_snapshot(bytes([3, 2, 1, 0, 3])), 5) == bytes([3, 2, 1, 0, 3])


def test_changes_specific_errors():
    good = encode_changes({3: LinkState.UP, 7: LinkState.DRAINED})
    assert decode_changes(good, 8) == {3: LinkState.UP, 7: LinkState.DRAINED}
    with pytest.raises(LsdError, match="out of range"):
        decode_changes(good, 7)
    with pytest.raises(LsdError, match="truncated"):
        decode_changes(good[:-1], 8)
    with pytest.raises(LsdError, match="trailing"):
        decode_changes(good + b"\0", 8)
    assert decode_changes(b"C\x01\x01\x03", 8) == {0: LinkState.DRAINED_DOWN}
    with pytest.raises(LsdError, match="over-long"):
        decode_changes(b"C\x01" + b"\xff" * 11, 8)
    assert decode_changes(encode_changes({}), 0) == {}



def test_reserved_versions_are_skipped_and_never_the_start_of_a_delta() -> None:
    """A prepared master takes versions for the LSD under the next config from the same sequence (issue #21,
    controller.nextlsd): the next version goes above them, and no delta starts at one of them."""
    db = LinkStateDB(4)
    db.apply({0: LinkState.UP})
    db.reserve(2)
    db.reserve(1)                                   # never lowered
    assert db.version == 1 and db.floor == 2
    assert db.apply({1: LinkState.UP}) == 3
    assert db.changes_since(2) is None              # a reserved number is no version of this LSD: a snapshot
    assert db.changes_since(1) == {1: LinkState.UP}
    db.reserve(4)
    assert db.amend({2: LinkState.UP}) == 5         # version 3 was published before 4 was taken: a new one
    assert db.changes_since(3) == {2: LinkState.UP}
    with pytest.raises(LsdError):
        db.reserve(-1)
