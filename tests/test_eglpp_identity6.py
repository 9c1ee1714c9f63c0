"""Identity 6: EGL++ = bias + neighbour spread, and its low-rank and sketched estimators.

float64 throughout, small conv nets with BatchNorm (inference mode), a two-stack heatmap output
with the pose loss, and a scalar model where the identity reduces to identity 5.
"""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings

from egltheory.egl import grad_sq_norm, tree_sq_norm
from egltheory.eglpp import (
    EGLPPOptions,
    LowRank,
    NormEngine,
    Sketch,
    eglpp_scores,
    eglpp_terms,
    global_average_pool,
    nnx_apply,
    squared_error,
)
from egltheory.pose.training import heatmap_loss

F64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}


class TwoStackNet(nnx.Module):
    """Conv → BN → ReLU, two 1×1 heads: ``[B, 6, 6, 2] → [B, 2, 6, 6, 3]`` (two 'stacks')."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs, **F64)
        self.bn = nnx.BatchNorm(4, rngs=rngs, **F64)
        self.heads = nnx.List([nnx.Conv(4, 3, (1, 1), rngs=rngs, **F64) for _ in range(2)])

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        return jnp.stack([head(h) for head in self.heads], axis=1)


class ScalarNet(nnx.Module):
    """Conv → BN → ReLU → GAP → Linear: ``[B, 6, 6, 2] → [B]``."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs, **F64)
        self.bn = nnx.BatchNorm(3, rngs=rngs, **F64)
        self.head = nnx.Linear(3, 1, rngs=rngs, **F64)

    def __call__(self, x):
        return self.head(global_average_pool(nnx.relu(self.bn(self.conv(x)))))[:, 0]


def _with_stats(model, seed):
    """Non-trivial BatchNorm running statistics, so inference-mode BN matters."""
    rng = np.random.default_rng(seed)
    bn = model.bn
    for stat, values in ((bn.mean, rng.normal(0, 0.3, bn.mean[...].shape)),
                         (bn.var, rng.uniform(0.5, 2.0, bn.var[...].shape))):  # fmt: skip
        stat[...] = jnp.asarray(values, dtype=stat[...].dtype)
    return model


_MODELS: dict = {}


def _heatmap_setup(seed, n, k, repeats=0):
    key = ("hm", seed % 2)
    if key not in _MODELS:
        _MODELS[key] = nnx_apply(_with_stats(TwoStackNet(nnx.Rngs(seed % 2)), seed))[:2]
    apply_fn, params = _MODELS[key]
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, 6, 6, 2)))
    y = rng.uniform(size=(n, k, 6, 6, 3))
    if repeats:  # neighbour labels that repeat (near-duplicate frames): rank(C) < K − 1
        y[:, k - repeats :] = y[:, :1]
    p = rng.dirichlet(np.ones(k + 3), size=n)[:, :k]  # top-K mass m < 1
    return apply_fn, params, x, jnp.asarray(y), jnp.asarray(p)


def _independent_terms(apply_fn, params, x, y, p, loss_fn, mean_weights=None):
    """Bias and spread by plain jax.grad of ⟨g, f_θ(x)⟩ (no SVD, no shared forward).

    ``mean_weights`` replaces p̃ for the consensus ḡ: the mutant of the test below.
    """
    bias, spread = [], []
    for i in range(x.shape[0]):
        out = apply_fn(params, x[i : i + 1])[0]
        g = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(out, y[i])  # [K, *out]
        m = jnp.sum(p[i])
        w = p[i] / m if mean_weights is None else mean_weights[i]
        gbar = jnp.tensordot(w, g, axes=1)

        def pull_sq(direction, i=i):
            grad = jax.grad(lambda q: jnp.vdot(direction, apply_fn(q, x[i : i + 1])[0]))(params)
            return tree_sq_norm(grad)

        bias.append(m * pull_sq(gbar))
        spread.append(sum(p[i, j] * pull_sq(g[j] - gbar) for j in range(y.shape[1])))
    return np.array(bias), np.array(spread)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 2, 5]), mode=st.sampled_from(
    ["unroll", "vmap", 2]))  # fmt: skip
def test_decomposition_sums_to_the_k_pullback_score(seed, k, mode):
    apply_fn, params, x, y, p = _heatmap_setup(seed, 3, k)
    options = EGLPPOptions(engine=NormEngine(chunk_size=2, cotangents=mode))
    exact = np.asarray(eglpp_scores(apply_fn, params, x, y, p, heatmap_loss, options))
    terms = eglpp_terms(apply_fn, params, x, y, p, heatmap_loss, options)
    np.testing.assert_allclose(np.asarray(terms.bias + terms.spread), exact, rtol=1e-10)
    np.testing.assert_allclose(terms.score, exact, rtol=1e-10)
    bias, spread = _independent_terms(apply_fn, params, x, y, p, heatmap_loss)
    np.testing.assert_allclose(terms.bias, bias, rtol=1e-10)
    np.testing.assert_allclose(terms.spread, spread, rtol=1e-9, atol=1e-14 * exact.max())
    np.testing.assert_allclose(terms.energy, 1.0, rtol=1e-10)  # all K − 1 directions
    assert np.all(np.asarray(terms.spread_stderr) == 0)
    assert np.all(np.asarray(terms.rank) <= max(k - 1, 0))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_terms_are_invariant_to_permuting_neighbours(seed):
    apply_fn, params, x, y, p = _heatmap_setup(seed, 2, 5)
    perm = np.random.default_rng(seed).permutation(5)
    a = eglpp_terms(apply_fn, params, x, y, p, heatmap_loss)
    b = eglpp_terms(apply_fn, params, x, y[:, perm], p[:, perm], heatmap_loss)
    for name in ("bias", "spread", "score"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-10)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), repeats=st.sampled_from([0, 2]))
