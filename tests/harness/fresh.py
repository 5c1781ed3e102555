"""Freshness handshakes between test Codecs (what the runtimes do with `Codec.answer` and periodic frames)."""

from __future__ import annotations

from contextlib import suppress

from proto.config import Endpoint
from proto.messages import Codec, DecodeError, NdFrame


def establish(a: Codec, b: Codec) -> None:
    """Make unicast peers `a` and `b` (a master and anyone) accept each other's current incarnation:
    a challenges b (stale there: b only learns a's offer), b answers reflecting it (a accepts b), a answers
    reflecting b's offer (b accepts a)."""
    for src, dst in ((a, b), (b, a), (a, b)):
        with suppress(DecodeError):
            dst.decode(src.challenge(dst.local_id))
    assert a.established(b.local_id) and b.established(a.local_id)


def establish_nd(a: Codec, a_port: int, b: Codec, b_port: int) -> None:
    """Make switches `a` (local port `a_port`) and `b` (`b_port`) accept each other on that link, with the
    ND frames each sends anyway."""
    fa = NdFrame(a.local_id, a_port, Endpoint(b.local_id, b_port))
    fb = NdFrame(b.local_id, b_port, Endpoint(a.local_id, a_port))
    for src, frame, dst, port in ((a, fa, b, b_port), (b, fb, a, a_port), (a, fa, b, b_port)):
        with suppress(DecodeError):
            dst.decode(src.encode(frame), port=port)
    assert a.established(a_port) and b.established(b_port)
