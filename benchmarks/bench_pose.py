"""Pose benchmark: EGL++ scoring throughput and training throughput (CPU or GPU).

EGL++ needs ‖∇_θ l(x, y_k)‖² for K = 30 neighbour labels y_k per unlabelled image x. Compared in
one process, on the same weights, all giving the same values (checked here):

* ``K separate``: K forward+backward passes per image, XLA's convolution derivatives (the authors'
  approach, in JAX) — the baseline of every ratio;
* ``vmap``/``unroll``/``groups of G``: one forward (``jax.vjp``) per image, the K cotangents
  vmapped through one pullback, K pullbacks unrolled in one program, or K/G unrolled pullbacks of
  G vmapped cotangents each (``egltheory.eglpp``, ``cotangents=G``);
* kernel gradient ``xla`` (XLA's backward-filter convolutions) or ``im2col`` (one GEMM per layer,
  ``egltheory.conv``; "auto" picks it on CPU from the paper's size up).

    python benchmarks/bench_pose.py            # CPU-preset model (48 px, 1 stack, 32 ch)
    python benchmarks/bench_pose.py --paper    # + paper size (256 px, 2 stacks, 256 ch): ~15 min
                                               #   on 2 CPU cores (--paper-only: that alone)
    python benchmarks/bench_pose.py --paper --unroll  # + paper-size unrolled (compiles ~11 min)

Times are steady state (best of ``--repeats`` calls after a first call, which includes compilation
and is reported separately).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from egltheory.eglpp import NormEngine
from egltheory.pose.acquisition import heatmap_grad_sq_norms
from egltheory.pose.hourglass import HourglassConfig, count_params, with_engine
from egltheory.pose.synthetic import make_synthetic
from egltheory.pose.training import TrainConfig, heatmap_loss, init_model, train_pose_model

AUTHORS_PYTORCH_S_PER_IMAGE = 85.0  # the authors' EGL++ at paper size, this 2-core CPU (issue 5)


def _k_separate_program(hg):
    """K full forward+backward passes per image (one ``vmap(grad)`` over images per neighbour)."""
    hg.eval()
    graphdef, params, rest = nnx.split(hg, nnx.Param, ...)

    @jax.jit
    def one_k(params, rest, x, t_k):
        def per_example(x_i, t_i):
            g = jax.grad(lambda p: heatmap_loss(nnx.merge(graphdef, p, rest)(x_i[None])[0], t_i))(
                params
            )
            return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(g))

        return jax.vmap(per_example)(x, t_k)

    def run(x, targets):
        return np.stack(
            [np.asarray(one_k(params, rest, x, targets[:, k])) for k in range(targets.shape[1])], 1
        )

    return run


def _timed(fn, repeats):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def _mode_name(mode) -> str:
    if mode == "separate":
        return "K separate"
    return f"shared fwd + {'groups of ' + str(mode) if isinstance(mode, int) else mode}"


def bench_eglpp(cfg: HourglassConfig, n_images: int, k: int, chunk: int, variants, repeats: int):
    base = init_model(replace(cfg, kernel_grad="xla"), 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_images, cfg.input_size, cfg.input_size, 3)).astype(np.float32)
    h = cfg.heatmap_size
    targets = rng.random((n_images, k, h, h, cfg.n_joints)).astype(np.float32)
    print(f"\nEGL++ scoring, {cfg.input_size}px, {cfg.n_stacks} stack(s), {cfg.channels} ch, "
          f"{count_params(base):,} params, K = {k}, {n_images} images, chunk {chunk}")  # fmt: skip
    print(f"  {'method':<34}{'s/image':>10}{'images/s':>10}{'vs K separate':>15}{'1st call':>10}")
    results = {}
    for mode, kernel_grad in variants:
        if mode == "separate":  # a twin of the same arrays with the chosen kernel gradients
            run = _k_separate_program(with_engine(base.hourglass, kernel_grad))
            fn = lambda: run(x, targets)  # noqa: B023
        else:
            fn = lambda m=mode, kernel_grad=kernel_grad: heatmap_grad_sq_norms(
                base, x, targets, NormEngine(chunk, m), kernel_grad
            )
        out, first, best = _timed(fn, repeats)
        name = f"{_mode_name(mode)}, {kernel_grad}"
        results[name] = (out, best)
        ref_out, ref_best = next(iter(results.values()))
        np.testing.assert_allclose(out, ref_out, rtol=2e-3)  # float32, summation order
        print(f"  {name:<34}{best / n_images:>10.3f}{n_images / best:>10.2f}"
              f"{ref_best / best:>14.2f}x{first:>9.1f}s", flush=True)  # fmt: skip
    return {name: best / n_images for name, (_, best) in results.items()}


def bench_training(cfg: HourglassConfig, n: int, batch: int, epochs: int):
    data = make_synthetic(n, 0, cfg.input_size)
    rates = {}
    for kernel_grad in ("xla", "im2col"):
        c = replace(cfg, kernel_grad=kernel_grad)
        train_pose_model(data, np.arange(batch), c, TrainConfig(1, batch), 0, learning_loss=True)
        t0 = time.perf_counter()
        train_pose_model(data, np.arange(n), c, TrainConfig(epochs, batch), 0, learning_loss=True)
        rates[kernel_grad] = epochs * n / (time.perf_counter() - t0)
    print(f"\ntraining {cfg.input_size}px/{cfg.n_stacks} stack(s)/{cfg.channels} ch, "
          f"batch {batch}, "
          f"augmentation on: {rates['xla']:.1f} images/s with XLA kernel gradients, "
          f"{rates['im2col']:.1f} with im2col ({rates['im2col'] / rates['xla']:.2f}x)")  # fmt: skip


ALL = [(m, g) for m in ("separate", "vmap", 5, "unroll") for g in ("xla", "im2col")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="unlabelled images (CPU preset)")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--paper", action="store_true", help="also the paper-size model")
    ap.add_argument("--paper-only", action="store_true", help="skip the CPU-preset model")
    ap.add_argument("--paper-images", type=int, default=2, help="unlabelled images (paper size)")
    ap.add_argument("--paper-chunk", type=int, default=2, help="images per jitted call")
    ap.add_argument("--unroll", action="store_true", help="also paper-size unrolled (slow compile)")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    if not args.paper_only:
        cpu = HourglassConfig(n_stacks=1, channels=32, depth=2, n_joints=16, input_size=48)
        bench_eglpp(cpu, args.images, args.k, 8, ALL, args.repeats)
        bench_training(cpu, 256, 16, 2)
    if args.paper or args.paper_only:
        paper = HourglassConfig()  # 2 stacks, 256 ch, depth 4, 16 joints, 256 px
        variants = [("separate", "xla"), ("vmap", "xla"), ("vmap", "im2col"), (3, "xla")]
        variants += [(3, "im2col")] + ([("unroll", "im2col")] if args.unroll else [])
        per_image = bench_eglpp(
            paper, args.paper_images, args.k, args.paper_chunk, variants, args.repeats
        )
        authors = AUTHORS_PYTORCH_S_PER_IMAGE
        print(f"  the authors' PyTorch EGL++ on a 2-core CPU: about {authors:.0f} s/image; "
              "speed-up over it:")  # fmt: skip
        for name, s in per_image.items():
            print(f"    {name:<34}{AUTHORS_PYTORCH_S_PER_IMAGE / s:6.1f}x")


if __name__ == "__main__":
    main()
