"""Drain notes: who drained what, when and why — the operator's record next to the LSD's DRAINED bytes.

The LSD says *that* a link is drained (one byte per link); a `DrainNote` says who asked, when and why,
for one drain target: a link (`kind="link"`, target = its canonical config name) or a whole switch
(`kind="switch"`, target = the switch name; every link of the switch is drained by it). The master keeps
the notes in a `DrainBook` (controller/drains.py) and replicates them to the backups in `DrainNotes`
messages, so a new master shows the same drains with the same reasons.

Wire form (the `notes` bytes of `proto.messages.DrainNotes`): a msgpack array of
`[kind, target, who, at_ms, reason]` arrays; `who`/`reason` may be nil (a drain inherited from an LSD
without notes), `at_ms` is Unix time in milliseconds (0 = unknown). `decode_notes` checks every field
and raises only `NoteError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from proto.wire import MAX_LSD_BYTES

KINDS = ("link", "switch")
MAX_NOTES = 128          # 128 notes of the longest fields are ~45 KB: one datagram (MAX_LSD_BYTES)
MAX_WHO = 64
MAX_REASON = 200
MAX_TARGET = 140         # a link name is two switch names (<= 64 each) and two ports
#: The encoded book rides in one DrainNotes datagram. The field limits are characters: ASCII notes always fit
#: (128 x ~450 B), 4-byte UTF-8 ones (~1.2 KB each) do not, so the encoder checks the bytes too.
MAX_NOTES_BYTES = MAX_LSD_BYTES


class NoteError(ValueError):
    """A drain note field is missing, of the wrong type or out of range (message says which)."""


def check_text(value: object, field: str, limit: int) -> str | None:
    """`value` if it is None or a printable string of at most `limit` characters; NoteError otherwise."""
    if value is None:
        return None
    if type(value) is not str:
        raise NoteError(f"{field}: expected a string, got {type(value).__name__}")
    if len(value) > limit or not value.isprintable():
        raise NoteError(f"{field}: at most {limit} printable characters, got {len(value)}: {value[:40]!r}")
    return value


@dataclass(frozen=True, slots=True)
class DrainNote:
    kind: str                  # "link" | "switch"
    target: str                # canonical link name or switch name
    who: str | None            # operator (None: unknown, inherited)
    at: float                  # Unix time in seconds (0.0: unknown)
    reason: str | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise NoteError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if not check_text(self.target, "target", MAX_TARGET):
            raise NoteError("target: must not be empty")
        check_text(self.who, "who", MAX_WHO)
        check_text(self.reason, "reason", MAX_REASON)
        if type(self.at) not in (int, float) or not 0 <= self.at < 2**41 / 1000:
            raise NoteError(f"at: expected Unix seconds, got {self.at!r}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.target)


def encode_notes(notes: tuple[DrainNote, ...] | list[DrainNote]) -> bytes:
    if len(notes) > MAX_NOTES:
        raise NoteError(f"{len(notes)} drain notes exceed the limit of {MAX_NOTES}")
    data = msgpack.packb([[n.kind, n.target, n.who, int(round(n.at * 1000)), n.reason] for n in notes],
                         use_bin_type=True)
    if len(data) > MAX_NOTES_BYTES:
        raise NoteError(f"{len(notes)} drain notes take {len(data):,} bytes, over the {MAX_NOTES_BYTES:,} of one "
                        f"replication datagram: shorten the who/reason texts (non-ASCII characters take up to 4 "
                        f"bytes each), or lift a drain")
    return data


def decode_notes(data: bytes) -> tuple[DrainNote, ...]:
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, max_str_len=1024, max_bin_len=0,
                              max_array_len=MAX_NOTES + 1, max_map_len=0, max_ext_len=0)
    except Exception as e:  # msgpack raises many exception types for bad input
        raise NoteError(f"notes: bad msgpack ({type(e).__name__})") from None
    if type(obj) is not list or len(obj) > MAX_NOTES:
        raise NoteError(f"notes: expected an array of at most {MAX_NOTES} notes")
    out = []
    for i, item in enumerate(obj):
        if type(item) is not list or len(item) != 5:
            raise NoteError(f"notes[{i}]: expected [kind, target, who, at_ms, reason]")
        kind, target, who, at_ms, reason = item
        if type(at_ms) is not int or at_ms < 0:
            raise NoteError(f"notes[{i}].at_ms: expected a non-negative integer, got {at_ms!r}")
        if type(kind) is not str or type(target) is not str:
            raise NoteError(f"notes[{i}]: kind and target must be strings")
        try:
            out.append(DrainNote(kind, target, who, at_ms / 1000.0, reason))
        except NoteError as e:
            raise NoteError(f"notes[{i}].{e}") from None
    return tuple(out)
