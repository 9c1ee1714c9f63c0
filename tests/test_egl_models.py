"""Model-level tests of egltheory.egl: gradients, Monte-Carlo vs closed form, vector outputs,
classification, transformations, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.flatten_util import ravel_pytree

from egltheory import egl

# ---------------------------------------------------------------------------------------------
# Small models
# ---------------------------------------------------------------------------------------------


def linear_model(params, x_i):
    return x_i @ params["w"] + params["b"]


def mlp(params, x_i):
    """Scalar-output tanh MLP: P = 3·8 + 8 + 8 + 1 = 41 parameters for 3 inputs."""
    hidden = jnp.tanh(x_i @ params["W1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def init_mlp(seed, n_in=3, n_hidden=8):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(size=(n_in, n_hidden)) / np.sqrt(n_in),
        "b1": rng.normal(size=n_hidden) * 0.1,
        "w2": rng.normal(size=n_hidden) / np.sqrt(n_hidden),
        "b2": np.float64(0.1),
    }


def vector_mlp(params, x_i):
    """D = 3 outputs with a shared hidden layer, so G = J Jᵀ is far from a multiple of I."""
    hidden = jnp.tanh(x_i @ params["W1"] + params["b1"])
    return hidden @ params["W2"] + params["b2"]


def init_vector_mlp(seed, n_in=3, n_hidden=5, n_out=3):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(size=(n_in, n_hidden)),
        "b1": rng.normal(size=n_hidden),
        "W2": rng.normal(size=(n_hidden, n_out)) * np.array([3.0, 1.0, 0.2]),
        "b2": np.zeros(n_out),
    }


def finite_difference_grad_sq_norm(apply_fn, params, x_i, h=1e-6):
    """‖∇_θ f(x)‖² by central differences in NumPy: O(h²) ≈ 1e-12 truncation, 1e-10 rounding."""
    flat, unravel = ravel_pytree(params)
    flat = np.asarray(flat)
    grad = np.empty_like(flat)
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = h
        grad[i] = (
            float(apply_fn(unravel(flat + step), x_i)) - float(apply_fn(unravel(flat - step), x_i))
        ) / (2 * h)
    return float(grad @ grad)


# ---------------------------------------------------------------------------------------------
# ‖∇_θ f‖²
# ---------------------------------------------------------------------------------------------


@given(
    arrays(np.float64, (5, 4), elements=st.floats(-10, 10, width=64)),
    arrays(np.float64, (4,), elements=st.floats(-10, 10, width=64)),
)
def test_grad_sq_norm_of_linear_model_is_norm_x_squared_plus_one(x, w):
    got = egl.grad_sq_norm(linear_model, {"w": w, "b": 0.5}, x)
    np.testing.assert_allclose(got, np.sum(x**2, axis=1) + 1.0, rtol=1e-12)
    no_intercept = egl.grad_sq_norm(lambda p, x_i: x_i @ p, w, x)
    np.testing.assert_allclose(no_intercept, np.sum(x**2, axis=1), rtol=1e-12, atol=1e-300)


def test_grad_sq_norm_of_mlp_matches_finite_differences():
    params = init_mlp(0)
    x = np.random.default_rng(1).normal(size=(4, 3))
    got = np.asarray(egl.grad_sq_norm(mlp, params, x))
    expected = np.array([finite_difference_grad_sq_norm(mlp, params, x_i) for x_i in x])
    np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_grad_sq_norm_chunked_equals_unchunked():
    params = init_mlp(2)
    x = np.random.default_rng(3).normal(size=(37, 3))
    np.testing.assert_allclose(
        egl.grad_sq_norm(mlp, params, x, batch_size=8),
        egl.grad_sq_norm(mlp, params, x, batch_size=None),
        rtol=1e-13,
    )


# ---------------------------------------------------------------------------------------------
# Monte-Carlo (Eq. 5) vs closed form (Eq. 10); z = (MC − closed) / stderr
# ---------------------------------------------------------------------------------------------

N_INPUTS = 6
N_MEMBERS = 4
MC_SAMPLES = 400  # per member and input: the stderr is itself estimated to ~±4%


def member_arrays(seed, n_members=N_MEMBERS, n_inputs=N_INPUTS, spread=1.0, shape=()):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=spread, size=(n_members, n_inputs, *shape))
    variances = rng.uniform(0.05, 1.0, size=(n_members, n_inputs, *shape))
    return means, variances


@settings(max_examples=8)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1.0, 4.0]))
def test_closed_form_agrees_with_monte_carlo_scalar_mlp(seed, c):
    params = init_mlp(seed)
    x = np.random.default_rng(seed + 1).normal(size=(N_INPUTS, 3))
    means, variances = member_arrays(seed + 2)
    f_z = np.asarray(jax.vmap(lambda x_i: mlp(params, x_i))(x))
    closed = egl.egl_closed_form(means, variances, f_z, egl.grad_sq_norm(mlp, params, x), c=c)
    mc = egl.egl_monte_carlo(jax.random.key(seed), mlp, params, x, means, variances, MC_SAMPLES, c)
    z = (np.asarray(mc.estimate) - np.asarray(closed)) / np.asarray(mc.stderr)
    assert np.max(np.abs(z)) < 4.0, z


def test_monte_carlo_check_can_fail_with_the_wrong_constant():
    """The MC check has power: c = 1 closed form vs the c = 4 loss is rejected by far."""
    params = init_mlp(7)
    x = np.random.default_rng(8).normal(size=(N_INPUTS, 3))
    means, variances = member_arrays(9)
    f_z = np.asarray(jax.vmap(lambda x_i: mlp(params, x_i))(x))
    wrong = egl.egl_closed_form(means, variances, f_z, egl.grad_sq_norm(mlp, params, x), c=1.0)
    mc = egl.egl_monte_carlo(jax.random.key(0), mlp, params, x, means, variances, MC_SAMPLES, 4.0)
    z = (np.asarray(mc.estimate) - np.asarray(wrong)) / np.asarray(mc.stderr)
    assert np.min(np.abs(z)) > 4.0, z


def test_monte_carlo_standard_error_shrinks_as_one_over_sqrt_n():
    params = init_mlp(3)
    x = np.random.default_rng(4).normal(size=(N_INPUTS, 3))
    means, variances = member_arrays(5)
    small = egl.egl_monte_carlo(jax.random.key(1), mlp, params, x, means, variances, 100)
    large = egl.egl_monte_carlo(jax.random.key(2), mlp, params, x, means, variances, 1600)
    ratio = np.asarray(small.stderr) / np.asarray(large.stderr)
    # expected 4 = √(1600/100); each stderr is estimated from the samples (±~10% at n = 100)
    assert np.all((ratio > 3.0) & (ratio < 5.3)), ratio


def test_monte_carlo_is_reproducible_from_its_key_and_independent_of_chunking():
    params = init_mlp(3)
    x = np.random.default_rng(4).normal(size=(3, 3))
    means, variances = member_arrays(5, n_inputs=3)
    run = lambda chunk: egl.egl_monte_carlo(
        jax.random.key(11), mlp, params, x, means, variances, 60, samples_per_chunk=chunk
    )
    first, again = run(60), run(60)
    np.testing.assert_array_equal(first.estimate, again.estimate)
    chunked = run(12)  # different draws (keys fold in the chunk index) but the same target
    z = (np.asarray(chunked.estimate) - np.asarray(first.estimate)) / np.hypot(
        np.asarray(first.stderr), np.asarray(chunked.stderr)
    )
    assert np.max(np.abs(z)) < 4.0


def test_monte_carlo_moments_match_numpy_on_the_same_draws():
    """Chan's chunked mean/variance merge equals numpy.mean/var of all draws (K = 1, linear)."""
    x = np.array([[1.0, 2.0]])
    params = {"w": np.array([0.3, -0.2]), "b": 0.1}
    means, variances = np.array([[0.7]]), np.array([[0.5]])
    n = 48
    mc = egl.egl_monte_carlo(
        jax.random.key(5), linear_model, params, x, means, variances, n, samples_per_chunk=8
    )
    f = float(x[0] @ params["w"] + params["b"])
    draws = []
    for chunk_index in range(n // 8):  # the documented sampling scheme: fold_in(key, chunk)
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(5), chunk_index), (8, 1, 1, 1))
        draws.append(np.asarray(noise).ravel())
    y = 0.7 + np.sqrt(0.5) * np.concatenate(draws)
    values = (y - f) ** 2 * (np.sum(x**2) + 1.0)  # c = 1: ‖∇ ½(y − f)²‖² = (y − f)² ‖∇f‖²
    np.testing.assert_allclose(mc.estimate, [values.mean()], rtol=1e-12)
    np.testing.assert_allclose(mc.stderr, [values.std(ddof=1) / np.sqrt(n)], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Vector outputs (identity 4)
# ---------------------------------------------------------------------------------------------


def test_output_gram_of_linear_vector_model_is_scaled_identity():
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    x = rng.normal(size=(5, 4))
    gram = egl.output_gram(lambda p, x_i: x_i @ p["W"] + p["b"], params, x)
    expected = (np.sum(x**2, axis=1) + 1.0)[:, None, None] * np.eye(3)
    np.testing.assert_allclose(gram, expected, rtol=1e-12, atol=1e-12)


def test_output_gram_for_one_output_is_grad_sq_norm():
    params = init_mlp(4)
    x = np.random.default_rng(5).normal(size=(6, 3))
    gram = egl.output_gram(lambda p, x_i: mlp(p, x_i)[None], params, x)
    np.testing.assert_allclose(gram[:, 0, 0], egl.grad_sq_norm(mlp, params, x), rtol=1e-12)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_vector_closed_form_agrees_with_monte_carlo(covariance):
    params = init_vector_mlp(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N_INPUTS, 3))
    means, variances = member_arrays(2, shape=(3,))
    if covariance == "full":
        factors = rng.normal(size=(N_MEMBERS, N_INPUTS, 3, 3)) * 0.5
        covariances = factors @ np.swapaxes(factors, -1, -2) + 0.1 * np.eye(3)
    else:
        covariances = variances
    f_z = np.asarray(jax.vmap(lambda x_i: vector_mlp(params, x_i))(x))
    gram = egl.output_gram(vector_mlp, params, x)
    closed = egl.egl_vector_closed_form(means, covariances, f_z, gram, c=4.0)
    mc = egl.egl_vector_monte_carlo(
        jax.random.key(3), vector_mlp, params, x, means, covariances, MC_SAMPLES, 4.0
    )
    z = (np.asarray(mc.estimate) - np.asarray(closed)) / np.asarray(mc.stderr)
    assert np.max(np.abs(z)) < 4.0, z


