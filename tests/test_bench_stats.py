"""bench/stats.py: the one percentile/summary helper of the benchmarks."""

from __future__ import annotations

import os

import pytest

from bench.stats import median, pct, summary


def test_pct_interpolates_between_ranks_and_skips_missing_values():
    assert pct([4.0, 1.0, 3.0, 2.0], 0.0) == 1.0 and pct([4.0, 1.0, 3.0, 2.0], 1.0) == 4.0
    assert pct([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert pct([10.0, None, 20.0], 0.5) == 15.0
    assert pct([], 0.5) is None and pct([None], 0.99) is None
    assert pct([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="q must be"):
        pct([1.0], 99)


def test_summary_and_median():
    assert summary([]) == {"n": 0}
    s = summary([3.14159, 1.0, None, 2.0], digits=1)
    assert s == {"n": 3, "min": 1.0, "p50": 2.0, "p99": 3.1, "max": 3.1, "mean": 2.0}
    assert median([1.0, 2.0]) == 1.5 and median([None]) is None


def test_procstat_reads_this_process_and_tells_a_gone_one() -> None:
    import subprocess
    import time

    from bench.procstat import cpu_s, mem_mib
    before = cpu_s(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:   # burn ≥ 50 ms of CPU (bounded)
        pass
    after = cpu_s(os.getpid())
    assert before is not None and after is not None and after - before >= 0.03
    assert cpu_s(os.getpid(), user=False, system=False) == 0.0
    rss, hwm = mem_mib("self"), mem_mib("self", "VmHWM")
    assert rss is not None and hwm is not None and 1 < rss <= hwm
    child = subprocess.Popen(["true"])
    child.wait()                                  # reaped: its PID is gone
    assert cpu_s(child.pid) is None and mem_mib(child.pid) is None
