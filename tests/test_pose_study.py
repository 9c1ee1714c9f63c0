"""egltheory.pose.study: presets and the Table-1 statistics, against hand computations."""

from __future__ import annotations

import csv
import io
import math
import statistics

import numpy as np
import pytest
from egltheory.pose.study import PRESETS, make_table, preset_with
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import t as student_t


def _results(curves: dict[str, np.ndarray]) -> dict:
    """{strategy: {seed: [cycle records]}} from {strategy: [n_seeds, n_cycles]} metric arrays."""
    return {
        s: {
            seed: [
                {"n_labelled": 10 * (c + 1), "metrics": {"metric": "PCKh@0.5", "mean": float(v)}}
                for c, v in enumerate(row)
            ]
            for seed, row in enumerate(arr)
        }
        for s, arr in curves.items()
    }


def _rows(csv_text: str) -> dict[tuple[str, int], dict]:
    return {(r["strategy"], int(r["cycle"])): r for r in csv.DictReader(io.StringIO(csv_text))}


def _one_tailed_paired_p(reference, other) -> float:
    """P(T > t) for t = mean(d) / (sd(d) / √n), d = reference − other, n − 1 degrees of freedom."""
    d = [a - b for a, b in zip(reference, other, strict=True)]
    n = len(d)
    t_stat = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(n))
    return float(student_t.sf(t_stat, n - 1))


@given(
    st.integers(2, 6),
    st.integers(1, 3),
    st.integers(0, 2**16),
)
def test_table_statistics_match_hand_computation(n_seeds, n_cycles, seed):
    rng = np.random.default_rng(seed)
    curves = {s: rng.uniform(0, 1, (n_seeds, n_cycles)) for s in ("random", "core-set", "egl++")}
    markdown, csv_text = make_table(_results(curves))
    rows = _rows(csv_text)
    for s, arr in curves.items():
        for c in range(n_cycles):
            row = rows[(s, c)]
            column = [float(v) for v in arr[:, c]]
            assert float(row["mean"]) == pytest.approx(statistics.fmean(column), rel=1e-12)
            assert float(row["std"]) == pytest.approx(statistics.stdev(column), rel=1e-12)
            assert int(row["n_labelled"]) == 10 * (c + 1) and int(row["n_seeds"]) == n_seeds
            p = float(row["p_value_vs_egl++"])
            if s == "egl++":
                assert math.isnan(p)
            else:
                want = _one_tailed_paired_p(curves["egl++"][:, c], column)
                assert p == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert f"over {n_seeds} seeds" in markdown
    for s, arr in curves.items():  # one row per strategy, one "100·mean ± 100·σ" cell per cycle
        (line,) = [ln for ln in markdown.splitlines() if ln.startswith(f"| {s} |")]
        cells = line.strip("| ").split(" | ")[1:]
        assert len(cells) == n_cycles
        for c, cell in enumerate(cells):
            assert cell.startswith(f"{100 * arr[:, c].mean():.2f} ± ")


def test_table_direction_and_ties():
    """A reference better on every seed gets p < 0.5; identical columns get exactly 0.5."""
    better = np.array([[0.2, 0.5], [0.3, 0.6], [0.25, 0.7]])
    worse = better - np.array([[0.0, 0.10], [0.0, 0.12], [0.0, 0.08]])
    rows = _rows(make_table(_results({"random": worse, "egl++": better}))[1])
    assert float(rows[("random", 0)]["p_value_vs_egl++"]) == 0.5  # no difference at all
    assert float(rows[("random", 1)]["p_value_vs_egl++"]) < 0.01
    flipped = _rows(make_table(_results({"random": better, "egl++": worse}))[1])
    assert float(flipped[("random", 1)]["p_value_vs_egl++"]) > 0.99


def test_preset_rejects_unknown_engine_options():
    with pytest.raises(ValueError, match="cotangents"):
        preset_with(PRESETS["tiny"], cotangents="loop")
    with pytest.raises(ValueError, match="cotangents"):
        preset_with(PRESETS["tiny"], cotangents=0)
    with pytest.raises(ValueError, match="kernel_grad"):
        preset_with(PRESETS["tiny"], kernel_grad="gemm")


def test_preset_with_overrides_only_what_is_given():
    base = PRESETS["default"]
    same = preset_with(base, seeds=None, cotangents=None, kernel_grad=None)
    assert same == base
    changed = preset_with(base, seeds=[4, 5], cotangents="vmap", kernel_grad="im2col")
    assert (changed.seeds, changed.cotangents, changed.kernel_grad) == ((4, 5), "vmap", "im2col")
    assert changed.image_size == base.image_size
