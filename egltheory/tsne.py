"""t-SNE conditional probabilities from unlabelled queries to labelled references (Eq. 13).

For a query embedding ``e_i`` and reference embeddings ``e_j`` (the labelled set only),

    p_{j|i} = exp(-β_i d_ij) / Σ_k exp(-β_i d_ik),   d_ij = ‖e_i − e_j‖²,   β_i = 1 / (2 σ_i²),

with ``β_i`` chosen per row so that the row's perplexity equals the target. The solver

* works on all rows of a chunk at once (vectorised, ``jax.lax.while_loop`` until every row has
  converged) and maps over row chunks with ``jax.lax.map``, so a 20,000 × 5,000 problem needs
  ``chunk_size × N_r`` working memory plus the ``[N_q, N_r]`` output;
* is stable in log space: distances are shifted by the row minimum (which leaves p unchanged), so
  ``w_j = exp(-β d'_j) ∈ (0, 1]`` with at least one ``w_j = 1``; ``log Z ≥ 0`` never under/overflows
  and ``log p_j = -β d'_j − log Z``;
* is a safeguarded Newton iteration on ``t = log β``: ``H(t) = log Z + β E_p[d']`` (nats) decreases
  monotonically in ``t`` with ``dH/dt = −β² Var_p(d)``; a Newton step is taken when it stays inside
  the current bracket, otherwise the bracket is bisected (or extended by a factor 2 in β while it is
  still open, as scikit-learn does); ``solver="sklearn"`` follows scikit-learn's bisection path
  exactly instead. It stops when ``|H − H*| ≤ tol`` (``tol = 1e-5`` nats, the same
  criterion as ``sklearn.manifold._utils._binary_search_perplexity``), usually after 4–8 passes
  instead of the 20–60 bisection steps of scikit-learn.

Validity and scale (see :func:`conditional_probabilities` for the full contract):

* Rows that cannot reach the target are reported, never returned silently: H(β) falls from
  ln N_r (β → 0) to ln m (β → ∞), m = the number of references tied at the row's smallest distance,
  so a target below ln m (duplicate reference embeddings) is unreachable. Such rows are returned
  as the σ → 0 limit, uniform over the m tied references, and a :class:`PerplexityWarning` gives
  the number of rows and the achieved vs target perplexity; so do rows that did not converge
  within ``max_iter``. Bad arguments (perplexity above N_r, ``max_iter < 1``, ``tol`` not finite
  and > 0, NaN/inf inputs) raise ``ValueError``.
* The ``"newton"`` solver is scale-invariant: p_{j|i} does not depend on a global scale of the
  embeddings (β_i absorbs it), so embeddings are rescaled by a power of two (exact) and centred
  on the reference mean before their distances are formed, and each row of distances is rescaled
  by a power of two again. float32 embeddings near 1e30 or 1e-30 give the probabilities of the
  unscaled ones instead of NaN or uniform rows.

Entropy conventions (``convention``):

* ``"bits"`` — standard t-SNE: perplexity = 2^{H_bits} = e^{H_nats}; target ``H* = ln(perplexity)``
  nats. This is what scikit-learn computes.
* ``"nats-as-bits"`` — the EGL++ authors' public code: it computes the entropy in nats but compares
  it to ``log2(perplexity)``, i.e. it treats nats as bits. Target ``H* = log2(perplexity)`` nats, so
  the achieved (true) perplexity is ``e^{log2 P} = P^{1/ln 2} ≈ P^{1.4427}`` (≈ 75.3 for P = 20,
  ≈ 135 for P = 30). :func:`effective_perplexity` returns it. Kept only for comparison with the
  authors' numbers.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.validation import (
    check_count,
    check_finite,
    check_ndim,
    check_nonnegative,
    is_concrete,
)

__all__ = [
    "CONVENTIONS",
    "PerplexityWarning",
    "conditional_probabilities",
    "conditional_probabilities_from_sq_distances",
    "effective_perplexity",
    "perplexity_of",
    "squared_distances",
    "target_entropy",
    "top_k_neighbours",
]

CONVENTIONS = ("bits", "nats-as-bits")

# Per-row outcome of the calibration (internal): target reached, unreachable because more than
# e^{H*} references tie at the smallest distance, not converged within ``max_iter``, or (only
# solver="sklearn", whose β is in absolute units) distances that over/underflow the dtype.
REACHED, TIED, NOT_CONVERGED, OUT_OF_RANGE = 0, 1, 2, 3


class PerplexityWarning(RuntimeWarning):
    """Some rows of Eq. 13 could not be calibrated to the target perplexity (see the message)."""


def target_entropy(perplexity: float, convention: str = "bits") -> float:
    """Entropy in nats that the bisection matches for ``perplexity`` under ``convention``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"`convention` must be one of {CONVENTIONS}, got {convention!r}.")
    if not (np.isfinite(perplexity) and perplexity >= 1.0):
        raise ValueError(f"`perplexity` must be a finite number ≥ 1, got {perplexity!r}.")
    return math.log(perplexity) if convention == "bits" else math.log2(perplexity)


