"""Tests for egltheory.tsne (Eq. 13): scikit-learn agreement, calibration, invariances, errors."""

import math

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from sklearn.manifold._utils import _binary_search_perplexity

from egltheory.tsne import (
    conditional_probabilities,
    conditional_probabilities_from_sq_distances,
    effective_perplexity,
    perplexity_of,
    squared_distances,
    target_entropy,
    top_k_neighbours,
)


def _data(seed, n_q, n_r, dim, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_q, dim)) * scale, rng.normal(size=(n_r, dim))


@given(
    seed=st.integers(0, 10_000),
    n_r=st.sampled_from([40, 97]),  # few shapes: each new shape is a new XLA compilation
    dim=st.integers(1, 12),
    perplexity=st.floats(2.0, 30.0),
    scale=st.floats(0.1, 10.0),
    solver=st.sampled_from(["newton", "sklearn"]),
)
def test_matches_sklearn_binary_search(seed, n_r, dim, perplexity, scale, solver):
    # sklearn's routine excludes the diagonal unless n_neighbors < n_samples, so give it more
    # query rows than reference columns (then it is a plain row-wise search, like Eq. 13).
    q, r = _data(seed, n_r + 5, n_r, dim, scale)
    sq = np.sum((q[:, None] - r[None]) ** 2, axis=-1).astype(np.float32)  # NumPy, independent
    perplexity = float(np.float32(perplexity))  # sklearn takes the perplexity as a C float
    expected = _binary_search_perplexity(sq, perplexity, 0)
    # sklearn's tolerance is the C float 1e-5 (= 9.99999974738e-06); use the same number.
    tol = float(np.float32(1e-5))
    got = np.asarray(
        conditional_probabilities_from_sq_distances(
            sq.astype(np.float64), perplexity, solver=solver, tol=tol
        )
    )
    if solver == "sklearn":
        # Same bisection path, both in float64 on the same float32 distances: only summation
        # order differs (row sums of <= 125 terms: ~1e-14 relative).
        np.testing.assert_allclose(got, expected, atol=1e-10, rtol=0)
    else:
        # Both stop at |H - ln P| <= 1e-5 nats, from different β: entropies agree to 2e-5.
        def entropy(p):
            return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)

        target = np.log(perplexity)
        assert np.max(np.abs(entropy(got) - target)) <= 1e-5 + 1e-9  # ours always converges
        # scikit-learn can stall (100 steps) on near-flat rows; compare the rows it solved.
        solved = np.abs(entropy(expected) - target) <= 1e-5 + 1e-9
        assert solved.mean() > 0.9
        np.testing.assert_allclose(entropy(got)[solved], entropy(expected)[solved], atol=2e-5)
        if perplexity >= 10 and solved.all():
            # Probabilities: dp_j = p_j u_j dH / Var(u) (u = β(d - E d)) is < 1e-5 when many
            # neighbours share the mass; at tiny perplexities (2 near-equal neighbours, H flat in
            # β) scikit-learn's own tolerance allows ~1e-4, so only its exact path is compared.
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@given(
    seed=st.integers(0, 10_000),
    n_q=st.sampled_from([1, 30]),
    n_r=st.sampled_from([61, 150]),
    perplexity=st.floats(1.5, 60.0),
    chunk=st.sampled_from([1, 7, 64]),
)
def test_rows_sum_to_one_and_hit_perplexity(seed, n_q, n_r, perplexity, chunk):
    q, r = _data(seed, n_q, n_r, 4)
    p = np.asarray(conditional_probabilities(q, r, perplexity, chunk_size=chunk))
    assert p.shape == (n_q, n_r)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)  # float64 round-off
    # Entropy within tol = 1e-5 nats ⇒ |perplexity error| <= P (e^{1e-5} - 1) <= 6.1e-4 < 1e-3.
    ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)  # NumPy entropy
    assert np.max(np.abs(np.exp(ent) - perplexity)) < 1e-3


