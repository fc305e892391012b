"""Mean ± 95 % confidence interval (Student's t) for the bench tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided t-interval: x̄ ± t_{(1+level)/2, n−1} · s / √n.

    ``s`` is the sample standard deviation (n − 1 in the denominator). With one
    value the half-width is NaN (no interval), with none both are NaN.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if n == 1:
        return mean, math.nan
    return mean, student_t.ppf((1 + level) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)


def fmt_ci(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± half`` for a table cell."""
    mean, half = mean_ci(values)
    return f"{mean:.{digits}f} ± {half:.{digits}f}"
