"""The regression study and experiments/regression_al.py: strategies, config, kill + resume."""

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest

from egltheory.active import initial_state
from egltheory.eglpp import EGLPPOptions
from egltheory.ensembles import LinearEnsemble
from egltheory.studies.regression import PRESETS, RegressionStudy, make_strategy, paired_split
from egltheory.studies.runner import Protocol
from egltheory.tsne import conditional_probabilities

ROOT = Path(__file__).resolve().parents[1]


def _linear_state(seed=0, n=60, d=3, n_lab=12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    state = initial_state(np.arange(n_lab), n)
    model = LinearEnsemble(n_members=4, ridge=0.5).fit(jax.random.key(seed), X[:n_lab], y[:n_lab])
    return X, y, state.__class__(state.labelled, state.unlabelled, model, 0)


def test_paired_split_is_disjoint_and_reproducible():
    pool, test, initial = paired_split(100, 3, 0.3, 10)
    assert len(test) == 30 and len(pool) == 70
    assert not set(pool) & set(test)
    assert len(set(initial)) == 10 and initial.max() < 70
    again = paired_split(100, 3, 0.3, 10)
    for a, b in zip((pool, test, initial), again, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="initial"):
        paired_split(10, 0, 0.5, 6)


def test_egl_and_variance_strategies_rank_by_independent_numpy_scores():
    X, y, state = _linear_state()
    cfg = PRESETS["default"]
    model = state.model
    xu = X[state.unlabelled]
    means, variances = (np.asarray(a) for a in model.predict(xu))
    f_z = np.asarray(model.f_z(xu))
    # Eq. 7 with an intercept: ‖x‖² + 1 times the member average (NumPy, independent of egl.py).
    egl_np = 4.0 * (np.sum(xu**2, 1) + 1) * np.mean(variances + (means - f_z) ** 2, 0)
    var_np = np.mean(variances, 0) + np.var(means, 0)  # Eq. 11 with T = K
    for name, ref in (("egl", egl_np), ("variance", var_np)):
        got = make_strategy(name, X, y, cfg).select(state, 5, jax.random.key(0))
        np.testing.assert_array_equal(got, state.unlabelled[np.argsort(-ref, kind="stable")[:5]])


def test_eglpp_strategy_equals_identity_5_for_linear_model():
    X, y, state = _linear_state(1)
    cfg = replace(PRESETS["default"], eglpp=EGLPPOptions(perplexity=4.0, top_k=5))
    strategy = make_strategy("egl++", X, y, cfg)
    scores = np.asarray(strategy.score_fn(state, jax.random.key(0)))
    xu, xl, yl = X[state.unlabelled], X[state.labelled], y[state.labelled]
    p = np.asarray(conditional_probabilities(xu, xl, 4.0))
    idx = np.argsort(-p, axis=1, kind="stable")[:, :5]
    pk = np.take_along_axis(p, idx, 1)
    f = np.asarray(state.model.f_z(xu))
    # Σ_n p_n · 4 (y_n − f)² ‖x̃‖² (linear f_z: ∇_θ f = [1, x]).
    expected = np.sum(pk * 4 * (yl[idx] - f[:, None]) ** 2, 1) * (np.sum(xu**2, 1) + 1)
    np.testing.assert_allclose(scores, expected, rtol=1e-8)


def test_study_refuses_bad_settings():
    protocol = PRESETS["tiny"].protocol
    with pytest.raises(ValueError, match="strategies"):
        replace(PRESETS["tiny"], protocol=replace(protocol, strategies=("nope",)))
    with pytest.raises(ValueError, match="seeds"):
        replace(protocol, seeds=(0, 0))
    with pytest.raises(ValueError, match="seeds"):
        replace(protocol, seeds=(-1, 2))
    with pytest.raises(ValueError, match="families"):
        PRESETS["tiny"].with_families(["forest"])
    with pytest.raises(ValueError, match="one ensemble per family"):
        RegressionStudy(protocol=protocol, ensembles=())
    with pytest.raises(ValueError, match="test_fraction"):
        replace(PRESETS["tiny"], test_fraction=1.0)
    assert PRESETS["tiny"].with_families(["linear"]).families == ("linear",)
    assert isinstance(protocol, Protocol)


def _script(out, *extra):
    return [
        sys.executable,
        str(ROOT / "experiments" / "regression_al.py"),
        "--preset",
        "tiny",
        "--families",
        "linear",
        "--no-progress",
        "--out",
        str(out),
        "--strategies",
        "random",
        "egl",
        "egl++",
        *extra,
    ]


def _curves(out):
    with open(out / "rows.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_script_end_to_end_kill_and_resume(tmp_path):
    # A persistent compilation cache shared by the three runs: only the first one compiles.
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    full = tmp_path / "full"
    subprocess.run(_script(full), check=True, env=env, capture_output=True, timeout=600)
    for name in ("table.md", "table.csv", "rows.csv", "learning_curves_diabetes_linear.png"):
        assert (full / name).is_file(), name
    rows = _curves(full)
    assert {r["strategy"] for r in rows} == {"random", "egl", "egl++"}
    assert len(rows) == 3 * 2 * 3  # strategies × seeds × (cycles + 1)

    # Kill a second run as soon as its first run has finished cycle 1, then resume it.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _script(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = killed / "runs" / "diabetes" / "linear" / "random" / "seed_0" / "cycle_0001.json"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists()
    assert not (killed / "rows.csv").exists()  # it really died before the end
    subprocess.run(
        _script(killed, "--resume"), check=True, env=env, capture_output=True, timeout=600
    )
    assert _curves(killed) == rows
    assert (killed / "table.md").read_text() == (full / "table.md").read_text()