def effective_perplexity(perplexity: float, convention: str = "bits") -> float:
    """True perplexity e^{H_nats} reached under ``convention`` (= P for "bits", P^{1/ln 2} else)."""
    return math.exp(target_entropy(perplexity, convention))


def _max_exponent(x: jax.Array) -> jax.Array:
    """Integer e with max |x| < 2^e over all entries (0 for an all-zero or empty array)."""
    return jnp.frexp(jnp.max(jnp.abs(x), initial=0.0))[1]


def _normalise_embeddings(query: jax.Array, reference: jax.Array):
    """``(q, r, e)``: both rescaled by one power of two and centred on the reference mean.

    ‖query_i − reference_j‖² = 4^e ‖q_i − r_j‖² with max |q|, |r| < 1, so the Gram form below
    neither overflows (float32 embeddings near 1e20 square past 3.4e38), underflows (near 1e-20)
    nor cancels catastrophically (a large common offset). Powers of two scale exactly.
    """
    e0 = jnp.maximum(_max_exponent(query), _max_exponent(reference))
    q, r = jnp.ldexp(query, -e0), jnp.ldexp(reference, -e0)
    centre = jnp.mean(r, axis=0)
    q, r = q - centre, r - centre
    e1 = jnp.maximum(_max_exponent(q), _max_exponent(r))
    return jnp.ldexp(q, -e1), jnp.ldexp(r, -e1), e0 + e1


def _gram_sq_distances(query: jax.Array, reference: jax.Array) -> jax.Array:
    """‖q_i − r_j‖² in Gram form, clipped at 0 against round-off (inputs of order 1)."""
    qq = jnp.sum(query * query, axis=1)[:, None]
    rr = jnp.sum(reference * reference, axis=1)[None, :]
    return jnp.maximum(qq + rr - 2.0 * query @ reference.T, 0.0)


