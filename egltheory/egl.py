"""Expected Gradient Length (EGL) for regression, and its link to Bayesian predictive uncertainty.

Equation numbers are those of Shukla et al., "Bayesian Uncertainty and Expected Gradient Length -
Regression: Two Sides Of The Same Coin?" (WACV 2022); see ``THEORY.md``.

Setting: an ensemble of K Gaussian predictives ``q(y | x, θ_k) = N(μ_k(x), σ_k²(x))`` and a model
``f_z`` with parameters ``θ_z`` trained on all labels. EGL (Eq. 5) is

    EGL(x) = (1/K) Σ_k E_{y ~ q_k} ‖∇_θ l(x, y, θ_z)‖².

For a squared-error loss ``l = (√c / 2) (y − f_z(x))²`` the expectation is exact in closed form
(Eq. 7 for a linear model, Eq. 10 in general):

    EGL(x) = c ‖∇_θ f_z(x)‖² (1/K) Σ_k [σ_k² + (μ_k − f_z)²].

``c = 1`` is the paper's form (loss ½(y − f)²); ``c = 4`` is the exact expectation for the loss
(y − f)². The constant never changes a ranking. The bracket splits exactly (identity 1) into the
Kendall–Gal predictive variance (Eq. 11) plus the squared bias (μ̄ − f_z)².

Conventions
-----------
* Ensemble arrays are member-major: ``means``, ``variances`` have shape ``[K, N]``.
* ``apply_fn(params, x_i)`` evaluates the model on ONE input (no batch axis) and returns a scalar
  (or, for the vector-output functions, an array of any shape, flattened to ``D`` outputs).
* All functions are pure and follow the dtype of their inputs; enable
  ``jax.config.update("jax_enable_x64", True)`` for float64.
* Shape checks always run; value checks (NaN, inf, negative variance, covariances and Gram
  matrices that are not symmetric positive semi-definite) run on concrete arrays and are skipped
  under ``jax.jit`` tracing (see :mod:`egltheory.validation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from egltheory.validation import (
    check_count,
    check_finite,
    check_members,
    check_ndim,
    check_nonnegative,
    check_positive_scalar,
    check_same_shape,
    check_scalar_ensemble,
    check_shape,
    check_symmetric_psd,
)

PyTree = Any
ApplyFn = Callable[[PyTree, Array], Array]
LossFn = Callable[[Array, Array], Array]

__all__ = [
    "BiasVariance",
    "MonteCarloEstimate",
    "bias_variance",
    "egl_classification",
    "egl_closed_form",
    "egl_monte_carlo",
    "egl_vector_closed_form",
    "egl_vector_monte_carlo",
    "egl_vector_scalar_factorisation",
    "emcm",
    "grad_sq_norm",
    "output_gram",
    "predictive_variance",
    "scaled_squared_error",
    "tree_sq_norm",
]


# --------------------------------------------------------------------------------------------
# Validation helpers shared by the public functions
# --------------------------------------------------------------------------------------------


def _check_vector_ensemble(means, covariances, f_z) -> None:
    check_ndim("means", means, 3, "[K, N, D]")
    check_members("means", means.shape[0])
    check_finite("means", means)
    k, n, d = means.shape
    if np.ndim(covariances) == 3:
        check_same_shape("covariances", covariances, "means", means)
        check_nonnegative("covariances", covariances)
    elif np.ndim(covariances) == 4:
        check_shape("covariances", covariances, (k, n, d, d), "[K, N, D, D]")
        check_symmetric_psd("covariances", covariances, "[K, N, D, D]")
    else:
        raise ValueError(
            "`covariances` must be diagonal variances [K, N, D] or full covariances "
            f"[K, N, D, D], got shape {tuple(np.shape(covariances))}."
        )
    check_shape("f_z", f_z, (n, d), "[N, D]")
    check_finite("f_z", f_z)


def _check_gram(gram, f_z_shape) -> None:
    n, d = f_z_shape
    check_shape("gram", gram, (n, d, d), "[N, D, D]")
    check_symmetric_psd("gram", gram, "[N, D, D]")


def tree_sq_norm(tree: PyTree) -> Array:
    """Σ over all leaves of the squared entries: ‖θ‖² of a parameter pytree."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


