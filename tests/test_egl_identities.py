"""Property-based proofs of the exact identities behind closed-form EGL (THEORY.md, identities 1–3).

Every reference value is computed independently in NumPy from the printed equations, never by
calling the function under test twice. Tolerances: all generated values are O(10), so float64
rounding in sums of K ≤ 6 squared terms is a few ulp of the largest term (~1e-14 absolute); we
allow 1e-10 relative to the size of the terms summed, four orders of magnitude above rounding and
far below any modelling error (the mutant below is off by O(1)).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from egltheory import egl

RTOL = 1e-10

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False, width=64)
nonneg = st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def ensembles(draw, min_members=1, max_members=6, max_inputs=8, n_features=None):
    """(means [K, N], variances [K, N], f_z [N], x [N, P]) with O(10) entries."""
    k = draw(st.integers(min_members, max_members))
    n = draw(st.integers(1, max_inputs))
    p = n_features or draw(st.integers(1, 4))
    means = draw(arrays(np.float64, (k, n), elements=finite))
    variances = draw(arrays(np.float64, (k, n), elements=nonneg))
    f_z = draw(arrays(np.float64, (n,), elements=finite))
    x = draw(arrays(np.float64, (n, p), elements=finite))
    return means, variances, f_z, x


def bracket_numpy(means, variances, f_z):
    """(1/K) Σ_k [σ_k² + (μ_k − f_z)²], the bracket of Eq. 10, straight from its definition."""
    return np.mean(variances + (means - f_z) ** 2, axis=0)


def kendall_gal_numpy(means, variances):
    """Eq. 11 exactly as printed: raw second moment − squared mean + mean variance."""
    return np.mean(means**2, axis=0) - np.mean(means, axis=0) ** 2 + np.mean(variances, axis=0)


def term_scale(means, variances, f_z):
    """Magnitude of the terms being summed; rounding error is relative to this."""
    return np.max(means**2, axis=0) + f_z**2 + np.max(variances, axis=0) + 1.0


def assert_identity(lhs, rhs, scale):
    np.testing.assert_array_less(np.abs(np.asarray(lhs) - np.asarray(rhs)), RTOL * scale)


# ---------------------------------------------------------------------------------------------
# Identity 1: bracket of Eq. 10 = Kendall–Gal variance (Eq. 11) + squared bias
# ---------------------------------------------------------------------------------------------


def check_identity_1(bias_variance_fn, ensemble):
    """The property, parameterised by the implementation so a mutant can be fed to it."""
    means, variances, f_z, _ = ensemble
    terms = bias_variance_fn(means, variances, f_z)
    scale = term_scale(means, variances, f_z)
    # sum of the three terms == bracket of Eq. 10 (from its definition)
    assert_identity(terms.total, bracket_numpy(means, variances, f_z), scale)
    # aleatoric + epistemic == Eq. 11 as printed (raw moments)
    assert_identity(terms.aleatoric + terms.epistemic, kendall_gal_numpy(means, variances), scale)
    # so bracket == Var_KG + (μ̄ − f_z)²
    rhs = kendall_gal_numpy(means, variances) + (means.mean(axis=0) - f_z) ** 2
    assert_identity(bracket_numpy(means, variances, f_z), rhs, scale)


@given(ensembles())
def test_identity_1_bias_variance_decomposition(ensemble):
    check_identity_1(egl.bias_variance, ensemble)


def mutant_bias_variance_without_bias(means, variances, f_z):
    """A plausible bug: forgetting the squared-bias term (treating f_z as μ̄)."""
    terms = egl.bias_variance(means, variances, f_z)
    return terms._replace(squared_bias=0.0 * terms.squared_bias)


def test_identity_1_property_rejects_a_mutant_that_drops_the_bias_term():
    @given(ensembles())
    def property_on_mutant(ensemble):
        check_identity_1(mutant_bias_variance_without_bias, ensemble)

    with pytest.raises(AssertionError):
        property_on_mutant()


@given(ensembles())
def test_predictive_variance_is_eq_11(ensemble):
    means, variances, f_z, _ = ensemble
    scale = term_scale(means, variances, f_z)
    assert_identity(
        egl.predictive_variance(means, variances), kendall_gal_numpy(means, variances), scale
    )
    # and equals the law of total variance of the equal-weight Gaussian mixture (np.var, ddof=0)
    mixture = np.var(means, axis=0) + np.mean(variances, axis=0)
    assert_identity(egl.predictive_variance(means, variances), mixture, scale)


@given(ensembles(), st.sampled_from([1.0, 4.0, 0.5]))
def test_closed_form_over_c_grad_is_kendall_gal_when_f_z_is_the_ensemble_mean(ensemble, c):
    means, variances, _, x = ensemble
    f_z = means.mean(axis=0)
    grad_sq = np.sum(x**2, axis=1) + 1.0  # any positive factor; here a linear model's
    score = egl.egl_closed_form(means, variances, f_z, grad_sq, c=c)
    scale = term_scale(means, variances, f_z)
    assert_identity(np.asarray(score) / (c * grad_sq), kendall_gal_numpy(means, variances), scale)


@given(ensembles())
def test_closed_form_matches_eq_10_definition(ensemble):
    means, variances, f_z, x = ensemble
    grad_sq = np.sum(x**2, axis=1)
    expected = 4.0 * grad_sq * bracket_numpy(means, variances, f_z)
    got = egl.egl_closed_form(means, variances, f_z, grad_sq, c=4.0)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * 4 * (grad_sq.max() + 1))


# ---------------------------------------------------------------------------------------------
# Eq. 7 (linear) == Eq. 10 with an autodiff gradient
# ---------------------------------------------------------------------------------------------


def linear_model(params, x_i):
    return x_i @ params["w"] + params["b"]


@given(ensembles(n_features=3), arrays(np.float64, (3,), elements=finite), finite)
def test_eq_7_equals_eq_10_for_a_linear_model(ensemble, w, b):
    means, variances, _, x = ensemble
    params = {"w": w, "b": b}
    f_z = x @ w + b
    grad_sq = egl.grad_sq_norm(linear_model, params, x)
    # Eq. 7 with an intercept: (‖x‖² + 1)/K Σ_k [σ_k² + (μ_k − f_z)²], from the definition
    eq_7 = (np.sum(x**2, axis=1) + 1.0) * bracket_numpy(means, variances, f_z)
    eq_10 = egl.egl_closed_form(means, variances, f_z, grad_sq)
    scale = (np.sum(x**2, axis=1) + 1.0) * term_scale(means, variances, f_z)
    assert_identity(eq_10, eq_7, scale)


# ---------------------------------------------------------------------------------------------
# Identity 3: EMCM (Cai et al., Eq. 2) and Eq. 6/7
# ---------------------------------------------------------------------------------------------


@given(ensembles())
def test_squared_emcm_is_eq_7_with_zero_variance(ensemble):
    means, _, f_z, x = ensemble
    features = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)  # with intercept
    zero_variance = np.zeros_like(means)
    eq_7 = egl.egl_closed_form(means, zero_variance, f_z, np.sum(features**2, axis=1), c=1.0)
    squared = egl.emcm(means, f_z, features, squared=True)
    scale = np.sum(features**2, axis=1) * term_scale(means, zero_variance, f_z)
    assert_identity(squared, eq_7, scale)


@given(ensembles())
def test_emcm_matches_eq_2_as_printed(ensemble):
    means, _, f_z, x = ensemble
    # Eq. 2 literally: (1/K) Σ_k ‖(f_z − f_k) x‖ with the product formed as a vector
    literal = np.mean(
        np.linalg.norm((f_z[None, :, None] - means[:, :, None]) * x[None], axis=-1), axis=0
    )
    np.testing.assert_allclose(egl.emcm(means, f_z, x), literal, rtol=1e-12, atol=1e-12)


def same_ranking(a, b):
    """True when every strict pairwise order of ``a`` is the same in ``b`` (ties must tie)."""
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.all(np.sign(a[:, None] - a[None, :]) == np.sign(b[:, None] - b[None, :])))


positive_deviation = st.floats(0.01, 10.0, allow_nan=False, width=64)


@given(
    arrays(np.float64, (1, 6), elements=positive_deviation),
    arrays(np.float64, (6, 2), elements=st.floats(0.1, 10.0, width=64)),
)
def test_emcm_unsquared_and_squared_rank_identically_for_one_member(deviation, x):
    f_z = np.zeros(6)
    means = -deviation
    assert same_ranking(egl.emcm(means, f_z, x), egl.emcm(means, f_z, x, squared=True))


def test_emcm_unsquared_and_squared_rank_differently_for_several_members():
    # Counterexample (power-mean inequality): input A has member deviations (0, 2), input B
    # (1.1, 1.1), both with ‖x‖ = 1. Unsquared: A = 1.0 < B = 1.1. Squared: A = 2.0 > B = 1.21.
    means = np.array([[0.0, 1.1], [2.0, 1.1]])  # [K = 2, N = 2]
    f_z = np.zeros(2)
    x = np.array([[1.0], [1.0]])
    unsquared = np.asarray(egl.emcm(means, f_z, x))
    squared = np.asarray(egl.emcm(means, f_z, x, squared=True))
    np.testing.assert_allclose(unsquared, [1.0, 1.1])
    np.testing.assert_allclose(squared, [2.0, 1.21])
    assert not same_ranking(unsquared, squared)


# ---------------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------------


@given(ensembles(min_members=2), st.data())
def test_invariant_to_permuting_members(ensemble, data):
    means, variances, f_z, x = ensemble
    order = np.array(data.draw(st.permutations(range(means.shape[0]))))
    grad_sq = np.sum(x**2, axis=1)
    scale = grad_sq * term_scale(means, variances, f_z) + 1.0
    for fn in (
        lambda m, v: egl.egl_closed_form(m, v, f_z, grad_sq),
        lambda m, v: egl.predictive_variance(m, v),
        lambda m, v: egl.emcm(m, f_z, x),
        lambda m, v: egl.bias_variance(m, v, f_z).total,
    ):
        assert_identity(fn(means[order], variances[order]), fn(means, variances), scale)


@given(ensembles(), finite)
def test_invariant_to_shifting_means_and_f_z_together(ensemble, shift):
    means, variances, f_z, x = ensemble
    grad_sq = np.sum(x**2, axis=1)
    # rounding of (μ + s) − (f + s) is ~ulp(|μ| + |s|) ≤ 20·eps; squared terms scale with it
    scale = (grad_sq + 1.0) * (term_scale(means, variances, f_z) + shift**2)
    assert_identity(
        egl.egl_closed_form(means + shift, variances, f_z + shift, grad_sq),
        egl.egl_closed_form(means, variances, f_z, grad_sq),
        scale,
    )
    assert_identity(
        egl.predictive_variance(means + shift, variances),
        egl.predictive_variance(means, variances),
        scale,
    )


@given(ensembles())
def test_scores_are_non_negative(ensemble):
    means, variances, f_z, x = ensemble
    grad_sq = np.sum(x**2, axis=1)
    assert np.all(np.asarray(egl.egl_closed_form(means, variances, f_z, grad_sq)) >= 0)
    assert np.all(np.asarray(egl.predictive_variance(means, variances)) >= 0)
    terms = egl.bias_variance(means, variances, f_z)
    for term in terms:
        assert np.all(np.asarray(term) >= 0)