def squared_distances(query: jax.Array, reference: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``[Nq, Nr]`` between ``query [Nq, E]`` and ``reference [Nr, E]``.

    Gram form on power-of-two-rescaled, reference-centred embeddings (exact scaling), rescaled
    back: finite wherever the distances are, and free of the cancellation of ‖q‖² + ‖r‖² − 2qᵀr
    when the embeddings share a large offset. Clipped at 0 against round-off.
    """
    check_ndim("query", query, 2, "[Nq, E]")
    check_ndim("reference", reference, 2, "[Nr, E]")
    _check_embedding_sizes(query, reference)
    q, r, e = _normalise_embeddings(jnp.asarray(query), jnp.asarray(reference))
    return jnp.ldexp(_gram_sq_distances(q, r), 2 * e)


def perplexity_of(probs: jax.Array) -> jax.Array:
    """Perplexity e^{H_nats} = 2^{H_bits} of each row of ``probs [N, M]`` → ``[N]``.

    Concrete ``probs`` must be finite and ≥ 0 (``ValueError`` otherwise); under ``jax.jit`` a NaN
    or negative entry makes its row NaN instead of being skipped as a zero.
    """
    check_nonnegative("probs", probs, "probabilities")
    probs = jnp.asarray(probs)
    plogp = jnp.where(probs == 0, 0.0, probs * jnp.log(jnp.where(probs == 0, 1.0, probs)))
    return jnp.exp(-jnp.sum(plogp, axis=-1))


def _row_stats(beta: jax.Array, d: jax.Array):
    """Row entropies (nats) and dH/d log β for precisions ``beta [B]``, shifted ``d [B, M]``."""
    logw = -beta[:, None] * d
    w = jnp.exp(logw)
    z = jnp.sum(w, axis=1)
    mean_d = jnp.sum(w * d, axis=1) / z
    mean_d2 = jnp.sum(w * d * d, axis=1) / z
    var_d = jnp.maximum(mean_d2 - mean_d**2, 0.0)
    entropy = jnp.log(z) + beta * mean_d
    d_entropy = -(beta**2) * var_d  # dH / d log β
    return entropy, d_entropy


def _solve_chunk(
    d: jax.Array, target: float, tol: float, max_iter: int, solver: str = "newton"
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Calibrate one row chunk of squared distances ``d [B, M]``.

    Returns ``(probs [B, M], entropy [B] in nats, status [B])`` with status :data:`REACHED`,
    :data:`TIED` (more than e^{H*} references tie at the row minimum: the row is their uniform
    σ → 0 limit, entropy ln m) or :data:`NOT_CONVERGED` (``max_iter`` passes ran out).

    The iterate ``x`` is ``log β`` for ``solver="newton"`` and ``β`` itself for ``"sklearn"`` (so
    that the bisection arithmetic is bit-for-bit scikit-learn's). Newton rows are first rescaled
    by a power of two (max d' ∈ [½, 1)): β absorbs the scale, so nothing overflows.
    """
    d = d - jnp.min(d, axis=1, keepdims=True)
    n = d.shape[0]
    newton_mode = solver == "newton"
    ties = d == 0
    n_ties = jnp.sum(ties, axis=1).astype(d.dtype)
    # H(β) ≥ ln m for all β: a target below ln m − tol cannot be met (duplicate references).
    tied = jnp.log(n_ties) > target + tol
    if newton_mode:
        d = jnp.ldexp(d, -jnp.frexp(jnp.max(d, axis=1))[1][:, None])
        # Start where β·mean(d') = 1 (scale-free).
        mean_d = jnp.mean(d, axis=1)
        x0 = -jnp.log(jnp.where(mean_d > 0, mean_d, 1.0))
    else:  # scikit-learn's path: β = 1, doubled/halved while open, arithmetic midpoint after.
        x0 = jnp.ones((n,), d.dtype)
    lo0 = jnp.full((n,), -jnp.inf, d.dtype)  # brackets on x, ±inf while open
    hi0 = jnp.full((n,), jnp.inf, d.dtype)
    log2 = jnp.log(jnp.asarray(2.0, d.dtype))

    def cond(state):
        it, _, _, _, done = state
        return (it < max_iter) & ~jnp.all(done)

    def body(state):
        it, x, lo, hi, done = state
        beta = jnp.exp(x) if newton_mode else x
        h, dh = _row_stats(beta, d)
        diff = h - target
        converged = done | (jnp.abs(diff) <= tol)
        # H too large -> need larger β -> raise lower bracket.
        lo = jnp.where(diff > 0, x, lo)
        hi = jnp.where(diff > 0, hi, x)
        if newton_mode:
            grow, shrink = x + log2, x - log2
        else:
            grow, shrink = x * 2.0, x / 2.0
        mid = (lo + hi) / 2.0
        x_new = jnp.where(jnp.isinf(hi), grow, jnp.where(jnp.isinf(lo), shrink, mid))
        if newton_mode:
            newton = x - diff / jnp.where(dh < 0, dh, -jnp.inf)
            ok = (dh < 0) & (newton > lo) & (newton < hi) & jnp.isfinite(newton)
            x_new = jnp.where(ok, newton, x_new)
        x = jnp.where(converged, x, x_new)
        return it + 1, x, lo, hi, converged

    init = (jnp.asarray(0), x0, lo0, hi0, tied)
    _, x, _, _, done = jax.lax.while_loop(cond, body, init)
    beta = jnp.exp(x) if newton_mode else x
    entropy, _ = _row_stats(beta, d)
    logw = -beta[:, None] * d
    probs = jnp.exp(logw - jax.nn.logsumexp(logw, axis=1, keepdims=True))
    probs = jnp.where(tied[:, None], ties / n_ties[:, None], probs)
    entropy = jnp.where(tied, jnp.log(n_ties), entropy)
    reached = done | (jnp.abs(entropy - target) <= tol)
    status = jnp.where(tied, TIED, jnp.where(reached, REACHED, NOT_CONVERGED))
    return probs, entropy, status


def _map_row_chunks(solve, rows: jax.Array, chunk_size: int):
    """``solve`` over zero-padded chunks of ``chunk_size`` rows; outputs cut back to N rows."""
    n = rows.shape[0]
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    padded = jnp.pad(rows, ((0, pad), (0, 0))) if pad else rows  # no copy when chunks tile N
    out = jax.lax.map(solve, padded.reshape(n_chunks, chunk_size, rows.shape[1]))
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk_size, *o.shape[2:])[:n], out)


