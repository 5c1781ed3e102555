"""Hostile payloads against the msgspec wire structs (proto.wire), alone and through an established Codec.

Every payload here is correctly signed and fresh, so only the payload checks stand between it and the
cores: each must be rejected as ``malformed`` with an error naming the field, counted, without moving the
replay window or the incarnation (the next good frame still decodes), and never crash the Codec.
"""

from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.auth import KeyKind
from proto.config import Endpoint
from proto.messages import (
    MAX_LSD_BYTES,
    Codec,
    DecodeError,
    DrainNotes,
    Hello,
    LsdDelta,
    LsdRequest,
    MessageError,
    NdFrame,
    PortReport,
    PortStatus,
)
from proto.wire import MESSAGE_TYPES, decode_payload, from_wire, to_wire
from tests.test_messages import DIGEST, chal, codec, sign_raw
from tests.test_wire_golden import CASES

T, F = True, False
PORT = [1, T, T, T, T, F, None]
REPORT = ["tor-1", DIGEST, 1, 1, [PORT], 0, 0, []]
ND = ["tor-1", 3, ["tor-2", 7], None, 0]
HELLO = ["m2", "master", 1, 5, 100, None, []]
DELTA = ["m2", 1, 4, 5, b"x", False]


def with_(base: list, index: int, value: object) -> list:
    out = list(base)
    out[index] = value
    return out


def port_with(index: int, value: object) -> list:
    return with_(REPORT, 4, [with_(PORT, index, value)])


# (message type, payload as plain values, what the error must name)
HOSTILE: list[tuple[int, object, str]] = [
    # wrong types
    (1, with_(REPORT, 2, True), "report_seq"),
    (1, with_(REPORT, 2, 1.0), "report_seq"),
    (1, with_(REPORT, 0, b"tor-1"), "switch"),
    (1, with_(REPORT, 4, {"1": PORT}), "ports"),
    (1, with_(REPORT, 4, "ports"), "ports"),
    (1, port_with(1, 1), "ports[0].phy"),
    (1, port_with(5, None), "ports[0].damped"),
    (1, port_with(6, "tor-2:1"), "ports[0].miscabled_by"),
    (12, with_(ND, 2, None), "expected"),
    (12, with_(ND, 2, {"switch": "tor-2", "port": 7}), "expected"),
    (12, with_(ND, 3, ["tor-2", True]), "discovered.port"),
    (5, with_(DELTA, 4, "x"), "changes"),
    (7, with_(HELLO, 6, [1, "2"]), "reach[1]"),
    # out of range
    (1, with_(REPORT, 3, -1), "term"),
    (1, with_(REPORT, 3, 2**63), "term"),
    (1, with_(REPORT, 5, 2**64 - 1), "reach"),
    (1, port_with(0, 0), "ports[0].port"),
    (1, port_with(0, 65280), "ports[0].port"),
    (1, port_with(6, ["tor-2", 0]), "ports[0].miscabled_by.port"),
    (3, ["tor-1", 1, -2, False], "version"),
    (3, ["tor-1", 1, -1, 1], "kept"),                                  # a bool, not an int
    (7, with_(HELLO, 4, 2**32), "priority"),
    (7, with_(HELLO, 6, [-1]), "reach[0]"),
    (12, with_(ND, 4, 60_001), "hold_ms"),
    (12, with_(ND, 1, 65280), "port"),
    # wrong lengths: top level, nested PortStatus and Endpoint, too few and too many
    (1, REPORT[:7], "at least length 8"),
    (1, [*REPORT, 0], "at most length 8"),
    (1, with_(REPORT, 7, [[0, 1, 0, 0, 0]]), "bgp[0]"),                 # a border's session summaries
    (1, with_(REPORT, 7, [[0, 3, 0, 0, 0, 0]]), "bgp[0].state"),
    (1, with_(REPORT, 7, [[256, 1, 0, 0, 0, 0]]), "bgp[0].peer"),
    (1, with_(REPORT, 7, [[0, 1, 2**32, 0, 0, 0]]), "bgp[0].seconds"),
    (1, with_(REPORT, 7, [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]), "peer 0 reported twice"),
    (1, with_(REPORT, 4, [PORT[:6]]), "ports[0]"),        # no miscabled_by: never silently None
    (1, with_(REPORT, 4, [[*PORT, None]]), "ports[0]"),
    (1, port_with(6, ["tor-2"]), "ports[0].miscabled_by"),
    (1, port_with(6, ["tor-2", 1, 1]), "ports[0].miscabled_by"),
    (12, ND[:4], "at least length 5"),
    (12, with_(ND, 2, ["tor-2", 7, None]), "expected"),
    (7, HELLO[:5], "at least length 7"),
    (7, with_(HELLO, 6, [0] * 65), "reach"),
    (3, [], "at least length 4"),
    # names, digests, states
    (1, with_(REPORT, 4, [PORT, [1, T, T, T, T, F, None]]), "port 1 reported twice"),
    (1, with_(REPORT, 1, DIGEST.upper()), "digest"),
    (1, with_(REPORT, 1, DIGEST[:-1] + "\n"), "digest"),
    (1, with_(REPORT, 1, DIGEST + "\n"), "digest"),
    (1, port_with(6, ["", 1]), "ports[0].miscabled_by.switch"),
    (1, port_with(6, ["tor\x002", 1]), "ports[0].miscabled_by"),
    (12, with_(ND, 3, ["x" * 65, 1]), "discovered.switch"),
    (12, with_(ND, 3, ["\U0001f600" * 64, 1]), "discovered"),  # 64 characters but 256 UTF-8 bytes
    (7, with_(HELLO, 1, "Master"), "state"),
    (7, with_(HELLO, 1, "m" * 33), "state"),
    (7, with_(HELLO, 5, "lead\ner"), "leader"),
    (5, with_(DELTA, 3, 4), "to_version 4 must exceed"),
    # nested garbage, oversized
    (1, with_(REPORT, 4, [[[[[[PORT]]]]]]), "ports[0]"),
    (1, with_(REPORT, 4, [None]), "ports[0]"),
    (14, ["m2", 1, 1, bytes(MAX_LSD_BYTES + 1)], "notes"),
    (6, {"master": "m2"}, "array"),
]


