"""The replica's small durable state: the highest term seen (and the vote cast in it, for FMRP).

The LSD itself is soft state rebuilt from client reports; only the term must survive restarts so a
replica never reuses one. Writes are atomic and durable: write a temp file, fsync it, rename over the old
file, fsync the directory. A term never goes down on disk (writing a lower one raises).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "master-state.json"


class DurableStateError(ValueError):
    """The state file is unreadable/invalid, or a write would lower the term."""


@dataclass(frozen=True, slots=True)
class DurableState:
    term: int = 0
    voted_for: str | None = None


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / STATE_FILE
        self._cached: DurableState | None = None

    def load(self) -> DurableState:
        """The stored state; a missing file is term 0. Creates the directory if needed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._cached = DurableState()
            return self._cached
        try:
            data = json.loads(raw)
            term = data["term"]
            voted_for = data.get("voted_for")
            if not isinstance(term, int) or isinstance(term, bool) or term < 0:
                raise ValueError("term must be a non-negative integer")
            if voted_for is not None and not isinstance(voted_for, str):
                raise ValueError("voted_for must be a string or null")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DurableStateError(f"{self.path}: {e}") from e
        self._cached = DurableState(term, voted_for)
        return self._cached

    def save(self, state: DurableState) -> None:
        current = self._cached if self._cached is not None else self.load()
        if state.term < current.term:
            raise DurableStateError(f"{self.path}: refusing to lower term {current.term} -> {state.term}")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        payload = json.dumps({"term": state.term, "voted_for": state.voted_for}, sort_keys=True) + "\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._cached = state
