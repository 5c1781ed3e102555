"""The statistics every benchmark reports, in one place: percentiles and the summary row of a sample.

    pct([3.0, 1.0, 2.0], 0.5) == 2.0          # linear interpolation between closest ranks; None if empty
    summary(samples_ms, digits=1)             # {"n", "min", "p50", "p99", "max", "mean"}, or {"n": 0}

`None` values (a trial that measured nothing) are skipped. The stdlib's `statistics.quantiles` needs two
values and excludes the extremes by default; benchmarks want p99 of 20 runs to be well defined, hence this.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def pct(values: Iterable[float | None], q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) of `values`, interpolated linearly between closest ranks."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"pct: q must be within [0, 1], got {q}")
    s = sorted(v for v in values if v is not None)
    if not s:
        return None
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: Iterable[float | None], digits: int = 2) -> dict[str, float | int]:
    """n, min, p50, p99, max and mean of `values` (rounded to `digits`); {"n": 0} when there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0}
    p50, p99 = pct(vals, 0.5), pct(vals, 0.99)
    assert p50 is not None and p99 is not None
    return {"n": len(vals), "min": round(min(vals), digits), "p50": round(p50, digits), "p99": round(p99, digits),
            "max": round(max(vals), digits), "mean": round(statistics.fmean(vals), digits)}


def median(values: Iterable[float | None], digits: int = 3) -> float | None:
    """The median of the non-None `values`, rounded; None when there are none."""
    m = pct(values, 0.5)
    return None if m is None else round(m, digits)