def test_vector_closed_form_matches_numpy_definition():
    rng = np.random.default_rng(6)
    k, n, d = 3, 4, 5
    means = rng.normal(size=(k, n, d))
    factors = rng.normal(size=(k, n, d, d))
    covariances = factors @ np.swapaxes(factors, -1, -2)
    f_z = rng.normal(size=(n, d))
    jac = rng.normal(size=(n, d, 7))
    gram = jac @ np.swapaxes(jac, -1, -2)
    expected = np.zeros(n)
    for i in range(n):
        for j in range(k):
            r = means[j, i] - f_z[i]
            expected[i] += np.trace(gram[i] @ covariances[j, i]) + r @ gram[i] @ r
    expected *= 2.5 / k
    got = egl.egl_vector_closed_form(means, covariances, f_z, gram, c=2.5)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    diagonal = np.abs(rng.normal(size=(k, n, d)))
    dense = np.einsum("knd,de->knde", diagonal, np.eye(d))
    np.testing.assert_allclose(
        egl.egl_vector_closed_form(means, diagonal, f_z, gram),
        egl.egl_vector_closed_form(means, dense, f_z, gram),
        rtol=1e-12,
    )


def test_scalar_factorisation_is_exact_only_when_gram_is_isotropic():
    rng = np.random.default_rng(7)
    k, n, d = 4, 6, 3
    means, variances = member_arrays(8, n_members=k, n_inputs=n, shape=(d,))
    f_z = rng.normal(size=(n, d))
    isotropic = rng.uniform(0.5, 2.0, size=n)[:, None, None] * np.eye(d)
    np.testing.assert_allclose(
        egl.egl_vector_scalar_factorisation(means, variances, f_z, isotropic),
        egl.egl_vector_closed_form(means, variances, f_z, isotropic),
        rtol=1e-12,
    )
    params = init_vector_mlp(0)
    x = rng.normal(size=(n, 3))
    gram = egl.output_gram(vector_mlp, params, x)
    exact = np.asarray(egl.egl_vector_closed_form(means, variances, f_z, gram))
    naive = np.asarray(egl.egl_vector_scalar_factorisation(means, variances, f_z, gram))
    assert np.max(np.abs(naive - exact) / exact) > 0.05  # an anisotropic G biases it


