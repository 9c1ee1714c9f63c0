"""Tests for egltheory.tsne (Eq. 13): scikit-learn agreement, calibration, invariances, errors."""

import math
import warnings

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from sklearn.manifold._utils import _binary_search_perplexity

from egltheory import tsne
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


# ---------------------------------------------------------------------------------------------
# Unreachable targets are reported; bad arguments raise; the Newton solver is scale-invariant
# ---------------------------------------------------------------------------------------------


def _entropy(p):
    """Row entropy in nats, NumPy float64 (independent of the package)."""
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)


def test_duplicate_references_warn_with_rows_and_achieved_perplexity():
    # All 10 references identical: every distance in a row is equal, H = ln 10 for every σ.
    q, r = np.ones((2, 2)), np.zeros((10, 2))
    with pytest.warns(
        RuntimeWarning,
        match=r"2 of 2 rows did not reach the target perplexity 3: "
        r"achieved perplexity 10 to 10\. 2 row\(s\) have more references tied",
    ):
        p = np.asarray(conditional_probabilities(q, r, 3.0))
    np.testing.assert_array_equal(p, np.full((2, 10), 0.1))  # uniform: the only possible row
    with pytest.warns(RuntimeWarning, match=r"1 of 1 rows .* perplexity 3: achieved .* 10 to 10"):
        conditional_probabilities_from_sq_distances(np.full((1, 10), 4.0), 3.0)


def test_tied_nearest_references_give_their_uniform_limit_and_warn_for_those_rows_only():
    # Row 0's 4 nearest references coincide (m = 4 > perplexity 2): ln 4 is the lowest entropy
    # any σ reaches, so the row is the σ → 0 limit, 1/4 on each. Row 1 is an ordinary query.
    rng = np.random.default_rng(0)
    r = np.concatenate([np.zeros((4, 3)), rng.normal(size=(12, 3)) + 5.0])
    q = np.array([[0.1, 0.0, 0.0], [5.0, 5.0, 5.0]])
    with pytest.warns(
        tsne.PerplexityWarning,
        match=r"^1 of 2 rows .* target perplexity 2: "
        r"achieved perplexity 4 to 4\. 1 row\(s\) have more references tied",
    ):
        p = np.asarray(conditional_probabilities(q, r, 2.0))
    np.testing.assert_array_equal(p[0], np.r_[np.full(4, 0.25), np.zeros(12)])
    assert abs(_entropy(p[1:])[0] - np.log(2.0)) <= 1e-5 + 1e-12  # the other row is calibrated
    assert issubclass(tsne.PerplexityWarning, RuntimeWarning)


def test_rows_not_converged_within_max_iter_are_reported():
    q, r = _data(8, 3, 20, 2)
    with pytest.warns(
        tsne.PerplexityWarning,
        match=r"3 of 3 rows .* did not converge within "
        r"max_iter = 1 passes",
    ):
        conditional_probabilities(q, r, 3.0, max_iter=1)


def test_reachable_rows_do_not_warn_in_float32_or_float64():
    for dtype in (np.float32, np.float64):
        q, r = (a.astype(dtype) for a in _data(9, 200, 400, 8))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            conditional_probabilities(q, r, 30.0)
            conditional_probabilities(q, r, 20.0, "nats-as-bits")
            conditional_probabilities(q, r, 30.0, solver="sklearn")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_iter": 0}, r"`max_iter` must be an integer ≥ 1, got 0"),
        ({"max_iter": -5}, r"`max_iter` must be an integer ≥ 1"),
        ({"max_iter": 2.5}, r"`max_iter` must be an integer ≥ 1, got 2.5"),
        ({"tol": np.inf}, r"`tol` must be a finite number > 0"),  # would accept any σ
        ({"tol": np.nan}, r"`tol` must be a finite number > 0"),
        ({"tol": 0.0}, r"`tol` must be a finite number > 0"),
        ({"solver": "brent"}, r"`solver` must be one of"),
    ],
)
def test_solver_arguments_are_validated(kwargs, message):
    q, r = _data(10, 3, 20, 2)
    with pytest.raises(ValueError, match=message):
        conditional_probabilities(q, r, 3.0, **kwargs)
    with pytest.raises(ValueError, match=message):
        conditional_probabilities_from_sq_distances(np.asarray(squared_distances(q, r)), 3.0,
                                                    **kwargs)  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_newton_probabilities_do_not_depend_on_the_embedding_scale(dtype):
    """p_{j|i} with per-row calibrated β is invariant to a global scale s of the embeddings."""
    q, r = (a.astype(dtype) for a in _data(11, 6, 40, 3))
    base = np.asarray(conditional_probabilities(q, r, 5.0))
    assert base.dtype == dtype
    # Powers of two scale exactly, so the answer must be bit-identical over the whole range
    # (float32: before, 2^100 overflowed ‖e‖² to inf → NaN rows; 2^-100 flushed it to 0 → uniform).
    big = 100 if dtype == np.float32 else 900
    for e in (big, -big, 7, -7):
        scaled = np.asarray(conditional_probabilities(np.ldexp(q, e), np.ldexp(r, e), 5.0))
        np.testing.assert_array_equal(scaled, base)
    # 1e±30 (float32) / 1e±250 (float64) are not powers of two: the scaled embeddings are rounded
    # (≤ ½ ulp each), which moves distances by ~eps relative and each p_j by ~β d eps ≈ 10 eps;
    # both solutions also stop anywhere within tol = 1e-5 nats of H*: |Δp| ≤ 1e-5 is far above
    # both and far below the O(1) errors of NaN or uniform rows.
    for s in (1e30, 1e-30) if dtype == np.float32 else (1e250, 1e-250):
        scaled = np.asarray(conditional_probabilities(q * dtype(s), r * dtype(s), 5.0))
        assert np.all(np.isfinite(scaled))
        np.testing.assert_allclose(scaled, base, atol=1e-5, rtol=0)
        # and independently of `base`: the rows hit the target entropy (float64 NumPy)
        assert np.max(np.abs(_entropy(scaled) - np.log(5.0))) <= (
            1e-5 + 5e-6 if dtype == np.float32 else 1e-5 + 1e-12
        )


