"""What a process has used so far, read from /proc (Linux; proc(5)): the benchmarks' CPU and memory figures.

    cpu_s(pid)                    # utime + stime in s (either alone with user=False / system=False); None if gone
    mem_mib(pid, "VmHWM")         # a /proc/PID/status size field in MiB (VmRSS, VmHWM, ...); None if gone

A process that has exited (or a PID that never existed) gives None, so a sample taken across a restart can
be told from a zero.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, user: bool = True, system: bool = True) -> float | None:
    """CPU seconds of `pid` so far: utime + stime (fields 14 and 15 of /proc/PID/stat, in clock ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            cols = f.read().rsplit(")", 1)[1].split()   # the command name may hold spaces and ')'
        return (int(cols[11]) * user + int(cols[12]) * system) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def mem_mib(pid: int | str, field: str = "VmRSS") -> float | None:
    """The size field `field` of /proc/PID/status (kB there) in MiB; `pid` may be "self"."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return None
