"""The fleet worker's datagram signing: a switch's unicast frame from an already encoded payload (issue #18).

A simulated switch sends the same `PortReport` to each of three replicas, and again to each replica whose
Challenge asks for a copy: `Codec.encode` would rebuild and re-serialise the checked message for every one
(~12 µs of a worker's CPU each, 30,088 switches × 6+ datagrams in a Jupiter cold start). The worker builds
the message once per (report seq, term) through its checked constructor, serialises it once
(`proto.wire.encode_payload`, what `Codec.encode` does), and `sign` frames it for each destination the way
`Codec.encode` does for a switch: the destination's stream header (`Codec.header`: its own sequence number,
our challenge, its reflected offer; consumed like `encode` consumes it), the switch's own SWITCH key from
`Codec.signer` and the HMAC-SHA256 tag over the frame and the unsent destination (`dest_trailer`) —
`controller.fanout` does the same for the master's side. `tests/test_fleetwire.py` checks the bytes against
`Codec.encode` of a twin codec.
"""

from __future__ import annotations

from proto.auth import KeyKind
from proto.messages import Codec, dest_trailer


def sign(codec: Codec, type_id: int, payload: bytes, to: str) -> bytes:
    """The datagram `codec.encode(msg, to=to)` would give for a switch's message of type `type_id` whose
    payload is `payload` (= `encode_payload(msg)`); consumes one sequence number of the stream to `to`."""
    local = codec.local_id
    key_id, template = codec.signer(KeyKind.SWITCH, local)
    mac = template.copy()
    body = codec.header(type_id, KeyKind.SWITCH, local, to, key_id) + payload
    mac.update(body)
    mac.update(dest_trailer(to))
    return body + mac.digest()
