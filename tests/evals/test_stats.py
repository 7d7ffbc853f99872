"""Bootstrap intervals against known distributions; clustering; paired comparison."""

from __future__ import annotations

import math

import numpy as np

from charter.evals import bootstrap_mean, bootstrap_stat, paired_comparison


def test_interval_matches_normal_theory_for_a_bernoulli_mean() -> None:
    rng = np.random.default_rng(7)
    n, p = 400, 0.3
    xs = (rng.random(n) < p).astype(float)
    est = bootstrap_mean([[x] for x in xs], resamples=4000, seed=1)
    phat = xs.mean()
    half = 1.96 * math.sqrt(phat * (1 - phat) / n)
    assert est.value == phat and est.n == n
    assert abs(est.low - (phat - half)) < 0.012
    assert abs(est.high - (phat + half)) < 0.012


def test_coverage_of_the_true_mean_is_about_95_percent() -> None:
    rng = np.random.default_rng(11)
    hits = 0
    trials = 300
    for i in range(trials):
        xs = rng.normal(loc=2.0, scale=1.0, size=60)
        est = bootstrap_mean([[x] for x in xs], resamples=800, seed=i)
        hits += est.low <= 2.0 <= est.high
    assert 0.90 <= hits / trials <= 0.985


def test_interval_for_an_exponential_median_matches_the_known_quantile() -> None:
    rng = np.random.default_rng(3)
    xs = rng.exponential(scale=1.0, size=2000)
    est = bootstrap_stat([[x] for x in xs], lambda a: float(np.quantile(a, 0.5)), resamples=600, seed=2)
    assert est.low <= math.log(2) <= est.high
    assert est.high - est.low < 0.15


def test_repeats_are_clustered_by_case_and_do_not_narrow_the_interval() -> None:
    rng = np.random.default_rng(5)
    cases = list((rng.random(50) < 0.7).astype(float))
    once = bootstrap_mean([[x] for x in cases], seed=0)
    five = bootstrap_mean([[x] * 5 for x in cases], seed=0)
    assert once.value == five.value and five.n == 50
    assert abs((once.high - once.low) - (five.high - five.low)) < 1e-9
    naive = bootstrap_mean([[x] for x in cases for _ in range(5)], seed=0)  # what clustering prevents
    assert (naive.high - naive.low) < 0.6 * (five.high - five.low)


def test_paired_comparison_detects_a_real_shift_and_not_noise() -> None:
    rng = np.random.default_rng(9)
    base = {f"c{i}": float(v) for i, v in enumerate(rng.normal(0.5, 0.2, 80))}
    better = {k: v + 0.1 + float(rng.normal(0, 0.02)) for k, v in base.items()}
    same = {k: v + float(rng.normal(0, 0.02)) for k, v in base.items()}
    up = paired_comparison("m", better, base)
    flat = paired_comparison("m", same, base)
    assert up.significant and up.low > 0.08 and up.p_value < 0.01
    assert not flat.significant and flat.p_value > 0.05
    assert paired_comparison("m", {"a": 1.0}, {"b": 1.0}).n == 0


def test_empty_and_single_cluster() -> None:
    assert math.isnan(bootstrap_mean([]).value)
    one = bootstrap_mean([[0.25, 0.75]])
    assert (one.value, one.low, one.high, one.n) == (0.5, 0.5, 0.5, 1)


def test_thresholds_on_the_point_or_a_bound_and_unmeasured_metrics_fail() -> None:
    from charter.evals import Estimate, evaluate_thresholds
    from charter.spec._schema import Threshold
    from charter.spec._types import parse_threshold

    metrics = {
        "negative.generation.refusal_accuracy": Estimate(0.93, 0.8, 1.0, 15),
        "permission.leaks": Estimate(0.0, 0.0, 0.0, 20),
        "latency.p95_ms": Estimate(700.0, 400.0, 2100.0, 100),
    }
    specs = [
        "negative.refusal_accuracy >= 0.9",
        "negative.refusal_accuracy >= 0.9 (lower)",
        "permission.leaks == 0",
        "latency.p95_ms <= 2000 (upper)",
        "edge.pass_rate >= 0.5",
    ]
    results = evaluate_thresholds([Threshold(**parse_threshold(s)) for s in specs], metrics)
    assert [r.passed for r in results] == [True, False, True, False, False]
    assert results[1].observed == 0.8 and results[3].observed == 2100.0
    assert results[4].note == "not measured by this run"
