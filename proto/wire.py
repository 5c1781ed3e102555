"""Wire payloads: one msgspec struct per message type, and their msgpack codec.

A payload is a msgpack array of the message's fields in declaration order (``array_like``); nested
``PortStatus``, ``BgpSession`` and ``Endpoint`` values are arrays too, ``None`` is nil, byte strings are msgpack bin —
the layout of wire v5, fixed byte for byte by tests/test_wire_golden.py. The framing, signatures and
freshness around it are proto.messages' (``Codec``).

Decoding is msgspec's, in C, against the annotated types below, so every field of every (nested) struct
is checked: the exact array length (no field has a decode default, ``forbid_unknown_fields`` refuses extra
elements), the exact type (``bool`` is not an ``int``, ``str`` not ``bytes``), ranges and lengths (``Meta``).
What ``Meta`` cannot say is checked in ``__post_init__``, which msgspec runs after decoding a struct: names
printable, ports of a report unique, ``to_version > from_version``.

Construction (``PortReport(...)``) is checked against the same types: the metaclass binds the arguments
(the ``= default`` values of a class body are construction defaults only — the metaclass takes them out of
the struct), checks that tuple, bytes and struct fields hold exactly those types, and builds the instance
with ``msgspec.convert`` (same ``Meta`` constraints, same ``__post_init__``). Nested wire structs were
checked when they were built and are frozen, so convert passes them through; an ``Endpoint`` (built
unchecked by config) is checked here. A message that can be built is one that a receiver accepts; any error
raises ``MessageError`` naming the field (``ports[3].port``). (``msgspec.structs.replace`` bypasses all
this: the code does not use it on wire structs.)
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta, Struct

from proto.config import MAX_BGP_PEERS, Endpoint

__all__ = [
    "HEADER_LEN", "MAX_BGP_SESSIONS", "MAX_DATAGRAM", "MAX_LSD_BYTES", "MAX_ND_HOLD_MS", "MAX_PORT", "MAX_PRIORITY", "MAX_REPLICAS", "MAX_U63",
    "MESSAGE_TYPES", "MIN_PORT", "TAG_LEN", "BgpSession", "Challenge", "DrainNotes", "DrainNotesAck", "Hello", "Keepalive", "LsdDelta", "LsdFull",
    "LsdRequest", "Message", "MessageError", "NdFrame", "PortReport", "PortStatus", "RelayedReport",
    "ReplicationAck", "ReportAck", "StepDown", "Vote", "VoteRequest", "decode_payload", "encode_payload",
    "from_wire", "to_wire",
]

MAX_DATAGRAM = 65_507  # largest UDP payload over IPv4
MAX_ND_HOLD_MS = 60_000  # longest graceful-restart hold a peer may ask for
HEADER_LEN = 46  # the fixed framing header (proto.messages._FIXED.size, asserted there)
TAG_LEN = 32
# Room for LsdFull.snapshot / LsdDelta.changes in one datagram: MAX_DATAGRAM minus the worst-case
# framing (fixed header 46, sender and owner names up to 2 * 256, tag 32) and payload overhead
# (array header, master name, term, versions, digest, bin header: < 200).
MAX_LSD_BYTES = MAX_DATAGRAM - HEADER_LEN - 2 * 256 - TAG_LEN - 200
MAX_U63 = 2**63 - 1
MIN_PORT, MAX_PORT = 1, 65279
MAX_PRIORITY = 2**32 - 1
MAX_REPLICAS = 64   # PortReport.reach is a 63-bit map over the configured masters
MAX_BGP_SESSIONS = MAX_BGP_PEERS  # PortReport.bgp: one summary per configured peer


class MessageError(ValueError):
    """A message field has the wrong type or is out of range (raised on construction and on decode)."""


# ---------------------------------------------------------------------------------------------------
# Field types

Name = Annotated[str, Meta(min_length=1, max_length=64)]       # + printable, <= 255 UTF-8 bytes (_name)
U63 = Annotated[int, Meta(ge=0, le=MAX_U63)]
VersionOrNone = Annotated[int, Meta(ge=-1, le=MAX_U63)]          # -1 = no valid LSD / nothing
Port = Annotated[int, Meta(ge=MIN_PORT, le=MAX_PORT)]
Priority = Annotated[int, Meta(ge=0, le=MAX_PRIORITY)]
Digest = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]       # lower-case hex sha256
State = Annotated[str, Meta(pattern=r"^[a-z][a-z_]{0,31}\Z")]   # a lower-case FMRP state name
Blob = Annotated[bytes, Meta(max_length=MAX_DATAGRAM)]
Notes = Annotated[bytes, Meta(max_length=MAX_LSD_BYTES)]
HoldMs = Annotated[int, Meta(ge=0, le=MAX_ND_HOLD_MS)]
Reach = Annotated[tuple[U63, ...], Meta(max_length=MAX_REPLICAS)]
U32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]


def _name(value: str | None, field: str) -> None:
    """What ``Name``'s Meta cannot say (called from ``__post_init__``: on decode and construction)."""
    if value is not None and not (value.isprintable() and (value.isascii() or len(value.encode()) <= 255)):
        raise MessageError(f"{field}: {value!r} is not a name of 1..64 printable characters")


