"""Property-based proofs of the exact identities behind closed-form EGL (THEORY.md, identities 1–3).

Every reference value is computed independently in NumPy from the printed equations, never by
calling the function under test twice. Tolerances: all generated values are O(10), so float64
rounding in sums of K ≤ 6 squared terms is a few ulp of the largest term (~1e-14 absolute); we
allow 1e-10 relative to the size of the terms summed, four orders of magnitude above rounding and
far below any modelling error (the mutant below is off by O(1)).
"""

import numpy as np
import pytest
from hypothesis import assume, given
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


# ---------------------------------------------------------------------------------------------
# No overflow where the answer is finite (scaled computation), against exact references
# ---------------------------------------------------------------------------------------------


def _decimal(x):
    """Exact Decimal of a float (binary floats are finite decimals); 60 digits, no overflow."""
    from decimal import Decimal

    return Decimal(float(x))


def emcm_decimal(means, f_z, features, squared):
    """Eq. 2 (or its squared form) in 60-digit decimal arithmetic: an exact-input reference."""
    from decimal import localcontext

    out = []
    with localcontext() as ctx:
        ctx.prec = 60
        for n in range(means.shape[1]):
            dev = [abs(_decimal(f_z[n]) - _decimal(means[k, n])) for k in range(means.shape[0])]
            norm_sq = sum(_decimal(v) ** 2 for v in features[n])
            if squared:
                out.append(float(sum(d * d for d in dev) / len(dev) * norm_sq))
            else:
                out.append(float(sum(dev) / len(dev) * norm_sq.sqrt()))
    return np.array(out)


def closed_form_decimal(means, variances, f_z, grad_sq, c):
    from decimal import localcontext

    out = []
    with localcontext() as ctx:
        ctx.prec = 60
        for n in range(means.shape[1]):
            terms = [
                _decimal(variances[k, n]) + (_decimal(means[k, n]) - _decimal(f_z[n])) ** 2
                for k in range(means.shape[0])
            ]
            out.append(float(_decimal(c) * _decimal(grad_sq[n]) * sum(terms) / len(terms)))
    return np.array(out)


# Each case: a finite answer whose naive float64 evaluation overflows (or underflows) on the way;
# the flag says whether the squared form is finite too (both are run where it is).
EMCM_EXTREMES = {
    "‖φ‖² overflows": (np.array([[1.0], [-2.0]]), np.zeros(1), np.array([[1e160, 3e160]]), False),
    "deviation² overflows, ‖φ‖² underflows": (
        np.array([[1e200], [2e200]]), np.zeros(1), np.array([[1e-200, 1e-200]]), True,
    ),
    "f_z − μ_k overflows": (
        np.array([[-1e308], [-1.5e308]]), np.array([1e308]), np.array([[1e-10]]), False,
    ),
    "Σ_k |f_z − μ_k| overflows": (
        np.array([[1.5e308], [-1.6e308]]), np.zeros(1), np.array([[0.5, 0.0]]), False,
    ),
    "deviation² and Σ_k overflow": (
        np.array([[1.2e154], [-1.3e154]]), np.zeros(1), np.array([[1.0, 1e-5]]), True,
    ),
}  # fmt: skip
EMCM_CASES = [(c, False) for c in EMCM_EXTREMES] + [
    (c, True) for c, v in EMCM_EXTREMES.items() if v[3]
]


@pytest.mark.parametrize(("case", "squared"), EMCM_CASES)
def test_emcm_is_finite_where_the_answer_is_finite(case, squared):
    means, f_z, features, _ = EMCM_EXTREMES[case]
    expected = emcm_decimal(means, f_z, features, squared)
    assert np.all(np.isfinite(expected))  # the case is what it says: the answer is finite
    got = np.asarray(egl.emcm(means, f_z, features, squared=squared))
    # a few roundings of O(1) scaled terms: 1e-14 relative is ~50 ulp
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_emcm_and_closed_form_float32_beyond_float32_range_match_numpy_float64():
    rng = np.random.default_rng(3)
    means = (rng.normal(size=(3, 5)) * 1e20).astype(np.float32)  # (μ − f)² ~ 1e40 > 3.4e38
    f_z = (rng.normal(size=5) * 1e20).astype(np.float32)
    variances = (rng.uniform(size=(3, 5)) * 1e38).astype(np.float32)
    features = (rng.normal(size=(5, 2)) * 1e-25).astype(np.float32)
    grad_sq = np.full(5, 1e-30, np.float32)  # tiny ‖∇f‖²: EGL ~ 1e10, finite in float32
    m64, f64, v64, x64 = (a.astype(np.float64) for a in (means, f_z, variances, features))
    emcm_ref = np.mean(np.abs(f64 - m64), axis=0) * np.linalg.norm(x64, axis=1)
    closed_ref = 4.0 * grad_sq.astype(np.float64) * np.mean(v64 + (m64 - f64) ** 2, axis=0)
    emcm_32 = egl.emcm(means, f_z, features)
    closed_32 = egl.egl_closed_form(means, variances, f_z, grad_sq, c=4.0)
    assert emcm_32.dtype == np.float32 and closed_32.dtype == np.float32
    # float32 inputs are exact in float64; the float32 result is a few roundings off: 1e-6 ≈ 8 ulp
    np.testing.assert_allclose(emcm_32, emcm_ref, rtol=1e-6)
    np.testing.assert_allclose(closed_32, closed_ref, rtol=1e-6)


