"""The replica's small durable state: the highest term seen (and the vote cast in it, for FMRP).

The LSD itself is soft state rebuilt from client reports; only the term must survive restarts so a
replica never reuses one. Writes are atomic and durable: write a temp file, fsync it, rename over the old
file, fsync the directory. A term never goes down on disk (writing a lower one raises). A temp file left
by a crash mid-save is removed at the next load; a failed save removes its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proto.auth import read_secret_file
from proto.drains import NoteError, decode_notes, encode_notes

if TYPE_CHECKING:
    from controller.drains import DrainBook

STATE_FILE = "master-state.json"
DRAINS_FILE = "drains.msgpack"      # the drain notes (proto.drains.encode_notes), so they outlive every replica
MAX_TERM = 2**63 - 1        # proto.wire.MAX_U63: the largest term a message can carry


class DurableStateError(ValueError):
    """The state file is unreadable/invalid, or a write would lower the term. `str(e)` is one line that
    starts with the file's path."""


@dataclass(frozen=True, slots=True)
class DurableState:
    term: int = 0
    voted_for: str | None = None


class StateStore:
    """`masters`: the fabric's master ids; given, a `voted_for` that names none of them is refused at load
    (a vote can only have gone to a replica of the fabric: another value is a corrupt or foreign file)."""

    def __init__(self, directory: str | Path, masters: Iterable[str] | None = None) -> None:
        self.dir = Path(directory)
        self.path = self.dir / STATE_FILE
        self.masters = None if masters is None else tuple(masters)
        self._cached: DurableState | None = None

    def load(self) -> DurableState:
        """The stored state; a missing file is term 0. Creates the directory if needed and removes temp
        files a crash mid-save left behind.

        Raises DurableStateError (one line naming the file) if the file cannot be read or is invalid.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:        # not the state file's absence: nothing could ever be saved here
            raise DurableStateError(f"{self.dir}: cannot create the state directory: {e.strerror or e}") from e
        try:
            for stale in self.dir.glob(f".{STATE_FILE}.*.tmp"):
                stale.unlink(missing_ok=True)
            raw = read_secret_file(self.path).decode("utf-8")    # a small regular file, never a FIFO's wait
        except FileNotFoundError:
            self._cached = DurableState()
            return self._cached
        except (OSError, UnicodeDecodeError) as e:
            raise DurableStateError(f"{self.path}: cannot read: {e}") from e
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            term = data["term"]
            voted_for = data.get("voted_for")
            if not isinstance(term, int) or isinstance(term, bool) or term < 0:
                raise ValueError("term must be a non-negative integer")
            if term > MAX_TERM:
                raise ValueError(f"term {term} out of range 0..{MAX_TERM} (u63 on the wire)")
            if voted_for is not None and not isinstance(voted_for, str):
                raise ValueError(f"voted_for must be a string or null, got {_shown(voted_for)}")
            if voted_for is not None and self.masters is not None and voted_for not in self.masters:
                raise ValueError(f"voted_for {_shown(voted_for)} is not a master of the fabric (masters: "
                                 f"{', '.join(self.masters)})")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:   # RecursionError: [[[[...
            raise DurableStateError(f"{self.path}: invalid state file: {e}") from e
        self._cached = DurableState(term, voted_for)
        return self._cached

    def save(self, state: DurableState) -> None:
        current = self._cached if self._cached is not None else self.load()
        if state.term < current.term:
            raise DurableStateError(f"{self.path}: refusing to lower term {current.term} -> {state.term}")
        payload = json.dumps({"term": state.term, "voted_for": state.voted_for}, sort_keys=True) + "\n"
        _write_atomic(self.dir, STATE_FILE, payload.encode())
        self._cached = state


def _shown(value: object) -> str:
    """`value`'s repr for an error line: escaped (one line) and cut short (the file may hold anything)."""
    text = repr(value)
    return text if len(text) <= 66 else text[:63] + "..."