# ---------------------------------------------------------------------------------------------------
# Construction, checked like a decode


class _Checked(type(Struct)):  # type: ignore[misc]
    """Metaclass of the wire structs: construction defaults, and construction checked like a decode."""

    def __new__(mcls, name: str, bases: tuple, ns: dict[str, Any], **kw: Any) -> Any:
        defaults = {}
        for field, ann in ns.get("__annotations__", {}).items():
            if field in ns and not str(ann).startswith(("ClassVar", "typing.ClassVar")):
                defaults[field] = ns.pop(field)
        cls = super().__new__(mcls, name, bases, ns, **kw)
        cls._defaults = defaults
        return cls

    @property
    def __signature__(cls) -> inspect.Signature:
        """The constructor's: the struct's fields with the construction defaults (for inspect, hypothesis)."""
        return cls.__dict__["_spec"].signature

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        spec: _Spec = cls.__dict__["_spec"]
        values = args if len(args) == len(spec.names) and not kwargs else spec.bind(args, kwargs)
        name = cls.__name__
        # msgspec.convert is laxer than the decoder here: it takes a list for a tuple, a bytearray for bytes
        # and any [switch, port] sequence for an Endpoint, and passes struct instances through unchecked.
        for i in spec.tuples:
            if type(values[i]) is not tuple:
                raise MessageError(f"{name}.{spec.names[i]}: expected tuple, got {type(values[i]).__name__}")
        for i in spec.blobs:
            if type(values[i]) is not bytes:
                raise MessageError(f"{name}.{spec.names[i]}: expected bytes, got {type(values[i]).__name__}")
        for i, want, optional in spec.structs:
            value = values[i]
            if type(value) is not want:
                if optional and value is None:
                    continue
                raise MessageError(f"{name}.{spec.names[i]}: expected {want.__name__}, got {type(value).__name__}")
            if not isinstance(want, _Checked):  # an Endpoint: built unchecked by config, so check it here
                try:
                    msgspec.convert(msgspec.structs.astuple(value), want)
                except msgspec.ValidationError as e:
                    raise MessageError(f"{name}: {_located(want, str(e), spec.names[i])}") from None
        for i, want in spec.struct_tuples:      # our structs: checked when they were built, and frozen
            if not all(type(item) is want for item in values[i]):
                j, item = next((j, x) for j, x in enumerate(values[i]) if type(x) is not want)
                raise MessageError(f"{name}.{spec.names[i]}[{j}]: expected {want.__name__}, got {type(item).__name__}")
        try:
            return msgspec.convert(values, cls)
        except msgspec.ValidationError as e:
            raise MessageError(f"{name}: {_located(cls, str(e))}") from None