def test_low_rank_never_exceeds_the_spread_and_is_exact_at_the_rank(seed, repeats):
    k = 6
    apply_fn, params, x, y, p = _heatmap_setup(seed, 3, k, repeats)
    exact = eglpp_terms(apply_fn, params, x, y, p, heatmap_loss)
    rank = int(np.max(exact.rank))
    assert rank == k - 1 - repeats  # repeated labels lower the rank of C
    previous = np.zeros(3)
    for m in range(rank + 1):
        low = eglpp_terms(apply_fn, params, x, y, p, heatmap_loss,
                          EGLPPOptions(estimator=LowRank(m)))  # fmt: skip
        np.testing.assert_allclose(low.bias, exact.bias, rtol=1e-10)
        spread = np.asarray(low.spread)
        assert np.all(spread <= np.asarray(exact.spread) * (1 + 1e-10))
        assert np.all(spread >= previous * (1 - 1e-10))  # more directions, more spread
        assert np.all((np.asarray(low.energy) >= 0) & (np.asarray(low.energy) <= 1 + 1e-12))
        previous = spread
    np.testing.assert_allclose(previous, exact.spread, rtol=1e-9)  # m = rank: exact
    np.testing.assert_allclose(low.energy, 1.0, rtol=1e-9)


def test_sketch_is_unbiased_with_honest_standard_errors_and_exact_at_the_rank():
    apply_fn, params, x, y, p = _heatmap_setup(11, 2, 6)
    exact = eglpp_terms(apply_fn, params, x, y, p, heatmap_loss)
    options = EGLPPOptions(estimator=Sketch(1, probes=4))
    draws = [eglpp_terms(apply_fn, params, x, y, p, heatmap_loss, options, jax.random.key(s))
             for s in range(300)]  # fmt: skip
    spreads = np.stack([np.asarray(d.spread) for d in draws])  # [draws, N]
    mean, se = spreads.mean(0), spreads.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - np.asarray(exact.spread)) < 4 * se)  # unbiased
    # each draw's own standard error estimates the spread of the draws (on average)
    reported = np.stack([np.asarray(d.spread_stderr) for d in draws]).mean(0)
    np.testing.assert_allclose(reported, spreads.std(0, ddof=1), rtol=0.25)
    at_rank = eglpp_terms(apply_fn, params, x, y, p, heatmap_loss,
                          EGLPPOptions(estimator=Sketch(5, 2)), jax.random.key(0))  # fmt: skip
    np.testing.assert_allclose(at_rank.spread, exact.spread, rtol=1e-9)
    np.testing.assert_allclose(at_rank.spread_stderr, 0.0, atol=1e-9 * float(exact.score.max()))
    with pytest.raises(ValueError, match="key"):
        eglpp_terms(apply_fn, params, x, y, p, heatmap_loss, options)


def test_the_check_rejects_a_mutant_without_the_cross_term_cancellation():
    """Using unnormalised weights p for the consensus ḡ (not p / m) breaks the sum: the test's
    comparison catches it."""
    apply_fn, params, x, y, p = _heatmap_setup(3, 3, 4)
    exact = np.asarray(eglpp_scores(apply_fn, params, x, y, p, heatmap_loss))
    bias, spread = _independent_terms(apply_fn, params, x, y, p, heatmap_loss, mean_weights=p)
    assert np.max(np.abs(bias + spread - exact) / exact) > 1e-3
    bias, spread = _independent_terms(apply_fn, params, x, y, p, heatmap_loss)
    np.testing.assert_allclose(bias + spread, exact, rtol=1e-10)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([2, 5]))
def test_scalar_output_reduces_to_identity_5(seed, k):
    key = ("scalar", seed % 2)
    if key not in _MODELS:
        _MODELS[key] = nnx_apply(_with_stats(ScalarNet(nnx.Rngs(seed % 2)), seed))[:2]
    apply_fn, params = _MODELS[key]
    rng = np.random.default_rng(seed)
    n = 4
    x = jnp.asarray(rng.normal(size=(n, 6, 6, 2)))
    y = rng.normal(size=(n, k))
    p = rng.dirichlet(np.ones(k + 2), size=n)[:, :k]
    terms = eglpp_terms(apply_fn, params, x, jnp.asarray(y), jnp.asarray(p), squared_error)
    f = np.asarray(apply_fn(params, x))
    g2 = np.asarray(grad_sq_norm(lambda q, xi: apply_fn(q, xi[None])[0], params, x))
    m = p.sum(1)
    pt = p / m[:, None]
    ybar = (pt * y).sum(1)
    var = (pt * (y - ybar[:, None]) ** 2).sum(1)
    np.testing.assert_allclose(terms.bias, 4 * g2 * m * (ybar - f) ** 2, rtol=1e-9)
    np.testing.assert_allclose(terms.spread, 4 * g2 * m * var, rtol=1e-9)
    assert np.all(np.asarray(terms.rank) <= 1)  # scalar labels: C has rank ≤ 1
    low = eglpp_terms(apply_fn, params, x, jnp.asarray(y), jnp.asarray(p), squared_error,
                      EGLPPOptions(estimator=LowRank(1)))  # fmt: skip
    np.testing.assert_allclose(low.spread, terms.spread, rtol=1e-9)


def test_estimator_options_are_validated():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="`m`"):
            LowRank(bad)
    with pytest.raises(ValueError, match="probes"):
        Sketch(2, probes=1)
    with pytest.raises(ValueError, match="estimator"):
        EGLPPOptions(estimator="lowrank")