# ---------------------------------------------------------------------------------------------
# Classification (Eq. 1)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("squared", [False, True])
def test_classification_egl_matches_softmax_linear_closed_form(squared):
    """Logits W x: ∇_W CE(y) = (p − e_y) xᵀ, so ‖∇‖ = ‖p − e_y‖ ‖x‖ (NumPy, independent)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 3))
    x = rng.normal(size=(7, 3))
    got = egl.egl_classification(lambda w, x_i: w @ x_i, weights, x, squared=squared)
    logits = x @ weights.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    norms = np.linalg.norm(p[:, None, :] - np.eye(4)[None], axis=-1) * np.linalg.norm(
        x, axis=1, keepdims=True
    )
    lengths = norms**2 if squared else norms
    np.testing.assert_allclose(got, np.sum(p * lengths, axis=1), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# JAX transformations and dtypes
# ---------------------------------------------------------------------------------------------


def test_functions_jit_and_vmap_and_keep_float64():
    means, variances = member_arrays(0)
    f_z = means.mean(axis=0) + 0.3
    grad_sq = np.linspace(1.0, 2.0, N_INPUTS)
    eager = egl.egl_closed_form(means, variances, f_z, grad_sq)
    assert eager.dtype == jnp.float64
    np.testing.assert_allclose(
        jax.jit(egl.egl_closed_form)(means, variances, f_z, grad_sq), eager, rtol=1e-14
    )
    batched = jax.vmap(egl.predictive_variance)(
        np.stack([means, 2 * means]), np.stack([variances, variances])
    )
    np.testing.assert_allclose(batched[0], egl.predictive_variance(means, variances), rtol=1e-14)
    float32 = egl.predictive_variance(means.astype(np.float32), variances.astype(np.float32))
    assert float32.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# Clear errors naming the argument
# ---------------------------------------------------------------------------------------------

GOOD_MEANS = np.zeros((2, 3))
GOOD_VARIANCES = np.ones((2, 3))
GOOD_F = np.zeros(3)
GOOD_GRAD = np.ones(3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"means": np.zeros(3)}, r"`means` must have shape \[K, N\]"),
        ({"means": np.zeros((0, 3)), "variances": np.zeros((0, 3))}, r"K = 0"),
        ({"variances": np.ones((2, 4))}, r"`variances` must have the same shape as `means`"),
        ({"variances": -GOOD_VARIANCES}, r"`variances` must be non-negative"),
        ({"variances": np.full((2, 3), np.nan)}, r"`variances` must be finite, found 6 NaN"),
        ({"means": np.full((2, 3), np.inf)}, r"`means` must be finite, found 0 NaN and 6 inf"),
        ({"f_z": np.zeros(4)}, r"`f_z` must have shape \[N\]"),
        ({"f_z": np.array([0.0, np.nan, 0.0])}, r"`f_z` must be finite"),
        ({"grad_sq_norm": -GOOD_GRAD}, r"`grad_sq_norm` must be non-negative"),
        ({"grad_sq_norm": np.ones(2)}, r"`grad_sq_norm` must have shape \[N\]"),
        ({"c": 0.0}, r"`c` must be a finite scalar > 0"),
        ({"c": -4.0}, r"`c` must be a finite scalar > 0"),
    ],
)
def test_closed_form_rejects_bad_input(kwargs, message):
    arguments = {
        "means": GOOD_MEANS,
        "variances": GOOD_VARIANCES,
        "f_z": GOOD_F,
        "grad_sq_norm": GOOD_GRAD,
        "c": 1.0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        egl.egl_closed_form(**arguments)


def test_other_functions_reject_bad_input():
    with pytest.raises(ValueError, match=r"`variances` must be non-negative"):
        egl.predictive_variance(GOOD_MEANS, -GOOD_VARIANCES)
    with pytest.raises(ValueError, match=r"`f_z` must have shape"):
        egl.bias_variance(GOOD_MEANS, GOOD_VARIANCES, np.zeros(5))
    with pytest.raises(ValueError, match=r"`features` must have shape \[N, P\]"):
        egl.emcm(GOOD_MEANS, GOOD_F, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`features` must be finite"):
        egl.emcm(GOOD_MEANS, GOOD_F, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"must return a scalar"):
        egl.grad_sq_norm(lambda p, x_i: x_i * p, 1.0, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"`x` must be finite"):
        egl.grad_sq_norm(lambda p, x_i: x_i @ p, np.ones(2), np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"`x` must be a non-empty batch"):
        egl.grad_sq_norm(lambda p, x_i: x_i @ p, np.ones(2), np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"`n_samples` must be an integer ≥ 2"):
        egl.egl_monte_carlo(
            jax.random.key(0), linear_model, {"w": np.ones(2), "b": 0.0}, np.ones((3, 2)),
            GOOD_MEANS, GOOD_VARIANCES, 1,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"`x` has 4 inputs but `means` has N = 3"):
        egl.egl_monte_carlo(
            jax.random.key(0), linear_model, {"w": np.ones(2), "b": 0.0}, np.ones((4, 2)),
            GOOD_MEANS, GOOD_VARIANCES, 10,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"`covariances` must be diagonal variances"):
        egl.egl_vector_closed_form(
            np.zeros((2, 3, 2)), np.ones((2, 3)), np.zeros((3, 2)), np.ones((3, 2, 2))
        )
    with pytest.raises(ValueError, match=r"`gram` must have shape"):
        egl.egl_vector_closed_form(
            np.zeros((2, 3, 2)), np.ones((2, 3, 2)), np.zeros((3, 2)), np.ones((3, 3, 3))
        )
    with pytest.raises(ValueError, match=r"`covariances` must be symmetric positive semi-def"):
        egl.egl_vector_monte_carlo(
            jax.random.key(0), lambda p, x_i: p * x_i, np.ones(2), np.ones((1, 2)),
            np.zeros((1, 1, 2)), -np.ones((1, 1, 2, 2)), 4,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"symmetric positive definite \(Cholesky failed\)"):
        egl.egl_vector_monte_carlo(  # PSD but singular: sampling needs a Cholesky factor
            jax.random.key(0), lambda p, x_i: p * x_i, np.ones(2), np.ones((1, 2)),
            np.zeros((1, 1, 2)), np.diag([1.0, 0.0])[None, None], 4,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"logits \[C\] with C ≥ 2"):
        egl.egl_classification(lambda w, x_i: w @ x_i, np.ones(2), np.ones((3, 2)))


# ---------------------------------------------------------------------------------------------
# Vector outputs: covariances and G = J Jᵀ must be symmetric positive semi-definite
# ---------------------------------------------------------------------------------------------

K_V, N_V, D_V = 2, 3, 2
V_MEANS = np.zeros((K_V, N_V, D_V)) + np.array([1.0, -1.0])  # residual (1, −1) against f_z = 0
V_F = np.zeros((N_V, D_V))
V_COV = np.broadcast_to(np.eye(D_V), (K_V, N_V, D_V, D_V)).copy()
V_GRAM = np.broadcast_to(np.eye(D_V), (N_V, D_V, D_V)).copy()


def _with(array, index, value):
    out = array.copy()
    out[index] = value
    return out


VECTOR_BAD_INPUTS = [
    # eigenvalues (1, −3): without the check the closed form returned a negative EGL (−2 here)
    (
        {"covariances": _with(V_COV, (1, 2), [[1.0, 0.0], [0.0, -3.0]])},
        r"`covariances` must be symmetric positive semi-definite: smallest eigenvalue -3 "
        r"< −tol = .* for covariances\[1, 2\] \(1 of 6 matrices",
    ),
    # a Cholesky factor passed instead of L Lᵀ: asymmetric (its symmetric part is PD)
    (
        {"covariances": _with(V_COV, (0, 1), [[1.0, 0.0], [0.9, 1.0]])},
        r"`covariances` must be symmetric: max \|A − Aᵀ\| = 0.9 > tol .* covariances\[0, 1\]",
    ),
    ({"covariances": _with(V_COV, (0, 0, 0, 1), np.nan)}, r"`covariances` must be finite"),
    (
        {"gram": _with(V_GRAM, 1, -np.eye(D_V))},
        r"`gram` must be symmetric positive semi-definite: smallest eigenvalue -1 .* gram\[1\]",
    ),
    ({"gram": _with(V_GRAM, 2, [[1.0, 2.0], [0.0, 1.0]])}, r"`gram` must be symmetric"),
    ({"gram": _with(V_GRAM, (0, 0, 0), np.nan)}, r"`gram` must be finite, found 1 NaN"),
]


@pytest.mark.parametrize(
    "function", [egl.egl_vector_closed_form, egl.egl_vector_scalar_factorisation]
)
@pytest.mark.parametrize(("kwargs", "message"), VECTOR_BAD_INPUTS)
def test_vector_egl_rejects_non_psd_covariances_and_gram(function, kwargs, message):
    arguments = {"means": V_MEANS, "covariances": V_COV, "f_z": V_F, "gram": V_GRAM} | kwargs
    with pytest.raises(ValueError, match=message):
        function(**arguments)


def test_vector_egl_accepts_singular_psd_matrices_at_round_off_and_skips_checks_under_jit():
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        # Rank-1 G = J Jᵀ (D = 4, P = 1) and rank-2 covariances L Lᵀ, formed in the dtype: their
        # computed smallest eigenvalues are ±round-off and must be accepted.
        jac = rng.normal(size=(N_V, 4, 1)).astype(dtype)
        gram = jac @ np.swapaxes(jac, -1, -2)
        factors = rng.normal(size=(K_V, N_V, 4, 2)).astype(dtype)
        covariances = factors @ np.swapaxes(factors, -1, -2)
        means = rng.normal(size=(K_V, N_V, 4)).astype(dtype)
        f_z = rng.normal(size=(N_V, 4)).astype(dtype)
        got = egl.egl_vector_closed_form(means, covariances, f_z, gram)
        assert got.dtype == dtype and np.all(np.asarray(got) >= 0)
    # Under jit the arguments are tracers: value checks are skipped (documented), shapes are not.
    bad = _with(V_COV, (1, 2), [[1.0, 0.0], [0.0, -3.0]])
    traced = jax.jit(egl.egl_vector_closed_form)(V_MEANS, bad, V_F, V_GRAM)
    assert float(traced[2]) == pytest.approx(0.5 * ((2.0 + 2.0) + (-2.0 + 2.0)))


# ---------------------------------------------------------------------------------------------
# Same pattern elsewhere: empty feature sets, non-positive counts, silent broadcasting, bfloat16
# ---------------------------------------------------------------------------------------------


def test_emcm_refuses_an_empty_feature_vector():
    # P = 0: ‖φ‖ = 0 made every score 0, a plausible "no model change" instead of an error
    with pytest.raises(ValueError, match=r"`features` must have at least one column \(P ≥ 1\)"):
        egl.emcm(GOOD_MEANS, GOOD_F, np.zeros((3, 0)))


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_chunk_sizes_must_be_positive_integers(value):
    params = {"w": np.ones(2), "b": 0.0}
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer ≥ 1 or None"):
        egl.grad_sq_norm(linear_model, params, x, batch_size=value)
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer ≥ 1 or None"):
        egl.output_gram(lambda p, x_i: x_i * p["b"], params, x, batch_size=value)
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer ≥ 1 or None"):
        egl.egl_classification(lambda w, x_i: w @ x_i, np.ones((2, 2)), x, batch_size=value)
    with pytest.raises(ValueError, match=r"`samples_per_chunk` must be an integer ≥ 1 or None"):
        egl.egl_monte_carlo(
            jax.random.key(0), linear_model, params, x, GOOD_MEANS, GOOD_VARIANCES, 4,
            samples_per_chunk=value,
        )  # fmt: skip


def test_scaled_squared_error_refuses_shapes_that_would_broadcast():
    # prediction [3] against y [3, 1] used to broadcast to [3, 3] and sum 9 squared differences
    with pytest.raises(ValueError, match=r"`y` must have the same shape as `prediction` \(3,\)"):
        egl.scaled_squared_error(jnp.ones(3), jnp.zeros((3, 1)))
    assert float(egl.scaled_squared_error(jnp.ones(3), jnp.zeros(3), 4.0)) == 3.0


def test_value_checks_cover_bfloat16():
    # np.issubdtype(bfloat16, np.inexact) is False: NaN bfloat16 means used to pass unchecked
    means = jnp.array([[jnp.nan, 1.0]], jnp.bfloat16)
    with pytest.raises(ValueError, match=r"`means` must be finite, found 1 NaN"):
        egl.predictive_variance(means, jnp.ones((1, 2), jnp.bfloat16))