# --------------------------------------------------------------------------------------------
# Overflow-free products: every score is a product of squares and norms, so it is evaluated on
# power-of-two-scaled mantissas and rescaled once at the end. Scaling by 2^e is exact in binary
# floating point, so wherever nothing over- or underflows the operations round exactly as the
# naive formula's; elsewhere the result is finite whenever the answer is (an intermediate such
# as ‖φ‖² or (μ − f)² may leave the float range although the score does not).
# --------------------------------------------------------------------------------------------


def _max_exponent(x: Array, axis: int) -> Array:
    """Integer e with max |x| < 2^e along ``axis`` (frexp's exponent; 0 where all entries are 0)."""
    return jnp.frexp(jnp.max(jnp.abs(x), axis=axis))[1]


def _scaled_residuals(means: Float[Array, "K N"], f_z: Float[Array, " N"]):
    """μ_k − f_z = r · 2^e per input without overflow: ``(r [K, N], e [N])``, max_k |r| ∈ [½, 1).

    The subtraction is done on 2^{-e₀}-scaled operands (|·| ≤ 1), so it rounds exactly as the
    unscaled one would and cannot overflow; r is then renormalised by its own largest entry so
    that e reflects |μ_k − f_z|, not |f_z| (where all residuals are 0, r = 0).
    """
    e0 = jnp.maximum(_max_exponent(means, 0), jnp.frexp(jnp.abs(f_z))[1])
    diff = jnp.ldexp(means, -e0) - jnp.ldexp(f_z, -e0)
    e1 = _max_exponent(diff, 0)
    return jnp.ldexp(diff, -e1), e0 + e1


def _scaled_norm_sq(features: Float[Array, "N P"]):
    """‖φ_n‖² = m · 4^e without overflow or underflow: ``(m [N] ∈ [¼, P), e [N])``."""
    e = _max_exponent(features, -1)
    scaled = jnp.ldexp(features, -e[:, None])
    return jnp.sum(jnp.square(scaled), axis=-1), e


def _scaled_bracket(means, variances, f_z):
    """Bracket of Eq. 10, (1/K) Σ_k [σ_k² + (μ_k − f_z)²] = b · 2^e: ``(b [N] < 2, e [N])``.

    Both terms are brought to the larger of their two exponents; a term that is identically 0 does
    not choose the exponent (else a huge |f_z| with μ_k = f_z would flush the σ² term to 0).
    """
    r, e_r = _scaled_residuals(means, f_z)
    e_v = _max_exponent(variances, 0)
    has_r = jnp.any(r != 0, axis=0)
    has_v = jnp.any(variances != 0, axis=0)
    e = jnp.where(has_r & has_v, jnp.maximum(2 * e_r, e_v), jnp.where(has_r, 2 * e_r, e_v))
    terms = jnp.ldexp(variances, -e) + jnp.ldexp(jnp.square(r), 2 * e_r - e)
    return jnp.mean(terms, axis=0), e