CLOSED_FORM_EXTREMES = {
    "(μ − f)² overflows, g tiny": (
        np.array([[1e200], [-1e200]]), np.array([[1.0], [2.0]]), np.zeros(1), np.array([1e-300]),
    ),
    "σ² only, |μ| = |f| huge": (  # a scale taken from |μ|, |f| instead of |μ − f| loses σ²
        np.full((2, 1), 1e300), np.array([[1.0], [3.0]]), np.array([1e300]), np.array([1e300]),
    ),
    "tiny residual, tiny σ², huge g": (
        np.array([[1e-300], [0.0]]), np.array([[0.0], [0.0]]), np.zeros(1), np.array([1e300]),
    ),
    "Σ_k σ_k² overflows": (
        np.zeros((2, 1)), np.array([[1.5e308], [1.6e308]]), np.zeros(1), np.array([0.5]),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLOSED_FORM_EXTREMES))
def test_closed_form_is_finite_where_the_answer_is_finite(case):
    means, variances, f_z, grad_sq = CLOSED_FORM_EXTREMES[case]
    expected = closed_form_decimal(means, variances, f_z, grad_sq, 1.0)
    assert np.all(np.isfinite(expected)) and np.all(expected > 0)
    got = np.asarray(egl.egl_closed_form(means, variances, f_z, grad_sq))
    np.testing.assert_allclose(got, expected, rtol=1e-14)


dyadic = st.integers(-80, 80).map(lambda i: i / 8.0)  # exact in binary: no rounding to blur


@given(
    arrays(np.float64, (3, 4), elements=dyadic),
    arrays(np.float64, (3, 4), elements=dyadic.map(abs)),
    arrays(np.float64, (4,), elements=dyadic),
    arrays(np.float64, (4, 2), elements=dyadic),
    st.integers(-1000, 1000),
    st.integers(-400, 400),
)
def test_scores_scale_exactly_with_powers_of_two(means, variances, f_z, features, a, total):
    """EMCM(2^a μ, 2^a f, 2^b φ) = 2^(a+b) EMCM and EGL(2^a μ, 4^a σ², 2^a f, 4^b g) = 4^(a+b) EGL,
    bit for bit: scaling by a power of two is exact in binary floating point, so an evaluation
    free of overflow and underflow commutes with it over the whole exponent range. Inputs stay
    representable (|a|, |b| ≤ 1000 on O(10) dyadics ≥ 1/8) and so do the answers (|a + b| ≤ 400),
    while the naive intermediates ‖2^b φ‖², (2^a (μ − f))² leave the float64 range."""
    b = total - a
    assume(abs(b) <= 1000)
    for squared, power in ((False, 1), (True, 2)):
        base = np.asarray(egl.emcm(means, f_z, features, squared=squared))
        scaled = np.asarray(
            egl.emcm(np.ldexp(means, a), np.ldexp(f_z, a), np.ldexp(features, b), squared=squared)
        )
        np.testing.assert_array_equal(scaled, np.ldexp(base, power * total))
    a2, b2 = a // 2, b // 2  # σ² and g scale by 4^a2, 4^b2 and must stay representable
    grad_sq = np.sum(features**2, axis=1)
    base = np.asarray(egl.egl_closed_form(means, variances, f_z, grad_sq))
    scaled = np.asarray(
        egl.egl_closed_form(
            np.ldexp(means, a2),
            np.ldexp(variances, 2 * a2),
            np.ldexp(f_z, a2),
            np.ldexp(grad_sq, 2 * b2),
        )
    )
    np.testing.assert_array_equal(scaled, np.ldexp(base, 2 * (a2 + b2)))


def test_variance_terms_are_finite_where_the_answer_is_finite():
    # float32 near its largest value: Σ_k μ_k and Σ_k σ_k² overflow although the means, the
    # spread, the variances and the answers are representable. Reference: NumPy float64.
    big = np.float32(3.0e38)
    means = np.array([[big, 1.0], [big, 2.0]], np.float32)
    variances = np.array([[1.0, 1.0], [3.0, 1.0]], np.float32)
    got = egl.predictive_variance(means, variances)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [2.0, 1.25], rtol=1e-6)  # before: [inf, 1.25]
    large_variances = np.array([[3.0e38], [3.2e38]], np.float32)
    terms = egl.bias_variance(np.full((2, 1), big), large_variances, np.array([big]))
    expected = large_variances.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(terms.aleatoric, expected, rtol=1e-6)  # ~8 ulp of float32
    np.testing.assert_array_equal(terms.epistemic, [0.0])  # identical members
    np.testing.assert_array_equal(terms.squared_bias, [0.0])  # μ̄ = f_z exactly