class _Spec:
    """Per struct type: field names, construction defaults, strictly typed fields and the decoder."""

    __slots__ = ("blobs", "cls", "decoder", "defaults", "names", "signature", "struct_tuples", "structs",
                 "tuples")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.names: tuple[str, ...] = cls.__struct_fields__
        self.defaults = {k: v for c in reversed(cls.__mro__) for k, v in c.__dict__.get("_defaults", {}).items()}
        bare = typing.get_type_hints(cls)
        self.tuples = tuple(i for i, n in enumerate(self.names) if typing.get_origin(bare[n]) is tuple)
        self.blobs = tuple(i for i, n in enumerate(self.names) if bare[n] is bytes)
        self.structs: list[tuple[int, type, bool]] = []
        self.struct_tuples: list[tuple[int, type]] = []
        for i, n in enumerate(self.names):
            args = typing.get_args(bare[n])
            if isinstance(bare[n], type) and issubclass(bare[n], Struct):
                self.structs.append((i, bare[n], False))
            elif (typing.get_origin(bare[n]) in (typing.Union, types.UnionType) and isinstance(args[0], type)
                  and issubclass(args[0], Struct)):
                self.structs.append((i, args[0], True))   # X | None
            elif i in self.tuples and isinstance(args[0], type) and issubclass(args[0], Struct):
                self.struct_tuples.append((i, args[0]))
        self.decoder = msgspec.msgpack.Decoder(cls)
        sig = type(Struct).__signature__.__get__(cls)  # msgspec's: every field required
        self.signature = sig.replace(parameters=[
            p.replace(default=self.defaults.get(p.name, p.default)) for p in sig.parameters.values()])

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> tuple:
        name, names = self.cls.__name__, self.names
        if len(args) > len(names):
            raise TypeError(f"{name} takes {len(names)} fields, got {len(args)}")
        values = dict(zip(names, args, strict=False))
        for k, v in kwargs.items():
            if k not in names or k in values:
                raise TypeError(f"{name}: {'duplicate' if k in values else 'unexpected'} field {k!r}")
            values[k] = v
        for k in names[len(args):]:
            if k not in values:
                if k not in self.defaults:
                    raise TypeError(f"{name}: missing field {k!r}")
                values[k] = self.defaults[k]
        return tuple(values[k] for k in names)

    def decode(self, raw: bytes | memoryview) -> Any:
        try:
            return self.decoder.decode(raw)
        except msgspec.ValidationError as e:
            raise MessageError(f"{self.cls.__name__}: {_located(self.cls, str(e))}") from None
        except msgspec.DecodeError as e:
            raise MessageError(f"{self.cls.__name__}: bad msgpack: {e}") from None


_ENCODER = msgspec.msgpack.Encoder()

_AT = re.compile(r" - at `\$((?:\[\d+\])*)`\Z")


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)


def _located(cls: type, text: str, where: str = "") -> str:
    """msgspec's "... - at `$[4][3][0]`" as "ports[3].port: ..." (field names along the path, below
    ``where``)."""
    m = _AT.search(text)
    if m is None:
        return f"{where}: {text}" if where else text
    tp = cls
    for index in map(int, re.findall(r"\d+", m.group(1))):
        args = typing.get_args(tp)
        if isinstance(tp, type) and issubclass(tp, Struct) and index < len(tp.__struct_fields__):
            field = tp.__struct_fields__[index]
            where += f".{field}" if where else field
            tp = _hints(tp)[field]
        elif typing.get_origin(tp) is tuple and args:
            where, tp = f"{where}[{index}]", args[0]
        else:
            where += f"[{index}]"
            break
        while typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return f"{where}: {text[:m.start()]}" if where else text[:m.start()]


# ---------------------------------------------------------------------------------------------------
# Messages


class PortStatus(Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False, metaclass=_Checked):
    port: Port
    phy: bool
    nd: bool
    usable: bool
    admin: bool
    damped: bool
    miscabled_by: Endpoint | None = None


