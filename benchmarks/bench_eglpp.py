"""Benchmarks of the EGL++ engine; every ratio is measured in this one process.

(a) t-SNE conditionals (Eq. 13): JAX (vectorised safeguarded Newton, chunked) vs scikit-learn's
    ``_binary_search_perplexity`` (per-row bisection, Cython), 20,000 queries × 5,000 references,
    embeddings of dimension 128, perplexity 20, on the same float32 squared distances.
(b) EGL++ per-example squared loss-gradient norms over all parameters of a small conv net
    (conv-BN-ReLU ×2 → 1×1 conv to "heatmaps"), K neighbour targets per input: one forward
    (``jax.vjp``) + K pullbacks (unrolled / vmapped) vs K separate ``vmap(grad)`` passes.
(c) Closed-form EGL for squared error (Eq. 10: one ``vmap(grad)`` of f_z) vs the definition (Eq. 5)
    by Monte Carlo with ``vmap(grad)`` of the loss per draw, on an MLP.

    python benchmarks/bench_eglpp.py            # full sizes
    python benchmarks/bench_eglpp.py --quick    # small sizes (smoke test)

Times are the best of ``--repeats`` runs after one warm-up (compilation excluded).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``fn()`` (blocking on its result) over ``repeats`` runs after a warm-up."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_tsne(n_q: int, n_r: int, dim: int, perplexity: float, repeats: int) -> None:
    from sklearn.manifold._utils import _binary_search_perplexity

    from egltheory.tsne import (
        conditional_probabilities,
        conditional_probabilities_from_sq_distances,
        squared_distances,
    )

    rng = np.random.default_rng(0)
    q = rng.normal(size=(n_q, dim)).astype(np.float32)
    r = rng.normal(size=(n_r, dim)).astype(np.float32)
    sq = np.asarray(squared_distances(jnp.asarray(q), jnp.asarray(r)))  # float32, shared input
    sq_j = jnp.asarray(sq)
    print(f"(a) t-SNE conditionals, {n_q} × {n_r}, dim {dim}, perplexity {perplexity}")
    t0 = time.perf_counter()
    p_sk = _binary_search_perplexity(sq, perplexity, 0)
    t_sk = time.perf_counter() - t0  # one run: deterministic, no compilation
    t_jax = best_time(
        lambda: conditional_probabilities_from_sq_distances(sq_j, perplexity), repeats
    )
    t_jax_emb = best_time(lambda: conditional_probabilities(q, r, perplexity), repeats)
    p_j = np.asarray(conditional_probabilities_from_sq_distances(sq_j, perplexity))
    err = float(np.max(np.abs(p_j - p_sk)))
    print(f"    scikit-learn (from sq. distances):        {t_sk:8.2f} s")
    print(
        f"    JAX Newton   (from sq. distances):        {t_jax:8.2f} s   ratio {t_sk / t_jax:5.1f}×"
    )
    print(
        f"    JAX Newton   (from embeddings, incl. d²): {t_jax_emb:8.2f} s   "
        f"ratio {t_sk / t_jax_emb:5.1f}×"
    )
    print(f"    max |P_jax − P_sklearn| = {err:.2e} (float32 JAX; both stop at |H − ln P| ≤ 1e-5)")


class SmallConvNet(nnx.Module):
    """conv3×3(3→c)-BN-ReLU, conv3×3(c→c)/2-BN-ReLU, conv1×1(c→J): [B,H,W,3] → [B,H/2,W/2,J]."""

    def __init__(self, channels: int = 16, joints: int = 4, *, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(3, channels, (3, 3), rngs=rngs)
        self.b1 = nnx.BatchNorm(channels, rngs=rngs)
        self.c2 = nnx.Conv(channels, channels, (3, 3), strides=2, rngs=rngs)
        self.b2 = nnx.BatchNorm(channels, rngs=rngs)
        self.head = nnx.Conv(channels, joints, (1, 1), rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.b1(self.c1(x)))
        h = nnx.relu(self.b2(self.c2(h)))
        return self.head(h)


def bench_eglpp(n: int, size: int, ks: tuple[int, ...], chunk: int, repeats: int) -> None:
    from egltheory.eglpp import (
        NormEngine,
        loss_grad_sq_norms,
        naive_loss_grad_sq_norms,
        nnx_apply,
    )

    model = SmallConvNet(rngs=nnx.Rngs(0))
    apply_fn, params, _ = nnx_apply(model)
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
    x = jax.random.normal(jax.random.key(0), (n, size, size, 3))
    out_shape = apply_fn(params, x[:1]).shape[1:]
    print(
        f"(b) EGL++ per-example ‖∇_θ l‖², conv net with {n_params} params (BatchNorm included), "
        f"{n} inputs {size}×{size}×3 → heatmaps {out_shape}"
    )
    for k in ks:
        targets = jax.random.normal(jax.random.key(k), (n, k, *out_shape))
        t_naive = best_time(
            lambda t=targets: naive_loss_grad_sq_norms(apply_fn, params, x, t), repeats
        )
        res = {}
        for mode in ("unroll", "vmap"):
            res[mode] = best_time(
                lambda t=targets, m=mode: loss_grad_sq_norms(
                    apply_fn, params, x, t, engine=NormEngine(chunk, m)
                ),
                repeats,
            )
        a = np.asarray(loss_grad_sq_norms(apply_fn, params, x, targets, engine=NormEngine(chunk)))
        b = np.asarray(naive_loss_grad_sq_norms(apply_fn, params, x, targets))
        rel = float(np.max(np.abs(a - b) / np.abs(b)))
        print(
            f"    K={k:3d}: K separate vmap(grad) {t_naive:7.3f} s | shared forward + unrolled "
            f"{res['unroll']:7.3f} s ({t_naive / res['unroll']:4.2f}×) | + vmapped "
            f"{res['vmap']:7.3f} s ({t_naive / res['vmap']:4.2f}×) | max rel. diff {rel:.1e}"
        )


def bench_closed_form(n: int, width: int, n_members: int, n_samples: int, repeats: int) -> None:
    from egltheory import egl

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(8, width, rngs=rngs)
            self.l2 = nnx.Linear(width, width, rngs=rngs)
            self.l3 = nnx.Linear(width, 1, rngs=rngs)

        def __call__(self, x):
            return self.l3(nnx.tanh(self.l2(nnx.tanh(self.l1(x)))))[..., 0]

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)))

    def apply_fn(p, xi):
        return nnx.merge(graphdef, p)(xi)

    x = jax.random.normal(jax.random.key(1), (n, 8))
    f_z = jax.vmap(lambda xi: apply_fn(params, xi))(x)
    means = f_z + 0.3 * jax.random.normal(jax.random.key(2), (n_members, n))
    variances = jax.random.uniform(jax.random.key(3), (n_members, n), minval=0.05, maxval=0.5)

    def closed():
        g2 = egl.grad_sq_norm(apply_fn, params, x)
        return egl.egl_closed_form(means, variances, f_z, g2, c=4.0)

    def monte_carlo():
        return egl.egl_monte_carlo(
            jax.random.key(4), apply_fn, params, x, means, variances, n_samples, c=4.0
        ).estimate

    t_closed = best_time(closed, repeats)
    t_mc = best_time(monte_carlo, repeats)
    mc = egl.egl_monte_carlo(
        jax.random.key(4), apply_fn, params, x, means, variances, n_samples, c=4.0
    )
    z = np.abs(np.asarray(closed()) - np.asarray(mc.estimate)) / np.asarray(mc.stderr)
    print(
        f"(c) EGL for MSE, MLP 8-{width}-{width}-1, {n} inputs, K={n_members}: closed form "
        f"(Eq. 10) {t_closed:.4f} s vs Monte Carlo vmap(grad) with {n_samples} draws/member "
        f"(Eq. 5) {t_mc:.4f} s: {t_mc / t_closed:.1f}× faster; |closed − MC| / stderr: "
        f"median {np.median(z):.2f}, max {z.max():.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["tsne", "eglpp", "closed"])
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    if "tsne" not in args.skip:
        shape = (2000, 500) if args.quick else (20_000, 5_000)
        bench_tsne(*shape, dim=128, perplexity=20.0, repeats=1 if not args.quick else 2)
    if "eglpp" not in args.skip:
        if args.quick:
            bench_eglpp(n=16, size=16, ks=(10,), chunk=8, repeats=2)
        else:
            bench_eglpp(n=64, size=32, ks=(10, 30), chunk=8, repeats=args.repeats)
    if "closed" not in args.skip:
        n, s = (256, 64) if args.quick else (4096, 256)
        bench_closed_form(n, width=64, n_members=4, n_samples=s, repeats=args.repeats)


if __name__ == "__main__":
    main()
