"""The LSD under the prepared next config, for switches that already moved to it (issue #21 follow-up).

During a two-phase rollout (controller.rollout) a switch moves to the next config N by reloading its client;
from then on it refuses the masters' LSD of the running config C (another digest, client.replica). Until the
commit it followed no remote link change: a failure elsewhere left it routing into dead paths. So the serving
master offers every moved switch an LSD *under N*: the current LSD's states carried to N's link index by link
identity, with the commit's rule (`controller.rollout.carry_states`: links in both configs keep their state,
links new in N are UP only when both ends reported them usable, the borders' slots by (border, prefix)).

Versions. One (term, version) names one content: the master takes each version of this view from the same
sequence as its LSD (`LinkStateDB.reserve`: the next LSD version goes above it), and makes a new one whenever
the LSD gets a new version (the view follows every version, so a moved switch is never behind what a
keepalive of the running config names) or the evidence about N's new links changes. A delta of the running
LSD therefore never starts at a version a moved switch holds (it is not a version of that LSD), and the
commit's snapshot (the next LSD version, above every one taken) is newer than whatever a moved switch holds.
Moved switches get full snapshots only (`LsdFull` carries the digest; `LsdDelta` does not, and a delta
across index maps would need a history of this view): at most 27 KB per version per moved switch at Jupiter
size, one snapshot encoded per version and shared.

Pure: the core (controller.corerollout) owns it, recomputes it in `tick` and hands it to distribution.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.rollout import Carry
from proto.config import Fabric
from proto.lsd import LinkState, encode_snapshot

__all__ = ["NextLsd"]



class NextLsd:
    """The view: `fabric` (N), `version` (-1 before the first), `from_version` (the running LSD's version it
    was carried from), `states` (one LinkState byte per entry of N's LSD), `snapshot()` (encoded, cached)."""

    __slots__ = ("_carry", "_snapshot", "fabric", "from_version", "states", "version")

    def __init__(self, nxt: Fabric, carry: Carry) -> None:
        """`carry`: the index map from the running config to `nxt` (controller.rollout.Rollout.carry)."""
        self.fabric = nxt
        self._carry = carry
        self.version = -1
        self.from_version = -1
        self.states: bytes | None = None
        self._snapshot: bytes | None = None

    @property
    def new_link_switches(self) -> frozenset[str]:
        """The switches at an end of a link new in N: only their reports can change `carry`'s result for the
        same running states (controller.rollout.Carry.new_link_switches)."""
        return self._carry.new_link_switches

    def carry(self, states: bytes, end_up: Callable[[str, int], bool | None]) -> bytes:
        """The running LSD's `states` on N's index (controller.rollout.Carry), `end_up` as carry_states'."""
        return bytes(self._carry(states, end_up))

    def publish(self, version: int, from_version: int, states: bytes) -> tuple[int, bool]:
        """Make `states` the view's content at `version` (> the previous one). Returns (entries changed,
        urgent: some entry went out of use — bad news is not paced)."""
        if version <= self.version:
            raise ValueError(f"next LSD version {version} <= {self.version}")
        old = self.states
        if old is None:
            n, urgent = len(states), False
        elif old == states:
            n, urgent = 0, False
        else:
            diff = [(a, b) for a, b in zip(old, states, strict=True) if a != b]
            n = len(diff)
            # the running LSD's rule (MasterCore._rederive): any entry that becomes other than UP (down, drained)
            # is bad news, not paced
            urgent = any(b != LinkState.UP for _a, b in diff)
        self.version, self.from_version, self.states = version, from_version, states
        self._snapshot = None
        return n, urgent

    def snapshot(self) -> bytes:
        """The encoded snapshot of the current content (proto.lsd.encode_snapshot), built once per version."""
        if self._snapshot is None:
            assert self.states is not None, "snapshot() before publish()"
            self._snapshot = encode_snapshot(self.states)
        return self._snapshot
