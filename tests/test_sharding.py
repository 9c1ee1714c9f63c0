"""Sharded pool scoring equals single-device scoring (4 forced CPU devices, in a subprocess)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from egltheory.sharding import pool_mesh, shard_pool

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from egltheory.egl import egl_closed_form, grad_sq_norm
    from egltheory.eglpp import (
        EGLPPOptions, NormEngine, eglpp_pool_scores, eglpp_scores, nnx_apply, squared_error,
    )
    from egltheory.sharding import (
        pool_mesh, sharded_egl_scores, sharded_eglpp_pool_scores, sharded_eglpp_scores,
    )

    assert jax.device_count() == 4, jax.devices()
    f64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 8, rngs=rngs, **f64)
            self.bn = nnx.BatchNorm(8, rngs=rngs, **f64)
            self.l2 = nnx.Linear(8, 1, rngs=rngs, **f64)

        def __call__(self, x):
            return self.l2(nnx.tanh(self.bn(self.l1(x))))[:, 0]

    apply_fn, params, _ = nnx_apply(Net(nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    n, k, n_lab = 23, 4, 15  # 23 rows: not a multiple of 4, exercises the padding
    x = jnp.asarray(rng.normal(size=(n, 3)))
    targets = jnp.asarray(rng.normal(size=(n, k)))
    probs = jnp.asarray(rng.dirichlet(np.ones(k), size=n))
    mesh = pool_mesh()
    single = eglpp_scores(apply_fn, params, x, targets, probs,
                          options=EGLPPOptions(engine=NormEngine(chunk_size=4)))
    for mode in ("unroll", "vmap"):
        options = EGLPPOptions(engine=NormEngine(chunk_size=4, cotangents=mode))
        sharded = sharded_eglpp_scores(apply_fn, params, x, targets, probs, options=options,
                                       mesh=mesh)
        np.testing.assert_allclose(sharded, single, rtol=1e-12)

    emb_pool = jnp.asarray(rng.normal(size=(n, 2)))
    emb_lab = jnp.asarray(rng.normal(size=(n_lab, 2)))
    y_lab = jnp.asarray(rng.normal(size=(n_lab,)))
    options = EGLPPOptions(perplexity=5.0, top_k=6)
    single = eglpp_pool_scores(apply_fn, params, x, emb_pool, emb_lab, y_lab, options=options)
    sharded = sharded_eglpp_pool_scores(apply_fn, params, x, emb_pool, emb_lab, y_lab,
                                        options=options, mesh=mesh)
    np.testing.assert_allclose(sharded, single, rtol=1e-12)

    scalar_fn = lambda p, xi: apply_fn(p, xi[None])[0]
    means = jnp.asarray(rng.normal(size=(5, n)))
    variances = jnp.asarray(rng.uniform(0.1, 1.0, size=(5, n)))
    f_z = apply_fn(params, x)
    single = egl_closed_form(means, variances, f_z, grad_sq_norm(scalar_fn, params, x), c=4.0)
    sharded = sharded_egl_scores(scalar_fn, params, x, means, variances, f_z, 4.0, mesh=mesh)
    np.testing.assert_allclose(sharded, single, rtol=1e-12)
    print("SHARDED-OK", len(sharded.sharding.device_set))
    """
)


def test_sharded_scores_equal_single_device_scores():
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED-OK 4" in proc.stdout  # the result lives on all 4 devices


def test_shard_pool_pads_and_refuses_bad_input():
    mesh = pool_mesh(jax.devices()[:1])
    tree, n = shard_pool((np.arange(5.0), np.ones((5, 2))), mesh)
    assert n == 5 and tree[0].shape == (5,)
    with pytest.raises(ValueError, match="same number of rows"):
        shard_pool((np.arange(5.0), np.ones((4, 2))), mesh)
    with pytest.raises(ValueError, match="empty"):
        shard_pool(np.zeros((0, 2)), mesh)
    with pytest.raises(ValueError, match="devices"):
        pool_mesh([])
    np.testing.assert_array_equal(tree[1], np.ones((5, 2)))