def _write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Write `data` to directory/name: temp file, fsync, rename, fsync the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {tmp}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class DrainStore:
    """The replica's copy of the drain notes on disk (issue: drains were lost when every replica restarted:
    only the term was durable). Written atomically whenever the book changes; read at start. Drains stay
    in the LSD and in the replicated notes as before — this file only matters when no replica kept them."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / DRAINS_FILE

    def load(self) -> bytes | None:
        """The saved notes (encoded), None if none were saved. Raises DurableStateError naming the file if
        it cannot be read."""
        try:
            for stale in self.dir.glob(f".{DRAINS_FILE}.*.tmp"):
                stale.unlink(missing_ok=True)
            return read_secret_file(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DurableStateError(f"{self.path}: cannot read: {e}") from e

    def restore(self, book: DrainBook) -> int:
        """Put the saved notes into `book` (serial 1: a master replicates them); how many. DurableStateError
        naming the file if it is unreadable or invalid (the replica does not start: move the file away to
        start without them)."""
        blob = self.load()
        if blob is None:
            return 0
        try:
            notes = decode_notes(blob)
        except NoteError as e:
            raise DurableStateError(f"{self.path}: invalid drain notes: {e} (move the file away to start "
                                    "without them)") from None
        book.replace(1 if notes else 0, notes)
        book.restored = True
        return len(book.notes)

    def save_book(self, book: DrainBook) -> None:
        """Raises OSError or NoteError (the caller logs it: the notes are still replicated)."""
        _write_atomic(self.dir, DRAINS_FILE, encode_notes(book.notes))


ROLLOUT_FILE = "rollout.json"       # {"running": digest, "source": path, "next": digest | null}
RUNNING_FILE = "running.yaml"       # the text of the config the replica runs (ROLLOUT_FILE's "running")


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    running: str                # the digest of the config the replica runs
    source: str                 # the path it was read from (relative paths in it resolve against its directory)
    next: str | None            # the digest of the config prepared over it, if any


class RolloutStore:
    """What a replica runs and has prepared, on disk, for its restart (tester: a replica down during an abort
    and restarted on the next config's file — edited in place, as `lab reload` does — ran the next config
    while the fabric ran the other, refusing its leader's LSD for good).

    The rollout itself stays in memory; this record only tells a restart which config to run:
    `restart_config(given)` is the recorded running config (from its saved text) when `given` is the config
    that was prepared over it — the replica then holds `given` as pending (controller.rollout.Rollout.pending)
    and takes it only if its leader runs it. Any other file is run as given (a deliberate restart of the
    replicas on a new config, the naive rolling restart, is unchanged). Best effort: a record that cannot be
    read or no longer matches is ignored (the replica runs the file it is given, as before), and a failed
    write raises OSError for the caller to log."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def load(self) -> RolloutRecord | None:
        try:
            # a crash mid-write leaves a temp file (running.yaml's: up to a config's size): gone at the next read
            for name in (ROLLOUT_FILE, RUNNING_FILE):
                for stale in self.dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
            data = json.loads(read_secret_file(self.dir / ROLLOUT_FILE))
            nxt = data["next"]
            if not (isinstance(data["running"], str) and isinstance(data["source"], str)
                    and (nxt is None or isinstance(nxt, str))):
                return None
            return RolloutRecord(data["running"], data["source"], nxt)
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def save_running(self, digest: str, source: str, text: str) -> None:
        """The replica runs the config `digest`, read from `source` as `text`; nothing prepared over it."""
        _write_atomic(self.dir, RUNNING_FILE, text.encode("utf-8"))
        # absolute, symlinks kept (a ConfigMap's ..data link is re-pointed, its target directory removed)
        self._save(RolloutRecord(digest, os.path.abspath(source), None))

    def set_next(self, digest: str | None) -> None:
        """`digest` is prepared over the running config (None: nothing, after an abort). Nothing without a
        record of the running config."""
        rec = self.load()
        if rec is not None and rec.next != digest:
            self._save(RolloutRecord(rec.running, rec.source, digest))

    def _save(self, rec: RolloutRecord) -> None:
        doc = {"running": rec.running, "source": rec.source, "next": rec.next}
        _write_atomic(self.dir, ROLLOUT_FILE, (json.dumps(doc, sort_keys=True) + "\n").encode())

    def restart_config(self, given: Any) -> Any:
        """The config to run instead of `given` (a proto.config.Fabric): the recorded running one, when `given`
        is the one prepared over it; else None (run `given`)."""
        from proto.config import ConfigError, parse_fabric, read_config_text

        rec = self.load()
        if rec is None or rec.next != given.digest or rec.running == given.digest:
            return None
        try:
            text = read_config_text(self.dir / RUNNING_FILE)     # up to a config's size, not a secret's
            running = parse_fabric(text, source=rec.source, base_dir=Path(rec.source).resolve().parent)
        except (OSError, ConfigError):
            return None
        return running if running.digest == rec.running else None