def _map_inputs(fn: Callable, x: Array, batch_size: int | None) -> Array:
    """``vmap`` over the leading axis of ``x``; in chunks of ``batch_size`` to bound memory."""
    if batch_size is None or batch_size >= x.shape[0]:
        return jax.vmap(fn)(x)
    return jax.lax.map(fn, x, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Closed forms over ensemble statistics (Eqs. 2, 7, 10, 11)
# --------------------------------------------------------------------------------------------


class BiasVariance(NamedTuple):
    """The three terms of the bracket of Eq. 10 (identity 1 of THEORY.md), each ``[N]``.

    ``aleatoric + epistemic`` is the Kendall–Gal predictive variance (Eq. 11);
    ``total == (1/K) Σ_k [σ_k² + (μ_k − f_z)²]``.
    """

    aleatoric: Float[Array, " N"]  # (1/K) Σ_k σ_k²
    epistemic: Float[Array, " N"]  # (1/K) Σ_k (μ_k − μ̄)²
    squared_bias: Float[Array, " N"]  # (μ̄ − f_z)²

    @property
    def total(self) -> Float[Array, " N"]:
        return self.aleatoric + self.epistemic + self.squared_bias


def _member_mean(x: Float[Array, "K N"]) -> Float[Array, " N"]:
    """(1/K) Σ_k x_k on 2^{-e}-scaled values: no overflow of the sum when the mean is finite."""
    e = _max_exponent(x, 0)
    return jnp.ldexp(jnp.mean(jnp.ldexp(x, -e), axis=0), e)


def _member_spread(means: Float[Array, "K N"]) -> Float[Array, " N"]:
    """(1/K) Σ_k (μ_k − μ̄)², computed centred (no cancellation of Eq. 11's raw moments).

    Mean and mean square are taken on power-of-two-scaled values, so neither Σ_k μ_k nor
    (μ_k − μ̄)² overflows where the spread itself is finite.
    """
    centred = means - _member_mean(means)
    e = _max_exponent(centred, 0)
    return jnp.ldexp(jnp.mean(jnp.square(jnp.ldexp(centred, -e)), axis=0), 2 * e)


def predictive_variance(
    means: Float[Array, "K N"], variances: Float[Array, "K N"]
) -> Float[Array, " N"]:
    """Kendall–Gal predictive variance of y (Eq. 11) with T = K members.

    Var(y) = (1/K) Σ_k μ_k² − ((1/K) Σ_k μ_k)² + (1/K) Σ_k σ_k². The first two terms are evaluated
    in the algebraically equal centred form (1/K) Σ_k (μ_k − μ̄)², which avoids catastrophic
    cancellation when |μ̄| ≫ spread; member sums are taken on power-of-two-scaled values, so the
    result is finite wherever the variance is.

    Args:
        means: ``[K, N]`` member predictive means μ_k(x).
        variances: ``[K, N]`` member predictive variances σ_k²(x) ≥ 0 (of y, noise included).

    Returns:
        ``[N]`` predictive variance: epistemic spread + mean aleatoric variance.
    """
    means, variances = jnp.asarray(means), jnp.asarray(variances)
    check_scalar_ensemble(means, variances)
    return _member_spread(means) + _member_mean(variances)


def bias_variance(
    means: Float[Array, "K N"], variances: Float[Array, "K N"], f_z: Float[Array, " N"]
) -> BiasVariance:
    """Split the bracket of Eq. 10 into aleatoric, epistemic and squared-bias terms (identity 1).

    (1/K) Σ_k [σ_k² + (μ_k − f_z)²] = (1/K) Σ_k σ_k² + (1/K) Σ_k (μ_k − μ̄)² + (μ̄ − f_z)².

    Args:
        means: ``[K, N]`` member means. variances: ``[K, N]`` member variances.
        f_z: ``[N]`` prediction of the model trained on all labels.
    """
    means, variances, f_z = jnp.asarray(means), jnp.asarray(variances), jnp.asarray(f_z)
    check_scalar_ensemble(means, variances, f_z)
    return BiasVariance(
        aleatoric=_member_mean(variances),
        epistemic=_member_spread(means),
        squared_bias=jnp.square(_member_mean(means) - f_z),
    )


def egl_closed_form(
    means: Float[Array, "K N"],
    variances: Float[Array, "K N"],
    f_z: Float[Array, " N"],
    grad_sq_norm: Float[Array, " N"],
    c: float = 1.0,
) -> Float[Array, " N"]:
    """Closed-form ensemble EGL for squared error (Eq. 7 linear, Eq. 10 non-linear).

        EGL(x) = (c ‖∇_θ f_z(x)‖² / K) Σ_k [σ_k²(x) + (μ_k(x) − f_z(x))²].

    This is exactly Eq. 5 for the loss ``l = (√c/2)(y − f_z)²``: ``c = 1`` is the paper's form
    (l = ½(y − f)²), ``c = 4`` the exact expectation for l = (y − f)². For a linear model
    ``grad_sq_norm = ‖x‖²`` (+1 with an intercept) and this is Eq. 7.

    Args:
        means: ``[K, N]`` member means μ_k. variances: ``[K, N]`` member variances σ_k² ≥ 0.
        f_z: ``[N]`` full-data model prediction.
        grad_sq_norm: ``[N]`` ‖∇_θ f_z(x)‖² (see :func:`grad_sq_norm`).
        c: positive loss constant.

    Returns:
        ``[N]`` expected squared gradient length, finite whenever the exact value is: it is
        evaluated on power-of-two-scaled terms (rounding as the naive product does where that
        does not over/underflow; still finite e.g. for float32 residuals of 1e20 with
        ‖∇f‖² = 1e-30).
    """
    means, variances, f_z = jnp.asarray(means), jnp.asarray(variances), jnp.asarray(f_z)
    grad_sq_norm = jnp.asarray(grad_sq_norm)
    check_scalar_ensemble(means, variances, f_z)
    check_shape("grad_sq_norm", grad_sq_norm, (means.shape[1],), "[N]")
    check_nonnegative("grad_sq_norm", grad_sq_norm)
    check_positive_scalar("c", c)
    bracket, e_bracket = _scaled_bracket(means, variances, f_z)
    grad_mantissa, e_grad = jnp.frexp(grad_sq_norm)
    return jnp.ldexp(c * grad_mantissa * bracket, e_bracket + e_grad)


def emcm(
    means: Float[Array, "K N"],
    f_z: Float[Array, " N"],
    features: Float[Array, "N P"],
    squared: bool = False,
) -> Float[Array, " N"]:
    """Cai et al.'s Expected Model Change Maximisation (Eq. 2).

        squared=False:  (1/K) Σ_k ‖(f_z(x) − μ_k(x)) φ(x)‖      (Eq. 2 as printed)
        squared=True:   (1/K) Σ_k ‖(f_z(x) − μ_k(x)) φ(x)‖²     (Eq. 6/7 with one sample per
                                                                member at its mode, σ_k = 0, c = 1)

    Args:
        means: ``[K, N]`` member predictions f_k(x).
        f_z: ``[N]`` full-data model prediction.
        features: ``[N, P]`` φ(x): the input x for a linear model, ∇_θ f_z(x) in general.
        squared: square the norm inside the member average.

    Returns:
        ``[N]`` EMCM scores. The two forms rank identically when K = 1 (monotone map), but not in
        general for K > 1 (the power-mean inequality is strict unless all |f_k − f_z| are equal).
        Finite whenever the exact score is: |f_z − μ_k| and ‖φ‖ are taken on power-of-two-scaled
        values (‖φ‖² or (f_z − μ_k)² may overflow while the score does not); where nothing
        over/underflows it rounds as the naive formula does.
    """
    means, f_z, features = jnp.asarray(means), jnp.asarray(f_z), jnp.asarray(features)
    check_scalar_ensemble(means, f_z=f_z)
    check_ndim("features", features, 2, "[N, P]")
    check_shape("features", features, (means.shape[1], features.shape[1]), "[N, P]")
    if features.shape[1] == 0:
        raise ValueError("`features` must have at least one column (P ≥ 1), got shape [N, 0].")
    check_finite("features", features)
    residual, e_residual = _scaled_residuals(means, f_z)  # ‖a φ‖ = |a| ‖φ‖ for a scalar a
    norm_sq, e_norm = _scaled_norm_sq(features)  # sqrt(m · 4^e) = sqrt(m) · 2^e exactly
    if squared:
        score = jnp.mean(jnp.square(residual), axis=0) * norm_sq
        return jnp.ldexp(score, 2 * (e_residual + e_norm))
    score = jnp.mean(jnp.abs(residual), axis=0) * jnp.sqrt(norm_sq)
    return jnp.ldexp(score, e_residual + e_norm)


# --------------------------------------------------------------------------------------------
# Gradients of the model
# --------------------------------------------------------------------------------------------


def _check_scalar_model(apply_fn: ApplyFn, params: PyTree, x: Array) -> None:
    if np.ndim(x) < 1 or np.shape(x)[0] == 0:
        raise ValueError(f"`x` must be a non-empty batch [N, ...], got shape {np.shape(x)}.")
    check_finite("x", x)
    out = jax.eval_shape(apply_fn, params, x[0])
    if out.shape != ():
        raise ValueError(
            "`apply_fn(params, x_i)` must return a scalar for one input x_i (no batch axis), "
            f"got output shape {out.shape}. Use the vector-output functions for D > 1."
        )


@partial(jax.jit, static_argnames=("apply_fn", "batch_size"))
def _grad_sq_norm(apply_fn, params, x, batch_size):
    def one(x_i):
        return tree_sq_norm(jax.grad(apply_fn)(params, x_i))

    return _map_inputs(one, x, batch_size)


def grad_sq_norm(
    apply_fn: ApplyFn, params: PyTree, x: Float[Array, "N ..."], batch_size: int | None = 4096
) -> Float[Array, " N"]:
    """‖∇_θ f(x)‖² per input for a scalar-output model, the factor of Eq. 10.

    Per-example gradients by ``vmap(grad)`` (chunked over inputs with ``lax.map`` to bound the
    ``[batch, P]`` gradient memory). For a linear model ``f(x) = wᵀx + b`` this is ‖x‖² + 1.

    Args:
        apply_fn: ``apply_fn(params, x_i) -> scalar`` for one input.
        params: parameter pytree θ (everything in it is differentiated).
        x: ``[N, ...]`` inputs.
        batch_size: inputs per vectorised chunk; ``None`` vmaps all N at once.

    Returns:
        ``[N]`` squared gradient norms.
    """
    x = jnp.asarray(x)
    _check_scalar_model(apply_fn, params, x)
    check_count("batch_size", batch_size, allow_none=True)
    return _grad_sq_norm(apply_fn, params, x, batch_size)


def output_gram(
    apply_fn: ApplyFn, params: PyTree, x: Float[Array, "N ..."], batch_size: int | None = 256
) -> Float[Array, "N D D"]:
    """Output Gram matrix G(x) = J Jᵀ per input, J = ∂f(x)/∂θ of shape ``[D, P]`` (identity 4).

    The output of ``apply_fn(params, x_i)`` may have any shape; it is flattened to D entries.
    ``tr G = ‖∇_θ f‖²_F``; for D = 1, ``G = ‖∇_θ f‖²``. The Jacobian is formed leaf by leaf with
    reverse mode (D VJPs), so memory per chunk is ``batch_size · D · max_leaf_size``.

    Returns:
        ``[N, D, D]`` symmetric positive semi-definite Gram matrices.
    """
    x = jnp.asarray(x)
    if np.ndim(x) < 1 or np.shape(x)[0] == 0:
        raise ValueError(f"`x` must be a non-empty batch [N, ...], got shape {np.shape(x)}.")
    check_finite("x", x)
    check_count("batch_size", batch_size, allow_none=True)
    return _output_gram(apply_fn, params, x, batch_size)


@partial(jax.jit, static_argnames=("apply_fn", "batch_size"))
def _output_gram(apply_fn, params, x, batch_size):
    def one(x_i):
        jacobian = jax.jacrev(lambda p: jnp.ravel(apply_fn(p, x_i)))(params)
        flat = [leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(jacobian)]
        return sum(j @ j.T for j in flat)

    return _map_inputs(one, x, batch_size)


# --------------------------------------------------------------------------------------------
# Vector outputs (identity 4)
# --------------------------------------------------------------------------------------------


def _trace_gram_cov(gram: Array, covariances: Array) -> Array:
    """tr(G Σ_k) per member: gram ``[N, D, D]``, covariances ``[K, N, D(, D)]`` → ``[K, N]``."""
    if covariances.ndim == 3:  # diagonal Σ_k: tr(G diag(s)) = Σ_d G_dd s_d
        return jnp.einsum("ndd,knd->kn", gram, covariances)
    return jnp.einsum("nij,knji->kn", gram, covariances)


def egl_vector_closed_form(
    means: Float[Array, "K N D"],
    covariances: Float[Array, "K N D ..."],
    f_z: Float[Array, "N D"],
    gram: Float[Array, "N D D"],
    c: float = 1.0,
) -> Float[Array, " N"]:
    """Exact EGL for D outputs and the loss l = (√c/2) ‖y − f_z(x)‖² (identity 4 of THEORY.md).

        EGL(x) = (c/K) Σ_k [tr(G Σ_k) + (μ_k − f_z)ᵀ G (μ_k − f_z)],   G = J Jᵀ.

    Args:
        means: ``[K, N, D]`` member means. covariances: ``[K, N, D]`` diagonal variances ≥ 0 or
            ``[K, N, D, D]`` full covariances. f_z: ``[N, D]``. gram: ``[N, D, D]`` from
            :func:`output_gram`. c: positive loss constant (c = 4 for l = ‖y − f‖²).

    Raises:
        ValueError: when a concrete full covariance or ``gram`` is not symmetric positive
            semi-definite (a negative eigenvalue would make the "EGL" negative). Round-off is
            allowed: |A − Aᵀ| and −λ_min up to 256 · D · eps · ‖A‖_F per matrix, eps of the
            array's dtype (:func:`egltheory.validation.check_symmetric_psd` explains the bound).
    """
    means, covariances = jnp.asarray(means), jnp.asarray(covariances)
    f_z, gram = jnp.asarray(f_z), jnp.asarray(gram)
    _check_vector_ensemble(means, covariances, f_z)
    _check_gram(gram, f_z.shape)
    check_positive_scalar("c", c)
    residual = means - f_z  # [K, N, D]
    quadratic = jnp.einsum("kni,nij,knj->kn", residual, gram, residual)
    return c * jnp.mean(_trace_gram_cov(gram, covariances) + quadratic, axis=0)


def egl_vector_scalar_factorisation(
    means: Float[Array, "K N D"],
    covariances: Float[Array, "K N D ..."],
    f_z: Float[Array, "N D"],
    gram: Float[Array, "N D D"],
    c: float = 1.0,
) -> Float[Array, " N"]:
    """The naive transfer of Eq. 10 to D outputs: c ‖∇f‖² (1/K) Σ_k [tr Σ_k + ‖μ_k − f_z‖²] / D.

    Here ‖∇f‖² = tr G = ‖J‖_F². It equals :func:`egl_vector_closed_form` only when G ∝ I (all
    outputs equally and orthogonally sensitive to θ); otherwise it is biased. Provided so the gap
    can be measured, not as an estimator to use. Validates its arguments as
    :func:`egl_vector_closed_form` does (``gram`` finite, symmetric positive semi-definite).
    """
    means, covariances = jnp.asarray(means), jnp.asarray(covariances)
    f_z, gram = jnp.asarray(f_z), jnp.asarray(gram)
    _check_vector_ensemble(means, covariances, f_z)
    _check_gram(gram, f_z.shape)
    check_positive_scalar("c", c)
    d = f_z.shape[1]
    if covariances.ndim == 3:
        total_variance = jnp.sum(covariances, axis=-1)
    else:
        total_variance = jnp.trace(covariances, axis1=-2, axis2=-1)
    bracket = jnp.mean(total_variance + jnp.sum(jnp.square(means - f_z), axis=-1), axis=0)
    return c * jnp.trace(gram, axis1=-2, axis2=-1) * bracket / d


# --------------------------------------------------------------------------------------------
# Monte-Carlo: the definition (Eq. 5), as an independent check of the closed forms
# --------------------------------------------------------------------------------------------


class MonteCarloEstimate(NamedTuple):
    """Monte-Carlo estimate of Eq. 5 and its standard error, each ``[N]``."""

    estimate: Float[Array, " N"]
    stderr: Float[Array, " N"]


def scaled_squared_error(prediction: Array, y: Array, c: float | Array = 1.0) -> Array:
    """l(y, f) = (√c / 2) ‖y − f‖²: ½‖y − f‖² for c = 1, ‖y − f‖² for c = 4.

    ``prediction`` and ``y`` must have the same shape (checked statically, also under ``jit``):
    broadcasting [D] against [D, 1] would silently sum D² squared differences.
    """
    check_same_shape("y", y, "prediction", prediction)
    return 0.5 * jnp.sqrt(c) * jnp.sum(jnp.square(y - prediction))


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


@partial(jax.jit, static_argnames=("apply_fn", "loss_fn", "n_chunks", "chunk", "full_covariance"))
def _monte_carlo_moments(
    key, params, x, means, scales, c, apply_fn, loss_fn, n_chunks, chunk, full_covariance
):
    """Per-member mean and M2 of ‖∇_θ l(x, y, θ)‖² over ``n_chunks · chunk`` draws of y.

    means ``[K, N, D]``; scales ``[K, N, D]`` (standard deviations) or ``[K, N, D, D]`` (Cholesky
    factors). Moments are merged across chunks with Chan et al.'s pairwise update.
    """
    n_members, n_inputs, _ = means.shape

    def loss(p, x_i, y_i):
        prediction = jnp.reshape(apply_fn(p, x_i), y_i.shape)
        if loss_fn is None:
            return scaled_squared_error(prediction, y_i, c)
        return loss_fn(prediction, y_i)

    def sq_grad_norm(x_i, y_i):  # the definition: the real gradient of the loss w.r.t. θ
        return tree_sq_norm(jax.grad(loss)(params, x_i, y_i))

    per_input = jax.vmap(sq_grad_norm)  # over N: (x [N], y [N, D]) -> [N]
    per_sample = jax.vmap(jax.vmap(per_input, in_axes=(None, 0)), in_axes=(None, 0))

    def body(carry, chunk_index):
        count, mean, m2 = carry
        noise = jax.random.normal(jax.random.fold_in(key, chunk_index), (chunk, *means.shape))
        if full_covariance:
            y = means + jnp.einsum("knij,sknj->skni", scales, noise)
        else:
            y = means + scales * noise
        values = per_sample(x, y)  # [chunk, K, N]
        chunk_mean = jnp.mean(values, axis=0)
        chunk_m2 = jnp.sum(jnp.square(values - chunk_mean), axis=0)
        total = count + chunk
        delta = chunk_mean - mean
        mean = mean + delta * (chunk / total)
        m2 = m2 + chunk_m2 + jnp.square(delta) * (count * chunk / total)
        return (total, mean, m2), None

    zeros = jnp.zeros((n_members, n_inputs), dtype=means.dtype)
    init = (jnp.zeros((), dtype=means.dtype), zeros, zeros)
    (_, mean, m2), _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return mean, m2


def _monte_carlo(
    key, apply_fn, params, x, means, scales, n_samples, c, loss_fn, samples_per_chunk, full
):
    if not isinstance(n_samples, int | np.integer) or n_samples < 2:
        raise ValueError(f"`n_samples` must be an integer ≥ 2 per member, got {n_samples!r}.")
    if loss_fn is None:
        check_positive_scalar("c", c)
    check_count("samples_per_chunk", samples_per_chunk, allow_none=True)
    n_members, n_inputs = means.shape[:2]
    if samples_per_chunk is None:  # bound the [chunk·K·N, P] per-example gradients to ~2^24
        n_params = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
        samples_per_chunk = max(1, 2**24 // max(1, n_members * n_inputs * n_params))
    chunk = _largest_divisor_at_most(n_samples, samples_per_chunk)
    mean, m2 = _monte_carlo_moments(
        key,
        params,
        x,
        means,
        scales,
        jnp.asarray(c, dtype=means.dtype),
        apply_fn,
        loss_fn,
        n_samples // chunk,
        chunk,
        full,
    )
    # Members are sampled independently with equal counts (stratified): the estimator is the
    # mean of member means, and its variance is Σ_k Var_k / (S K²).
    member_variance = m2 / (n_samples - 1)
    estimate = jnp.mean(mean, axis=0)
    stderr = jnp.sqrt(jnp.sum(member_variance, axis=0) / n_samples) / n_members
    return MonteCarloEstimate(estimate=estimate, stderr=stderr)


def egl_monte_carlo(
    key: Array,
    apply_fn: ApplyFn,
    params: PyTree,
    x: Float[Array, "N ..."],
    means: Float[Array, "K N"],
    variances: Float[Array, "K N"],
    n_samples: int,
    c: float = 1.0,
    *,
    loss_fn: LossFn | None = None,
    samples_per_chunk: int | None = None,
) -> MonteCarloEstimate:
    """Ensemble EGL by its definition (Eq. 5), for a scalar-output model.

    For every input x_n and member k, draws ``n_samples`` targets y ~ N(μ_k, σ_k²), takes the real
    ``jax.grad`` of the loss w.r.t. θ at each (x_n, y), and averages ‖∇_θ l‖² over samples and
    members. It never uses the closed form, so it is an independent check of
    :func:`egl_closed_form`.

    Args:
        key: PRNG key; every draw derives from it.
        apply_fn: ``apply_fn(params, x_i) -> scalar``. params: θ_z.
        x: ``[N, ...]`` inputs. means, variances: ``[K, N]`` member predictives.
        n_samples: draws per member and input (≥ 2, for the standard error).
        c: constant of the default loss (√c/2)(y − f)²; ignored when ``loss_fn`` is given.
        loss_fn: optional ``loss_fn(prediction, y) -> scalar``.
        samples_per_chunk: draws vectorised at once (default: bounded by memory); the chunk used is
            the largest divisor of ``n_samples`` not above it.

    Returns:
        :class:`MonteCarloEstimate` with ``estimate`` and ``stderr``, each ``[N]``.
    """
    x, means, variances = jnp.asarray(x), jnp.asarray(means), jnp.asarray(variances)
    check_scalar_ensemble(means, variances)
    _check_scalar_model(apply_fn, params, x)
    if x.shape[0] != means.shape[1]:
        raise ValueError(f"`x` has {x.shape[0]} inputs but `means` has N = {means.shape[1]}.")
    return _monte_carlo(
        key,
        apply_fn,
        params,
        x,
        means[..., None],
        jnp.sqrt(variances)[..., None],
        n_samples,
        c,
        loss_fn,
        samples_per_chunk,
        False,
    )


def egl_vector_monte_carlo(
    key: Array,
    apply_fn: ApplyFn,
    params: PyTree,
    x: Float[Array, "N ..."],
    means: Float[Array, "K N D"],
    covariances: Float[Array, "K N D ..."],
    n_samples: int,
    c: float = 1.0,
    *,
    loss_fn: LossFn | None = None,
    samples_per_chunk: int | None = None,
) -> MonteCarloEstimate:
    """Ensemble EGL by its definition (Eq. 5) for a model with D outputs.

    Draws y ~ N(μ_k, Σ_k) (``covariances`` ``[K, N, D]`` diagonal or ``[K, N, D, D]`` positive
    definite, sampled through its Cholesky factor), differentiates the loss with ``jax.grad``, and
    averages ‖∇_θ l‖². The independent check of :func:`egl_vector_closed_form`.
    """
    x, means, covariances = jnp.asarray(x), jnp.asarray(means), jnp.asarray(covariances)
    f_z_shape = jnp.zeros(means.shape[1:], dtype=means.dtype)
    _check_vector_ensemble(means, covariances, f_z_shape)
    if np.ndim(x) < 1 or x.shape[0] != means.shape[1]:
        raise ValueError(f"`x` must be [N, ...] with N = {means.shape[1]}, got {np.shape(x)}.")
    check_finite("x", x)
    out = jax.eval_shape(apply_fn, params, x[0])
    if math.prod(out.shape) != means.shape[2]:
        raise ValueError(
            f"`apply_fn` returns {math.prod(out.shape)} outputs per input but `means` has "
            f"D = {means.shape[2]}."
        )
    full = covariances.ndim == 4
    scales = jnp.linalg.cholesky(covariances) if full else jnp.sqrt(covariances)
    if full and not bool(jnp.all(jnp.isfinite(scales))):
        raise ValueError("`covariances` must be symmetric positive definite (Cholesky failed).")
    return _monte_carlo(
        key, apply_fn, params, x, means, scales, n_samples, c, loss_fn, samples_per_chunk, full
    )


# --------------------------------------------------------------------------------------------
# Classification (Eq. 1), for completeness
# --------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("apply_fn", "squared", "batch_size"))
def _egl_classification(apply_fn, params, x, squared, batch_size):
    def one(x_i):
        logits, vjp = jax.vjp(lambda p: apply_fn(p, x_i), params)
        probabilities = jax.nn.softmax(logits)
        # ∇_logits of −log softmax(logits)[y] is p − e_y: one forward, C cotangents.
        cotangents = probabilities[None, :] - jnp.eye(logits.shape[0], dtype=logits.dtype)
        norms_sq = jax.vmap(lambda g: tree_sq_norm(vjp(g)[0]))(cotangents)
        lengths = norms_sq if squared else jnp.sqrt(norms_sq)
        return jnp.sum(probabilities * lengths)

    return _map_inputs(one, x, batch_size)


def egl_classification(
    apply_fn: ApplyFn,
    params: PyTree,
    x: Float[Array, "N ..."],
    squared: bool = False,
    batch_size: int | None = 1024,
) -> Float[Array, " N"]:
    """Settles & Craven's EGL for a softmax classifier (Eq. 1).

        EGL(x) = Σ_y p(y | x, θ) ‖∇_θ l(x, y, θ)‖,  l = −log softmax(f(x))_y.

    At a trained θ the gradient of the loss on the labelled set vanishes, so the gradient of the
    augmented objective L ∪ {(x, y)} reduces to the single-example gradient used here.

    Args:
        apply_fn: ``apply_fn(params, x_i) -> logits [C]``.
        squared: use ‖∇_θ l‖² instead of the printed unsquared norm.

    Returns:
        ``[N]`` expected gradient lengths.
    """
    x = jnp.asarray(x)
    if np.ndim(x) < 1 or np.shape(x)[0] == 0:
        raise ValueError(f"`x` must be a non-empty batch [N, ...], got shape {np.shape(x)}.")
    check_finite("x", x)
    out = jax.eval_shape(apply_fn, params, x[0])
    if len(out.shape) != 1 or out.shape[0] < 2:
        raise ValueError(f"`apply_fn` must return logits [C] with C ≥ 2, got shape {out.shape}.")
    check_count("batch_size", batch_size, allow_none=True)
    return _egl_classification(apply_fn, params, x, squared, batch_size)
