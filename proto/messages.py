"""Wire messages and the authenticated datagram Codec.

Datagram framing (integers big-endian)::

    b"FP" | version u8 (=5, WIRE_VERSION) | msg type u8 | key kind u8 | key id u8 | incarnation u64 | seq u64 |
    offer u64 | reflect u64 | group seq u64 | sender (u8 len + utf8) | key owner (u8 len + utf8) |
    msgpack payload | HMAC-SHA256 tag (32 B)

The tag covers every preceding byte and then, not sent, the destination (u8 len + utf8: the receiving
master or switch for unicast, empty for group and ND frames): a unicast frame is only valid at the peer
it was sent to, so a frame of one stream can never be replayed into another (the MASTER key and a switch's
own key sign frames to several destinations).

``key id`` (1..255, wire version 3) names the key of the sender's ``KeySet`` the frame is signed with (key
rollover, proto/auth.py): the receiver verifies it with its own key of that id, and drops a frame whose id
it does not accept (retired or unknown) as ``unknown_key_id`` before any HMAC work. The id is covered by
the tag, so it cannot be changed in flight; freshness (below) is per peer, not per key, so a key change on
either side needs no new handshake.

Freshness (ARCHITECTURE.md "Freshness"; in the spirit of RIFT's nonces and of OSPF/BFD's boot counts, but
with no clock and no durable state): every Codec draws a random 64-bit ``incarnation`` at start. Sequence
numbers count from 1 per stream: per unicast peer, per local ND port, one for the group. ``offer`` is the
random challenge the sender holds for the receiver (for ND: for the port), ``reflect`` the receiver's last
offer the sender heard (0: none; group frames carry 0/0), ``group seq`` the sender's next group sequence
number (0 from switches). A receiver accepts a frame of the peer's accepted incarnation if the seq passes that
stream's 64-wide window, and a frame of a *new* incarnation only if it reflects the receiver's current
challenge, which is then redrawn: a frame captured before a restart of either side never reflects a live
challenge, so it is rejected as ``stale`` and changes no state (it only updates which offer the receiver
reflects next). The accepting frame also closes both windows below it (its seq; its group seq): frames
of that incarnation sent before it may predate the receiver's restart. Group frames need an incarnation
already accepted. A runtime may refuse such a new incarnation (``Codec.admit``, reason ``duplicate``: a
master refuses the older of two live client processes of one switch, controller.dupclients).

The payload is a msgpack array of the message's fields in declaration order; nested ``PortStatus`` and
``Endpoint`` values are arrays too, ``None`` is nil, byte strings are msgpack bin. The messages are msgspec
structs defined in proto.wire (re-exported here), which also encodes and decodes the payload: nothing is
ever unpickled; every field of every nested struct is length-, type- and range-checked on decode
(``bool`` is not an ``int``), and the originator field of the message must equal the header's sender.
A frame whose sender is the local id is rejected (``wrong_sender``), except an ND-key ``NdFrame``: a
looped-back cable, which the ND core then reports as miscabled (see ``Codec._decode``); its freshness is
its own (``Codec._own_nd``), never the port's session with its peer.

Which key may sign what (checked on decode, chosen by ``Codec.encode``):

* a switch signs with its own SWITCH key (owner = itself); ND frames (``NdFrame``) with the ND key and
  nothing else with the ND key;
* a master signs unicast to a switch with THAT switch's SWITCH key (so the receiver must be that switch),
  to masters with its own MASTER key, multicast to clients with the GROUP key.

Rejections raise ``DecodeError`` whose ``reason`` is one of ``DECODE_REASONS`` and are counted in
``Codec.rejected``. ``Codec.decode`` raises nothing else, whatever the input (fuzzed in the tests).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import struct
import time
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterator
from typing import Any

from proto.auth import AuthError, KeyKind, KeyRing, KeySet, ReplayWindow
from proto.bounded import AnswerBudget, KeyIdRejections, LogBudget
from proto.config import Endpoint
from proto.wire import (
    HEADER_LEN,
    MAX_DATAGRAM,
    MAX_LSD_BYTES,
    MAX_ND_HOLD_MS,
    MAX_PORT,
    MESSAGE_TYPES,
    TAG_LEN,
    BgpSession,
    Challenge,
    DrainNotes,
    DrainNotesAck,
    Hello,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    Message,
    MessageError,
    NdFrame,
    PortReport,
    PortStatus,
    RelayedReport,
    ReplicationAck,
    ReportAck,
    StepDown,
    Vote,
    VoteRequest,
    decode_payload,
    encode_payload,
)
from proto.wire import from_wire as _from_wire  # noqa: F401  (tests tamper with payloads through these)
from proto.wire import to_wire as _to_wire  # noqa: F401

__all__ = [
    "DECODE_REASONS",
    "HEADER_LEN",
    "MAGIC",
    "MAX_DATAGRAM",
    "MAX_LSD_BYTES",
    "MAX_ND_HOLD_MS",
    "MESSAGE_TYPES",
    "ND_DST_MAC",
    "ND_ETHERTYPE",
    "WIRE_VERSION",
    "BgpSession",
    "Challenge",
    "Codec",
    "DecodeError",
    "DrainNotes",
    "DrainNotesAck",
    "EncodeError",
    "Endpoint",
    "Hello",
    "KeyKind",
    "Keepalive",
    "LsdDelta",
    "LsdFull",
    "LsdRequest",
    "Message",
    "MessageError",
    "NdFrame",
    "PortReport",
    "PortStatus",
    "RelayedReport",
    "ReplicationAck",
    "ReportAck",
    "StepDown",
    "Vote",
    "VoteRequest",
    "decode_nd_ethernet",
    "dest_trailer",
    "encode_nd_ethernet",
]

MAGIC = b"FP"
# 2: incarnation/offer/reflect freshness fields, per-stream sequence numbers; 3: key id (key rollover);
# 4: PortReport/RelayedReport.bgp (a border's eBGP session summaries, issue #13)
WIRE_VERSION = 5
# magic, version, type, key kind, key id, incarnation, seq, offer, reflect, group seq
_FIXED = struct.Struct(">2sBBBBQQQQQ")
assert _FIXED.size == HEADER_LEN  # 46: where the sender name starts
_MIN_DATAGRAM = _FIXED.size + 1 + 1 + TAG_LEN
MAX_SEQ = 2**64 - 1

DECODE_REASONS = (
    "truncated", "bad_magic", "bad_version", "unknown_type", "oversized", "bad_hmac", "unknown_key",
    "replay", "malformed", "wrong_sender", "stale", "unknown_key_id", "duplicate",
)
log = logging.getLogger(__name__)


class DecodeError(ValueError):
    """A datagram was rejected; ``reason`` is a short stable metric label (see DECODE_REASONS)."""

    def __init__(self, reason: str, detail: str = "", *, sender: str | None = None) -> None:
        assert reason in DECODE_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        #: For ``stale``: the authenticated unicast peer to answer with ``Codec.answer`` (None otherwise).
        self.sender = sender


class EncodeError(ValueError):
    """The Codec cannot encode this message (wrong sender, missing key, too large, ...)."""


# ---------------------------------------------------------------------------------------------------
# Codec


class _Session:
    """Freshness state for one peer stream: a unicast peer (by name) or an ND port (by local port).

    ``inc``/``peer``: the accepted incarnation (and, for ND ports, which switch it belongs to), None before
    the first verified frame. ``win``/``gwin``: replay windows of that incarnation's unicast and group
    streams. ``chal``: the random challenge we offer this peer (redrawn whenever we accept a new
    incarnation). ``offer``: the peer's last offer to us (what we reflect). ``tx``: our next sequence number
    towards it. (The rate limit of answers to its stale frames is the Codec's ``AnswerBudget``.)
    """

    __slots__ = ("chal", "gwin", "inc", "offer", "peer", "tx", "win")

    def __init__(self, window: int) -> None:
        self.inc: int | None = None
        self.peer: str | tuple[str, int] | None = None   # name, or (name, its port) for an ND link
        self.win = ReplayWindow(window)
        self.gwin = ReplayWindow(window)
        self.chal = _nonce()
        self.offer = 0
        self.tx = 1


#: 64-bit nonces from the OS CSPRNG, drawn 256 at a time: one getrandom() per nonce (each session's challenge,
#: each incarnation accepted) was ~4 % of a Jupiter cold start's master CPU (issue #18). `next` on the
#: iterator is atomic under the GIL (threads never share a nonce); a forked child starts a fresh batch.
_NONCE_BATCH = 256
_nonces: Iterator[tuple[int, ...]] = iter(())


def _fresh_nonces() -> None:
    global _nonces
    _nonces = iter(())


os.register_at_fork(after_in_child=_fresh_nonces)


def _nonce() -> int:
    global _nonces
    try:
        value = next(_nonces)[0]
    except StopIteration:
        _nonces = struct.iter_unpack("<Q", secrets.token_bytes(8 * _NONCE_BATCH))
        value = next(_nonces)[0]
    return value or 1  # 0 means "nothing to reflect"


MAX_LOOP_STREAMS = 1024     # Codec._own_nd: replay windows of our own ND streams heard back (looped cables)


class Codec:
    """Signs/verifies datagrams for ``local_id`` (a switch name or a master id), with freshness.

    ``switches``/``masters``: every known sender (from the Fabric). ``accept_group``: accept GROUP-signed
    datagrams (set False when distribution is unicast, so a compromised switch holding the shared group key
    cannot inject master multicast). ``incarnation``: this process's random 64-bit incarnation (default:
    drawn from ``secrets``; tests pin it). ``answer_interval`` (s): at most one challenge answer per peer and
    address in that time (see ``answer``). ``clock``: monotonic seconds, read only to rate-limit log lines
    (freshness reads no clock).

    Freshness (see the module docstring and ARCHITECTURE.md "Freshness"): a frame is accepted if it belongs
    to the peer's accepted incarnation and passes its replay window, or if it starts a new incarnation and
    reflects our current challenge for that peer. Anything else authenticated is rejected as ``stale``
    (``DecodeError.sender`` names the peer) and changes nothing but the offer we reflect next.

    ``keys``: a ``KeySet`` (key rollover: signs with its send key, accepts its accepted ids) or one
    ``KeyRing`` (= key id 1). ``set_keys`` swaps it at run time; a frame under an id not accepted is
    rejected as ``unknown_key_id`` before any HMAC work. It is not authenticated, so the (claimed sender,
    key id) pair is the sender's choice: ``rejected_key_ids`` (a ``proto.bounded.KeyIdRejections``) keeps the
    256 most recently seen pairs and exact totals (per key id, evicted), and a line is logged at the 1st,
    2nd, 4th, 8th, ... frame of a pair within one ``LogBudget`` for the whole Codec (``key_log``: 20 lines,
    then one per 10 s, each saying how many were suppressed before it).
    """

    def __init__(self, keys: KeyRing | KeySet, local_id: str, switches: Collection[str], masters: Collection[str],
                 *, accept_group: bool = True, replay_window: int = 64, incarnation: int | None = None,
                 answer_interval: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.local_id = local_id
        self.switches = frozenset(switches)
        self.masters = frozenset(masters)
        if self.switches & self.masters:
            raise ValueError(f"names both switch and master: {sorted(self.switches & self.masters)[:5]}")
        if local_id not in self.switches and local_id not in self.masters:
            raise ValueError(f"local id {local_id!r} is neither a known switch nor a known master")
        self.is_master = local_id in self.masters
        self._ks = self._key_state(keys)
        self.incarnation = _nonce() if incarnation is None else incarnation
        if type(self.incarnation) is not int or not 1 <= self.incarnation <= MAX_SEQ:
            raise ValueError(f"incarnation out of range 1..2**64-1: {incarnation!r}")
        self.accept_group = accept_group
        self.replay_window = replay_window
        self.answer_interval = answer_interval
        #: Answers to stale frames sent, by (peer, address): proto.bounded.AnswerBudget.
        self.answers = AnswerBudget(answer_interval)
        self._clock = clock
        # Bounded: unicast sessions only for configured names (created once a frame's tag verified), ND
        # sessions only for the ports the runtime passes (the switch's own ports), one group stream.
        self._sessions: dict[str | int, _Session] = {}
        self._loops: dict[int, ReplayWindow] = {}   # our own ND frames heard, by sending port (_own_nd)
        self._group_tx = 1
        self.rejected: Counter[str] = Counter()
        #: ``unknown_key_id`` rejections by (claimed sender, key id), bounded: the frame is not authenticated.
        self.rejected_key_ids = KeyIdRejections()
        #: The log lines about those rejections, all pairs together.
        self.key_log = LogBudget()
        self.accepted: Counter[str] = Counter()  # by message class name
        #: Peers whose new incarnation was accepted (a restart noticed), by name.
        self.new_incarnations: Counter[str] = Counter()
        #: Set by ``decode``: the peer (name) whose new incarnation the last accepted frame started, else None.
        self.last_new_peer: str | None = None
        #: The runtime's say over a unicast peer's new incarnation that reflected our challenge (it would be
        #: accepted): ``admit(sender, incarnation, accepted incarnation or None, source) -> bool``, ``source``
        #: as given to ``decode``. False rejects the frame as ``duplicate``: nothing changes, no Challenge
        #: answers it. controller.dupclients refuses the older of two live clients of one switch.
        self.admit: Callable[[str, int, int | None, Hashable], bool] | None = None
        self._own_trailer = dest_trailer(local_id)
        self._challenge_msg = Challenge(local_id)
        self._challenge_payload = encode_payload(self._challenge_msg)

    # -- keys ---------------------------------------------------------------------------------------

    def _key_state(self, keys: KeyRing | KeySet) -> _KeyState:
        keys = KeySet.of(keys)
        keys.check_usable_by(self.local_id, self.is_master)     # AuthError (a ValueError) naming the key file
        return _KeyState(keys)

    def set_keys(self, keys: KeyRing | KeySet) -> None:
        """Replace the key set atomically (one attribute store: a frame in flight in another thread is signed
        or verified wholly under the old or wholly under the new set). Freshness state is kept: peers need
        no new handshake. ValueError (nothing changes) if the set is restricted to another switch."""
        self._ks = self._key_state(keys)

    @property
    def keys(self) -> KeySet:
        return self._ks.keys

    @property
    def keyring(self) -> KeyRing:
        """The ring of the send key."""
        return self._ks.keys.send_ring

    def signer(self, kind: KeyKind, owner: str) -> tuple[int, Any]:
        """(send key id, an HMAC-SHA256 template of that key's ``kind``/``owner`` key): ``copy()`` it, never
        update it. For ``controller.fanout``; raises MissingKeyError if the ring lacks the key."""
        ks = self._ks
        return ks.send_id, ks.template(ks.send_id, kind, owner)

    # -- helpers ------------------------------------------------------------------------------------

    def _session(self, key: str | int) -> _Session:
        sess = self._sessions.get(key)
        if sess is None:
            sess = self._sessions[key] = _Session(self.replay_window)
        return sess

    def _signing_key(self, msg: Message, to: str | None, key: KeyKind | None) -> tuple[KeyKind, str]:
        if isinstance(msg, NdFrame):
            if key not in (None, KeyKind.ND):
                raise EncodeError("NdFrame must be signed with the ND key")
            return KeyKind.ND, ""
        if key == KeyKind.ND:
            raise EncodeError("only NdFrame may be signed with the ND key")
        if not self.is_master:
            if key not in (None, KeyKind.SWITCH):
                raise EncodeError(f"a switch signs with its own switch key, not {KeyKind(key).name}")
            return KeyKind.SWITCH, self.local_id
        if key is None:
            key = KeyKind.SWITCH if to in self.switches else KeyKind.MASTER
        if key == KeyKind.SWITCH:
            if to not in self.switches:
                raise EncodeError(f"SWITCH key needs a destination switch, got to={to!r}")
            return KeyKind.SWITCH, to
        if key == KeyKind.MASTER:
            return KeyKind.MASTER, self.local_id
        return KeyKind.GROUP, ""

    def _acceptable_key(self, sender: str, cls: type[Message], kind: KeyKind, owner: str) -> bool:
        if kind == KeyKind.ND or cls is NdFrame:
            return kind == KeyKind.ND and cls is NdFrame and owner == ""
        if sender in self.switches:
            return kind == KeyKind.SWITCH and owner == sender
        if kind == KeyKind.SWITCH:  # master unicast to a switch: only that switch can verify it
            return owner == self.local_id and not self.is_master
        if kind == KeyKind.MASTER:
            return owner == sender
        return self.accept_group and owner == "" and cls is not Challenge  # GROUP

    def _stream(self, msg: Message, to: str | None, kind: KeyKind) -> str | int | None:
        """The session key of an outgoing frame: None for group, the local port for ND, else the peer."""
        if kind == KeyKind.GROUP:
            return None
        if kind == KeyKind.ND:
            return msg.port  # type: ignore[attr-defined]
        if to is None:
            raise EncodeError(f"{type(msg).__name__} needs a destination (to=...)")
        if to == self.local_id or (to not in self.switches and to not in self.masters):
            raise EncodeError(f"unknown destination {to!r}")
        if not self.is_master and to not in self.masters:
            raise EncodeError(f"a switch sends unicast only to masters, not {to!r}")
        return to

    def header(self, type_id: int, kind: KeyKind, owner: str, stream: str | int | None,
               key_id: int | None = None) -> bytes:
        """The framing header of the next datagram of ``stream`` (consumes one sequence number).

        ``key_id``: the key that will sign it (default: the current send key; pass the id ``signer`` gave).
        For ``controller.fanout`` (which signs one payload for many switches) and ``encode``."""
        if stream is None:
            seq, offer, reflect = self._group_tx, 0, 0
            self._group_tx += 1
        else:
            sess = self._session(stream)
            seq, offer, reflect = sess.tx, sess.chal, sess.offer
            sess.tx = seq + 1
        if seq > MAX_SEQ:
            raise EncodeError("sequence numbers exhausted")
        sender_b, owner_b = self.local_id.encode(), owner.encode()
        gseq = self._group_tx if self.is_master else 0
        if key_id is None:
            key_id = self._ks.send_id
        return (_FIXED.pack(MAGIC, WIRE_VERSION, type_id, kind, key_id, self.incarnation, seq, offer, reflect,
                            gseq)
                + bytes((len(sender_b),)) + sender_b + bytes((len(owner_b),)) + owner_b)

    def frame(self, type_id: int, kind: KeyKind, owner: str, stream: str | int | None, payload: bytes) -> bytes:
        """One signed datagram: the next header of ``stream`` (``header``: consumes one sequence number),
        ``payload`` (an ``encode_payload`` result, not checked here) and the HMAC-SHA256 tag of ``kind``/
        ``owner``'s send key over both and the unsent destination (``dest_trailer``: ``stream`` when it is a
        peer's name). What ``encode`` and ``challenge`` send; ``controller.fanout`` and the fleet harness
        call it to sign one payload serialised once for many destinations. Raises EncodeError if the ring
        lacks the key."""
        try:
            key_id, template = self.signer(kind, owner)
        except AuthError as e:
            raise EncodeError(str(e)) from None
        mac = template.copy()
        body = self.header(type_id, kind, owner, stream, key_id) + payload
        mac.update(body)
        mac.update(dest_trailer(stream if isinstance(stream, str) else None))
        return body + mac.digest()

    # -- encode -------------------------------------------------------------------------------------

    def encode(self, msg: Message, *, to: str | None = None, key: KeyKind | None = None) -> bytes:
        """Sign ``msg`` as ``local_id``; raises EncodeError if that is not allowed or it is too large.

        ``to``: the destination (a master or switch name); required for every unicast frame. Key choice:
        a switch always uses its own SWITCH key (ND key for NdFrame, whose stream is its ``port``; ``to`` is
        ignored). A master uses ``to``'s SWITCH key when ``to`` is a switch, else its own MASTER key; pass
        ``key=KeyKind.GROUP`` for multicast to clients. Each call consumes one sequence number of the stream.
        """
        cls = type(msg)
        if MESSAGE_TYPES.get(getattr(cls, "TYPE", None)) is not cls:
            raise EncodeError(f"not a wire message: {cls.__name__}")
        if msg.sender != self.local_id:
            raise EncodeError(f"{cls.__name__}.{cls.SENDER_FIELD} is {msg.sender!r}, but this codec "
                              f"speaks for {self.local_id!r}")
        if cls.FROM_MASTER is not None and self.is_master != cls.FROM_MASTER:
            raise EncodeError(f"{cls.__name__} is not sent by a {'master' if self.is_master else 'switch'}")
        kind, owner = self._signing_key(msg, to, key)
        if cls is Challenge and kind == KeyKind.GROUP:
            raise EncodeError("a Challenge is unicast")
        payload = encode_payload(msg)
        stream = self._stream(msg, to, kind)
        body_len = _FIXED.size + 2 + len(self.local_id.encode()) + len(owner.encode()) + len(payload)
        if body_len + TAG_LEN > MAX_DATAGRAM:
            raise EncodeError(f"oversized: {cls.__name__} needs {body_len + TAG_LEN} bytes > {MAX_DATAGRAM}")
        return self.frame(cls.TYPE, kind, owner, stream, payload)

    def challenge(self, to: str) -> bytes:
        """A ``Challenge`` datagram for peer ``to``: carries our challenge and reflects its last offer.

        The same bytes as ``encode(Challenge(local_id), to=to)``, from a payload encoded once (a cold
        start answers one per switch)."""
        if to == self.local_id or (to not in self.switches and to not in self.masters):
            raise EncodeError(f"unknown destination {to!r}")
        if not self.is_master and to not in self.masters:
            raise EncodeError(f"a switch sends unicast only to masters, not {to!r}")
        kind, owner = self._signing_key(self._challenge_msg, to, None)
        return self.frame(Challenge.TYPE, kind, owner, to, self._challenge_payload)

    def answer(self, peer: str | None, now: float, addr: Hashable = None) -> bytes | None:
        """The reply to a ``stale`` rejection from ``peer`` (``DecodeError.sender``): a Challenge, at most
        one per (peer, ``addr``) per ``answer_interval`` s (monotonic ``now``), None otherwise or for an
        ND/unknown peer. One round trip then re-establishes the pair after a restart of either side.

        ``addr``: where the Challenge goes when that is the datagram's source (a master answering a
        switch): replays of the switch's frames from another address then cannot use up the allowance of
        the address the genuine switch speaks from (``proto.bounded.AnswerBudget``: at most 4 addresses per
        peer, 4,096 entries in all). None (one allowance per peer) when it goes to the peer's configured
        address: whichever frame drew it, it reaches the genuine peer."""
        if peer is None or (peer not in self.switches and peer not in self.masters) or peer == self.local_id:
            return None
        if not self.is_master and peer not in self.masters:
            return None
        if not self.answers.allow(peer, addr, now):
            self.rejected["answer_limited"] += 1
            return None
        return self.challenge(peer)

    def established(self, peer: str | int) -> bool:
        """Whether an incarnation of ``peer`` (name, or local ND port) is accepted."""
        sess = self._sessions.get(peer)
        return sess is not None and sess.inc is not None

    def incarnation_of(self, peer: str | int) -> int | None:
        """The accepted incarnation of ``peer`` (name, or local ND port), None before one is."""
        sess = self._sessions.get(peer)
        return None if sess is None else sess.inc

    # -- decode -------------------------------------------------------------------------------------

    def decode(self, data: bytes, *, port: int = 0, source: Hashable = None) -> tuple[str, Message]:
        """Verify and decode a datagram -> (sender, message). Raises DecodeError only; counts rejects.

        ``port``: the local port an ND frame arrived on (its freshness session); ignored for the rest.
        ``source``: where the datagram came from (e.g. (ip, port)), only passed on to ``admit``."""
        self.last_new_peer = None
        try:
            sender, msg, commit = self._decode(data, port, source)
        except DecodeError as e:
            self.rejected[e.reason] += 1
            raise
        commit()
        self.accepted[type(msg).__name__] += 1
        return sender, msg

    def _decode(self, data: bytes, port: int, source: Hashable) -> tuple[str, Message, Callable[[], None]]:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("malformed", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        n = len(data)
        if n > MAX_DATAGRAM:
            raise DecodeError("oversized", f"{n} bytes > {MAX_DATAGRAM}")
        if n < 2:
            raise DecodeError("truncated", f"{n} bytes")
        if data[:2] != MAGIC:
            raise DecodeError("bad_magic", repr(data[:2]))
        if n < 3:
            raise DecodeError("truncated", f"{n} bytes")
        if data[2] != WIRE_VERSION:
            raise DecodeError("bad_version", f"wire version {data[2]}, expected {WIRE_VERSION}")
        if n < _MIN_DATAGRAM:
            raise DecodeError("truncated", f"{n} bytes < minimum {_MIN_DATAGRAM}")
        _, _, type_id, kind_id, key_id, inc, seq, offer, reflect, gseq = _FIXED.unpack_from(data)
        cls = MESSAGE_TYPES.get(type_id)
        if cls is None:
            raise DecodeError("unknown_type", f"message type {type_id}")
        try:
            kind = KeyKind(kind_id)
        except ValueError:
            raise DecodeError("unknown_key", f"key kind {kind_id}") from None
        end = n - TAG_LEN
        pos = _FIXED.size
        sender, pos = _read_name(data, pos, end, "sender", allow_empty=False)
        owner, pos = _read_name(data, pos, end, "key owner", allow_empty=True)
        if sender == self.local_id:
            # Our own name comes back only on a looped-back cable: two of our fabric ports cabled to each
            # other, or a port whose frames are reflected onto itself (a loopback plug). An ND-key NdFrame
            # goes on through authentication, then its own freshness check (``_own_nd``: our incarnation, a
            # replay window per receiving port), never the port's session with its peer; the ND core then
            # sees a wrong peer and reports the port MISCABLED by (us, that port), as link OAM does with its
            # MPIDs, instead of DOWN (silence), which sends an operator after the wrong fault. Our own frames
            # are no peer's: they must never go through the offer/reflect handshake of the port's session
            # (review 38: a copy of one of our frames made the port reflect our own challenge, and a copy of
            # that answer took the session from the genuine peer — a keyless tap that injects took a healthy
            # link down), and client.nd ignores them while the expected peer is heard. Any other message
            # from ourselves (unicast, group, an NdFrame under another key) is still rejected.
            if not (cls is NdFrame and kind == KeyKind.ND and not self.is_master):
                raise DecodeError("wrong_sender", f"{cls.__name__} from ourselves ({sender!r})")
        elif sender not in self.switches and sender not in self.masters:
            raise DecodeError("wrong_sender", f"unknown sender {sender!r}")
        if cls.FROM_MASTER is not None and (sender in self.masters) != cls.FROM_MASTER:
            raise DecodeError("wrong_sender", f"{cls.__name__} from {sender!r}")
        if not self._acceptable_key(sender, cls, kind, owner):
            raise DecodeError("unknown_key", f"{cls.__name__} from {sender!r} signed with "
                                             f"{kind.name} key {owner!r}")
        ks = self._ks
        if key_id not in ks.accepted:
            self._key_id_rejected(sender, key_id, ks, port if kind == KeyKind.ND else None)
            raise DecodeError("unknown_key_id", f"{cls.__name__} from {sender!r} under key id {key_id}, "
                                                f"accepted: {sorted(ks.accepted)}")
        try:
            mac = ks.template(key_id, kind, owner).copy()
        except AuthError:
            raise DecodeError("unknown_key", f"no {kind.name} key {owner!r} here") from None
        mac.update(data[:end])
        mac.update(self._own_trailer if kind in (KeyKind.SWITCH, KeyKind.MASTER) else _NO_DEST)
        if not hmac.compare_digest(mac.digest(), data[end:]):
            raise DecodeError("bad_hmac", f"{cls.__name__} from {sender!r} (or not sent to us)")
        if inc == 0 or seq == 0:
            raise DecodeError("malformed", f"{cls.__name__} from {sender!r}: incarnation and seq must be > 0")
        if kind == KeyKind.SWITCH or kind == KeyKind.MASTER:
            # Unicast freshness needs only the authenticated header: a frame of an unverified incarnation
            # that does not reflect our challenge is rejected before its payload is decoded (a cold start
            # sends one per switch; its payload could change nothing anyway).
            sess = self._session(sender)
            if sess.inc != inc or sess.peer != sender:
                if reflect != sess.chal:
                    self._stale(sess, offer)
                    raise DecodeError("stale", f"{cls.__name__} from {sender!r}: unverified incarnation "
                                               f"{inc:016x} (reflects {reflect:016x})", sender=sender)
                if self.admit is not None and not self.admit(sender, inc, sess.inc, source):
                    # a new challenge: the refused frame (and any recording of the older process's frames,
                    # which all reflect this one) can never start that incarnation later — a live older
                    # process must answer the next challenge (a replay of its frames took the switch over
                    # once the newer one was quiet: review)
                    sess.chal = _nonce()
                    raise DecodeError("duplicate", f"{cls.__name__} from {sender!r}: incarnation {inc:016x} "
                                                   f"refused while {sess.inc or 0:016x} is live")
        try:
            msg = decode_payload(cls, memoryview(data)[pos:end])
        except MessageError as e:
            raise DecodeError("malformed", f"from {sender!r}: {e}") from None
        if msg.sender != sender:
            raise DecodeError("wrong_sender", f"{cls.__name__}.{cls.SENDER_FIELD}={msg.sender!r} "
                                              f"sent by {sender!r}")
        # -- freshness (the frame is authentic and well-formed) --
        if kind == KeyKind.ND:
            if type(port) is not int or not 0 <= port <= MAX_PORT:
                raise DecodeError("malformed", f"ND frame on bad local port {port!r}")
            if sender == self.local_id:
                return sender, msg, self._own_nd(inc, seq, port, msg.port)  # type: ignore[attr-defined]
            key: str | int = port
        else:
            key = sender
        sess = self._session(key)
        # An ND session is one link: bound to the sender's port too (its stream), so a frame of another of
        # the sender's ports replayed onto this link is not taken for this link's stream.
        peer: str | tuple[str, int] = sender if kind != KeyKind.ND else (sender, msg.port)  # type: ignore[attr-defined]
        same = sess.inc == inc and sess.peer == peer
        if kind == KeyKind.GROUP:
            if not same:  # multicast cannot reflect a per-receiver challenge: only an established peer
                raise DecodeError("stale", f"{cls.__name__} from {sender!r}: group frame of an unverified "
                                           f"incarnation", sender=sender)
            window = sess.gwin
            if not window.check(seq):
                raise DecodeError("replay", f"group seq {seq} from {sender!r}")
            return sender, msg, lambda: window.accept(seq)
        if same:
            window = sess.win
            if not window.check(seq):
                raise DecodeError("replay", f"seq {seq} from {sender!r}")

            def commit_known() -> None:
                window.accept(seq)
                sess.offer = offer
            return sender, msg, commit_known
        if reflect != sess.chal:  # ND only here: unicast was checked before the payload
            self._stale(sess, offer)
            raise DecodeError("stale", f"{cls.__name__} from {sender!r}: unverified incarnation "
                                       f"{inc:016x} (reflects {reflect:016x})",
                              sender=sender if kind != KeyKind.ND else None)

        def commit_new() -> None:
            sess.inc, sess.peer = inc, peer
            # Earlier frames of this incarnation may predate our restart: only later ones are accepted.
            sess.win = ReplayWindow(self.replay_window)
            sess.win.start_after(seq)
            sess.gwin = ReplayWindow(self.replay_window)
            sess.gwin.start_after(max(gseq - 1, 0))
            sess.chal = _nonce()  # frames that reflected the old challenge can never start an incarnation again
            sess.offer = offer
            self.new_incarnations[sender] += 1
            self.last_new_peer = sender
        return sender, msg, commit_new

    def _own_nd(self, inc: int, seq: int, port: int, from_port: int) -> Callable[[], None]:
        """Freshness of our own ND frame sent from ``from_port``, heard on ``port``: of this incarnation (we
        know it: no handshake), each seq of that stream once, whichever port hears it. Its state is apart from
        the ports' sessions with their peers, which it never touches (no offer learnt, nothing established).
        Bounded: a window per sending port (``_loops``, at most MAX_LOOP_STREAMS, the oldest forgotten)."""
        if inc != self.incarnation:
            raise DecodeError("replay", f"NdFrame from ourselves of incarnation {inc:016x}, not ours")
        window = self._loops.get(from_port)
        if window is not None and not window.check(seq):
            raise DecodeError("replay", f"seq {seq} of our own port {from_port} (heard on port {port})")

        def commit() -> None:
            w = self._loops.get(from_port)
            if w is None:
                while len(self._loops) >= MAX_LOOP_STREAMS:
                    del self._loops[next(iter(self._loops))]
                w = self._loops[from_port] = ReplayWindow(self.replay_window)
            w.accept(seq)
        return commit

    @staticmethod
    def _stale(sess: _Session, offer: int) -> None:
        """An older incarnation (replay) or a new one that has not heard our challenge yet: remember its
        offer (only decides what we reflect next: a genuine restart is then verified in one exchange)."""
        if offer:
            sess.offer = offer

    def _key_id_rejected(self, sender: str, key_id: int, ks: _KeyState, port: int | None) -> None:
        n = self.rejected_key_ids.note(sender, key_id)
        if n & (n - 1):  # log the 1st, 2nd, 4th, 8th, ... frame of a pair, within the Codec's line budget
            return
        suppressed = self.key_log.take(self._clock())
        if suppressed is None:
            return
        why = "retired" if key_id in ks.keys.retired else "unknown"
        log.warning("event=key_id_rejected local=%s peer=%s key_id=%d why=%s%s count=%d accepted=%s "
                    "send_key=%d total=%d%s", self.local_id, sender, key_id, why,
                    "" if port is None else f" port={port}", n, ",".join(map(str, sorted(ks.accepted))),
                    ks.send_id, self.rejected_key_ids.total, f" suppressed={suppressed}" if suppressed else "")


class _KeyState:
    """One key set and the HMAC templates derived from it, swapped as a whole by ``Codec.set_keys``."""

    __slots__ = ("accepted", "keys", "macs", "send_id")

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.send_id = keys.send_id
        self.accepted = keys.accepted
        self.macs: dict[tuple[int, KeyKind, str], Any] = {}

    def template(self, key_id: int, kind: KeyKind, owner: str) -> Any:
        ident = (key_id, kind, owner)
        template = self.macs.get(ident)
        if template is None:
            template = hmac.new(self.keys.ring(key_id).key(kind, owner), digestmod=hashlib.sha256)
            self.macs[ident] = template
        return template


_NO_DEST = b"\x00"


def dest_trailer(dest: str | None) -> bytes:
    """The destination as covered by the tag (not sent): u8 length + utf8; empty for group and ND."""
    if not dest:
        return _NO_DEST
    raw = dest.encode()
    return bytes((len(raw),)) + raw


def _read_name(data: bytes, pos: int, end: int, what: str, allow_empty: bool) -> tuple[str, int]:
    if pos >= end:
        raise DecodeError("truncated", f"{what} length missing")
    length = data[pos]
    pos += 1
    if pos + length > end:
        raise DecodeError("truncated", f"{what} runs past the end")
    try:
        name = data[pos:pos + length].decode()
    except UnicodeDecodeError:
        raise DecodeError("malformed", f"{what} is not UTF-8") from None
    if not name and allow_empty:
        return name, pos + length
    if not name or len(name) > 64 or not name.isprintable():
        raise DecodeError("malformed", f"bad {what} {name!r}")
    return name, pos + length


# ---------------------------------------------------------------------------------------------------
# ND Ethernet framing

ND_DST_MAC = bytes.fromhex("0180c200000e")  # LLDP nearest-bridge group address: never forwarded by bridges
ND_ETHERTYPE = 0x88B5  # IEEE local experimental ethertype 1
_ETH_HEADER = 14
_ND_MAX_PAYLOAD = 1500
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


def encode_nd_ethernet(src_mac: str, datagram: bytes) -> bytes:
    """Ethernet frame dst 01:80:c2:00:00:0e, src ``src_mac`` ("aa:bb:..."), ethertype 0x88B5, payload.

    The datagram (>= 47 bytes) makes the frame exceed the 60-byte minimum, so it is never padded.
    """
    if type(src_mac) is not str or not _MAC_RE.match(src_mac.lower()):
        raise EncodeError(f"bad source MAC {src_mac!r}")
    if not isinstance(datagram, bytes) or len(datagram) > _ND_MAX_PAYLOAD:
        raise EncodeError(f"ND datagram must be bytes of at most {_ND_MAX_PAYLOAD}")
    return ND_DST_MAC + bytes.fromhex(src_mac.replace(":", "")) + ND_ETHERTYPE.to_bytes(2, "big") + datagram


def decode_nd_ethernet(frame: bytes) -> bytes:
    """The datagram carried by an ND Ethernet frame; DecodeError (truncated/bad_magic) otherwise."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise DecodeError("malformed", f"expected bytes, got {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) < _ETH_HEADER:
        raise DecodeError("truncated", f"Ethernet frame of {len(frame)} bytes")
    if frame[:6] != ND_DST_MAC:
        raise DecodeError("bad_magic", f"destination {frame[:6].hex(':')} is not the ND address")
    if int.from_bytes(frame[12:14], "big") != ND_ETHERTYPE:
        raise DecodeError("bad_magic", f"ethertype 0x{frame[12:14].hex()} is not 0x{ND_ETHERTYPE:04x}")
    return frame[_ETH_HEADER:]
