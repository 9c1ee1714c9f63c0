"""Input validation that names the offending argument.

Shape checks are static and always run, including under ``jax.jit``. Value checks (NaN, inf,
negative variances) need concrete numbers, so they run when the argument is a concrete array
and are skipped for tracers: call the public functions once eagerly, or validate before you jit.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds numbers we can inspect now (not a tracer inside a transformation)."""
    return not isinstance(x, jax.core.Tracer)


def check_ndim(name: str, x, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``ndim`` axes; ``layout`` names them ('[K, N]')."""
    if np.ndim(x) != ndim:
        raise ValueError(
            f"`{name}` must have shape {layout} ({ndim} axes), got shape {tuple(np.shape(x))}."
        )


def check_same_shape(name: str, x, reference_name: str, reference) -> None:
    """Raise ``ValueError`` unless ``x`` and ``reference`` have the same shape."""
    if tuple(np.shape(x)) != tuple(np.shape(reference)):
        raise ValueError(
            f"`{name}` must have the same shape as `{reference_name}` "
            f"{tuple(np.shape(reference))}, got {tuple(np.shape(x))}."
        )


def check_shape(name: str, x, expected: tuple[int, ...], layout: str) -> None:
    """Raise ``ValueError`` unless ``x.shape == expected``."""
    if tuple(np.shape(x)) != tuple(expected):
        raise ValueError(
            f"`{name}` must have shape {layout} = {tuple(expected)}, got {tuple(np.shape(x))}."
        )


def check_finite(name: str, x) -> None:
    """Raise ``ValueError`` if a concrete ``x`` contains NaN or inf."""
    if not is_concrete(x):
        return
    values = np.asarray(x)
    if np.issubdtype(values.dtype, np.inexact) and not np.all(np.isfinite(values)):
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise ValueError(f"`{name}` must be finite, found {n_nan} NaN and {n_inf} inf values.")


def check_nonnegative(name: str, x) -> None:
    """Raise ``ValueError`` if a concrete ``x`` has NaN/inf or negative entries."""
    check_finite(name, x)
    if not is_concrete(x):
        return
    values = np.asarray(x)
    if np.any(values < 0):
        raise ValueError(
            f"`{name}` must be non-negative (variances / squared norms), "
            f"found minimum {values.min():.3g}."
        )


def check_positive_scalar(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not is_concrete(value):
        return
    value_np = np.asarray(value)
    if value_np.ndim != 0 or not np.isfinite(value_np) or value_np <= 0:
        raise ValueError(f"`{name}` must be a finite scalar > 0, got {value!r}.")


def check_members(name: str, n_members: int, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless the member axis has at least ``minimum`` entries."""
    if n_members < minimum:
        what = "an ensemble of at least" if minimum > 1 else "at least"
        raise ValueError(
            f"`{name}` needs {what} {minimum} member(s) on axis 0 (K), got K = {n_members}."
        )


def check_scalar_ensemble(means, variances=None, f_z=None) -> None:
    """Validate ensemble arrays: ``means [K, N]``, ``variances [K, N]`` ≥ 0, ``f_z [N]``."""
    check_ndim("means", means, 2, "[K, N]")
    check_members("means", np.shape(means)[0])
    check_finite("means", means)
    if variances is not None:
        check_same_shape("variances", variances, "means", means)
        check_nonnegative("variances", variances)
    if f_z is not None:
        check_shape("f_z", f_z, (np.shape(means)[1],), "[N]")
        check_finite("f_z", f_z)
