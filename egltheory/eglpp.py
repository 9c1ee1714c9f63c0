"""EGL++ (Eq. 12): probability-weighted squared gradient norms for any JAX/Flax model.

For an unlabelled input x with top-K labelled neighbours n (t-SNE probabilities p_n from
:mod:`egltheory.tsne`, Eq. 13) and their labels y_n (ground truth, or the model's own predictions as
in the authors' code),

    score(x) = Σ_n p_n ‖∇_θ l(f_θ(x), y_n)‖².                                        (Eq. 12)

Per-example gradient norms here are exact and cover ALL trainable parameters (every ``nnx.Param``,
BatchNorm scales and biases included; the authors' Goodfellow-trick code drops BatchNorm). One
forward pass per input: ``jax.vjp`` is called once and its pullback is applied to the K output
cotangents ``∂l/∂f (f(x), y_n)``: unrolled (K pullbacks in one jitted program), vmapped (one batched
pullback) or vmapped in groups of G with the groups unrolled (``cotangents=G``). For convolutional
nets on CPU, build the model with :func:`egltheory.conv.conv_general_dilated` so each pullback's
kernel gradients are GEMMs on the shared forward's im2col patches. The pool is processed in chunks
(a Python loop over one jitted chunk program, ``jax.vmap`` inside a chunk; ``jax.lax.map`` over
chunks when called under a caller's ``jit``/``shard_map``), so memory is ``chunk_size × K × |θ|``
floats at most. Models are split in inference mode (``model.eval()``: BatchNorm uses running
statistics), which also makes each example's output independent of the rest of the batch.

For a scalar output and l = (y − f)² (:func:`squared_error`) the score equals identity 5 of
THEORY.md, Σ_n p_n · 4 (y_n − f)² ‖∇_θ f‖² = 4 ‖∇f‖² m [Var_p̃(y) + (ȳ_p̃ − f)²] (tested against
``egltheory.egl``'s closed form with the neighbour distribution as a weighted "ensemble").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from egltheory.egl import tree_sq_norm
from egltheory.tsne import conditional_probabilities, target_entropy, top_k_neighbours
from egltheory.validation import check_finite, check_ndim, check_nonnegative, is_concrete

__all__ = [
    "COTANGENT_MODES",
    "ESTIMATORS",
    "EGLPPOptions",
    "EGLPPTerms",
    "LowRank",
    "NormEngine",
    "Sketch",
    "auto_chunk_size",
    "eglpp_pool_scores",
    "eglpp_scores",
    "eglpp_terms",
    "embed",
    "free_device_memory",
    "gather_neighbour_targets",
    "global_average_pool",
    "intermediate_bytes",
    "intermediate_features",
    "loss_grad_sq_norms",
    "naive_loss_grad_sq_norms",
    "neighbours",
    "nnx_apply",
    "squared_error",
]

COTANGENT_MODES = ("unroll", "vmap")


def squared_error(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """l = Σ (y − f)² over the output's elements (c = 4 in THEORY.md's constant for scalars)."""
    return jnp.sum((prediction - target) ** 2)


def nnx_apply(
    model: nnx.Module, method: Callable[[nnx.Module, jax.Array], Any] | None = None
) -> tuple[Callable[[Any, jax.Array], Any], Any, Any]:
    """Split an NNX model in inference mode into a pure function of its parameters.

    Args:
      model: any Flax NNX module; it is switched to ``eval()`` (BatchNorm running statistics).
      method: optional ``method(model, x_batch)`` to call instead of ``model(x_batch)``.

    Returns:
      ``(apply_fn, params, rest_state)``: ``params`` holds every ``nnx.Param`` (BatchNorm scale and
      bias included), ``rest_state`` everything else (batch statistics, RNG state);
      ``apply_fn(params, x_batch [B, ...]) -> outputs [B, ...]``.
    """
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # A pytree function: the graph definition is static (hashable, equal across models of one
    # architecture), the non-parameter state is a traced child. Compiled programs are therefore
    # reused across models of the same architecture (e.g. every active-learning cycle).
    apply_fn = jax.tree_util.Partial(_NNXCall(graphdef, method), rest)
    return apply_fn, params, rest


@dataclass(frozen=True)
class _NNXCall:
    """Static half of :func:`nnx_apply`: ``(rest, params, x_batch) -> model(x_batch)``."""

    graphdef: nnx.GraphDef
    method: Callable[[nnx.Module, jax.Array], Any] | None

    def __call__(self, rest, params, x_batch):
        model = nnx.merge(self.graphdef, params, rest)
        return model(x_batch) if self.method is None else self.method(model, x_batch)


def _as_pytree_fn(apply_fn) -> jax.tree_util.Partial:
    """Plain functions become static pytree leaves of a ``Partial``; ``Partial``s pass through."""
    if isinstance(apply_fn, jax.tree_util.Partial):
        return apply_fn
    return jax.tree_util.Partial(apply_fn)


def global_average_pool(features: jax.Array) -> jax.Array:
    """Mean over the spatial axes: ``[N, H, W, C] → [N, C]`` (``[N, C]`` is returned unchanged).

    Low-precision features (bfloat16) are averaged and returned in float32.
    """
    if features.ndim == 2:
        return features
    if features.ndim < 3:
        raise ValueError(f"`features` must be [N, ..., C], got shape {features.shape}.")
    features = features.astype(jnp.promote_types(features.dtype, jnp.float32))
    return jnp.mean(features, axis=tuple(range(1, features.ndim - 1)))


def intermediate_features(
    model: nnx.Module, x: jax.Array, path: tuple[str, ...] | str
) -> jax.Array:
    """Output of the submodule at ``path`` (e.g. ``("stack", 0, "lin")``) for ``x [B, ...]``.

    Uses ``nnx.capture(..., method_outputs=nnx.Intermediate)``: no change to the model's code.
    The model is evaluated in inference mode.
    """
    path = (path,) if isinstance(path, str) else tuple(path)
    model.eval()
    _, captured = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
    flat = dict(nnx.to_flat_state(captured))
    key = (*path, "__call__")
    if key not in flat:
        available = sorted("/".join(map(str, k[:-1])) for k in flat)
        raise ValueError(f"`path` {path} names no called submodule; available: {available}.")
    return flat[key].get_value()[0]


def embed(
    model: nnx.Module,
    x: jax.Array,
    features_fn: Callable[[nnx.Module, jax.Array], jax.Array] | None = None,
    *,
    path: tuple[str, ...] | str | None = None,
    batch_size: int = 256,
) -> jax.Array:
    """Global-average-pooled embeddings ``[N, C]`` of ``x [N, ...]`` (EGL++ / core-set hook).

    Either ``features_fn(model, x_batch) -> [B, H, W, C] or [B, C]`` (any intermediate feature) or
    ``path`` (a submodule whose output is taken via :func:`intermediate_features`).
    """
    if (features_fn is None) == (path is None):
        raise ValueError("Pass exactly one of `features_fn` or `path`.")
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, xb):
        m = nnx.merge(graphdef, state)
        feats = features_fn(m, xb) if path is None else intermediate_features(m, xb, path)
        return global_average_pool(feats)

    outs = [run(state, x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return jnp.concatenate(outs, axis=0)


@dataclass(frozen=True)
class NormEngine:
    """How per-example gradient norms are computed; never what they are (values are identical).

    ``chunk_size``: pool inputs per jitted call, or ``"auto"``: the largest chunk (≤ 256) whose
    estimated working memory fits ``memory_fraction`` of the device's free memory
    (:func:`auto_chunk_size`; never more than the device has). ``cotangents``: ``"unroll"`` (the
    pullbacks of one forward in one program), ``"vmap"`` (one pullback batched over them) or an
    int G (groups of G vmapped, the groups unrolled). Which is fastest depends on the model and
    backend; see ``benchmarks/bench_eglpp.py``, ``benchmarks/bench_pose.py`` and docs/pose.md.
    """

    chunk_size: int | str = 8
    cotangents: str | int = "unroll"
    memory_fraction: float = 0.5

    def __post_init__(self) -> None:
        ok = self.cotangents in COTANGENT_MODES or (
            isinstance(self.cotangents, int)
            and not isinstance(self.cotangents, bool)
            and self.cotangents >= 1
        )
        if not ok:
            raise ValueError(
                f"`cotangents` must be one of {COTANGENT_MODES} or a positive int (cotangents per "
                f"vmapped group), got {self.cotangents!r}."
            )
        c = self.chunk_size
        if c != "auto" and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"`chunk_size` must be a positive int or 'auto', got {c!r}.")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"`memory_fraction` must be in (0, 1], got {self.memory_fraction!r}.")


def free_device_memory(device=None) -> int:
    """Bytes free on ``device`` (default: the first local device): from the allocator's
    statistics where the backend has them (GPU), else the host's available physical memory."""
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def intermediate_bytes(jaxpr) -> int:
    """Σ over every equation (sub-programs included) of its outputs' bytes: an upper bound on
    the memory XLA needs for the program's intermediates (it frees and reuses buffers)."""
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = v.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += intermediate_bytes(inner)
    return total