@partial(jax.jit, static_argnames=("max_iter", "chunk_size", "solver"))
def _solve_from_sq(sq, target, tol, max_iter, chunk_size, solver):
    """``(probs [Nq, Nr], entropy [Nq], status [Nq])`` from squared distances."""
    solve = lambda c: _solve_chunk(c, target, tol, max_iter, solver)
    return _map_row_chunks(solve, sq, chunk_size)


@partial(jax.jit, static_argnames=("max_iter", "chunk_size", "solver"))
def _solve_from_embeddings(query, reference, target, tol, max_iter, chunk_size, solver):
    """``(probs [Nq, Nr], entropy [Nq], status [Nq])`` from embeddings (normalised first)."""
    q, r, e = _normalise_embeddings(query, reference)

    def solve(qc):
        d = _gram_sq_distances(qc, r)
        if solver == "newton":
            return _solve_chunk(d, target, tol, max_iter, solver)
        # scikit-learn's path is in absolute units of β: undo the scale, and flag rows whose
        # distances then overflow or all underflow to 0 (the dtype cannot hold that path).
        d_abs = jnp.ldexp(d, 2 * e)
        lost = jnp.any(jnp.isinf(d_abs), axis=1) | (
            (jnp.max(d_abs, axis=1) == 0) & (jnp.max(d, axis=1) > 0)
        )
        probs, entropy, status = _solve_chunk(d_abs, target, tol, max_iter, solver)
        return probs, entropy, jnp.where(lost, OUT_OF_RANGE, status)

    return _map_row_chunks(solve, q, chunk_size)


@partial(jax.jit, static_argnames=("max_iter", "chunk_size", "solver"))
def _probabilities_from_sq(sq, target, tol, max_iter, chunk_size, solver):
    return _solve_from_sq(sq, target, tol, max_iter, chunk_size, solver)[0]


@partial(jax.jit, static_argnames=("max_iter", "chunk_size", "solver"))
def _probabilities_from_embeddings(query, reference, target, tol, max_iter, chunk_size, solver):
    """Probabilities only (no per-row report), for callers that run inside a transformation."""
    return _solve_from_embeddings(query, reference, target, tol, max_iter, chunk_size, solver)[0]


SOLVERS = ("newton", "sklearn")


def _check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
    return solver