class BgpSession(Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False, metaclass=_Checked):
    """One eBGP session of a border as its report summarises it (issue #13; `PortReport.bgp`). 6 small
    integers (~10-20 bytes on the wire): a border's whole summary rides on its port report, never on the
    LSD, whose size it therefore does not change."""

    STATE_IDLE: ClassVar[int] = 0
    STATE_ESTABLISHED: ClassVar[int] = 1
    STATE_HELD: ClassVar[int] = 2
    STATE_NAMES: ClassVar[tuple[str, ...]] = ("idle", "established", "held")

    #: Index of the peer in the border's `bgp.peers` (config order; the master maps it to the address).
    peer: Annotated[int, Meta(ge=0, le=MAX_BGP_SESSIONS - 1)]
    #: STATE_IDLE, STATE_ESTABLISHED or STATE_HELD (torn down for max-prefix, ignored for a while).
    state: Annotated[int, Meta(ge=0, le=2)]
    #: Whole seconds in this state when the report was sent (the master adds the report's age).
    seconds: U32
    #: Prefixes the peer announces that the border holds now; aggregates the border announces to it.
    prefixes_in: U32
    prefixes_out: U32
    #: Max-prefix teardowns of this session since the client started.
    teardowns: U32


BgpSessions = Annotated[tuple[BgpSession, ...], Meta(max_length=MAX_BGP_SESSIONS)]


def _unique_peers(sessions: tuple[BgpSession, ...]) -> None:
    seen: set[int] = set()
    for i, b in enumerate(sessions):
        if b.peer in seen:
            raise MessageError(f"bgp[{i}]: peer {b.peer} reported twice")
        seen.add(b.peer)


class Message(Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False, metaclass=_Checked):
    """Base of all wire messages. ``TYPE`` is the msg type byte, ``SENDER_FIELD`` the originator field."""

    TYPE: ClassVar[int]
    SENDER_FIELD: ClassVar[str]
    FROM_MASTER: ClassVar[bool | None]

    @property
    def sender(self) -> str:
        return getattr(self, self.SENDER_FIELD)


def _unique_ports(ports: tuple[PortStatus, ...]) -> None:
    if len({p.port for p in ports}) != len(ports):
        seen: set[int] = set()
        for i, p in enumerate(ports):
            if p.port in seen:
                raise MessageError(f"ports[{i}]: port {p.port} reported twice")
            seen.add(p.port)


class PortReport(Message):
    """Client -> master: the full state of the switch's ports; ``report_seq`` increases per report."""

    TYPE: ClassVar[int] = 1
    SENDER_FIELD: ClassVar[str] = "switch"
    FROM_MASTER: ClassVar[bool] = False
    switch: Name
    digest: Digest
    report_seq: U63
    term: U63
    ports: tuple[PortStatus, ...]
    #: Bitmap over the configured masters (fabric order): bit i = replica i acknowledged one of our reports
    #: recently — the switch and that replica hear each other (issue #16; client.reporter).
    reach: U63 = 0
    #: Border with `bgp:` only (issue #13): bit k = its k-th external prefix (`Fabric.slots_of`) is provided
    #: by some eBGP session now; the master publishes it as that LSD entry (UP/DOWN). Bits past the
    #: switch's slots are ignored by the master.
    external: U63 = 0
    #: Border with `bgp:` only (issue #13): one summary per eBGP session, for the master's REST
    #: (`GET /v1/borders`). Not routing state: a change of a session's state sends a report at once,
    #: counts and uptimes ride on the next one.
    bgp: BgpSessions = ()

    def __post_init__(self) -> None:
        _name(self.switch, "switch")
        _unique_ports(self.ports)
        _unique_peers(self.bgp)


class ReportAck(Message):
    TYPE: ClassVar[int] = 2
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    term: U63
    report_seq: U63
    #: True when a backup replica acknowledges (it heard the report; it is not the master of `term`).
    backup: bool = False

    def __post_init__(self) -> None:
        _name(self.master, "master")


class LsdRequest(Message):
    """Client -> master: what the client has (``version`` -1 = nothing)."""

    TYPE: ClassVar[int] = 3
    SENDER_FIELD: ClassVar[str] = "switch"
    FROM_MASTER: ClassVar[bool] = False
    switch: Name
    term: U63
    version: VersionOrNone
    #: With ``version`` -1: the client holds no LSD but its switch forwards on routes it kept (a restarted
    #: client). A fabric bring-up's switch (nothing installed) gets a new master's LSD at once, even while
    #: the master holds it as unheard; this one waits for the hold's end like a client with an LSD.
    kept: bool = False

    def __post_init__(self) -> None:
        _name(self.switch, "switch")


