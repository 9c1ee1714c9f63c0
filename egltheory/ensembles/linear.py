"""Bootstrap ensemble of linear regressions with the classical predictive variance (Eqs. 6-7).

Member k is ordinary least squares (optionally ridge) on bootstrap replica ``X_k``; its predictive
for a new y is Gaussian with the statistical-linear-regression variance

    σ_k²(x) = s_k² (1 + x̃ᵀ (X̃_kᵀ X̃_k + λ I₀)⁻¹ x̃),   s_k² = RSS_k / (n - p),

where ``x̃ = [1, x]`` when ``intercept=True`` (p = d + 1), ``I₀`` is the identity with the intercept
entry zeroed (the intercept is not penalised). With ``ridge=0`` this is exactly the OLS prediction
interval variance (what statsmodels' ``get_prediction(...).se_obs²`` gives); with ``ridge>0`` it is
the usual plug-in approximation. ``f_z`` is OLS/ridge on all labelled data, ``params = θ_z [p]``,
``apply_fn(θ, x) = θ·x̃``, so ``‖∇_θ f_z(x)‖² = ‖x̃‖²`` (Eq. 7's ``‖x‖² + 1`` with an intercept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.ensembles.base import (
    ParametricFullDataModel,
    bootstrap_indices,
    check_member_count,
    validate_inputs,
    validate_training_data,
)


def _design(X: jax.Array, intercept: bool) -> jax.Array:
    """``X [N, d]`` -> ``X̃ [N, p]`` with a leading column of ones when ``intercept``."""
    if intercept:
        return jnp.concatenate([jnp.ones((X.shape[0], 1), X.dtype), X], axis=1)
    return X


def _penalty(p: int, ridge: float, intercept: bool) -> jax.Array:
    """``λ I₀ [p, p]``: ridge on every coefficient except the intercept."""
    diag = jnp.full((p,), ridge)
    if intercept:
        diag = diag.at[0].set(0.0)
    return jnp.diag(diag)


def _fit_least_squares(design: jax.Array, y: jax.Array, penalty: jax.Array):
    """(θ [p], (X̃ᵀX̃ + λI₀)⁻¹ [p, p], s² = RSS/(n - p)) for one data set ``design [n, p]``."""
    n, p = design.shape
    gram = design.T @ design + penalty
    inv_gram = jnp.linalg.inv(gram)
    theta = jnp.linalg.solve(gram, design.T @ y)
    residual = y - design @ theta
    noise_var = residual @ residual / (n - p)
    return theta, inv_gram, noise_var


@jax.jit
def _fit_all(design: jax.Array, y: jax.Array, indices: jax.Array, penalty: jax.Array):
    """Members on replicas ``indices [K, n]`` (vmapped) and θ_z on all data, one compiled call."""
    coefficients, inv_grams, noise_vars = jax.vmap(
        lambda idx: _fit_least_squares(design[idx], y[idx], penalty)
    )(indices)
    theta_z, _, _ = _fit_least_squares(design, y, penalty)
    return coefficients, inv_grams, noise_vars, theta_z


@jax.jit
def _predict_members(coefficients, inv_grams, noise_vars, design):
    """Means and Eq. 6 variances ``[K, N]`` for ``design [N, p]``."""
    means = coefficients @ design.T
    leverage = jnp.einsum("np,kpq,nq->kn", design, inv_grams, design)
    return means, noise_vars[:, None] * (1.0 + leverage)


def linear_apply_with_intercept(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``θ₀ + θ₁:·x`` for one input ``x [d]`` -> scalar."""
    return theta[0] + theta[1:] @ x


def linear_apply_without_intercept(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``θ·x`` for one input ``x [d]`` -> scalar."""
    return theta @ x


@dataclass(frozen=True, eq=False)
class FittedLinearEnsemble(ParametricFullDataModel):
    """K bootstrap least-squares fits and the full-data fit ``f_z``.

    coefficients: [K, p]; inv_grams: [K, p, p]; noise_vars: [K] (s_k²);
    params: θ_z [p]; indices: [K, n] bootstrap replicas used for the members.
    """

    coefficients: jax.Array
    inv_grams: jax.Array
    noise_vars: jax.Array
    params: jax.Array
    indices: jax.Array
    intercept: bool
    n_features: int
    n_members: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "n_members", int(self.coefficients.shape[0]))

    @property
    def apply_fn(self) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """``f_z`` as a pure, module-level (hashable, jit-cache friendly) function of (θ, x)."""
        return linear_apply_with_intercept if self.intercept else linear_apply_without_intercept

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """Member means and predictive variances of y (Eq. 6), ``[K, N]`` each."""
        X = validate_inputs("X", X, self.n_features)
        design = _design(X, self.intercept)
        return _predict_members(self.coefficients, self.inv_grams, self.noise_vars, design)


@dataclass(frozen=True)
class LinearEnsemble:
    """Bootstrap ensemble of linear regressions (Eqs. 6-7).

    n_members: K >= 2. ridge: λ >= 0 (0 = OLS). intercept: add an unpenalised intercept.
    """

    n_members: int = 4
    ridge: float = 0.0
    intercept: bool = True

    def __post_init__(self):
        check_member_count(self.n_members)
        if not np.isfinite(self.ridge) or self.ridge < 0:
            raise ValueError(f"`ridge` must be a finite number >= 0, got {self.ridge!r}.")

    def fit(self, key: jax.Array, X, y) -> FittedLinearEnsemble:
        """Fit K bootstrap members and ``f_z``; ``X [n, d]``, ``y [n]``."""
        n_features = int(np.shape(X)[1]) if np.ndim(X) == 2 else 0
        p = n_features + int(self.intercept)
        # s_k² = RSS/(n - p) needs n > p.
        X, y = validate_training_data(X, y, self.n_members, min_points=p + 1)
        n = X.shape[0]
        design = _design(X, self.intercept)
        penalty = _penalty(p, self.ridge, self.intercept)
        indices = bootstrap_indices(key, n, self.n_members)
        if self.ridge == 0.0:
            ranks = np.linalg.matrix_rank(np.asarray(design)[np.asarray(indices)])  # [K]
            if ranks.min() < p:
                raise ValueError(
                    f"A bootstrap replica of the {n} labelled points has rank {ranks.min()} < p = "
                    f"{p}: too few distinct labelled points for OLS; add data or set `ridge` > 0."
                )
        coefficients, inv_grams, noise_vars, theta_z = _fit_all(design, y, indices, penalty)
        return FittedLinearEnsemble(
            coefficients=coefficients,
            inv_grams=inv_grams,
            noise_vars=noise_vars,
            params=theta_z,
            indices=indices,
            intercept=self.intercept,
            n_features=n_features,
        )
