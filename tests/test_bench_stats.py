"""bench/stats.py: the one percentile/summary helper of the benchmarks."""

from __future__ import annotations

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