class LsdFull(Message):
    TYPE: ClassVar[int] = 4
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    term: U63
    version: U63
    digest: Digest
    snapshot: Blob
    #: Sent by a backup of `term` from its replicated LSD to a switch that cannot hear the master (#16).
    backup: bool = False

    def __post_init__(self) -> None:
        _name(self.master, "master")


class LsdDelta(Message):
    TYPE: ClassVar[int] = 5
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    term: U63
    from_version: U63
    to_version: U63
    changes: Blob  # proto.lsd.encode_changes()
    backup: bool = False   # see LsdFull.backup

    def __post_init__(self) -> None:
        _name(self.master, "master")
        if self.to_version <= self.from_version:
            raise MessageError(f"to_version {self.to_version} must exceed from_version {self.from_version}")


class Keepalive(Message):
    TYPE: ClassVar[int] = 6
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    term: U63
    version: U63
    backup: bool = False   # see LsdFull.backup

    def __post_init__(self) -> None:
        _name(self.master, "master")


class Hello(Message):
    """FMRP hello. ``state`` is a lower-case FMRP state name (e.g. init/backup/electing/master)."""

    TYPE: ClassVar[int] = 7
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    state: State
    term: U63
    version: VersionOrNone  # -1 = no valid LSD
    priority: Priority
    leader: Name | None = None
    #: Issue #16: per configured master (fabric order), how many switches the sender saw two-way with that
    #: replica (fresh reports whose `reach` bit is set; controller.reach). Empty: no view.
    reach: Reach = ()

    def __post_init__(self) -> None:
        _name(self.master, "master")
        _name(self.leader, "leader")


class VoteRequest(Message):
    TYPE: ClassVar[int] = 8
    SENDER_FIELD: ClassVar[str] = "candidate"
    FROM_MASTER: ClassVar[bool] = True
    candidate: Name
    term: U63
    version: VersionOrNone  # -1 = no valid LSD
    priority: Priority

    def __post_init__(self) -> None:
        _name(self.candidate, "candidate")


class Vote(Message):
    TYPE: ClassVar[int] = 9
    SENDER_FIELD: ClassVar[str] = "voter"
    FROM_MASTER: ClassVar[bool] = True
    voter: Name
    term: U63
    candidate: Name
    granted: bool

    def __post_init__(self) -> None:
        _name(self.voter, "voter")
        _name(self.candidate, "candidate")


class ReplicationAck(Message):
    TYPE: ClassVar[int] = 10
    SENDER_FIELD: ClassVar[str] = "backup"
    FROM_MASTER: ClassVar[bool] = True
    backup: Name
    term: U63
    version: VersionOrNone  # -1 = no valid LSD

    def __post_init__(self) -> None:
        _name(self.backup, "backup")


class StepDown(Message):
    TYPE: ClassVar[int] = 11
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    term: U63
    #: Issue #16: a hand-over to a replica that reaches more switches: the replicas favour it in the election.
    successor: Name | None = None

    def __post_init__(self) -> None:
        _name(self.master, "master")
        _name(self.successor, "successor")


class RelayedReport(Message):
    """Backup -> master (issue #16): a switch's PortReport this backup heard, relayed because the report's
    `reach` says the switch and the master do not hear each other. Fields after `term` are the report's
    (`report_term` is its `term`). The master applies it like the switch's own report but does not
    acknowledge it (the switch's reach bit must keep telling the truth)."""

    TYPE: ClassVar[int] = 13
    SENDER_FIELD: ClassVar[str] = "backup"
    FROM_MASTER: ClassVar[bool] = True
    backup: Name
    term: U63
    switch: Name
    digest: Digest
    report_seq: U63
    report_term: U63
    ports: tuple[PortStatus, ...]
    reach: U63 = 0
    external: U63 = 0
    bgp: BgpSessions = ()

    def __post_init__(self) -> None:
        _name(self.backup, "backup")
        _name(self.switch, "switch")
        _unique_ports(self.ports)
        _unique_peers(self.bgp)

    def report(self) -> PortReport:
        return PortReport(self.switch, self.digest, self.report_seq, self.report_term, self.ports, self.reach,
                          self.external, self.bgp)

    @staticmethod
    def of(backup: str, term: int, r: PortReport) -> RelayedReport:
        return RelayedReport(backup, term, r.switch, r.digest, r.report_seq, r.term, r.ports, r.reach, r.external,
                             r.bgp)


