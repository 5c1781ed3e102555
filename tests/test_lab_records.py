"""The lab's record of faults and of where labs live, without building a lab (no OVS, no namespaces)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from lab import inject
from lab.state import LabState, ProcRecord

LINK = {"kind": "link", "link": 0, "name": "leaf-1:1-spine-1:1", "ifaces": ["s0p1", "s2p1"]}


class _RecordOnlyLab:
    """What restart_client uses of a Lab: its record, stop_process and start_client (recorded, not run)."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.calls: list[tuple[Any, ...]] = []

    def stop_process(self, key: str, signum: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        self.calls.append(("stop", key, signum))

    def start_client(self, switch: str) -> None:
        self.calls.append(("start", switch))


def _state(tmp_path: Path, faults: list[dict[str, Any]]) -> LabState:
    st = LabState(name="rec1", dir=str(tmp_path), config=str(tmp_path / "fabric.yaml"), netns="fplab-rec1",
                  faults=[dict(f) for f in faults])
    for sw in ("leaf-1", "leaf-2"):
        st.processes[f"client:{sw}"] = ProcRecord("client", sw, 1, 1, [], "log")
    st.save()
    return st


def test_restarting_a_killed_client_clears_its_kill_from_the_record(tmp_path: Path) -> None:
    """Tester: `lab kill client leaf-1`, `lab restart client leaf-1`: `lab status` still listed "client leaf-1
    killed" among the active faults until `lab heal` (and convergence checks still skipped leaf-1 as dead)."""
    kill1, kill2 = {"kind": "client", "switch": "leaf-1"}, {"kind": "client", "switch": "leaf-2"}
    lab = _RecordOnlyLab(_state(tmp_path, [LINK, kill1, kill2]))
    inject.restart_client(lab, "leaf-1")                        # type: ignore[arg-type]
    assert lab.calls == [("stop", "client:leaf-1", signal.SIGTERM), ("start", "leaf-1")]
    assert lab.state.faults == [LINK, kill2]                     # the other faults stay, in order
    assert LabState.load(tmp_path).faults == [LINK, kill2]      # and so says the record on disk


def test_restarting_a_running_client_leaves_the_faults_alone(tmp_path: Path) -> None:
    lab = _RecordOnlyLab(_state(tmp_path, [LINK, {"kind": "switch", "switch": "leaf-1", "ifaces": []}]))
    inject.restart_client(lab, "leaf-1")                        # type: ignore[arg-type]
    assert [f["kind"] for f in LabState.load(tmp_path).faults] == ["link", "switch"]   # a restart heals no link


def test_without_kill_matches_the_kind_and_the_process_name() -> None:
    faults = [{"kind": "master", "id": "m1"}, {"kind": "client", "switch": "m1"}, {"kind": "master", "id": "m2"}]
    assert inject.without_kill(faults, "master", "m1") == faults[1:]
    assert inject.without_kill(faults, "client", "m1") == [faults[0], faults[2]]
    assert inject.without_kill(faults, "client", "leaf-9") == faults
    with pytest.raises(KeyError):
        inject.without_kill(faults, "switch", "leaf-1")