def test_every_struct_field_is_required_on_the_wire():
    """No decode default anywhere: an array one element short is refused for every type and PortStatus."""
    samples = {type(m): m for _, _, m in CASES}
    for cls in MESSAGE_TYPES.values():
        fields, n = to_wire(samples[cls]), len(cls.__struct_fields__)
        assert decode_payload(cls, msgpack.packb(fields, use_bin_type=True)) == samples[cls]
        with pytest.raises(MessageError, match=f"at least length {n}"):
            decode_payload(cls, msgpack.packb(fields[:-1], use_bin_type=True))
        with pytest.raises(MessageError, match=f"at most length {n}"):
            decode_payload(cls, msgpack.packb([*fields, None], use_bin_type=True))


@pytest.mark.parametrize(("type_id", "fields", "names"), HOSTILE,
                         ids=[f"{i}-{MESSAGE_TYPES[t].__name__}-{n}" for i, (t, _, n) in enumerate(HOSTILE)])
def test_hostile_payload_is_a_counted_malformed_drop(type_id, fields, names):
    cls = MESSAGE_TYPES[type_id]
    payload = msgpack.packb(fields, use_bin_type=True)
    with pytest.raises(MessageError, match=_escape(names)):
        decode_payload(cls, payload)
    if cls is NdFrame:
        rx, sender, kind, owner, dest, port = codec("tor-2"), "tor-1", KeyKind.ND, "", None, 9
    elif cls.FROM_MASTER:
        rx, sender, kind, owner, dest, port = codec("m1"), "m2", KeyKind.MASTER, "m2", "m1", 0
    else:
        rx, sender, kind, owner, dest, port = codec("m1"), "tor-1", KeyKind.SWITCH, "tor-1", "m1", 0
    stream = port if cls is NdFrame else sender
    bad = sign_raw(type_id, kind, 5, sender, owner, payload, reflect=chal(rx, stream), dest=dest)
    with pytest.raises(DecodeError, match=_escape(names)) as info:
        rx.decode(bad, port=port)
    assert info.value.reason == "malformed" and rx.rejected == {"malformed": 1}
    assert f"from {sender!r}" in str(info.value) and cls.__name__ in str(info.value)
    assert not rx.established(stream)             # nothing moved: the same seq, a good payload, is accepted
    good = {1: REPORT, 12: ND, 7: HELLO, 5: DELTA}.get(type_id) or _valid(cls, sender)
    ok = sign_raw(type_id, kind, 5, sender, owner, msgpack.packb(good, use_bin_type=True),
                  reflect=chal(rx, stream), dest=dest)
    assert rx.decode(ok, port=port)[0] == sender


