"""Fast per-switch signing of one message sent to many switches (the LSD fan-out).

Unicast distribution sends the *same* LsdDelta/LsdFull/Keepalive to every client, each signed with that
client's own switch key. `Codec.encode` re-serialises the message for every destination (~30 µs); this
encoder serialises once (through the real `Codec.encode` for the first destination), then for the others
only signs that payload again (`Codec.frame`: the destination's own header — sequence number, challenge and
reflected offer, key owner = destination — and the HMAC-SHA256 tag, which also covers the unsent
destination), following the datagram framing of the contract:

    b"FP" | version u8 | msg type u8 | key kind u8 | key id u8 | incarnation u64 | seq u64 | offer u64 |
    reflect u64 | group seq u64 | sender (u8 len + utf8) | key owner (u8 len + utf8) | msgpack payload |
    HMAC-SHA256 tag (32 B)

The key (id and HMAC template) comes from the Codec (`Codec.signer`) for every datagram, so a key set swapped
with `Codec.set_keys` applies to the next fan-out.

At construction it checks itself against the Codec (the fast datagram must decode with a switch's Codec
exactly like the slow one); if anything differs it stays disabled and everything goes through
`Codec.encode`. Cache scope: one fan-out batch (`reset()` between batches), keyed by message identity —
except a `ReportAck`, a new message per report but the same payload for every switch acked at the same term
and report seq (a cold start acks 30,088 switches' first reports, issue #18): by value, across batches, at
most `VALUE_CACHE` payloads.
"""

from __future__ import annotations

import contextlib
from typing import Any

from proto.auth import KeyKind, KeyRing
from proto.messages import HEADER_LEN, Codec, DecodeError, Keepalive, ReportAck

_TAG_LEN = 32
#: ReportAck payloads kept by value (term, seq, backup): a few terms and seqs at once; cleared when full
VALUE_CACHE = 256


class FanoutEncoder:
    def __init__(self, codec: Codec, keyring: KeyRing | None = None, probe_switch: str | None = None) -> None:
        """`keyring` is unused (the codec's key set signs); kept for existing callers."""
        self.codec = codec
        self._payloads: dict[int, tuple[Any, int, bytes]] = {}   # id(msg) -> (msg, type, payload)
        self._acks: dict[ReportAck, bytes] = {}                     # ReportAck (by value) -> payload
        self.enabled = False
        self.fast = self.slow = 0
        if probe_switch is not None:
            self.enabled = self._self_test(probe_switch)

    def warm(self, switches: list[str]) -> None:
        """Derive the switch keys up front (~30 µs each) so the first fan-out does not pay for them."""
        if self.enabled:
            for name in switches:
                self.codec.signer(KeyKind.SWITCH, name)

    def reset(self) -> None:
        self._payloads.clear()

    def encode(self, msg: Any, dest: str) -> bytes:
        """`msg` signed for switch `dest` — identical in format to `codec.encode(msg, to=dest)`."""
        if not self.enabled:
            return self.codec.encode(msg, to=dest)
        if type(msg) is ReportAck:
            payload = self._acks.get(msg)            # type: ignore[assignment]
            if payload is None:
                data = self.codec.encode(msg, to=dest)
                if len(self._acks) >= VALUE_CACHE:
                    self._acks.clear()
                self._acks[msg] = self._payload_of(data)
                self.slow += 1
                return data
            type_byte = ReportAck.TYPE
        else:
            hit = self._payloads.get(id(msg))
            if hit is None or hit[0] is not msg:
                data = self.codec.encode(msg, to=dest)
                self._payloads[id(msg)] = (msg, data[3], self._payload_of(data))
                self.slow += 1
                return data
            _, type_byte, payload = hit
        self.fast += 1
        return self.codec.frame(type_byte, KeyKind.SWITCH, dest, dest, payload)

    def _payload_of(self, data: bytes) -> bytes:
        pos = HEADER_LEN
        pos += 1 + data[pos]
        pos += 1 + data[pos]
        return data[pos:-_TAG_LEN]

    def _self_test(self, switch: str) -> bool:
        """Fast and slow encodings of two messages must decode identically at `switch` (a scratch Codec
        pair with the real one's keys: the probe must not consume the real Codec's sequence numbers)."""
        try:
            codec = self.codec
            me = Codec(codec.keys, codec.local_id, codec.switches, codec.masters)
            client = Codec(codec.keys.bundle_for_switch(switch), switch, codec.switches, codec.masters)
            msg = Keepalive(codec.local_id, 0, 0)
            self.codec, self.enabled = me, True
            try:
                _establish(client, me, switch)
                slow = self.encode(msg, switch)          # first: through Codec.encode
                fast = self.encode(msg, switch)          # second: the fast path
            finally:
                self.codec = codec
            self.reset()
            ok = client.decode(slow)[1] == msg and client.decode(fast) == (codec.local_id, msg)
            self.fast = self.slow = 0
            return ok
        except Exception:
            return False


def _establish(client: Codec, master: Codec, switch: str) -> None:
    """Run the freshness handshake between a scratch client and master Codec (both fresh)."""
    for data, receiver in ((master.challenge(switch), client), (client.challenge(master.local_id), master)):
        with contextlib.suppress(DecodeError):  # the first challenge is stale by design
            receiver.decode(data)
