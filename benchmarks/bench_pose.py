"""Pose benchmark: EGL++ scoring throughput and training throughput (CPU or GPU).

EGL++ needs ‖∇_θ l(x, y_k)‖² for K = 30 neighbour labels y_k per unlabelled image x. Compared in
the same process, on the same jitted model:

* ``shared+unroll``: one forward (``jax.vjp``) per image, K pullbacks unrolled in one program;
* ``shared+vmap``:   one forward per image, the K cotangents vmapped through one pullback;
* ``K separate``:    K forward+backward passes per image (the authors' approach, in JAX).

    python benchmarks/bench_pose.py                 # CPU-preset model (48 px, 1 stack, 32 ch)
    python benchmarks/bench_pose.py --paper         # + paper size (256 px, 2 stacks, 256 ch)
    python benchmarks/bench_pose.py --skip-unroll   # the unrolled program compiles slowly on CPU

Times are steady state (after one warm-up call, compile time reported separately).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from egltheory.pose.acquisition import heatmap_grad_sq_norms
from egltheory.pose.data import make_synthetic
from egltheory.pose.hourglass import HourglassConfig, count_params
from egltheory.pose.training import TrainConfig, heatmap_loss, init_model, train_pose_model


def _k_separate_program(model):
    hg = model.hourglass
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


def _timed(fn, repeats=1):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, first, (first if repeats == 0 else best)


def bench_eglpp(cfg: HourglassConfig, n_images: int, k: int, chunk: int, modes, repeats: int):
    model = init_model(cfg, 0)
    model.eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_images, cfg.input_size, cfg.input_size, 3)).astype(np.float32)
    h = cfg.heatmap_size
    targets = rng.random((n_images, k, h, h, cfg.n_joints)).astype(np.float32)
    print(f"\nEGL++ scoring, {cfg.input_size}px, {cfg.n_stacks} stack(s), {cfg.channels} ch, "
          f"{count_params(model):,} params, K = {k}, {n_images} images")  # fmt: skip
    results = {}
    for mode in modes:
        if mode == "separate":
            run = _k_separate_program(model)
            fn = lambda: run(x, targets)  # noqa: B023
        else:
            fn = lambda m=mode: heatmap_grad_sq_norms(
                model, x, targets, chunk_size=chunk, cotangents=m
            )
        out, first, best = _timed(fn, repeats)
        results[mode] = (out, best)
        note = "incl. compile" if repeats == 0 else f"first call incl. compile {first:.1f} s"
        print(f"  {mode:>9}: {best / n_images:8.3f} s/image  {n_images / best:8.2f} images/s  "
              f"({note})")  # fmt: skip
    ref = results.get("separate")
    for mode, (out, best) in results.items():
        if ref is not None and mode != "separate":
            np.testing.assert_allclose(out, ref[0], rtol=2e-3)
            print(
                f"  speed-up of {mode} over K separate passes: {ref[1] / best:.2f}x (same values)"
            )
    return results


def bench_training(cfg: HourglassConfig, n: int, batch: int, steps_epochs: int):
    data = make_synthetic(n, 0, cfg.input_size)
    tc = TrainConfig(epochs=1, batch_size=batch)
    train_pose_model(data, np.arange(batch), cfg, tc, 0, learning_loss=True)  # compile
    t0 = time.perf_counter()
    tc = TrainConfig(epochs=steps_epochs, batch_size=batch)
    train_pose_model(data, np.arange(n), cfg, tc, 0, learning_loss=True)
    dt = time.perf_counter() - t0
    imgs = steps_epochs * n
    print(f"\ntraining {cfg.input_size}px/{cfg.n_stacks} stack(s)/{cfg.channels} ch, "
          f"batch {batch}, augmentation on: {imgs / dt:.1f} images/s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="unlabelled images (CPU preset)")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--skip-unroll", action="store_true")
    ap.add_argument("--paper", action="store_true", help="also the paper-size model")
    ap.add_argument("--paper-images", type=int, default=2)
    args = ap.parse_args()
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    modes = ["separate", "vmap"] + ([] if args.skip_unroll else ["unroll"])
    cpu = HourglassConfig(n_stacks=1, channels=32, depth=2, n_joints=16, input_size=48)
    bench_eglpp(cpu, args.images, args.k, 8, modes, repeats=1)
    bench_training(cpu, 256, 16, 2)
    if args.paper:
        paper = HourglassConfig()  # 2 stacks, 256 ch, depth 4, 16 joints, 256 px
        bench_eglpp(paper, args.paper_images, args.k, 1, ["separate", "vmap"], repeats=0)
        print("  (authors' PyTorch EGL++ on this 2-core CPU: about 85 s/image)")


if __name__ == "__main__":
    main()
