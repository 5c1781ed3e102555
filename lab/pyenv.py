"""The environment of the Python processes a lab starts (masters, clients, probes).

- PYTHONPATH: this checkout first, so the lab runs the code next to it;
- a shared bytecode cache, PYTHONPYCACHEPREFIX=~/.cache/firepath/pycache (PYCACHE): with
  PYTHONDONTWRITEBYTECODE set (as in this sandbox's environment) every daemon compiled every firepath
  module from source at each start — 0.9-1.3 s of CPU per client start here, 0.4-0.7 s with the cache
  (BENCHMARKS "Bring-up"); with a read-only checkout the __pycache__ next to the sources cannot be written
  either. The cache is keyed by source path and mtime, so an edit is recompiled once, by the first daemon.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PYCACHE = Path("~/.cache/firepath/pycache")


def python_env(repo_root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) for a lab's Python daemons: PYTHONPATH, unbuffered output and
    the shared bytecode cache (bytecode written even when the caller's environment forbids it)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(repo_root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    cache = PYCACHE.expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return env                              # no writable home: the daemons compile as before
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def set_group_nice(pid: int, nice: int) -> bool:
    """Set the CPU priority of `pid`'s autogroup (its session; kernel.sched_autogroup_enabled=1), which is
    what ranks it against other sessions' processes. False where autogroups do not exist."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))
        return True
    return False
