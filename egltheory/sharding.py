"""Pool scoring sharded over every JAX device (1 GPU, 8 GPUs, or several hosts).

The unlabelled pool is split along its first axis over a 1-D device mesh (``Mesh(devices,
("pool",))`` + ``NamedSharding(mesh, P("pool"))``); everything the score of one pool item needs
besides its own row — model parameters, labelled embeddings, labelled targets — is replicated
(``P()``). Each device scores its own block with ``jax.shard_map``; pool scores need no
communication, so the work scales with the number of devices. The pool is padded to a multiple of
the device count with copies of its last row and the padding is dropped from the result.

Multi-host: call ``jax.distributed.initialize()`` (coordinator address, process count and id from
the environment or arguments; on Cloud TPU / SLURM it needs no arguments) in every process before
any other JAX call. ``jax.devices()`` then lists the devices of all hosts, :func:`pool_mesh` spans
them, and the functions here are called identically in every process with the same host arrays
(each process loads the same pool); the results are global arrays — fetch them on every host with
``jax.experimental.multihost_utils.process_allgather``. See ``docs/eglpp.md``.

Scores equal the single-device scores to float round-off (tested on CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from egltheory import egl
from egltheory.egl import tree_sq_norm
from egltheory.eglpp import (
    EGLPPOptions,
    NormEngine,
    eglpp_pool_scores,
    eglpp_scores,
    squared_error,
)
from egltheory.validation import check_scalar_ensemble

__all__ = [
    "POOL_AXIS",
    "pool_mesh",
    "pool_sharding",
    "replicated",
    "shard_pool",
    "sharded_egl_scores",
    "sharded_eglpp_pool_scores",
    "sharded_eglpp_scores",
    "sharded_map",
]

POOL_AXIS = "pool"


def pool_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh named ``"pool"`` over ``devices`` (default: all devices of all processes)."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    if devs.size == 0:
        raise ValueError("`devices` is empty; need at least one device.")
    return Mesh(devs.reshape(-1), (POOL_AXIS,))


def pool_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over the mesh (``P("pool")``)."""
    return NamedSharding(mesh, P(POOL_AXIS))


def replicated(tree: Any, mesh: Mesh) -> Any:
    """``tree`` copied to every device of ``mesh`` (``P()``)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_pool(tree: Any, mesh: Mesh) -> tuple[Any, int]:
    """Pad every leaf's axis 0 to a multiple of the mesh size and shard it; returns (tree, N)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("nothing to shard: the pool pytree has no arrays.")
    n = int(np.shape(leaves[0])[0])
    if n == 0:
        raise ValueError("the pool is empty (0 rows); nothing to score.")
    if any(np.shape(leaf)[0] != n for leaf in leaves):
        raise ValueError(
            f"all pool arrays need the same number of rows, got {[np.shape(x) for x in leaves]}."
        )
    n_dev = mesh.devices.size
    pad = (-n) % n_dev

    def pad_and_put(a):
        a = jnp.asarray(a)
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
        return jax.device_put(a, pool_sharding(mesh))

    return jax.tree_util.tree_map(pad_and_put, tree), n


def sharded_map(
    fn: Callable[..., Any], pool: Any, shared: Any = (), mesh: Mesh | None = None
) -> Any:
    """``fn(pool_block, shared) -> per-row outputs`` run on every device's block of ``pool``.

    ``pool``: pytree of ``[N, ...]`` arrays (split over devices); ``shared``: pytree replicated to
    every device. ``fn`` must act row-wise (output row i depends only on input row i). Returns the
    outputs for the N real rows (a global, pool-sharded array when N divides the device count).
    """
    mesh = pool_mesh() if mesh is None else mesh
    pool_s, n = shard_pool(pool, mesh)
    shared_r = replicated(shared, mesh)

    # check_vma=False: each device runs ``fn`` as a plain local program. With replication
    # checking on, JAX would mark the replicated parameters invariant and transpose their implicit
    # broadcast into a psum over the mesh, i.e. per-example gradients would be summed over devices.
    run = jax.jit(
        jax.shard_map(
            fn, mesh=mesh, in_specs=(P(POOL_AXIS), P()), out_specs=P(POOL_AXIS), check_vma=False
        )
    )
    out = run(pool_s, shared_r)
    return jax.tree_util.tree_map(lambda o: o[:n], out)


def sharded_eglpp_scores(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x_pool: jax.Array,
    neighbour_targets: Any,
    neighbour_probs: jax.Array,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
    options: EGLPPOptions = EGLPPOptions(engine=NormEngine(chunk_size=64)),
    *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """:func:`egltheory.eglpp.eglpp_scores` with the pool sharded over ``mesh`` → ``[N]``
    (exact estimator; ``options.engine`` sets chunks and cotangents)."""
    if options.estimator != "exact":
        raise ValueError("sharded scoring supports the exact estimator only.")

    def block(pool, shared):
        x, t, p = pool
        return eglpp_scores(apply_fn, shared, x, t, p, loss_fn, options)

    return sharded_map(block, (x_pool, neighbour_targets, neighbour_probs), params, mesh)


def sharded_eglpp_pool_scores(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x_pool: jax.Array,
    pool_embeddings: jax.Array,
    labelled_embeddings: jax.Array,
    labelled_targets: Any,
    loss_fn: Callable[[Any, Any], jax.Array] = squared_error,
    options: EGLPPOptions = EGLPPOptions(engine=NormEngine(chunk_size=64)),
    *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """:func:`egltheory.eglpp.eglpp_pool_scores`: pool sharded, labelled set replicated; ``[N]``
    (exact estimator)."""
    if options.estimator != "exact":
        raise ValueError("sharded scoring supports the exact estimator only.")
    options.for_references(np.shape(labelled_embeddings)[0])  # refuse an empty labelled set here

    def block(pool, shared):
        x, emb = pool
        prm, lab_emb, lab_t = shared
        return eglpp_pool_scores(apply_fn, prm, x, emb, lab_emb, lab_t, loss_fn, options)

    shared = (params, jnp.asarray(labelled_embeddings), labelled_targets)
    return sharded_map(block, (x_pool, pool_embeddings), shared, mesh)


def sharded_egl_scores(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    x_pool: jax.Array,
    means: jax.Array,
    variances: jax.Array,
    f_z: jax.Array,
    c: float = 1.0,
    *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Closed-form EGL (Eq. 10) with ``‖∇_θ f_z(x)‖²`` computed per device block → ``[N]``.

    ``apply_fn(params, x_single) -> scalar``; ``means, variances [K, N]``; ``f_z [N]``.
    """
    means, variances = jnp.asarray(means), jnp.asarray(variances)
    check_scalar_ensemble(means, variances, jnp.asarray(f_z))

    def block(pool, prm):
        x, mu_t, var_t, fz = pool
        g2 = jax.vmap(lambda xi: tree_sq_norm(jax.grad(apply_fn)(prm, xi)))(x)
        return egl.egl_closed_form(mu_t.T, var_t.T, fz, g2, c=c)

    return sharded_map(block, (x_pool, means.T, variances.T, jnp.asarray(f_z)), params, mesh)
