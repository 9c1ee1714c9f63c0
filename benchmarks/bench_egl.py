"""Closed-form EGL (Eq. 10) vs its Monte-Carlo definition (Eq. 5) at matched accuracy.

For a linear model and a ≥1000-parameter MLP over a pool of inputs, both methods are timed in this
process after compilation. "Matched accuracy" means Monte-Carlo with enough samples per member
for a 1% relative standard error on the median input (found from a pilot run). Monte-Carlo cost is
linear in the number of inputs, so it is timed on a subset and scaled to the pool; the scaling
factor is printed. The closed form is timed on the whole pool, and on a 10⁵-input pool.

    python benchmarks/bench_egl.py [--pool 10000] [--mc-inputs 32]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from egltheory import egl

N_MEMBERS = 4


def linear_model(params, x_i):
    return x_i @ params["w"] + params["b"]


def mlp(params, x_i):
    hidden = jnp.tanh(x_i @ params["W1"] + params["b1"])
    hidden = jnp.tanh(hidden @ params["W2"] + params["b2"])
    return hidden @ params["w3"] + params["b3"]


def init_params(kind: str, n_features: int, rng: np.random.Generator):
    if kind == "linear":
        return {"w": rng.normal(size=n_features).astype(np.float32), "b": np.float32(0.1)}
    width = 32
    shapes = {
        "W1": (n_features, width),
        "b1": (width,),
        "W2": (width, width),
        "b2": (width,),
        "w3": (width,),
        "b3": (),
    }
    return {
        name: (rng.normal(size=shape) / np.sqrt(shape[0] if shape else 1)).astype(np.float32)
        for name, shape in shapes.items()
    }


def best_time(fn, repeats: int = 3) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def member_predictives(n_inputs: int, rng: np.random.Generator):
    means = rng.normal(size=(N_MEMBERS, n_inputs)).astype(np.float32)
    variances = rng.uniform(0.1, 1.0, size=(N_MEMBERS, n_inputs)).astype(np.float32)
    return means, variances


def bench_model(kind: str, pool: int, mc_inputs: int, n_features: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    apply_fn = linear_model if kind == "linear" else mlp
    params = init_params(kind, n_features, rng)
    n_params = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    x = rng.normal(size=(pool, n_features)).astype(np.float32)
    means, variances = member_predictives(pool, rng)

    forward = jax.jit(jax.vmap(apply_fn, in_axes=(None, 0)))

    @jax.jit  # as in an active-learning loop: one compiled program per pool shape
    def closed_form(x, means, variances):
        f_z = forward(params, x)
        return egl.egl_closed_form(means, variances, f_z, egl.grad_sq_norm(apply_fn, params, x))

    # validate once eagerly (value checks are skipped under jit), then time the compiled path
    egl.egl_closed_form(means, variances, forward(params, x), egl.grad_sq_norm(apply_fn, params, x))

    closed_seconds = best_time(lambda: closed_form(x, means, variances))

    x_big = rng.normal(size=(100_000, n_features)).astype(np.float32)
    means_big, variances_big = member_predictives(100_000, rng)
    closed_big_seconds = best_time(lambda: closed_form(x_big, means_big, variances_big))

    # Pilot Monte-Carlo: relative stderr per input, then samples for 1% on the median input.
    x_mc, means_mc, variances_mc = x[:mc_inputs], means[:, :mc_inputs], variances[:, :mc_inputs]
    pilot_samples = 256
    pilot = egl.egl_monte_carlo(
        jax.random.key(seed), apply_fn, params, x_mc, means_mc, variances_mc, pilot_samples
    )
    relative = np.median(np.asarray(pilot.stderr) / np.asarray(pilot.estimate))
    matched_samples = int(np.ceil(pilot_samples * (relative / 0.01) ** 2 / 256) * 256)

    def monte_carlo(n_inputs):
        return egl.egl_monte_carlo(
            jax.random.key(seed + 1),
            apply_fn,
            params,
            x[:n_inputs],
            means[:, :n_inputs],
            variances[:, :n_inputs],
            matched_samples,
            samples_per_chunk=256,
        )

    # time on a subset large enough to run ≥ 1 s (Monte-Carlo cost is linear in inputs)
    while True:
        mc_seconds_subset = best_time(partial(monte_carlo, mc_inputs), repeats=1)
        if mc_seconds_subset >= 1.0 or mc_inputs >= pool:
            break
        mc_inputs = min(pool, int(mc_inputs * max(2.0, 1.2 / max(mc_seconds_subset, 1e-3))))
    result = monte_carlo(mc_inputs)
    achieved = float(np.median(np.asarray(result.stderr) / np.asarray(result.estimate)))
    mc_seconds_pool = mc_seconds_subset * pool / mc_inputs
    return {
        "model": kind,
        "n_params": n_params,
        "pool": pool,
        "closed_seconds": closed_seconds,
        "closed_100k_seconds": closed_big_seconds,
        "mc_samples_per_member": matched_samples,
        "mc_achieved_rel_stderr": achieved,
        "mc_inputs_timed": mc_inputs,
        "mc_seconds_subset": mc_seconds_subset,
        "mc_seconds_pool": mc_seconds_pool,
        "speedup": mc_seconds_pool / closed_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--mc-inputs", type=int, default=32)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}, dtype float32")
    print(
        f"{'model':>7} {'P':>6} {'closed form':>12} {'closed 1e5':>11} {'MC S/member':>12} "
        f"{'MC rel.se':>9} {'MC (pool)':>11} {'speed-up':>10}"
    )
    for kind in ("linear", "mlp"):
        r = bench_model(kind, args.pool, args.mc_inputs, args.features, args.seed)
        print(
            f"{r['model']:>7} {r['n_params']:>6d} {r['closed_seconds'] * 1e3:>10.2f}ms "
            f"{r['closed_100k_seconds'] * 1e3:>9.1f}ms {r['mc_samples_per_member']:>12d} "
            f"{r['mc_achieved_rel_stderr']:>9.4f} {r['mc_seconds_pool']:>10.1f}s "
            f"{r['speedup']:>9.3g}x"
        )
        print(
            f"        MC timed on {r['mc_inputs_timed']} inputs ({r['mc_seconds_subset']:.2f} s),"
            f" scaled ×{r['pool'] / r['mc_inputs_timed']:.1f} to the {r['pool']}-input pool;"
            f" goal ≥1e4×: {'met' if r['speedup'] >= 1e4 else 'NOT met'};"
            f" 1e5 pool < 1 s: {'met' if r['closed_100k_seconds'] < 1 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
