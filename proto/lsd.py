"""Versioned Link State Database (LSD) and its wire encodings.

The LSD is one state per fabric link, in the config's link order (``Link.index``). The master applies
batches of changes; every batch that effectively changes at least one link bumps ``version`` by one.
Clients hold a replica and are brought up to date either with a full snapshot or with the minimal delta
``changes_since(their_version)``.

History index
-------------
A ``SortedDict`` maps each retained version to the batch that produced it, stored compactly (an
``array`` of link indices and the bytes of their states *before* the batch). ``changes_since(v)`` walks
only the batches after ``v`` (``irange``), newest first, so for every link changed after ``v`` it ends
with the link's state at ``v``; links whose current state equals that are dropped, so the delta is
minimal (a link that went down and up again is not sent). The per-entry work runs in C
(``dict.update(zip(...))``); its cost by versions back and delta size: BENCHMARKS.md (`bench_lsd`).

History is bounded both by ``history`` versions and by ``max_changes`` retained link changes in total,
so memory stays bounded even when whole blocks flap; older versions simply get ``None`` (= send a full
snapshot).

Encodings (all integers big-endian)
-----------------------------------
Snapshot: ``b"S" | encoding version u8 (=1) | n_links u32 | zlib(packed)`` where ``packed`` holds
2 bits per link, 4 links per byte, link ``i`` in byte ``i // 4`` at bits ``2 * (i % 4)`` (LSB first);
unused bits of the last byte are zero; the 2-bit value 3 is invalid.

Changes: ``b"C" | encoding version u8 (=1) | count (LEB128 varint) | count entries`` where each entry
is the varint ``(gap << 2) | state`` and ``gap`` is the distance to the previous entry's link index
minus one (the first entry's gap is its link index). Entries are therefore strictly increasing by link
index, and a change to a random link of a 150k-link fabric costs about 2-3 bytes.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Mapping
from enum import IntEnum

from sortedcontainers import SortedDict

__all__ = [
    "CHANGES_ENCODING_VERSION",
    "DRAINED_STATES",
    "SNAPSHOT_ENCODING_VERSION",
    "LinkState",
    "LinkStateDB",
    "LsdError",
    "decode_changes",
    "decode_snapshot",
    "encode_changes",
    "encode_snapshot",
]


class LinkState(IntEnum):
    """A link's state in the LSD (two bits on the wire). DRAINED: an operator drained it as part of a
    switch drain; routing uses it only to reach a drained switch (soft drain, client.routes). DRAINED_DOWN:
    drained and out of use — failed (an end reports it down) or drained on its own (a link drain): never
    used, like DOWN, but still part of its switch's drain — so a drained switch with such a link stays
    reachable over its other drained links (controller.linkstate)."""

    DOWN = 0
    UP = 1
    DRAINED = 2
    DRAINED_DOWN = 3


#: The states of a drained link (failed or not).
DRAINED_STATES = frozenset((LinkState.DRAINED, LinkState.DRAINED_DOWN))


class LsdError(ValueError):
    """Invalid LSD input: a bad link index/state, an out-of-order delta, or undecodable encoded data."""


SNAPSHOT_ENCODING_VERSION = 1
CHANGES_ENCODING_VERSION = 1
_SNAPSHOT_MAGIC = b"S"
_CHANGES_MAGIC = b"C"
_SNAPSHOT_HEADER_LEN = 6
MAX_LINKS = 2**32 - 1
MAX_VERSION = 2**63 - 1

_VALID_STATES = bytes((LinkState.DOWN, LinkState.UP, LinkState.DRAINED, LinkState.DRAINED_DOWN))
# Translation tables used to pack/unpack 2-bit fields at C speed (bytes.translate), see encode_snapshot.
_SHIFT = [bytes(((v << s) & 0xFF) for v in range(256)) for s in (0, 2, 4, 6)]
_FIELD = [bytes(((v >> s) & 3) for v in range(256)) for s in (0, 2, 4, 6)]
_STATE_OF = (LinkState.DOWN, LinkState.UP, LinkState.DRAINED, LinkState.DRAINED_DOWN)


def _check_n_links(n_links: object) -> int:
    if type(n_links) is not int or not 0 <= n_links <= MAX_LINKS:
        raise LsdError(f"n_links must be an int in 0..{MAX_LINKS}, got {n_links!r}")
    return n_links


def _check_version(name: str, version: object, minimum: int = 0) -> int:
    if type(version) is not int or not minimum <= version <= MAX_VERSION:
        raise LsdError(f"{name} must be an int in {minimum}..{MAX_VERSION}, got {version!r}")
    return version


def _check_states_bytes(states: bytes) -> None:
    if not isinstance(states, bytes | bytearray | memoryview):
        raise LsdError(f"states must be bytes (one LinkState value per link), got {type(states).__name__}")
    bad = bytes(states).translate(None, _VALID_STATES)
    if bad:
        raise LsdError(f"states contains invalid link state value {bad[0]} (valid: 0, 1, 2, 3)")


def _coerce_changes(changes: Mapping[int, LinkState], n_links: int) -> dict[int, int]:
    """Validate a change mapping (index -> state) and return it as plain ints. Raises LsdError."""
    if not isinstance(changes, Mapping):
        raise LsdError(f"changes must be a mapping link index -> LinkState, got {type(changes).__name__}")
    out: dict[int, int] = {}
    for index, state in changes.items():
        if type(index) is not int or not 0 <= index < n_links:
            raise LsdError(f"link index {index!r} out of range 0..{n_links - 1}")
        if isinstance(state, LinkState):
            out[index] = int(state)
        elif type(state) is int and 0 <= state <= 3:
            out[index] = state
        else:
            raise LsdError(f"link {index}: invalid state {state!r} (expected LinkState DOWN/UP/DRAINED/DRAINED_DOWN)")
    return out


# ---------------------------------------------------------------------------------------------------
# Snapshot encoding


def encode_snapshot(states: bytes) -> bytes:
    """Encode all link states (one byte per link, values 0..3) as a compact snapshot."""
    _check_states_bytes(states)
    states = bytes(states)
    n = len(states)
    _check_n_links(n)
    padded = states + bytes(-n % 4)
    # Byte j of packed = s[4j] | s[4j+1] << 2 | s[4j+2] << 4 | s[4j+3] << 6; the four lanes never overlap,
    # so OR-ing them as big integers is exact.
    acc = 0
    for lane in range(4):
        acc |= int.from_bytes(padded[lane::4].translate(_SHIFT[lane]), "little")
    packed = acc.to_bytes(len(padded) // 4, "little")
    header = _SNAPSHOT_MAGIC + bytes((SNAPSHOT_ENCODING_VERSION,)) + n.to_bytes(4, "big")
    return header + min((_deflate(packed, strategy) for strategy in _STRATEGIES), key=len)


# Run-length and Huffman-only deflate are ~1 ms for a Jupiter-size LSD where the default LZ77 search
# takes up to ~50-150 ms on mostly-up states; RLE wins when few links differ, Huffman-only near 10-20 %
# down. Any zlib inflater decodes both.
_STRATEGIES = (zlib.Z_RLE, zlib.Z_HUFFMAN_ONLY)


def _deflate(data: bytes, strategy: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9, strategy)
    return compressor.compress(data) + compressor.flush()


def decode_snapshot(data: bytes, n_links: int) -> bytes:
    """Decode a snapshot for a fabric of ``n_links`` links; returns one LinkState byte per link.

    Raises LsdError (and nothing else) for any data that is not a valid snapshot of exactly n_links links.
    """
    _check_n_links(n_links)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LsdError(f"snapshot must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _SNAPSHOT_HEADER_LEN:
        raise LsdError(f"snapshot truncated: {len(data)} bytes, header needs {_SNAPSHOT_HEADER_LEN}")
    if data[:1] != _SNAPSHOT_MAGIC:
        raise LsdError(f"not a snapshot: bad magic {data[:1]!r}")
    if data[1] != SNAPSHOT_ENCODING_VERSION:
        raise LsdError(f"unsupported snapshot encoding version {data[1]} (supported: {SNAPSHOT_ENCODING_VERSION})")
    n = int.from_bytes(data[2:6], "big")
    if n != n_links:
        raise LsdError(f"snapshot is for {n} links but the fabric has {n_links}")
    expected = (n + 3) // 4
    decomp = zlib.decompressobj()
    try:
        # max_length bounds memory: a zip bomb cannot expand past one byte more than expected.
        packed = decomp.decompress(data[_SNAPSHOT_HEADER_LEN:], expected + 1)
    except zlib.error as e:
        raise LsdError(f"snapshot payload is not valid zlib data: {e}") from None
    if len(packed) > expected:
        raise LsdError(f"snapshot payload expands beyond the {expected} bytes {n} links need")
    if not decomp.eof:
        raise LsdError("snapshot payload truncated (zlib stream incomplete)")
    if decomp.unused_data:
        raise LsdError(f"snapshot has {len(decomp.unused_data)} trailing bytes after the zlib stream")
    if len(packed) != expected:
        raise LsdError(f"snapshot payload holds {len(packed)} bytes, expected {expected} for {n} links")
    out = bytearray(expected * 4)
    for lane in range(4):
        out[lane::4] = packed.translate(_FIELD[lane])
    if any(out[n:]):
        raise LsdError("snapshot has non-zero padding bits after the last link")
    del out[n:]
    return bytes(out)


# ---------------------------------------------------------------------------------------------------
# Changes (delta) encoding


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_changes(changes: Mapping[int, LinkState]) -> bytes:
    """Encode a delta (link index -> new state) compactly; see the module docstring for the format."""
    coerced = _coerce_changes(changes, MAX_LINKS)
    out = bytearray(_CHANGES_MAGIC)
    out.append(CHANGES_ENCODING_VERSION)
    _put_varint(out, len(coerced))
    previous = -1
    for index in sorted(coerced):
        _put_varint(out, ((index - previous - 1) << 2) | coerced[index])
        previous = index
    return bytes(out)


_MAX_VARINT_BYTES = 10  # enough for any value < 2**64 (indices < 2**32, so gap << 2 < 2**34)


def decode_changes(data: bytes, n_links: int) -> dict[int, LinkState]:
    """Decode an encode_changes() delta for a fabric of ``n_links`` links. Raises LsdError only."""
    _check_n_links(n_links)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LsdError(f"changes must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 3:
        raise LsdError(f"changes truncated: {len(data)} bytes")
    if data[:1] != _CHANGES_MAGIC:
        raise LsdError(f"not an LSD delta: bad magic {data[:1]!r}")
    if data[1] != CHANGES_ENCODING_VERSION:
        raise LsdError(f"unsupported delta encoding version {data[1]} (supported: {CHANGES_ENCODING_VERSION})")
    pos = 2
    end = len(data)

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            if pos >= end:
                raise LsdError("changes truncated inside a varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise LsdError("changes contain an over-long varint")

    count = varint()
    if count > n_links:
        raise LsdError(f"delta claims {count} changes but the fabric has only {n_links} links")
    if count > end - pos:
        raise LsdError(f"changes truncated: {count} entries announced, only {end - pos} bytes left")
    result: dict[int, LinkState] = {}
    index = -1
    for _ in range(count):
        entry = varint()
        state = entry & 3
        index += (entry >> 2) + 1
        if index >= n_links:
            raise LsdError(f"delta changes link {index}, out of range 0..{n_links - 1}")
        result[index] = _STATE_OF[state]
    if pos != end:
        raise LsdError(f"delta has {end - pos} trailing bytes after {count} entries")
    return result


# ---------------------------------------------------------------------------------------------------
# The database


class _Batch:
    """One retained batch: the links it changed and the state each had just before it."""

    __slots__ = ("indices", "olds")

    def __init__(self, indices: array, olds: bytes) -> None:
        self.indices = indices  # array('I') of link indices
        self.olds = olds  # olds[k] = state of indices[k] just before this batch


class LinkStateDB:
    """All link states of one fabric, versioned, with a bounded delta history.

    ``history``: at most this many batches (versions) are retained for ``changes_since``.
    ``max_changes``: at most this many link changes are retained in total (default ``4 * n_links + 1024``),
    which bounds memory when large batches flap; deltas that would need more are snapshots anyway.
    """

    __slots__ = ("_amend_set", "_base", "_log", "_retained", "_snapshot_cache", "_states", "floor", "history",
                 "max_changes", "n_links", "version")

    def __init__(self, n_links: int, history: int = 4096, version: int = 0, *,
                 max_changes: int | None = None) -> None:
        self.n_links = _check_n_links(n_links)
        if type(history) is not int or history < 0:
            raise LsdError(f"history must be an int >= 0, got {history!r}")
        if max_changes is None:
            max_changes = 4 * n_links + 1024
        if type(max_changes) is not int or max_changes < 0:
            raise LsdError(f"max_changes must be an int >= 0, got {max_changes!r}")
        self.history = history
        self.max_changes = max_changes
        self.version = _check_version("version", version)
        #: the next version `apply` creates is above this too (`reserve`); never lowered
        self.floor = self.version
        self._states = bytearray(n_links)  # all DOWN
        self._reset_history()

    # -- state access -------------------------------------------------------------------------------

    def state(self, index: int) -> LinkState:
        if type(index) is not int or not 0 <= index < self.n_links:
            raise LsdError(f"link index {index!r} out of range 0..{self.n_links - 1}")
        return _STATE_OF[self._states[index]]

    def states(self) -> bytes:
        """One byte per link (LinkState values), a copy."""
        return bytes(self._states)

    def count(self, state: LinkState) -> int:
        """Number of links currently in ``state``."""
        return self._states.count(int(state))

    @property
    def oldest_version(self) -> int:
        """The oldest version ``changes_since`` can answer (versions inside replica gaps excepted)."""
        return self._base

    @property
    def retained_changes(self) -> int:
        """Link changes currently held in the history (bounded by ``max_changes``)."""
        return self._retained

    def __repr__(self) -> str:
        return (f"LinkStateDB(n_links={self.n_links}, version={self.version}, "
                f"history={len(self._log)}/{self.history} batches, {self._retained} changes)")

    # -- master side --------------------------------------------------------------------------------

    def apply(self, changes: Mapping[int, LinkState]) -> int:
        """Apply one batch; version+1 iff at least one link effectively changes. Returns the version.

        Raises LsdError (state unchanged) for an unknown link index or an invalid state.
        """
        coerced = _coerce_changes(changes, self.n_links)
        if not any(self._states[i] != s for i, s in coerced.items()):
            return self.version
        nxt = self.next_version
        if nxt > MAX_VERSION:
            raise LsdError("LSD version space exhausted")
        self._commit(nxt, coerced)
        return self.version

    @property
    def next_version(self) -> int:
        """The version the next `apply` (or a new `amend`) creates: above the current one and every reserved one."""
        return max(self.version, self.floor) + 1

    def reserve(self, version: int) -> None:
        """Version numbers up to `version` are taken by another content of this master's term (the LSD
        under a prepared next config, controller.nextlsd): the next `apply` goes above them. So one
        (term, version) never names two contents, and a delta of this LSD never starts at a reserved number
        (`changes_since` answers None for it: a snapshot)."""
        _check_version("version", version)
        self.floor = max(self.floor, version)

    def amend(self, changes: Mapping[int, LinkState]) -> int:
        """Fold one more batch into the newest version (no version bump): for a master that processes a
        batch of reports as one version (issue #18) — only for a version nobody has been sent yet.
        Without a retained newest batch (history 0, or a snapshot/delta loaded), like `apply`."""
        coerced = _coerce_changes(changes, self.n_links)
        states = self._states
        effective = [i for i, s in coerced.items() if states[i] != s]
        if not effective:
            return self.version
        batch = self._log.get(self.version) if self.history and self.floor <= self.version else None
        if batch is None:
            self._commit(self.next_version, coerced)
            return self.version
        cached = self._amend_set
        if cached is None or cached[0] is not batch:
            cached = self._amend_set = (batch, set(batch.indices))
        known = cached[1]
        fresh = [i for i in effective if i not in known]
        known.update(fresh)
        batch.indices.extend(fresh)
        batch.olds += bytes(states[i] for i in fresh)
        for i in effective:
            states[i] = coerced[i]
        self._retained += len(fresh)
        self._snapshot_cache = None
        return self.version

    def changes_since(self, version: int) -> dict[int, LinkState] | None:
        """Minimal delta from ``version`` to the current version.

        ``{}`` if nothing differs; ``None`` if ``version`` is older than the history window, inside a gap
        left by a replica's multi-version delta, negative, or newer than ``self.version`` -> the caller
        sends a full snapshot. Cost: proportional to the link changes retained after ``version``.
        """
        if type(version) is not int or version > self.version or version < self._base:
            return None
        if version == self.version:
            return {}
        log = self._log
        if version != self._base and version not in log:
            return None
        # Walk the batches after `version` newest first: the last write for a link is then its state
        # before its first change after `version`, i.e. its state AT `version`. dict.update(zip(...)) keeps
        # the per-entry work in C.
        at_version: dict[int, int] = {}
        for v in log.irange(minimum=version + 1, reverse=True):
            batch = log[v]
            at_version.update(zip(batch.indices, batch.olds, strict=True))
        states = self._states
        return {i: _STATE_OF[states[i]] for i, old in at_version.items() if states[i] != old}

    def snapshot(self) -> bytes:
        """The encoded snapshot of the current state (cached per version)."""
        cached = self._snapshot_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]
        data = encode_snapshot(self._states)
        self._snapshot_cache = (self.version, data)
        return data

    # -- replica side -------------------------------------------------------------------------------

    def load_snapshot(self, version: int, data: bytes) -> None:
        """Replace all state by a decoded snapshot at ``version``; history restarts there. Atomic."""
        _check_version("version", version)
        states = decode_snapshot(data, self.n_links)
        self._states[:] = states
        self.version = version
        self._reset_history()

    def apply_delta(self, from_version: int, to_version: int, changes: Mapping[int, LinkState]) -> None:
        """Apply a master's delta. Requires ``from_version == self.version < to_version``; atomic.

        The delta is kept in history as one batch at ``to_version``; the intermediate versions are a gap
        that ``changes_since`` answers with None (this replica never saw them).
        """
        _check_version("from_version", from_version)
        _check_version("to_version", to_version)
        if from_version != self.version:
            raise LsdError(f"delta starts at version {from_version} but the replica is at {self.version}")
        if to_version <= from_version:
            raise LsdError(f"delta goes backwards or nowhere: {from_version} -> {to_version}")
        coerced = _coerce_changes(changes, self.n_links)
        self._commit(to_version, coerced)

    # -- internals ----------------------------------------------------------------------------------

    def _reset_history(self) -> None:
        self._base = self.version  # oldest version changes_since can answer
        self._log: SortedDict = SortedDict()  # version -> _Batch that produced it
        self._retained = 0
        self._snapshot_cache: tuple[int, bytes] | None = None
        self._amend_set: tuple[_Batch, set[int]] | None = None   # amend(): the newest batch's indices

    def _commit(self, new_version: int, coerced: dict[int, int]) -> None:
        states = self._states
        effective = [i for i, s in coerced.items() if states[i] != s]
        olds = bytes(states[i] for i in effective)
        for i in effective:
            states[i] = coerced[i]
        self.version = new_version
        if self.history == 0:
            self._reset_history()
            return
        self._log[new_version] = _Batch(array("I", effective), olds)
        self._retained += len(effective)
        while self._log and (len(self._log) > self.history or self._retained > self.max_changes):
            version, batch = self._log.popitem(0)
            self._base = version
            self._retained -= len(batch.indices)
