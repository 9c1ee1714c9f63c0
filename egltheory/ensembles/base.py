"""The interface every ensemble family shares, bootstrap resampling, and input validation.

A fitted ensemble is K Gaussian predictives ``q(y|x, θ_k) = N(μ_k(x), σ_k²(x))`` (members fitted on
bootstrap replicas of the labelled set) plus the full-data model ``f_z`` with explicit parameters,
so that Eq. 10's factor ``‖∇_θ f_z(x)‖²`` is a real gradient (THEORY.md, Eqs. 5-10):

    fitted = SomeEnsemble(n_members=4).fit(key, X [n, d], y [n])
    means, variances = fitted.predict(X)   # [K, N] each; variance of y (noise included)
    fitted.f_z(X)                          # [N]
    fitted.grad_sq_norm(X)                 # [N]  ‖∇_θ f_z(x)‖² by autodiff
    fitted.apply_fn(fitted.params, x)      # f_z as a pure function of (params, x [d]) -> scalar
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.validation import check_finite, check_members

ApplyFn = Callable[[Any, jax.Array], jax.Array]


@runtime_checkable
class FittedEnsemble(Protocol):
    """What ``fit`` returns: member predictives and the parametric full-data model ``f_z``."""

    n_members: int
    apply_fn: ApplyFn
    params: Any

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """Member means and predictive variances of y, ``[K, N]`` each."""
        ...

    def f_z(self, X) -> jax.Array:
        """Full-data model prediction ``[N]``."""
        ...

    def grad_sq_norm(self, X) -> jax.Array:
        """``‖∇_θ f_z(x)‖²`` per input, ``[N]``."""
        ...


def real_dtype():
    """float64 when JAX's x64 mode is on (the identities then hold to round-off), else float32
    with one warning saying how to turn it on (instead of one per float64 request)."""
    if jax.config.jax_enable_x64:
        return jnp.float64
    _warn_float32()
    return jnp.float32


@functools.cache
def _warn_float32() -> None:
    """Once per process."""
    warnings.warn(
        "egltheory.ensembles computes in float64 when jax_enable_x64 is on; it is off, so this "
        "runs in float32 (identities then hold to ~1e-6 only). Enable it first thing with "
        "jax.config.update('jax_enable_x64', True).",
        RuntimeWarning,
        stacklevel=4,
    )


def validate_inputs(name: str, X, n_features: int | None = None) -> jax.Array:
    """``X`` as a real ``[N, d]`` array (:func:`real_dtype`); ``ValueError`` on wrong rank, width
    or non-finite values."""
    X = jnp.asarray(X, dtype=real_dtype())
    if X.ndim != 2:
        raise ValueError(f"`{name}` must have shape [N, d] (2 axes), got shape {tuple(X.shape)}.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"`{name}` must have {n_features} feature columns (as in training), got {X.shape[1]}."
        )
    check_finite(name, X)
    return X


def validate_training_data(X, y, n_members: int, min_points: int) -> tuple[jax.Array, jax.Array]:
    """Check a labelled set for an ensemble fit and return ``(X [n, d], y [n])`` as real arrays.

    Raises ``ValueError`` for: ``K < 2``; ``X`` not 2-D; ``y`` not 1-D; mismatched lengths;
    NaN/inf in ``X`` or ``y``; fewer than ``min_points`` labelled points (each bootstrap fit needs
    at least that many).
    """
    check_members("n_members", n_members, minimum=2)
    X = validate_inputs("X", X)
    y = jnp.asarray(y, dtype=X.dtype)
    if y.ndim != 1:
        raise ValueError(f"`y` must have shape [n] (1 axis), got shape {tuple(y.shape)}.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"`X` and `y` must have the same number of rows, got {X.shape[0]} and {y.shape[0]}."
        )
    check_finite("y", y)
    if X.shape[0] < min_points:
        raise ValueError(
            f"`X`/`y` hold {X.shape[0]} labelled points; each of the K = {n_members} bootstrap "
            f"fits of this model needs at least {min_points}."
        )
    return X, y


def bootstrap_indices(key: jax.Array, n: int, n_members: int) -> jax.Array:
    """Bootstrap replicas: ``[K, n]`` integer indices drawn uniformly with replacement."""
    return jax.random.randint(key, (n_members, n), 0, n)


def bootstrap_counts(indices: jax.Array, n: int) -> jax.Array:
    """How often each of the ``n`` points occurs in each replica: ``[K, n]`` -> ``[K, n]``."""
    return jax.vmap(lambda idx: jnp.bincount(idx, length=n))(indices).astype(real_dtype())


def check_member_count(n_members: int) -> None:
    """``ValueError`` unless ``n_members`` is an integer >= 2 (an ensemble needs two members)."""
    if not isinstance(n_members, int | np.integer):
        raise ValueError(f"`n_members` must be an integer >= 2, got {n_members!r}.")
    check_members("n_members", int(n_members), minimum=2)


def f_z_batch(apply_fn: ApplyFn, params: Any, X: jax.Array) -> jax.Array:
    """``f_z`` over a batch: ``X [N, d]`` -> ``[N]``."""
    return jax.vmap(apply_fn, in_axes=(None, 0))(params, X)


class ParametricFullDataModel:
    """``f_z`` and Eq. 10's ``‖∇_θ f_z‖²`` from a fitted ensemble's ``apply_fn`` and ``params``.

    Shared by every family: the subclass provides ``apply_fn``, ``params`` and ``n_features``.
    """

    apply_fn: ApplyFn
    params: Any
    n_features: int

    def f_z(self, X) -> jax.Array:
        """Full-data model prediction ``[N]`` for ``X [N, d]``."""
        X = validate_inputs("X", X, self.n_features)
        return f_z_batch(self.apply_fn, self.params, X)

    def grad_sq_norm(self, X) -> jax.Array:
        """``‖∇_θ f_z(x)‖²`` by autodiff over all of f_z's parameters, ``[N]``."""
        from egltheory import egl

        X = validate_inputs("X", X, self.n_features)
        return egl.grad_sq_norm(self.apply_fn, self.params, X)
