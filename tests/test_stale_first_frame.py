"""The stale first frame of a cold start (issue #18, stop 27): a unicast frame of an unverified incarnation
is authenticated (HMAC) and then rejected from its header alone, before its payload is decoded, and
answered with a Challenge built from a pre-encoded payload. Replay protection and authentication are the
issue #19 design's: forged frames are still ``bad_hmac`` (never answered), replays still ``replay`` or
``stale``, and neither changes what the master accepts."""

from __future__ import annotations

import pytest

import proto.messages as messages
from proto.auth import KeyKind, KeyRing
from proto.messages import Challenge, Codec, DecodeError, PortReport, PortStatus, dest_trailer
from tests.harness.fresh import establish

RING = KeyRing.from_secret(bytes(range(3, 35)))
SWITCHES = ("tor-1", "tor-2")
MASTERS = ("m1", "m2")
DIGEST = "ef" * 32


def codec(local: str) -> Codec:
    return Codec(RING if local in MASTERS else RING.bundle_for_switch(local), local, SWITCHES, MASTERS)


def report(seq: int = 1) -> PortReport:
    return PortReport("tor-1", DIGEST, seq, 1, tuple(PortStatus(p, True, True, True, True, False)
                                                    for p in range(1, 49)))


def state(c: Codec) -> dict:
    return {k: (s.inc, s.peer, s.chal, s.win.top, s.win._bitmap, s.gwin.top, s.gwin._bitmap)
            for k, s in c._sessions.items()}


def rejected(c: Codec, data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        c.decode(data)
    return info.value


def signed(sw: Codec, payload: bytes, to: str = "m1") -> bytes:
    """A frame of the next seq of `sw`'s stream to `to`, correctly signed, carrying `payload` as is."""
    key_id, template = sw.signer(KeyKind.SWITCH, sw.local_id)
    body = sw.header(PortReport.TYPE, KeyKind.SWITCH, sw.local_id, to, key_id) + payload
    mac = template.copy()
    mac.update(body)
    mac.update(dest_trailer(to))
    return body + mac.digest()


@pytest.fixture
def payload_decodes(monkeypatch):
    calls = []
    real = messages.decode_payload

    def counting(cls, data):
        calls.append(cls.__name__)
        return real(cls, data)
    monkeypatch.setattr(messages, "decode_payload", counting)
    return calls


def test_a_stale_first_frame_is_answered_with_a_challenge_without_decoding_its_payload(payload_decodes):
    sw, m = codec("tor-1"), codec("m1")
    first = sw.encode(report(), to="m1")
    e = rejected(m, first)
    assert (e.reason, e.sender) == ("stale", "tor-1")
    assert payload_decodes == []                       # the header said it all
    assert m.rejected["stale"] == 1 and not m.established("tor-1")
    answer = m.answer(e.sender, 0.0)
    assert answer is not None
    sender, msg = sw.decode(answer)                    # the switch hears the master's challenge...
    assert (sender, type(msg)) == ("m1", Challenge)
    assert payload_decodes == ["Challenge"]
    sender, msg = m.decode(sw.encode(report(), to="m1"))    # ...and its resent report is accepted
    assert sender == "tor-1" and msg == report() and m.established("tor-1")
    assert payload_decodes == ["Challenge", "PortReport"]


def test_an_authentic_stale_frame_with_a_broken_payload_is_stale_and_changes_nothing():
    sw, m = codec("tor-1"), codec("m1")
    e = rejected(m, signed(sw, b"\xc1 not msgpack"))
    assert (e.reason, e.sender) == ("stale", "tor-1")   # the old code decoded it first: "malformed"
    assert not m.established("tor-1") and m.rejected == {"stale": 1}
    establish(sw, m)                                     # once verified, the payload is checked as before
    before = state(m)
    assert rejected(m, signed(sw, b"\xc1 not msgpack")).reason == "malformed"
    assert state(m) == before


def test_a_forged_stale_frame_is_still_bad_hmac_and_never_answered(payload_decodes):
    sw, m = codec("tor-1"), codec("m1")
    first = bytearray(sw.encode(report(), to="m1"))
    first[-40] ^= 1                                      # one payload bit: the tag no longer matches
    before = state(m)
    e = rejected(m, bytes(first))
    assert (e.reason, e.sender) == ("bad_hmac", None)
    assert m.answer(e.sender, 0.0) is None
    assert state(m) == before and m.rejected == {"bad_hmac": 1}
    # A frame signed by another switch's key but naming tor-1 is not taken for tor-1's.
    other = codec("tor-2")
    forged = signed(other, sw.encode(report(), to="m1")[-200:-32])
    forged = forged.replace(b"tor-2", b"tor-1")
    assert rejected(m, forged).reason in ("unknown_key", "bad_hmac")
    assert state(m) == before and payload_decodes == []


def test_replays_are_still_dropped_and_counted_before_and_after_a_restart():
    sw, m = codec("tor-1"), codec("m1")
    establish(sw, m)
    captured = sw.encode(report(5), to="m1")
    assert m.decode(captured)[1] == report(5)
    before = state(m)
    assert rejected(m, captured).reason == "replay"      # same incarnation: the window
    assert m.rejected["replay"] == 1 and state(m) == before
    m2 = codec("m1")                                     # the master restarts
    e = rejected(m2, captured)
    assert (e.reason, e.sender) == ("stale", "tor-1") and not m2.established("tor-1")
    sw.decode(m2.answer("tor-1", 0.0))                   # an answered challenge...
    before = state(m2)
    assert rejected(m2, captured).reason == "stale"      # ...never makes the captured frame fresh
    assert state(m2) == before and m2.rejected["stale"] == 2
    assert m2.decode(sw.encode(report(6), to="m1"))[1] == report(6)


def test_challenge_is_the_same_frame_as_an_encoded_challenge():
    for local, to in (("m1", "tor-1"), ("m1", "m2"), ("tor-1", "m1")):
        c = codec(local)
        a = c.encode(Challenge(local), to=to)
        b = c.challenge(to)
        assert len(a) == len(b)
        assert a[:14] == b[:14] and a[22:-32] == b[22:-32]   # all but seq (14..22) and the tag
        assert int.from_bytes(b[14:22], "big") == int.from_bytes(a[14:22], "big") + 1
        peer = codec(to)
        for frame in (a, b):
            assert rejected(peer, frame).reason == "stale"  # authentic, unverified: stale, not bad_hmac
    with pytest.raises(messages.EncodeError):
        codec("tor-1").challenge("tor-2")
    with pytest.raises(messages.EncodeError):
        codec("m1").challenge("nobody")
