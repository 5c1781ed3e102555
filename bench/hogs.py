"""CPU hogs for benchmarks under load (issue #20: "also with two CPU-bound processes competing").

`CpuHogs(n)` starts n `python3 -c 'while 1: pass'` processes (nice 0, like a fresh user's) and kills
exactly those PIDs on exit. `sessions=True` puts each in a session of its own (as if started from two
terminals): with autogroup scheduling each is then its own group, with a group's share of the CPU.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from types import TracebackType


class CpuHogs:
    def __init__(self, n: int, sessions: bool = False) -> None:
        self.n, self.sessions = n, sessions
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuHogs:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while 1: pass"],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               start_new_session=self.sessions))
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        self.procs.clear()