@given(seed=st.integers(0, 10_000), n_r=st.sampled_from([20, 80]))
def test_invariant_to_permuting_references(seed, n_r):
    q, r = _data(seed, 7, n_r, 3)
    perm = np.random.default_rng(seed + 1).permutation(n_r)
    p = np.asarray(conditional_probabilities(q, r, 10.0))
    p_perm = np.asarray(conditional_probabilities(q, r[perm], 10.0))
    # Same solver on permuted columns: only summation order changes (float64 round-off).
    np.testing.assert_allclose(p_perm, p[:, perm], atol=1e-12)


def test_matches_explicit_gaussian_formula():
    q, r = _data(3, 5, 50, 2)
    p = np.asarray(conditional_probabilities(q, r, 8.0))
    # Recover σ_i from two columns, then rebuild the whole row with Eq. 13 in NumPy.
    d = np.sum((q[:, None] - r[None]) ** 2, axis=-1)
    beta = np.log(p[:, 0] / p[:, 1]) / (d[:, 1] - d[:, 0])
    rebuilt = np.exp(-beta[:, None] * d)
    rebuilt /= rebuilt.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, rebuilt, atol=1e-10)


def test_nats_as_bits_convention_effective_perplexity():
    assert effective_perplexity(20.0, "nats-as-bits") == pytest.approx(20.0 ** (1 / math.log(2)))
    assert effective_perplexity(20.0, "nats-as-bits") == pytest.approx(75.334, abs=1e-3)
    assert target_entropy(20.0, "nats-as-bits") == pytest.approx(math.log2(20.0))
    q, r = _data(4, 6, 300, 5)
    p = conditional_probabilities(q, r, 20.0, "nats-as-bits")
    np.testing.assert_allclose(perplexity_of(p), 75.334, atol=2e-3)  # P·1e-5 tolerance
    p_bits = conditional_probabilities(q, r, 20.0, "bits")
    np.testing.assert_allclose(perplexity_of(p_bits), 20.0, atol=1e-3)


def test_squared_distances_and_large_scale_stability():
    q, r = _data(5, 4, 30, 3, scale=1e3)  # distances ~1e6: naive exp(-d) would underflow
    np.testing.assert_allclose(
        squared_distances(q, r), np.sum((q[:, None] - r[None]) ** 2, -1), rtol=1e-9
    )
    p = np.asarray(conditional_probabilities(q * 1e3, r, 5.0))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(perplexity_of(p), 5.0, atol=1e-3)


def test_top_k_with_and_without_renormalisation():
    q, r = _data(6, 9, 40, 3)
    p = np.asarray(conditional_probabilities(q, r, 10.0))
    vals, idx = top_k_neighbours(p, 5)
    order = np.argsort(-p, axis=1)[:, :5]
    np.testing.assert_array_equal(np.asarray(idx), order)
    np.testing.assert_allclose(vals, np.take_along_axis(p, order, axis=1))
    vals_n, idx_n = top_k_neighbours(p, 5, renormalise=True)
    np.testing.assert_array_equal(idx_n, idx)
    np.testing.assert_allclose(vals_n, vals / np.asarray(vals).sum(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(vals_n).sum(1), 1.0)


def test_bad_input_is_refused():
    q, r = _data(7, 3, 10, 2)
    with pytest.raises(ValueError, match="convention"):
        conditional_probabilities(q, r, 5.0, "nats")
    with pytest.raises(ValueError, match="perplexity"):
        conditional_probabilities(q, r, 50.0)
    with pytest.raises(ValueError, match="perplexity"):
        conditional_probabilities(q, r, 0.5)
    with pytest.raises(ValueError, match="embedding size"):
        conditional_probabilities(q, r[:, :1], 5.0)
    with pytest.raises(ValueError, match="reference"):
        conditional_probabilities(q, r[:0], 5.0)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="query"):
        conditional_probabilities(bad, r, 5.0)
    with pytest.raises(ValueError, match="non-negative"):
        conditional_probabilities_from_sq_distances(-jnp.ones((2, 10)), 3.0)
    with pytest.raises(ValueError, match="finite"):
        conditional_probabilities_from_sq_distances(jnp.ones((2, 10)).at[1, 1].set(jnp.inf), 3.0)
    with pytest.raises(ValueError, match="`k`"):
        top_k_neighbours(jnp.ones((2, 3)) / 3, 4)