@jax.jit
def _count_invalid(sq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(number of NaN/inf entries, number of negative entries) of ``sq`` in one pass."""
    return jnp.sum(~jnp.isfinite(sq)), jnp.sum(sq < 0)


def _balanced_chunk(n: int, chunk_size: int) -> int:
    """Chunk ≤ ``chunk_size`` with the fewest chunks and the least padding (20,000/1024 → 1000)."""
    n_chunks = -(-n // min(int(chunk_size), n))
    return -(-n // n_chunks)


def _check_common(n_ref: int, perplexity: float, convention: str, tol: float, chunk_size: int):
    target = target_entropy(perplexity, convention)
    if n_ref < 1:
        raise ValueError("`reference` must contain at least one labelled embedding, got 0 rows.")
    effective = effective_perplexity(perplexity, convention)
    if effective > n_ref:
        raise ValueError(
            f"`perplexity` {perplexity} (effective {effective:.4g}"
            f" under convention {convention!r}) exceeds the number of reference rows {n_ref}; "
            "no σ reaches it."
        )
    if not (np.isfinite(tol) and tol > 0):  # tol = inf would accept any β: rows uncalibrated
        raise ValueError(f"`tol` must be a finite number > 0 (nats), got {tol!r}.")
    check_count("chunk_size", chunk_size)
    return target


def _check_embedding_sizes(query, reference) -> None:
    if np.shape(query)[1] != np.shape(reference)[1]:
        raise ValueError(
            f"`query` and `reference` must share the embedding size E, got "
            f"{np.shape(query)[1]} and {np.shape(reference)[1]}."
        )


def _report_rows(status, entropy, perplexity, convention, max_iter, solver, dtype) -> None:
    """Raise on non-finite rows; warn (:class:`PerplexityWarning`) about rows off the target."""
    if not (is_concrete(status) and is_concrete(entropy)):
        return  # inside a transformation: nothing to inspect
    status, entropy = np.asarray(status), np.asarray(entropy)
    n_bad = int(np.sum((status == OUT_OF_RANGE) | ~np.isfinite(entropy)))
    if n_bad:
        why = (
            "solver='sklearn' follows scikit-learn's path in absolute units of β (β₀ = 1), and "
            "these squared distances overflow or underflow the dtype. Use solver='newton' "
            "(scale-invariant) or float64."
            if solver == "sklearn"
            else "the scale-invariant solver should not produce this: please report the input."
        )
        raise ValueError(
            f"{n_bad} of {status.size} rows cannot be calibrated in {np.dtype(dtype).name}: " + why
        )
    off = status != REACHED
    if not np.any(off):
        return
    achieved = np.exp(entropy[off])
    effective = effective_perplexity(perplexity, convention)
    target = (
        f"{perplexity:.4g}"
        if convention == "bits"
        else (f"{effective:.4g} (perplexity {perplexity:.4g} under {convention!r})")
    )
    message = (
        f"{int(off.sum())} of {status.size} rows did not reach the target perplexity {target}: "
        f"achieved perplexity {achieved.min():.4g} to {achieved.max():.4g}."
    )
    n_tied = int(np.sum(status == TIED))
    if n_tied:
        message += (
            f" {n_tied} row(s) have more references tied at their smallest distance than the "
            "perplexity (duplicate reference embeddings?): no σ brings the perplexity below the "
            "number of tied references, so these rows are the σ → 0 limit, uniform over them."
        )
    n_slow = int(np.sum(status == NOT_CONVERGED))
    if n_slow:
        message += (
            f" {n_slow} row(s) did not converge within max_iter = {max_iter} passes: raise "
            "`max_iter` (or `tol`)."
        )
    warnings.warn(message, PerplexityWarning, stacklevel=3)


def conditional_probabilities_from_sq_distances(
    sq_distances: jax.Array,
    perplexity: float = 30.0,
    convention: str = "bits",
    *,
    chunk_size: int = 1024,
    tol: float = 1e-5,
    max_iter: int = 100,
    solver: str = "newton",
) -> jax.Array:
    """Eq. 13 from precomputed squared distances ``[Nq, Nr]`` → probabilities ``[Nq, Nr]``.

    ``tol`` is the tolerance on the row entropy in nats (scikit-learn's criterion). Errors and
    warnings as :func:`conditional_probabilities` (a row of equal distances cannot reach a
    perplexity below N_r: it is uniform, with a :class:`PerplexityWarning`). With ``"newton"``
    the result does not depend on a global scale of ``sq_distances``.
    """
    check_ndim("sq_distances", sq_distances, 2, "[Nq, Nr]")
    sq = jnp.asarray(sq_distances)
    if not jnp.issubdtype(sq.dtype, jnp.floating):
        sq = sq.astype(jnp.result_type(float))
    if is_concrete(sq):
        n_bad, n_negative = (int(v) for v in _count_invalid(sq))  # one fused pass
        if n_bad:
            raise ValueError(f"`sq_distances` must be finite, found {n_bad} NaN/inf values.")
        if n_negative:
            raise ValueError(
                f"`sq_distances` must be non-negative squared distances, found {n_negative} < 0."
            )
    target = _check_common(sq.shape[1], perplexity, convention, tol, chunk_size)
    check_count("max_iter", max_iter)
    _check_solver(solver)
    if sq.shape[0] == 0:
        return jnp.zeros(sq.shape, sq.dtype)
    chunk = _balanced_chunk(sq.shape[0], chunk_size)
    probs, entropy, status = _solve_from_sq(
        sq, float(target), float(tol), int(max_iter), chunk, solver
    )
    _report_rows(status, entropy, perplexity, convention, max_iter, solver, sq.dtype)
    return probs


def conditional_probabilities(
    query: jax.Array,
    reference: jax.Array,
    perplexity: float = 30.0,
    convention: str = "bits",
    chunk_size: int = 1024,
    *,
    tol: float = 1e-5,
    max_iter: int = 100,
    solver: str = "newton",
) -> jax.Array:
    """t-SNE conditionals p_{j|i} of reference j given query i (Eq. 13).

    Args:
      query: ``[Nq, E]`` unlabelled embeddings.
      reference: ``[Nr, E]`` labelled embeddings (the only candidates j, k of Eq. 13).
      perplexity: target perplexity (20 in the authors' code, 30 scikit-learn's default).
      convention: ``"bits"`` (standard) or ``"nats-as-bits"`` (authors' code); see module doc.
      chunk_size: query rows solved together; memory ≈ a few × ``chunk_size × Nr`` floats.
      tol: stopping tolerance on each row's entropy, in nats.
      max_iter: cap on solver passes per chunk.
      solver: ``"newton"`` (safeguarded Newton, fast, scale-invariant) or ``"sklearn"``
        (scikit-learn's exact bisection path: β₀ = 1, ×2 / ÷2 while unbracketed, arithmetic
        midpoint after; it returns scikit-learn's numbers to float round-off, and like
        scikit-learn it works in absolute units of β, so it is not scale-invariant).

    Returns:
      ``[Nq, Nr]`` rows summing to 1.

    Raises:
      ValueError: the caller's bad input: wrong shapes, NaN/inf embeddings, no references, a
        perplexity above N_r (effective, under ``convention``), ``tol`` not finite and > 0,
        ``max_iter`` not an integer ≥ 1, an unknown convention or solver; and non-finite rows
        (only ``solver="sklearn"`` at scales its absolute β cannot represent in the dtype).

    Warns:
      PerplexityWarning: the data's limit, not an argument error, so the rows are still
        returned: rows whose target is unreachable because more than e^{H*} references tie at
        their smallest distance (duplicate reference embeddings; returned as the σ → 0 limit,
        uniform over the tied references), and rows not converged within ``max_iter`` (the last
        iterate). The message gives how many rows and the achieved vs target perplexity.
        Not raised under ``jax.jit`` (nothing concrete to inspect).
    """
    check_ndim("query", query, 2, "[Nq, E]")
    check_ndim("reference", reference, 2, "[Nr, E]")
    _check_embedding_sizes(query, reference)
    check_finite("query", query)
    check_finite("reference", reference)
    q = jnp.asarray(query)
    r = jnp.asarray(reference)
    dtype = jnp.result_type(q.dtype, r.dtype, float)
    q, r = q.astype(dtype), r.astype(dtype)
    target = _check_common(r.shape[0], perplexity, convention, tol, chunk_size)
    check_count("max_iter", max_iter)
    _check_solver(solver)
    if q.shape[0] == 0:
        return jnp.zeros((0, r.shape[0]), dtype)
    chunk = _balanced_chunk(q.shape[0], chunk_size)
    probs, entropy, status = _solve_from_embeddings(
        q, r, float(target), float(tol), int(max_iter), chunk, solver
    )
    _report_rows(status, entropy, perplexity, convention, max_iter, solver, dtype)
    return probs


def top_k_neighbours(
    probs: jax.Array, k: int, renormalise: bool = False
) -> tuple[jax.Array, jax.Array]:
    """The ``k`` most probable references per row (Eq. 12's top-K truncation).

    Args:
      probs: ``[Nq, Nr]`` conditional probabilities (finite, ≥ 0 when concrete).
      k: neighbours kept, an integer ``1 ≤ k ≤ Nr``.
      renormalise: divide by the kept mass m so rows sum to 1 (p̃ = p / m of identity 5). The
        authors' code does not renormalise (``False``).

    Returns:
      ``(probs_k [Nq, k], indices [Nq, k])``, sorted by decreasing probability.
    """
    check_ndim("probs", probs, 2, "[Nq, Nr]")
    check_nonnegative("probs", probs, "probabilities")
    n_ref = np.shape(probs)[1]
    if isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer) or not 1 <= k <= n_ref:
        raise ValueError(f"`k` must be an integer in [1, Nr={n_ref}], got {k!r}.")
    values, indices = jax.lax.top_k(jnp.asarray(probs), int(k))
    if renormalise:
        values = values / jnp.sum(values, axis=1, keepdims=True)
    return values, indices