def test_newton_probabilities_do_not_depend_on_the_scale_of_squared_distances():
    q, r = _data(12, 6, 40, 3)
    sq = np.sum((q[:, None] - r[None]) ** 2, axis=-1).astype(np.float32)  # NumPy distances
    base = np.asarray(conditional_probabilities_from_sq_distances(sq, 5.0))
    for e in (120, -120):  # exact scaling: bit-identical (before: w·d² overflowed → NaN)
        scaled = conditional_probabilities_from_sq_distances(np.ldexp(sq, e), 5.0)
        np.testing.assert_array_equal(np.asarray(scaled), base)
    for s in (1e30, 1e-30):  # rounded scaling: see the embedding test for the 1e-5 bound
        scaled = conditional_probabilities_from_sq_distances(sq * np.float32(s), 5.0)
        np.testing.assert_allclose(np.asarray(scaled), base, atol=1e-5, rtol=0)


def test_sklearn_solver_refuses_scales_its_absolute_beta_cannot_hold():
    q, r = (a.astype(np.float32) for a in _data(13, 4, 30, 3))
    for s in (1e30, 1e-30):  # squared distances 1e±60 overflow / underflow float32
        with pytest.raises(
            ValueError,
            match=r"4 of 4 rows cannot be calibrated in float32: "
            r"solver='sklearn'",
        ):
            conditional_probabilities(q * np.float32(s), r * np.float32(s), 5.0, solver="sklearn")


def test_squared_distances_survive_scale_and_offset():
    q, r = _data(14, 5, 7, 3)
    # offset ≫ spread: ‖q‖² overflows (float32 1e20² > 3.4e38, float64 1e160² > 1.8e308) while
    # the distances themselves (spread² · O(10)) are representable; and an offset 1e4 on a
    # spread of 1 in float32 makes the raw Gram form ‖q‖² + ‖r‖² − 2qᵀr cancel 1e8-sized terms
    # (error ~1e8 · 6e-8 ≈ 6 against distances ~6).
    for dtype, offset, spread in (
        (np.float32, 1e20, 1e17),
        (np.float64, 1e160, 1e150),
        (np.float32, 1e4, 1.0),
    ):
        qd, rd = (offset + spread * q).astype(dtype), (offset + spread * r).astype(dtype)
        # exact distances of the rounded inputs: float64 NumPy, difference form (Python floats
        # for the float64 case, whose squares would overflow float64 only in the Gram form)
        exact = np.sum((qd.astype(np.float64)[:, None] - rd.astype(np.float64)[None]) ** 2, -1)
        got = np.asarray(squared_distances(qd, rd))
        assert got.dtype == dtype
        # the Gram form on centred O(1) values: a few ulp of the largest distance; 1e-5 relative
        # for float32 (≈ 80 ulp), 1e-13 for float64
        tol = (1e-5 if dtype == np.float32 else 1e-13) * exact.max()
        np.testing.assert_allclose(got, exact, atol=tol, rtol=0)


def test_perplexity_of_refuses_nan_and_negative_and_propagates_nan_under_jit():
    with pytest.raises(ValueError, match=r"`probs` must be finite, found 1 NaN"):
        perplexity_of(np.array([[np.nan, 0.5]]))  # before: NaN counted as 0 → perplexity √2
    with pytest.raises(ValueError, match=r"`probs` must be non-negative \(probabilities\)"):
        perplexity_of(np.array([[-0.5, 1.5]]))
    assert np.isnan(np.asarray(jax.jit(perplexity_of)(jnp.array([[np.nan, 0.5]])))[0])
    np.testing.assert_allclose(perplexity_of(np.array([[0.5, 0.5, 0.0]])), [2.0], rtol=1e-15)


def test_top_k_and_chunk_size_are_validated():
    # negative "probabilities" used to be ranked and renormalised into a plausible row
    with pytest.raises(ValueError, match=r"`probs` must be non-negative \(probabilities\)"):
        top_k_neighbours(jnp.array([[-0.5, 1.5]]), 1, renormalise=True)
    for k in (1.7, True, 0, 3):  # 1.7 was truncated to 1, True taken as 1
        with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, Nr=2\], got"):
            top_k_neighbours(jnp.array([[0.5, 0.5]]), k)
    values, _ = top_k_neighbours(jnp.array([[0.25, 0.75]]), np.int64(1))
    np.testing.assert_array_equal(values, [[0.75]])
    q, r = _data(15, 3, 20, 2)
    for chunk_size in (0, -2, 2.5):
        with pytest.raises(ValueError, match=r"`chunk_size` must be an integer ≥ 1, got"):
            conditional_probabilities(q, r, 3.0, chunk_size=chunk_size)
