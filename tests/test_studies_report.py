"""egltheory.studies.report: paired statistics against hand computations, the tie rule, tables."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import spearmanr
from scipy.stats import t as student_t

from egltheory.studies.report import (
    MetricSpec,
    detectable_difference,
    paired_p_value,
    paired_table,
    spearman_ci,
    table_markdown,
    write_tables,
)

PCKH = MetricSpec("pckh", "PCKh@0.5", higher_is_better=True, scale=100.0)
RMSE = MetricSpec("rmse", "RMSE", higher_is_better=False, digits=4)


def _rows(curves: dict[str, np.ndarray], key: str = "pckh", **group) -> list[dict]:
    """Long rows from {strategy: [n_seeds, n_cycles]} metric arrays."""
    return [
        {
            **group,
            "strategy": s,
            "seed": seed,
            "cycle": c,
            "n_labelled": 10 * (c + 1),
            key: float(v),
        }
        for s, arr in curves.items()
        for seed, row in enumerate(arr)
        for c, v in enumerate(row)
    ]


def _one_tailed_paired_p(better, worse) -> float:
    """P(T > t) for t = mean(d) / (sd(d) / √n), d = better − worse, n − 1 degrees of freedom."""
    d = [a - b for a, b in zip(better, worse, strict=True)]
    n = len(d)
    t_stat = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(n))
    return float(student_t.sf(t_stat, n - 1))


@given(st.integers(2, 6), st.integers(1, 3), st.integers(0, 2**16), st.booleans())
def test_table_statistics_match_hand_computation(n_seeds, n_cycles, seed, higher):
    rng = np.random.default_rng(seed)
    curves = {s: rng.uniform(0, 1, (n_seeds, n_cycles)) for s in ("random", "core-set", "egl++")}
    metric = MetricSpec("pckh", "m", higher_is_better=higher)
    table = paired_table(_rows(curves), metric, "egl++")
    entries = {(e["strategy"], e["cycle"]): e for e in table}
    for s, arr in curves.items():
        for c, column in [*((c, arr[:, c]) for c in range(n_cycles)), ("curve", arr.mean(1))]:
            e = entries[(s, c)]
            column = [float(v) for v in column]
            assert e["mean"] == pytest.approx(statistics.fmean(column), rel=1e-12)
            assert e["std"] == pytest.approx(statistics.stdev(column), rel=1e-12)
            assert e["n_seeds"] == n_seeds
            if c != "curve":
                assert e["n_labelled"] == 10 * (c + 1)
            if s == "egl++":
                assert math.isnan(e["p"])
                continue
            ref = curves["egl++"][:, c] if c != "curve" else curves["egl++"].mean(1)
            want = (
                _one_tailed_paired_p(ref, column) if higher else _one_tailed_paired_p(column, ref)
            )
            assert e["p"] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_direction_and_the_tie_rule():
    """A reference better on every seed gets p < 0.5; identical columns get exactly 0.5."""
    better = np.array([[0.2, 0.5], [0.3, 0.6], [0.25, 0.7]])
    worse = better - np.array([[0.0, 0.10], [0.0, 0.12], [0.0, 0.08]])
    table = paired_table(_rows({"random": worse, "egl++": better}), PCKH, "egl++")
    entries = {(e["strategy"], e["cycle"]): e for e in table}
    assert entries[("random", 0)]["p"] == 0.5  # no difference at all
    assert entries[("random", 1)]["p"] < 0.01
    flipped = paired_table(_rows({"random": better, "egl++": worse}), PCKH, "egl++")
    assert next(e for e in flipped if e["strategy"] == "random" and e["cycle"] == 1)["p"] > 0.99
    # lower is better: the same numbers as RMSE swap the direction
    rmse = paired_table(_rows({"random": worse, "egl++": better}, "rmse"), RMSE, "egl++")
    assert next(e for e in rmse if e["strategy"] == "random" and e["cycle"] == 1)["p"] > 0.99
    assert math.isnan(paired_p_value([1.0], [0.0], True))  # one pair: no test
    with pytest.raises(ValueError, match="paired"):
        paired_p_value([1.0, 2.0], [1.0], True)


def test_groups_are_tested_separately_and_markdown_has_table_1_layout(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("a", "b"):
        curves = {s: rng.uniform(size=(3, 2)) for s in ("egl", "random")}
        rows += _rows(curves, "rmse", dataset=dataset)
    md = write_tables(rows, [RMSE], "egl", tmp_path, ("dataset",), ("random", "egl"))
    assert "## dataset a: RMSE" in md and "## dataset b: RMSE" in md
    table = paired_table(rows, RMSE, "egl", ("dataset",))
    sub = [e for e in table if e["dataset"] == "a"]
    text = table_markdown(sub, RMSE, "egl")
    header = text.splitlines()[0]
    assert header == "| RMSE | 10 | 20 | curve mean |"
    (line,) = [ln for ln in text.splitlines() if ln.startswith("| random |")]
    first = next(e for e in sub if e["strategy"] == "random" and e["cycle"] == 0)
    assert line.split(" | ")[1].startswith(f"{first['mean']:.4f} ± {first['std']:.4f} (")
    assert (tmp_path / "table.csv").read_text().count("\n") == len(table) + 1


def test_detectable_difference_matches_a_monte_carlo_power_check():
    """At the returned difference a one-tailed paired t-test at 5% rejects ≈ 80% of the time."""
    n, sd = 10, 2.0
    delta = detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(delta, sd, size=(20_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    power = float(np.mean(t > student_t.ppf(0.95, n - 1)))
    # normal approximation of the noncentral t: within 3 points of 80% at n = 10
    assert 0.77 < power < 0.83
    assert math.isnan(detectable_difference(sd, 1))


def test_detectable_difference_in_the_table_uses_the_paired_differences():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(6, 2))
    other = ref - rng.normal(0.1, 0.05, size=(6, 2))
    table = paired_table(_rows({"random": other, "egl++": ref}), PCKH, "egl++")
    e = next(x for x in table if x["strategy"] == "random" and x["cycle"] == 1)
    d = ref[:, 1] - other[:, 1]
    assert e["detectable"] == pytest.approx(detectable_difference(np.std(d, ddof=1), 6))
    assert "*detectable Δ*" in table_markdown(table, PCKH, "egl++")


def test_spearman_ci_estimate_coverage_groups_and_nan_pairs():
    rng = np.random.default_rng(1)
    a = rng.normal(size=40)
    b = a + rng.normal(size=40)
    b[3] = b[7]  # a tie
    ci = spearman_ci(a, b, n_boot=500, seed=3)
    assert ci.rho == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert ci.low < ci.rho < ci.high and ci.n == 40
    assert spearman_ci(a, b, n_boot=500, seed=3) == ci  # seeded
    assert spearman_ci(a, b, n_boot=500, seed=4) != ci
    # NaN pairs are dropped
    a_nan, b_nan = np.append(a, np.nan), np.append(b, 1.0)
    assert spearman_ci(a_nan, b_nan, n_boot=500, seed=3) == ci
    # groups: the mean of within-group ρ; a shift between groups does not enter
    groups = np.repeat([0, 1], 20)
    shifted = b + 100 * groups
    grouped = spearman_ci(a, shifted, n_boot=500, seed=3, groups=groups)
    expected = np.mean([spearmanr(a[groups == k], b[groups == k]).statistic for k in (0, 1)])
    assert grouped.rho == pytest.approx(expected, abs=1e-12) and grouped.low < grouped.rho
    # Coverage: for independent pairs the 90% interval holds the true ρ = 0 about 90% of the time.
    hits = [
        (lambda c: c.low <= 0.0 <= c.high)(
            spearman_ci(*np.random.default_rng(s).normal(size=(2, 60)), 400, s, level=0.9)
        )
        for s in range(300)
    ]
    assert 0.84 < np.mean(hits) < 0.96
    with pytest.raises(ValueError, match="paired"):
        spearman_ci(a, b[:-1])
    with pytest.raises(ValueError, match="at least 3"):
        spearman_ci([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="level"):
        spearman_ci(a, b, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        spearman_ci(a, b, n_boot=0)
    # Constant ranks: ρ undefined; such a group is left out of the grouped mean.
    const = spearman_ci(np.ones(5), np.arange(5.0), n_boot=50)
    assert np.isnan(const.rho) and np.isnan(const.low) and (const.n, const.n_groups) == (0, 0)
    flat = np.where(groups == 1, 0.0, b)
    one = spearman_ci(a, flat, n_boot=500, seed=3, groups=groups)
    assert (one.n, one.n_groups) == (20, 1) and (grouped.n, grouped.n_groups) == (40, 2)
    assert one.rho == pytest.approx(spearmanr(a[:20], b[:20]).statistic, abs=1e-12)