def auto_chunk_size(per_example_fn, example_args, n: int, budget_bytes: int, cap=256) -> int:
    """Largest chunk ``c ≤ min(n, cap)`` with ``c × bytes(per-example program) ≤ budget_bytes``
    (at least 1); the per-example bytes: :func:`intermediate_bytes` of ``per_example_fn``."""
    per_example = max(intermediate_bytes(jax.make_jaxpr(per_example_fn)(*example_args).jaxpr), 1)
    return int(max(1, min(n, cap, budget_bytes // per_example)))


def _chunk_for(engine: NormEngine, per_example_fn, arrays, n: int) -> int:
    if engine.chunk_size != "auto":
        return min(engine.chunk_size, n)
    first = jax.tree_util.tree_map(lambda a: a[0], arrays)
    budget = int(engine.memory_fraction * free_device_memory())
    return auto_chunk_size(per_example_fn, first, n, budget)


@dataclass(frozen=True)
class LowRank:
    """Identity 6 with the spread truncated to the top ``m`` singular directions of the centred
    neighbour cotangents: 1 + m pullbacks. Never above the exact spread (a sum of fewer
    non-negative terms); equal to it once ``m`` ≥ its rank. ``LowRank(0)`` is the bias alone."""

    m: int

    def __post_init__(self) -> None:
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 0:
            raise ValueError(f"`m` must be an int ≥ 0, got {self.m!r}.")


@dataclass(frozen=True)
class Sketch:
    """:class:`LowRank` ``(m)`` plus an unbiased Hutchinson estimate of the remaining spread from
    ``probes`` Rademacher probes in the K-dimensional neighbour space: 1 + m + probes pullbacks,
    with a standard error; the residual is exactly 0 once ``m`` ≥ the rank."""

    m: int
    probes: int = 4

    def __post_init__(self) -> None:
        LowRank(self.m)
        if isinstance(self.probes, bool) or not isinstance(self.probes, int) or self.probes < 2:
            raise ValueError(f"`probes` must be an int ≥ 2 (for a standard error), got "
                             f"{self.probes!r}.")  # fmt: skip


ESTIMATORS = ("exact", "LowRank(m)", "Sketch(m, probes)")


def _check_estimator(estimator) -> None:
    if estimator != "exact" and not isinstance(estimator, LowRank | Sketch):
        raise ValueError(
            f"`estimator` must be 'exact', LowRank(m) or Sketch(m, probes), got {estimator!r}."
        )


class EGLPPTerms(NamedTuple):
    """Identity 6 per pool input, each ``[N]``: ``score = bias + spread``.

    ``bias = m ‖Jᵀ g(ȳ)‖²`` (the model against its neighbours' consensus), ``spread = m ‖Jᵀ C‖²_F``
    (the neighbours' label spread; estimated unless the estimator is exact), ``energy`` the share
    Σ_{i≤r} s_i² / Σ s_i² of the centred cotangents' energy in the r directions pulled back
    exactly (1 for exact), ``spread_stderr`` the standard error of the spread (0 unless
    :class:`Sketch`), ``rank`` the numerical rank of the centred cotangents.
    """

    score: jax.Array
    bias: jax.Array
    spread: jax.Array
    energy: jax.Array
    spread_stderr: jax.Array
    rank: jax.Array


@dataclass(frozen=True)
class EGLPPOptions:
    """Everything EGL++ (Eq. 12–13) needs besides the model and data; validated once.

    Defaults follow the authors (perplexity 20, top-K 30, top-K weights not renormalised) except
    the entropy convention ("bits"; ``"nats-as-bits"`` reproduces their code, see
    :mod:`egltheory.tsne`). ``tsne_chunk_size``: query rows calibrated together. ``engine``: how
    the gradient norms per input are computed (:class:`NormEngine`). ``estimator``: ``"exact"``
    (Eq. 12, K pullbacks) or an estimate through identity 6 (:class:`LowRank`, :class:`Sketch`).

    With L labelled references, :func:`neighbours` uses ``top_k' = min(top_k, L)`` and caps the
    perplexity so that the effective perplexity is at most ``max(1, L / 2)`` (a perplexity needs
    more references than itself; one reference gets probability 1).
    """

    perplexity: float = 20.0
    top_k: int = 30
    convention: str = "bits"
    renormalise: bool = False
    tsne_chunk_size: int = 1024
    engine: NormEngine = NormEngine()
    estimator: str | LowRank | Sketch = "exact"

    def __post_init__(self) -> None:
        target_entropy(self.perplexity, self.convention)  # validates both
        _check_estimator(self.estimator)
        for name in ("top_k", "tsne_chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if not isinstance(self.engine, NormEngine):
            raise ValueError(f"`engine` must be a NormEngine, got {self.engine!r}.")

    def for_references(self, n_references: int) -> tuple[float, int]:
        """``(perplexity, top_k)`` used with ``n_references`` labelled references (rule above)."""
        n = int(n_references)
        if n < 1:
            raise ValueError("EGL++ needs at least one labelled reference (got 0).")
        cap = max(1.0, 0.5 * n)
        if self.convention == "bits":
            perplexity = min(self.perplexity, cap)
        else:  # effective perplexity P ** (1 / ln 2) ≤ cap  ⇔  P ≤ cap ** ln 2
            perplexity = min(self.perplexity, cap ** math.log(2.0))
        return perplexity, min(self.top_k, n)


def _first(tree):
    return jax.tree_util.tree_map(lambda o: o[0], tree)


def _pullback_sq_norms(pullback, directions, cotangents) -> jax.Array:
    """``[M]`` squared norms ``‖Jᵀ d_j‖²`` of the pullbacks of M output directions (a pytree with
    leading axis M), arranged as ``cotangents`` says: ``"unroll"`` M pullbacks in one program,
    ``"vmap"`` one batched pullback, an int G vmapped groups of G, unrolled."""
    n_dirs = jax.tree_util.tree_leaves(directions)[0].shape[0]
    if cotangents == "unroll":
        sq = [
            tree_sq_norm(pullback(jax.tree_util.tree_map(lambda c, k=k: c[k], directions))[0])
            for k in range(n_dirs)
        ]
        return jnp.stack(sq)
    group = n_dirs if cotangents == "vmap" else min(cotangents, n_dirs)
    group_sq_norms = jax.vmap(lambda c: tree_sq_norm(pullback(c)[0]))
    return jnp.concatenate(
        [
            group_sq_norms(jax.tree_util.tree_map(lambda c, s=start: c[s : s + group], directions))
            for start in range(0, n_dirs, group)
        ]
    )


def _per_example_sq_norms(apply_fn, loss_fn, cotangents, params, x_i, targets_i):
    """``[K]`` squared gradient norms for one input: one forward (``jax.vjp``), K pullbacks."""
    out, pullback = jax.vjp(lambda p: _first(apply_fn(p, x_i[None])), params)
    # Output cotangents ∂l/∂f for every neighbour target: pytree with leading axis K.
    cots = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(out, targets_i)
    return _pullback_sq_norms(pullback, cots, cotangents)


def _chunked_map(fn, chunk_size, *arrays):
    """Apply ``fn`` (vmapped over axis 0) to ``arrays`` chunk by chunk with ``jax.lax.map``."""
    n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n

    def to_chunks(a):
        # Pad with copies of the last row (valid inputs, no NaN from zero inputs); sliced off below.
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0) if pad else a
        return a.reshape(n_chunks, chunk_size, *a.shape[1:])

    chunks = jax.tree_util.tree_map(to_chunks, arrays)
    out = jax.lax.map(lambda c: jax.vmap(fn)(*c), chunks)
    return jax.tree_util.tree_map(lambda o: o.reshape(n_chunks * chunk_size, *o.shape[2:])[:n], out)


def _eager_chunks(run_chunk, chunk_size, *arrays):
    """Python loop over chunks of one jitted program ``run_chunk(*array_chunks)`` (the last chunk
    padded to the same shape with copies of its last row), outputs concatenated.

    On XLA:CPU this is several times faster than ``lax.map`` over the same chunks, where the
    batched per-example weight gradients of convolutions run inside a while loop (measured).
    """
    n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    outs = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        pad = chunk_size - (stop - start)

        def take(a, start=start, stop=stop, pad=pad):
            a = a[start:stop]
            return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0) if pad else a

        out = run_chunk(*jax.tree_util.tree_map(take, arrays))
        outs.append(jax.tree_util.tree_map(lambda o, k=stop - start: o[:k], out))
    return jax.tree_util.tree_map(lambda *o: jnp.concatenate(o, axis=0), *outs)


def _loss_grad_sq_norms(apply_fn, params, x, targets, loss_fn, chunk_size, cotangents):
    """See :func:`_jit_loss_grad_sq_norms`; accepts plain functions and ``Partial``s."""
    return _jit_loss_grad_sq_norms(
        _as_pytree_fn(apply_fn), params, x, targets, loss_fn, chunk_size, cotangents
    )


@partial(jax.jit, static_argnames=("loss_fn", "chunk_size", "cotangents"))
def _jit_loss_grad_sq_norms(apply_fn, params, x, targets, loss_fn, chunk_size, cotangents):
    """One program for the whole pool: ``lax.map`` over chunks (used inside ``shard_map``)."""
    fn = partial(_per_example_sq_norms, apply_fn, loss_fn, cotangents, params)
    return _chunked_map(fn, chunk_size, x, targets)


@partial(jax.jit, static_argnames=("loss_fn", "cotangents"))
def _chunk_sq_norms(apply_fn, params, x_chunk, targets_chunk, loss_fn, cotangents):
    """``[B, K]`` for one chunk: ``vmap`` over its inputs of (one vjp + K pullbacks)."""
    fn = partial(_per_example_sq_norms, apply_fn, loss_fn, cotangents, params)
    return jax.vmap(fn)(x_chunk, targets_chunk)


def _loss_grad_sq_norms_eager(apply_fn, params, x, targets, loss_fn, chunk_size, cotangents):
    """:func:`_chunk_sq_norms` over the pool in chunks (:func:`_eager_chunks`)."""
    run = partial(_chunk_sq_norms, apply_fn, params, loss_fn=loss_fn, cotangents=cotangents)
    return _eager_chunks(run, chunk_size, x, targets)


def _directions(flat, probs, n_top: int, n_probes: int, key):
    """Identity 6's output directions for one input from its K flat cotangents ``[K, n]``.

    Returns ``(directions [1 + n_top + n_probes, n], mass, energy, rank)``: ``ḡ = Σ p̃_k g_k``,
    then ``w_i = Dᵀ v_i`` for the top eigenvectors v_i of ``D Dᵀ`` (``D = [√p̃_k (g_k − ḡ)]``, so
    ``‖Jᵀ w_i‖² = s_i² ‖Jᵀ u_i‖²`` without dividing by s_i), then ``Dᵀ (I − V Vᵀ) z_j`` for
    Rademacher ``z_j``.
    """
    mass = jnp.sum(probs)
    pt = probs / jnp.where(mass > 0, mass, 1.0)
    mean = pt @ flat
    centred = jnp.sqrt(pt)[:, None] * (flat - mean[None])
    lam, vecs = jnp.linalg.eigh(centred @ centred.T)
    lam, vecs = jnp.maximum(lam[::-1], 0.0), vecs[:, ::-1]  # descending
    top = vecs[:, :n_top]
    parts = [mean[None], top.T @ centred]
    if n_probes:
        z = jax.random.rademacher(key, (n_probes, flat.shape[0]), flat.dtype)
        parts.append((z - (z @ top) @ top.T) @ centred)
    total = jnp.sum(lam)
    energy = jnp.where(total > 0, jnp.sum(lam[:n_top]) / jnp.where(total > 0, total, 1.0), 1.0)
    tol = flat.shape[0] * jnp.finfo(flat.dtype).eps * lam[0]
    rank = jnp.sum(lam > tol)
    return jnp.concatenate(parts), mass, energy, rank


def _per_example_terms(apply_fn, loss_fn, cotangents, n_top, n_probes, params, x_i, t_i, p_i, k_i):
    """Identity 6 for one input: one forward, 1 + n_top + n_probes pullbacks."""
    out, pullback = jax.vjp(lambda p: _first(apply_fn(p, x_i[None])), params)
    cots = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(out, t_i)
    _, unravel = ravel_pytree(_first(cots))
    flat = jax.vmap(lambda c: ravel_pytree(c)[0])(cots)
    dirs, mass, energy, rank = _directions(flat, p_i.astype(flat.dtype), n_top, n_probes, k_i)
    sq = _pullback_sq_norms(pullback, jax.vmap(unravel)(dirs), cotangents)
    bias = mass * sq[0]
    spread = mass * jnp.sum(sq[1 : 1 + n_top])
    stderr = jnp.zeros_like(bias)
    if n_probes:
        probe = mass * sq[1 + n_top :]
        spread = spread + jnp.mean(probe)
        stderr = jnp.std(probe, ddof=1) / math.sqrt(n_probes)
    return EGLPPTerms(bias + spread, bias, spread, energy, stderr, rank)


_TERMS_STATIC = ("loss_fn", "cotangents", "n_top", "n_probes")


@partial(jax.jit, static_argnames=_TERMS_STATIC)
def _chunk_terms(apply_fn, params, x, t, p, keys, loss_fn, cotangents, n_top, n_probes):
    fn = partial(_per_example_terms, apply_fn, loss_fn, cotangents, n_top, n_probes, params)
    return jax.vmap(fn)(x, t, p, keys)


@partial(jax.jit, static_argnames=("chunk_size", *_TERMS_STATIC))
def _jit_terms(apply_fn, params, x, t, p, keys, loss_fn, chunk_size, cotangents, n_top, n_probes):
    fn = partial(_per_example_terms, apply_fn, loss_fn, cotangents, n_top, n_probes, params)
    return _chunked_map(fn, chunk_size, x, t, p, keys)


def eglpp_terms(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x_pool: jax.Array,
    neighbour_targets: Any,
    neighbour_probs: jax.Array,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
    options: EGLPPOptions | None = None,
    key: jax.Array | None = None,
) -> EGLPPTerms:
    """Identity 6: EGL++ ``[N]`` split into bias and neighbour spread (:class:`EGLPPTerms`).

    With weights p_k (mass m, p̃ = p / m) and output cotangents g_k = ∂l/∂f (f(x), y_k),
    ``Σ_k p_k ‖Jᵀ g_k‖² = m ‖Jᵀ ḡ‖² + m ‖Jᵀ C‖²_F`` with ``ḡ = Σ p̃_k g_k`` and
    ``C = [√p̃_k (g_k − ḡ)]``, because Σ_k p̃_k (g_k − ḡ) = 0 kills the cross term. This holds for
    any loss; when the cotangent is affine in y (squared error, the heatmap MSE, softmax
    cross-entropy on logits) ``ḡ = g(ȳ)`` with ``ȳ = Σ p̃_k y_k`` and ``C = ∂g/∂y · [√p̃_k (y_k −
    ȳ)]``, i.e. squared bias against the neighbours' consensus plus their label spread through
    the tangent kernel (docs/theory.md, identity 6). The spread is computed through a thin SVD of
    C (``options.estimator``: ``"exact"``: all K − 1 directions; :class:`LowRank`,
    :class:`Sketch`). ``key`` (:class:`Sketch` only) draws the probes.
    """
    options = EGLPPOptions() if options is None else options
    if not isinstance(options, EGLPPOptions):
        raise ValueError(f"`options` must be an EGLPPOptions, got {options!r}.")
    n, k = _check_pool(x_pool, neighbour_targets)
    _check_probs(neighbour_probs, n, k)
    est = options.estimator
    n_top = k - 1 if est == "exact" else min(est.m, k - 1)
    n_probes = est.probes if isinstance(est, Sketch) else 0
    if n_probes and key is None:
        raise ValueError("`key` is required with a Sketch estimator (it draws the probes).")
    keys = jax.random.split(jax.random.key(0) if key is None else key, n)
    x = jnp.asarray(x_pool)
    targets = jax.tree_util.tree_map(jnp.asarray, neighbour_targets)
    probs = jnp.asarray(neighbour_probs)
    _check_loss_shapes(apply_fn, params, x, targets, loss_fn)
    per_example = partial(_per_example_terms, apply_fn, loss_fn, options.engine.cotangents, n_top,
                          n_probes, params)  # fmt: skip
    chunk = _chunk_for(options.engine, per_example, (x, targets, probs, keys), n)
    static = {"loss_fn": loss_fn, "cotangents": options.engine.cotangents, "n_top": n_top,
              "n_probes": n_probes}  # fmt: skip
    fn = _as_pytree_fn(apply_fn)
    if isinstance(x, jax.core.Tracer):
        return _jit_terms(fn, params, x, targets, probs, keys, chunk_size=chunk, **static)
    run = partial(_chunk_terms, fn, params, **static)
    return _eager_chunks(run, chunk, x, targets, probs, keys)


def _check_pool(x, targets) -> tuple[int, int]:
    n = np.shape(x)[0] if np.ndim(x) else 0
    if np.ndim(x) < 1 or n == 0:
        raise ValueError(f"`x` must be a non-empty batch [N, ...], got shape {np.shape(x)}.")
    t_leaves = jax.tree_util.tree_leaves(targets)
    if not t_leaves or any(np.ndim(t) < 2 or np.shape(t)[0] != n for t in t_leaves):
        raise ValueError(
            f"`targets` must have shape [N={n}, K, ...] (leading axes pool × neighbours), got "
            f"{[np.shape(t) for t in t_leaves]}."
        )
    k = np.shape(t_leaves[0])[1]
    if k < 1:
        raise ValueError("`targets` needs at least one neighbour target (K ≥ 1).")
    check_finite("x", x)
    for t in t_leaves:
        check_finite("targets", t)
    return n, k


def _check_loss_shapes(apply_fn, params, x, targets, loss_fn) -> None:
    """``loss_fn(output, target)`` must be a scalar; for :func:`squared_error` the target's
    shape must equal one output's (no silent broadcasting). Shapes only (``jax.eval_shape``)."""
    out = jax.eval_shape(lambda p, xb: _first(apply_fn(p, xb)), params, x[:1])
    target = jax.tree_util.tree_map(lambda t: jax.ShapeDtypeStruct(t.shape[2:], t.dtype), targets)
    if loss_fn is squared_error:
        got = jax.tree_util.tree_map(lambda t: t.shape, target)
        want = jax.tree_util.tree_map(lambda o: o.shape, out)
        if got != want:
            raise ValueError(
                f"`targets` must be [N, K, *output_shape] with output shape {want}, got trailing "
                f"shape {got}."
            )
    loss = jax.eval_shape(loss_fn, out, target)
    if np.shape(loss) != ():
        raise ValueError(f"`loss_fn(output, target)` must return a scalar, got shape {loss.shape}.")


def loss_grad_sq_norms(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x: jax.Array,
    targets: Any,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
    engine: NormEngine = NormEngine(),
) -> jax.Array:
    """Exact per-example squared gradient norms ``[N, K]``.

    ``out[i, k] = ‖∇_params loss_fn(apply_fn(params, x[i:i+1])[0], targets[i, k])‖²``, with one
    forward pass per input (``jax.vjp`` once) and K pullbacks, arranged as ``engine`` says.

    Args:
      apply_fn: ``apply_fn(params, x_batch [B, ...]) -> outputs [B, ...]`` (pytree allowed).
      params: the parameters the gradient is taken with respect to (all of them).
      x: ``[N, ...]`` pool inputs.
      targets: ``[N, K, ...]`` neighbour targets (for :func:`squared_error`, ``[N, K,
        *output_shape]``).
      loss_fn: ``loss_fn(output_single, target_single) -> scalar``.
      engine: chunking and cotangent arrangement (:class:`NormEngine`).
    """
    if not isinstance(engine, NormEngine):
        raise ValueError(f"`engine` must be a NormEngine, got {engine!r}.")
    n, _ = _check_pool(x, targets)
    x = jnp.asarray(x)
    targets = jax.tree_util.tree_map(jnp.asarray, targets)
    _check_loss_shapes(apply_fn, params, x, targets, loss_fn)
    per_example = partial(_per_example_sq_norms, apply_fn, loss_fn, engine.cotangents, params)
    chunk = _chunk_for(engine, per_example, (x, targets), n)
    if isinstance(x, jax.core.Tracer):  # inside a caller's jit: one program with lax.map
        return _loss_grad_sq_norms(apply_fn, params, x, targets, loss_fn, chunk, engine.cotangents)
    return _loss_grad_sq_norms_eager(
        _as_pytree_fn(apply_fn), params, x, targets, loss_fn, chunk, engine.cotangents
    )


@partial(jax.jit, static_argnames=("loss_fn",))
def _naive_one_target(apply_fn, params, x, t_k, loss_fn):
    """``[N]`` squared norms, one target per input: a full ``vmap(grad)`` (forward + backward)."""

    def per_example(x_i, t_i):
        g = jax.grad(lambda p: loss_fn(_first(apply_fn(p, x_i[None])), t_i))(params)
        return tree_sq_norm(g)

    return jax.vmap(per_example)(x, t_k)


def naive_loss_grad_sq_norms(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x: jax.Array,
    targets: Any,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
) -> jax.Array:
    """Reference ``[N, K]``: K separate ``jax.vmap(jax.grad(...))`` calls (K forwards + backwards).

    The baseline of the benchmark and an independent check of :func:`loss_grad_sq_norms`.
    """
    _, n_k = _check_pool(x, targets)
    apply_fn = _as_pytree_fn(apply_fn)
    cols = [
        _naive_one_target(
            apply_fn, params, x, jax.tree_util.tree_map(lambda t, k=k: t[:, k], targets), loss_fn
        )
        for k in range(n_k)
    ]
    return jnp.stack(cols, axis=1)


def _check_probs(neighbour_probs, n: int, k: int) -> None:
    check_ndim("neighbour_probs", neighbour_probs, 2, "[N, K]")
    if tuple(np.shape(neighbour_probs)) != (n, k):
        raise ValueError(
            f"`neighbour_probs` must have shape [N, K] = {(n, k)} to match `neighbour_targets`, "
            f"got {tuple(np.shape(neighbour_probs))}."
        )
    check_nonnegative("neighbour_probs", neighbour_probs)


def eglpp_scores(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x_pool: jax.Array,
    neighbour_targets: Any,
    neighbour_probs: jax.Array,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
    options: EGLPPOptions | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """EGL++ scores ``[N]`` (Eq. 12): ``Σ_k neighbour_probs[i, k] · ‖∇ loss(f(x_i), y_ik)‖²``.

    Exact (``options.estimator == "exact"``, K pullbacks per input) or estimated through identity
    6 (:func:`eglpp_terms`; ``key`` for :class:`Sketch`).

    Args:
      neighbour_targets: ``[N, K, ...]`` labels (or model predictions) of the top-K neighbours.
      neighbour_probs: ``[N, K]`` their t-SNE probabilities (renormalised or not).
    """
    options = EGLPPOptions() if options is None else options
    if not isinstance(options, EGLPPOptions):
        raise ValueError(f"`options` must be an EGLPPOptions, got {options!r}.")
    if options.estimator != "exact":
        return eglpp_terms(
            apply_fn, params, x_pool, neighbour_targets, neighbour_probs, loss_fn, options, key
        ).score
    n, k = _check_pool(x_pool, neighbour_targets)
    _check_probs(neighbour_probs, n, k)
    sq = loss_grad_sq_norms(apply_fn, params, x_pool, neighbour_targets, loss_fn, options.engine)
    return jnp.sum(jnp.asarray(neighbour_probs) * sq, axis=1)


def neighbours(
    query_embeddings: jax.Array, reference_embeddings: jax.Array, options: EGLPPOptions
) -> tuple[jax.Array, jax.Array]:
    """Eq. 13 conditionals of every query over the references, truncated to the top K.

    Args:
      query_embeddings: ``[Nq, E]`` (the unlabelled pool).
      reference_embeddings: ``[L, E]`` (the labelled set).
      options: perplexity, top-K, convention and renormalisation (:class:`EGLPPOptions`, whose
        rule for small L applies here, and only here).

    Returns:
      ``(probs [Nq, K'], indices into the references [Nq, K'])``, ``K' = min(top_k, L)``.
    """
    check_ndim("reference_embeddings", reference_embeddings, 2, "[L, E]")
    perplexity, k = options.for_references(np.shape(reference_embeddings)[0])
    probs = conditional_probabilities(
        query_embeddings,
        reference_embeddings,
        perplexity,
        options.convention,
        options.tsne_chunk_size,
    )
    return top_k_neighbours(probs, k, renormalise=options.renormalise)


def gather_neighbour_targets(labelled_targets: Any, indices: jax.Array) -> Any:
    """``labelled_targets [L, ...]`` gathered at ``indices [Nq, K]`` → ``[Nq, K, ...]``.

    Indices must lie in ``[0, L)`` (checked when concrete: JAX would clamp them silently).
    """
    leaves = jax.tree_util.tree_leaves(labelled_targets)
    if not leaves or any(np.ndim(t) < 1 for t in leaves):
        raise ValueError("`labelled_targets` must be a (pytree of) [L, ...] arrays.")
    n_rows = {np.shape(t)[0] for t in leaves}
    if len(n_rows) != 1:
        raise ValueError(f"`labelled_targets` leaves disagree on L: {sorted(n_rows)}.")
    (n_lab,) = n_rows
    if is_concrete(indices):
        idx = np.asarray(indices)
        if idx.size and (idx.min() < 0 or idx.max() >= n_lab):
            raise ValueError(
                f"`indices` must lie in [0, L={n_lab}) (rows of `labelled_targets`), got range "
                f"[{idx.min()}, {idx.max()}]."
            )
    return jax.tree_util.tree_map(lambda t: jnp.asarray(t)[jnp.asarray(indices)], labelled_targets)


def eglpp_pool_scores(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x_pool: jax.Array,
    pool_embeddings: jax.Array,
    labelled_embeddings: jax.Array,
    labelled_targets: Any,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
    options: EGLPPOptions = EGLPPOptions(),
    key: jax.Array | None = None,
) -> jax.Array:
    """The whole EGL++ acquisition ``[N]``: :func:`neighbours` (Eq. 13, top-K) → Eq. 12
    (``key``: only for a :class:`Sketch` estimator).

    Args:
      pool_embeddings: ``[N, E]`` embeddings of ``x_pool``.
      labelled_embeddings: ``[L, E]``; ``labelled_targets``: ``[L, ...]`` their labels or the
        model's predictions for them (one row per labelled embedding).
    """
    if not isinstance(options, EGLPPOptions):
        raise ValueError(f"`options` must be an EGLPPOptions, got {options!r}.")
    n_lab = np.shape(labelled_embeddings)[0] if np.ndim(labelled_embeddings) else 0
    for t in jax.tree_util.tree_leaves(labelled_targets):
        if np.ndim(t) < 1 or np.shape(t)[0] != n_lab:
            raise ValueError(
                f"`labelled_targets` must have one row per labelled embedding (L = {n_lab}), got "
                f"shape {np.shape(t)}."
            )
    probs_k, idx = neighbours(pool_embeddings, labelled_embeddings, options)
    targets = gather_neighbour_targets(labelled_targets, idx)
    return eglpp_scores(apply_fn, params, x_pool, targets, probs_k, loss_fn, options, key)
