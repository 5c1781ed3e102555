"""A config read on a worker thread shortens the GIL switch interval for its duration (controller.serverreload):
the loop's hellos take the GIL back from the parser within RELOAD_SWITCH_INTERVAL, not the default 5 ms per
system call (a Jupiter prepare's timer turn took 223 ms of a test's 400 ms master_dead)."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from controller.serverreload import RELOAD_SWITCH_INTERVAL, ReloadOps


class _Reloader(ReloadOps):
    def __init__(self, fail: bool = False) -> None:
        self.fabric = SimpleNamespace(source="fabric.yaml")
        self.fail = fail
        self.seen: list[float] = []

    def reload_check(self, path: Any) -> Any:
        self.seen.append(sys.getswitchinterval())
        if self.fail:
            raise ValueError("bad file")
        return "plan"

    def reload_apply(self, plan: Any) -> dict[str, Any]:
        self.seen.append(sys.getswitchinterval())
        return {"plan": plan}


def test_the_switch_interval_is_short_while_the_file_is_read_and_restored_after() -> None:
    before = sys.getswitchinterval()
    assert before > RELOAD_SWITCH_INTERVAL
    r = _Reloader()
    assert asyncio.run(r.reload_async()) == {"plan": "plan"}
    assert r.seen == [RELOAD_SWITCH_INTERVAL, before]      # short while reading, back before applying
    assert sys.getswitchinterval() == before
    bad = _Reloader(fail=True)
    with pytest.raises(ValueError, match="bad file"):
        asyncio.run(bad.reload_async())
    assert bad.seen == [RELOAD_SWITCH_INTERVAL] and sys.getswitchinterval() == before
    assert bad._reloading is None                            # and the next reload is not refused as busy