def _escape(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")


def _valid(cls: type, sender: str) -> list:
    return {
        "LsdRequest": [sender, 1, -1, False],
        "DrainNotes": [sender, 1, 1, b""],
        "Keepalive": [sender, 1, 1, False],
    }[cls.__name__]


def test_hostile_msgpack_framing():
    rx = codec("m1")
    seq = 1
    for raw in (b"\xdd\xff\xff\xff\xff", b"\x97" + b"\xdc\xff\xff" * 3, b"\xc1", b"\xd4\x01\x02",  # ext
                msgpack.packb(REPORT) + b"\x00", msgpack.packb(REPORT)[:-1], b"\x91" * 20_000):
        t0 = time.perf_counter()
        bad = sign_raw(1, KeyKind.SWITCH, seq, "tor-1", "tor-1", raw, reflect=chal(rx, "tor-1"))
        with pytest.raises(DecodeError) as info:
            rx.decode(bad)
        assert info.value.reason == "malformed", raw[:8]
        assert time.perf_counter() - t0 < 0.5   # a claimed 4 G-element array allocates nothing
        seq += 1
    assert rx.rejected == {"malformed": seq - 1}


def test_constructors_check_like_the_decoder():
    ok = PortStatus(1, True, True, True, True, False)
    assert ok.miscabled_by is None and PortStatus(1, True, True, True, True, False, miscabled_by=None) == ok
    report = PortReport("tor-1", DIGEST, 1, 1, (ok,), external=3)
    assert (report.reach, report.external) == (0, 3)
    assert from_wire(PortReport, to_wire(report)) == report
    assert to_wire(report) == ["tor-1", DIGEST, 1, 1, [PORT], 0, 3, []]
    for build, names in [
        (lambda: PortStatus(1, True, True, True, True, 0), "damped"),
        (lambda: PortStatus(1, True, True, True, True, False, Endpoint("tor-2", 65280)), "miscabled_by.port"),
        (lambda: PortReport("tor-1", DIGEST, 1, 1, (ok, ok)), "reported twice"),
        (lambda: PortReport("tor-1", DIGEST, 1, 1, [ok]), "expected tuple"),
        (lambda: PortReport("tor-1", DIGEST, 1, 1, (object(),)), "PortReport.ports[0]: expected PortStatus"),
        (lambda: PortReport("tor-1", DIGEST, 1, 2**63, ()), "term"),
        (lambda: PortReport("tor-1", DIGEST, 1, 2**70, ()), "PortReport: term"),
        (lambda: NdFrame("tor-1", 1, Endpoint("tor-2", 1), hold_ms=-1), "hold_ms"),
        (lambda: NdFrame("tor-1", 1, ("tor-2", 1)), "expected"),
        (lambda: Hello("m1", "master", 1, 1, 1, None, [1]), "expected tuple"),
        (lambda: LsdDelta("m1", 1, 2, 2, b""), "must exceed"),
        (lambda: DrainNotes("m1", 1, 1, memoryview(b"")), "expected bytes"),
        (lambda: LsdRequest("tor 1\t", 1, 1), "switch"),
    ]:
        with pytest.raises(MessageError, match=_escape(names)):
            build()
    with pytest.raises(TypeError, match="missing field 'ports'"):
        PortReport("tor-1", DIGEST, 1, 1)
    with pytest.raises(TypeError, match="unexpected field 'bogus'"):
        LsdRequest("tor-1", 1, 1, bogus=1)
    with pytest.raises(TypeError, match="duplicate field 'term'"):
        LsdRequest("tor-1", 1, 1, term=2)


def test_messages_are_frozen_and_hashable():
    msg = LsdRequest("tor-1", 1, 1)
    with pytest.raises(AttributeError):
        msg.term = 2  # type: ignore[misc]
    assert len({msg, LsdRequest("tor-1", 1, 1)}) == 1
    assert isinstance(Codec, type)


# msgpack encodes integers in -2**63 .. 2**64-1 only: nothing outside can be on the wire
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=70)
           | st.binary(max_size=20) | st.sampled_from([0, 1, 65279, 65280, -1, 2**63 - 1, 2**63, "", "m" * 64]))


@settings(max_examples=300, deadline=None)
@given(port=st.integers(0, 2), index=st.integers(0, 6), value=scalars, top=st.integers(0, 6), top_value=scalars)
def test_decode_and_construction_agree_on_any_scalar(port, index, value, top, top_value):
    """One PortStatus field and one report field replaced by any scalar: the payload decodes iff the
    constructors accept the same values, and then to the same message."""
    ports = [[p, T, F, T, T, F, None] for p in (1, 2, 3)]
    ports[port][index] = value
    fields = ["tor-1", DIGEST, 1, 1, ports, 0, 0, ()]
    if top != 4:
        fields[top] = top_value
    try:
        decoded = decode_payload(PortReport, msgpack.packb(fields, use_bin_type=True))
    except MessageError:
        decoded = None
    try:
        built = PortReport(*fields[:4], tuple(PortStatus(*p) for p in ports), *fields[5:])
    except MessageError:
        built = None
    assert decoded == built
