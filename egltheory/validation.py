"""Input validation that names the offending argument.

Shape checks are static and always run, including under ``jax.jit``. Value checks (NaN, inf,
negative variances) need concrete numbers, so they run when the argument is a concrete array
and are skipped for tracers: call the public functions once eagerly, or validate before you jit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
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
    # jnp.issubdtype: NumPy does not count bfloat16 / float8 as inexact and would skip them
    if jnp.issubdtype(values.dtype, jnp.inexact) and not np.all(np.isfinite(values)):
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise ValueError(f"`{name}` must be finite, found {n_nan} NaN and {n_inf} inf values.")


def check_nonnegative(name: str, x, what: str = "variances / squared norms") -> None:
    """Raise ``ValueError`` if a concrete ``x`` has NaN/inf or negative entries.

    ``what`` says in the message what the entries are (default: variances / squared norms).
    """
    check_finite(name, x)
    if not is_concrete(x):
        return
    values = np.asarray(x)
    if np.any(values < 0):
        raise ValueError(
            f"`{name}` must be non-negative ({what}), found minimum {values.min():.3g}."
        )


def check_positive_scalar(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not is_concrete(value):
        return
    value_np = np.asarray(value)
    if value_np.ndim != 0 or not np.isfinite(value_np) or value_np <= 0:
        raise ValueError(f"`{name}` must be a finite scalar > 0, got {value!r}.")


def check_count(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ≥ ``minimum`` (or ``None`` if allowed).

    Counts (iterations, chunk sizes, samples) are Python or NumPy integers; ``bool`` and floats,
    even integral ones, are refused so that ``max_iter=0.5`` or ``True`` cannot slip through.
    """
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool | np.bool_)
        or not isinstance(value, int | np.integer)
        or value < minimum
    ):
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}{none}, got {value!r}.")


# Round-off allowance of :func:`check_symmetric_psd`, in units of D · eps · ‖A‖_F (see there).
PSD_TOLERANCE_ULPS = 256


def psd_tolerance(matrices) -> np.ndarray:
    """Allowance ``256 · D · eps · ‖A‖_F`` for each ``[..., D, D]`` matrix → ``[...]`` (float64).

    ``eps`` is the machine epsilon of the array's own dtype (float64 for integer input). The
    Frobenius norm is taken after scaling by the largest |entry|, so it does not overflow.
    """
    a = np.asarray(matrices)
    eps = float(jnp.finfo(a.dtype).eps) if jnp.issubdtype(a.dtype, jnp.inexact) else 2.0**-52
    a = a.astype(np.float64)
    scale = np.max(np.abs(a), axis=(-2, -1), initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)[..., None, None]
    frobenius = np.sqrt(np.sum(np.square(a / safe), axis=(-2, -1))) * scale
    return PSD_TOLERANCE_ULPS * a.shape[-1] * eps * frobenius


def check_symmetric_psd(name: str, x, layout: str) -> None:
    """Raise ``ValueError`` unless every concrete ``x[..., :, :]`` is symmetric PSD up to round-off.

    For each ``D × D`` matrix A, with ``tol = 256 · D · eps · ‖A‖_F`` (:func:`psd_tolerance`):

        symmetric:  max |A − Aᵀ| ≤ tol,     PSD:  λ_min((A + Aᵀ)/2) ≥ −tol.

    Why this allowance: a backward-stable symmetric eigensolver returns the exact eigenvalues of
    A + E with ‖E‖₂ ≲ D · eps · ‖A‖₂, so a PSD matrix that is singular (a Gram matrix J Jᵀ with
    rank < D, a rank-deficient covariance) legitimately shows λ_min ≈ −D · eps · ‖A‖; forming A
    in floating point (J Jᵀ summed over P parameters, L Lᵀ, an asymmetric GEMM) adds errors of
    about √P · eps · ‖A‖ entrywise for random rounding. 256 covers √P up to P ≈ 6·10⁴ with D ≥ 1
    and still rejects any matrix whose defect is a visible fraction of its norm: 5.7e-14 · ‖A‖ for
    float64 and 3.1e-5 · ‖A‖ for float32 at D = 1 (times D). Eigenvalues are computed in float64.

    Shapes are not checked here; ``layout`` (e.g. ``"[K, N, D, D]"``) is quoted in the message.
    NaN/inf are refused first (:func:`check_finite`); tracers are skipped.
    """
    check_finite(name, x)
    if not is_concrete(x):
        return
    a = np.asarray(x)
    tol = psd_tolerance(a)
    a = a.astype(np.float64)
    lead = a.shape[:-2]
    n_matrices = math.prod(lead)

    def where(bad, score):
        index = np.unravel_index(np.argmax(np.where(bad, score, -np.inf)), lead) if lead else ()
        label = f"{name}[{', '.join(str(int(i)) for i in index)}]" if lead else f"`{name}`"
        return index, f"for {label} ({int(bad.sum())} of {n_matrices} matrices of {layout} fail)"

    asymmetry = np.max(np.abs(a - np.swapaxes(a, -1, -2)), axis=(-2, -1), initial=0.0)
    bad = asymmetry > tol
    if np.any(bad):
        index, at = where(bad, asymmetry - tol)
        raise ValueError(
            f"`{name}` must be symmetric: max |A − Aᵀ| = {asymmetry[index]:.3g} > tol = "
            f"{tol[index]:.3g} (256·D·eps·‖A‖_F) {at}."
        )
    scale = np.max(np.abs(a), axis=(-2, -1), initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)
    symmetric = (a + np.swapaxes(a, -1, -2)) / (2.0 * safe[..., None, None])
    smallest = np.linalg.eigvalsh(symmetric)[..., 0] * safe if a.shape[-1] else scale * 0.0
    bad = smallest < -tol
    if np.any(bad):
        index, at = where(bad, -smallest - tol)
        raise ValueError(
            f"`{name}` must be symmetric positive semi-definite: smallest eigenvalue "
            f"{smallest[index]:.3g} < −tol = {-tol[index]:.3g} (256·D·eps·‖A‖_F) {at}."
        )


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
