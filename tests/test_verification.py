"""Unit tests of egltheory.verification's helpers (the full run is in test_verify_theory_e2e)."""

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from egltheory.verification import (
    IDENTITY_TOLERANCE,
    PRESETS,
    VerificationConfig,
    mc_threshold,
    spearman_pairs,
    split_dataset,
    summarise_checks,
    verify_entry,
)


@given(m=st.integers(1, 10_000), alpha=st.floats(1e-6, 0.1))
def test_mc_threshold_is_the_bonferroni_union_bound(m, alpha):
    t = mc_threshold(m, alpha)
    # m inputs, each two-sided N(0,1) tail 2·(1 − Φ(t)): the union bound equals alpha.
    np.testing.assert_allclose(m * 2 * stats.norm.sf(t), alpha, rtol=1e-8)


def test_mc_threshold_for_the_default_run_is_about_four_and_a_half():
    assert 4.4 < mc_threshold(9 * 25) < 4.8


@settings(max_examples=20)
@given(seed=st.integers(0, 1000))
def test_spearman_pairs_matches_rank_correlation(seed):
    rng = np.random.default_rng(seed)
    scores = {name: rng.normal(size=30) for name in ("a", "b", "c")}
    pairs = spearman_pairs(scores)
    assert set(pairs) == {"a|b", "a|c", "b|c"}
    ranks = {k: np.argsort(np.argsort(v)) for k, v in scores.items()}  # no ties in floats
    np.testing.assert_allclose(pairs["a|b"], np.corrcoef(ranks["a"], ranks["b"])[0, 1], rtol=1e-12)


def test_summarise_checks_flags_failures():
    good = {"mc_max_abs_z": 1.0, "identity_max_rel_err": 1e-16, "n_checked": 10}
    bad_mc = {**good, "mc_max_abs_z": 9.0}
    bad_identity = {**good, "identity_max_rel_err": 10 * IDENTITY_TOLERANCE}
    assert summarise_checks({"linear": {"toy1d": good}})["all_passed"]
    assert not summarise_checks({"linear": {"toy1d": good, "diabetes": bad_mc}})["all_passed"]
    checks = summarise_checks({"gp": {"toy1d": bad_identity}})
    assert not checks["items"]["gp/toy1d/identity_max_rel_err"]["passed"]
    assert checks["items"]["gp/toy1d/mc_max_abs_z"]["passed"]


def test_split_keeps_pool_disjoint_from_labelled_rows():
    config = PRESETS["tiny"]
    X_train, y_train, X_pool = split_dataset("diabetes", config)
    assert X_train.shape[0] == config.n_train == y_train.shape[0]
    train_rows = {row.tobytes() for row in X_train}
    assert not any(row.tobytes() in train_rows for row in X_pool)
    with pytest.raises(ValueError, match="family"):
        config.ensemble("forest")
    with pytest.raises(ValueError, match="one ensemble per family"):
        VerificationConfig(ensembles=config.ensembles[:1] * 2)


def test_linear_entry_checks_hold_and_bias_share_is_recomputable():
    config = dataclasses.replace(PRESETS["tiny"], mc_convergence_samples=())
    result = verify_entry("linear", "toy1d", config, jax.random.key(0))
    entry, arr = result.entry, result.arrays
    assert entry["identity_max_rel_err"] < IDENTITY_TOLERANCE
    assert entry["mc_max_abs_z"] < mc_threshold(entry["n_checked"])
    assert set(entry["spearman"]) == {
        "egl|egl_over_grad", "egl|kendall_gal", "egl|emcm",
        "egl_over_grad|kendall_gal", "egl_over_grad|emcm", "kendall_gal|emcm",
    }  # fmt: skip
    # Independent NumPy recomputation of the bias share from the raw member predictions.
    bias = (arr["means"].mean(axis=0) - arr["f_z"]) ** 2
    spread = arr["means"].var(axis=0)
    share = bias / (arr["aleatoric"] + spread + bias)
    np.testing.assert_allclose(entry["bias_share"], share.mean(), rtol=1e-10)
    # Linear f_z with intercept: ‖∇f_z‖² = x² + 1 on the 1-D toy.
    np.testing.assert_allclose(arr["grad_sq_norm"], arr["x_pool"][:, 0] ** 2 + 1, rtol=1e-12)
