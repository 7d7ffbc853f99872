"""Statistics: percentile bootstrap confidence intervals (clustered by case) and paired baseline comparison.

Every aggregate is a mean over *cases*: with ``--repeat`` > 1 a case contributes the mean of its repeats,
and the bootstrap resamples cases (clusters), never individual repeats, so repeats do not shrink intervals.
Percentile metrics (latency p95) are bootstrapped the same way on the pooled observations of the drawn cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and the number of cases (clusters) behind it."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


NAN = Estimate(math.nan, math.nan, math.nan, 0)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_mean(
    clusters: Sequence[Sequence[float]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Mean over clusters of the cluster means, with a percentile bootstrap interval over clusters."""
    means = np.array([float(np.mean(c)) for c in clusters if len(c)], dtype=float)
    n = len(means)
    if n == 0:
        return NAN
    point = float(means.mean())
    if n == 1:
        return Estimate(point, point, point, 1)
    idx = _rng(seed).integers(0, n, size=(resamples, n))
    stats = means[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return Estimate(point, float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)), n)


def bootstrap_stat(
    clusters: Sequence[Sequence[float]],
    stat: Callable[[np.ndarray], float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Any statistic of the pooled observations (e.g. a percentile), resampling whole clusters."""
    groups = [np.asarray(c, dtype=float) for c in clusters if len(c)]
    n = len(groups)
    if n == 0:
        return NAN
    point = float(stat(np.concatenate(groups)))
    if n == 1:
        return Estimate(point, point, point, 1)
    rng = _rng(seed)
    stats = np.empty(resamples)
    for i in range(resamples):
        pick = rng.integers(0, n, size=n)
        stats[i] = stat(np.concatenate([groups[j] for j in pick]))
    alpha = (1 - confidence) / 2
    return Estimate(point, float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)), n)


@dataclass(frozen=True)
class Comparison:
    """Paired difference (current - baseline) over the cases both runs share."""

    metric: str
    current: float
    baseline: float
    diff: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return {
            "metric": self.metric,
            "current": self.current,
            "baseline": self.baseline,
            "diff": self.diff,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "n": self.n,
            "significant": self.significant,
        }


def paired_comparison(
    metric: str,
    current: dict[str, float],
    baseline: dict[str, float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Bootstrap the mean paired difference per case; two-sided p-value from the bootstrap distribution
    (shifted to the null of no difference)."""
    shared = sorted(set(current) & set(baseline))
    cur = np.array([current[k] for k in shared], dtype=float)
    base = np.array([baseline[k] for k in shared], dtype=float)
    n = len(shared)
    if n == 0:
        return Comparison(metric, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    d = cur - base
    diff = float(d.mean())
    if n == 1 or float(np.ptp(d)) == 0.0:
        p = 1.0 if diff == 0 else 0.0 if n > 1 else 1.0
        return Comparison(metric, float(cur.mean()), float(base.mean()), diff, diff, diff, p, n)
    idx = _rng(seed).integers(0, n, size=(resamples, n))
    boot = d[idx].mean(axis=1)
    low, high = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    centred = boot - diff
    p = float((np.abs(centred) >= abs(diff)).mean())
    return Comparison(
        metric, float(cur.mean()), float(base.mean()), diff, low, high, max(p, 1.0 / resamples), n
    )