class NdFrame(Message):
    """Neighbor discovery payload, carried in an Ethernet frame (see proto.messages.encode_nd_ethernet)."""

    TYPE: ClassVar[int] = 12
    SENDER_FIELD: ClassVar[str] = "switch"
    FROM_MASTER: ClassVar[bool] = False
    switch: Name
    port: Port
    expected: Endpoint
    discovered: Endpoint | None = None
    #: Graceful restart: the sender's client is about to restart; the peer keeps the link up for this
    #: many milliseconds while PHY stays up (0 = normal frame). See client.nd.
    hold_ms: HoldMs = 0

    def __post_init__(self) -> None:
        _name(self.switch, "switch")


class DrainNotes(Message):
    """Master -> backup: the whole drain book (who/when/why per drain, see proto.drains), replacing the
    backup's. ``serial`` grows with every change of the book and continues across masters; the backup
    answers DrainNotesAck(serial). ``notes`` is ``proto.drains.encode_notes()`` (checked on receipt)."""

    TYPE: ClassVar[int] = 14
    SENDER_FIELD: ClassVar[str] = "master"
    FROM_MASTER: ClassVar[bool] = True
    master: Name
    term: U63
    serial: U63
    notes: Notes

    def __post_init__(self) -> None:
        _name(self.master, "master")


class DrainNotesAck(Message):
    """Backup -> master: the drain book of ``serial`` (in ``term``) is held."""

    TYPE: ClassVar[int] = 15
    SENDER_FIELD: ClassVar[str] = "backup"
    FROM_MASTER: ClassVar[bool] = True
    backup: Name
    term: U63
    serial: U63

    def __post_init__(self) -> None:
        _name(self.backup, "backup")


class Challenge(Message):
    """Freshness only (no routing meaning): carries the sender's incarnation, challenge (offer) and the
    receiver's last offer (reflect) in its framing; sent by either side in answer to a stale frame (see
    ``proto.messages.Codec.answer``). Receivers ignore it beyond the Codec."""

    TYPE: ClassVar[int] = 16
    SENDER_FIELD: ClassVar[str] = "origin"
    FROM_MASTER: ClassVar[bool | None] = None  # masters and switches alike
    origin: Name

    def __post_init__(self) -> None:
        _name(self.origin, "origin")


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (PortReport, ReportAck, LsdRequest, LsdFull, LsdDelta, Keepalive, Hello, VoteRequest, Vote,
                ReplicationAck, StepDown, NdFrame, RelayedReport, DrainNotes, DrainNotesAck, Challenge)
}
for _cls in (PortStatus, BgpSession, *MESSAGE_TYPES.values()):
    _cls._spec = _Spec(_cls)
_DECODE = {cls: cls._spec.decode for cls in MESSAGE_TYPES.values()}


# ---------------------------------------------------------------------------------------------------
# Codec entry points


def encode_payload(msg: Message) -> bytes:
    """The msgpack payload of ``msg`` (a wire message built through its constructor, hence valid)."""
    return _ENCODER.encode(msg)


def decode_payload(cls: type[Message], payload: bytes | memoryview) -> Message:
    """Decode and check a payload of message type ``cls``; MessageError (naming the field) otherwise."""
    return _DECODE[cls](payload)


def to_wire(msg: Message) -> list:
    """The payload as plain msgpack-able values (lists for structs), for tests that tamper with fields."""
    return msgspec.msgpack.decode(_ENCODER.encode(msg))


def from_wire(cls: type[Message], obj: Any) -> Message:
    """``cls`` from plain values as ``to_wire`` gives them (checked like a payload)."""
    try:
        raw = _ENCODER.encode(obj)
    except (TypeError, OverflowError, msgspec.EncodeError) as e:
        raise MessageError(f"{cls.__name__}: {e}") from None
    return decode_payload(cls, raw)
