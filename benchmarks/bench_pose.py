"""Pose benchmark: EGL++ scoring and training throughput on the current backend (CPU or GPU).

    python benchmarks/bench_pose.py                 # CPU-preset model (96 px, 1 stack, 32 ch)
    python benchmarks/bench_pose.py --gpu           # paper-size model (256 px, 2 stacks, 256 ch),
                                                    # the table of issue 12; runs on CPU too (slow)
    python benchmarks/bench_pose.py --size paper --images 2 --chunk 2   # paper size on a CPU
    python benchmarks/bench_pose.py --size paper --parts estimators   # one part only

Everything is measured in one process on the same weights; times are steady state (best of
``--repeats`` calls after a first call, which includes compilation and is reported separately).

* **EGL++ engines** at K neighbours: ``K separate`` (K forward+backward passes per image, XLA's
  convolution derivatives: the authors' approach in JAX, the baseline of every ratio) against one
  shared forward (``jax.vjp``) whose K cotangents are vmapped or vmapped in groups of G, with XLA's
  kernel gradients or im2col GEMMs (``egltheory.conv``), in float32 or bfloat16 compute. Every
  variant's scores are checked against the first (float32: rtol 2e-3; bfloat16: its relative
  error and Spearman correlation are printed).
* **Identity-6 estimators** (``egltheory.eglpp``): exact, bias only (1 pullback), LowRank(4),
  Sketch(4, 4): images/s and Spearman vs exact on the benchmark's inputs (the pose study's own
  pools are in notebooks/04_eglpp_decomposed.ipynb).
* **Training**: images/s, float32 and bfloat16, with the pool on the device and augmentation in
  the compiled step, against the pre-issue-12 design (NumPy augmentation on the host, a host sync
  per step) in the same process.
* **Projection** of ``pose_eglpp.py --preset paper`` (5 strategies × 5 seeds, synthetic) from the
  measured rates: image-steps of training plus EGL++-scored images.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.stats import spearmanr

from egltheory.eglpp import EGLPPOptions, LowRank, NormEngine, Sketch, eglpp_terms, nnx_apply
from egltheory.pose.acquisition import PoseEGLPPOptions, heatmap_grad_sq_norms
from egltheory.pose.hourglass import HourglassConfig, count_params, with_engine
from egltheory.pose.synthetic import make_synthetic
from egltheory.pose.training import (
    TrainConfig,
    heatmap_loss,
    init_model,
    train_pose_model,
    train_step,
)
from egltheory.pose.transforms import augment
from egltheory.studies.pose import PRESETS

SIZES = {
    "cpu": HourglassConfig(n_stacks=1, channels=32, depth=2, n_joints=16, input_size=96),
    "paper": HourglassConfig(),  # 2 stacks, 256 channels, depth 4, 16 joints, 256 px
}


PARTS = ("engines", "estimators", "training")


def _timed(fn, repeats):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def peak_memory_bytes() -> tuple[int, str]:
    """Peak device memory where the backend reports it (GPU), else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


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


def _inputs(cfg, n, k):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, cfg.input_size, cfg.input_size, 3)).astype(np.float32)
    h = cfg.heatmap_size
    targets = rng.random((n, k, h, h, cfg.n_joints)).astype(np.float32)
    probs = rng.dirichlet(np.ones(k + 5), size=n)[:, :k].astype(np.float32)
    return x, targets, probs


def bench_engines(cfg, n, k, chunk, variants, repeats):
    """{(cotangents, kernel_grad, dtype): seconds per image}; checks the values."""
    model = init_model(replace(cfg, kernel_grad="xla"), 0, learning_loss=True)
    x, targets, _ = _inputs(cfg, n, k)
    n_params = count_params(model.hourglass)
    print(
        f"\nEGL++ gradient norms, {cfg.input_size}px, {cfg.n_stacks} stack(s), "
        f"{cfg.channels} ch, {n_params:,} params, K = {k}, {n} images, chunk {chunk}"
    )
    print(f"  {'engine':<38}{'ms/image':>10}{'images/s':>10}{'vs K sep.':>10}{'1st call':>10}")
    results, reference = {}, None
    for cotangents, kernel_grad, dtype in variants:
        if cotangents == "separate":
            run = _k_separate_program(with_engine(model.hourglass, kernel_grad))
            fn = lambda run=run: run(x, targets)
        else:
            opts = PoseEGLPPOptions(eglpp=EGLPPOptions(engine=NormEngine(chunk, cotangents)),
                                    kernel_grad=kernel_grad, compute_dtype=dtype)  # fmt: skip
            fn = lambda opts=opts: heatmap_grad_sq_norms(model, x, targets, opts)
        out, first, best = _timed(fn, repeats)
        out = np.asarray(out)
        name = f"{'K separate' if cotangents == 'separate' else 'shared, ' + str(cotangents)}, " \
               f"{kernel_grad}, {dtype}"  # fmt: skip
        extra = ""
        if reference is None:
            reference, ref_best = out, best
        elif dtype == "float32":
            np.testing.assert_allclose(out, reference, rtol=2e-3)  # float32, summation order
        else:
            rel = np.abs(out - reference) / reference
            rho = spearmanr(out.sum(1), reference.sum(1)).statistic
            extra = f"  (rel. error median {np.median(rel):.1e}, max {rel.max():.1e}; " \
                    f"Spearman {rho:.4f})"  # fmt: skip
        results[(cotangents, kernel_grad, dtype)] = best / n
        print(f"  {name:<38}{1e3 * best / n:>10.2f}{n / best:>10.2f}{ref_best / best:>9.2f}x"
              f"{first:>9.1f}s{extra}", flush=True)  # fmt: skip
    return results


def bench_estimators(cfg, n, k, chunk, cotangents, kernel_grad, repeats):
    """Images/s of identity 6's estimators and their Spearman against the exact score."""
    model = init_model(replace(cfg, kernel_grad="xla"), 0, learning_loss=True)
    x, targets, probs = _inputs(cfg, n, k)
    apply_fn, params, _ = nnx_apply(with_engine(model.hourglass, kernel_grad))
    engine = NormEngine(chunk, cotangents)
    print(f"\nEGL++ estimators (identity 6), same model, K = {k}, {n} images, engine "
          f"{cotangents}/{kernel_grad}")  # fmt: skip
    print(f"  {'estimator':<22}{'pullbacks':>10}{'images/s':>10}{'vs exact':>10}{'Spearman':>10}")
    rows, exact_scores, exact_best = {}, None, None
    estimators = (("exact (Eq. 12)", "exact", k), ("bias only", LowRank(0), 1),
                  ("LowRank(4)", LowRank(4), 5), ("Sketch(4, 4)", Sketch(4, 4), 9))  # fmt: skip
    for name, estimator, pulls in estimators:
        opts = EGLPPOptions(engine=engine, estimator=estimator)
        if estimator == "exact":
            fn = lambda opts=opts: (
                heatmap_grad_sq_norms(
                    model, x, targets, PoseEGLPPOptions(eglpp=opts, kernel_grad=kernel_grad)
                )
                .__mul__(probs)
                .sum(1)
            )
        else:
            fn = lambda opts=opts: eglpp_terms(apply_fn, params, x, targets, probs, heatmap_loss,
                                               opts, jax.random.key(0)).score  # fmt: skip
        out, _, best = _timed(fn, repeats)
        out = np.asarray(out)
        if exact_scores is None:
            exact_scores, exact_best = out, best
        rho = spearmanr(out, exact_scores).statistic
        rows[name] = n / best
        print(f"  {name:<22}{pulls:>10}{n / best:>10.2f}{exact_best / best:>9.2f}x{rho:>10.4f}",
              flush=True)  # fmt: skip
    return rows


def _host_augment_training(data, labelled, cfg, train_cfg, seed):
    """The pre-issue-12 design: NumPy augmentation per batch on the host, one dispatch and one
    host sync (``float(loss)``) per step. Baseline only."""
    rng = np.random.default_rng(seed)
    model = init_model(cfg, seed, learning_loss=True)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    settings = train_cfg.step_settings(data.flip_pairs)
    opt_state = settings.make_optimizer().init(params)
    bs = train_cfg.batch_size
    n_steps = train_cfg.epochs * math.ceil(len(labelled) / bs)
    order = np.concatenate([rng.permutation(labelled) for _ in range(n_steps * bs // len(labelled)
                                                                     + 2)])  # fmt: skip
    for t in range(n_steps):
        idx = order[t * bs : (t + 1) * bs]
        imgs, joints, vis = augment(rng, data.images[idx], data.joints[idx], data.visible[idx],
                                    data.flip_pairs)  # fmt: skip
        params, rest, opt_state, loss = train_step(graphdef, settings, cfg.heatmap_size, 4, True,
                                                   params, rest, opt_state, imgs - 0.5, joints,
                                                   vis)  # fmt: skip
        float(loss)


def bench_training(cfg, n, batch, epochs, dtypes, baseline):
    """Images/s of training (steady state: a warm-up run compiles first)."""
    data = make_synthetic(n, 0, cfg.input_size)
    labelled = np.arange(n)
    rates = {}
    print(
        f"\ntraining {cfg.input_size}px, {cfg.n_stacks} stack(s), {cfg.channels} ch, "
        f"batch {batch}, {n} images × {epochs} epochs, augmentation, learning-loss head"
    )
    for dtype in dtypes:
        tc = TrainConfig(epochs=epochs, batch_size=batch, compute_dtype=dtype)
        t0 = time.perf_counter()
        train_pose_model(data, labelled[:batch], cfg, replace(tc, epochs=1), 0, learning_loss=True)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_pose_model(data, labelled, cfg, tc, 0, learning_loss=True)
        rates[dtype] = epochs * n / (time.perf_counter() - t0)
        print(f"  on device, {dtype:<9}{rates[dtype]:>9.1f} images/s  (first call "
              f"{compile_s:.1f} s)", flush=True)  # fmt: skip
    if baseline:
        tc = TrainConfig(epochs=epochs, batch_size=batch)
        _host_augment_training(data, labelled[:batch], cfg, replace(tc, epochs=1), 0)
        t0 = time.perf_counter()
        _host_augment_training(data, labelled, cfg, tc, 0)
        old = epochs * n / (time.perf_counter() - t0)
        print(f"  host NumPy augmentation + sync per step (before): {old:.1f} images/s; on "
              f"device: {rates['float32'] / old:.2f}x", flush=True)  # fmt: skip
    return rates


def project_paper_preset(train_rate: float, eglpp_rate: float) -> None:
    """Hours of ``--preset paper`` from the rates (training image-steps + EGL++-scored images)."""
    study = PRESETS["paper"]
    p, t = study.protocol, study.training
    labelled = [p.n_initial + p.budget * c for c in range(1, p.n_cycles + 1)]
    per_strategy = sum(n * t.cycle_epochs for n in labelled)  # fine-tuning image-steps
    base = p.n_initial * t.base.epochs
    per_seed = base + len(p.strategies) * per_strategy
    scored = sum(study.data.n_pool - p.n_initial - p.budget * (c - 1)
                 for c in range(1, p.n_cycles + 1))  # fmt: skip
    seed_h = (per_seed / train_rate + scored / eglpp_rate) / 3600
    print(f"\nprojected --preset paper: {per_seed:,} training image-steps and {scored:,} EGL++ "
          f"images per seed → {seed_h:.2f} h per seed (all strategies), "
          f"{len(p.seeds) * seed_h:.1f} h for {len(p.seeds)} seeds (inference and evaluation "
          "not counted)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the paper-size table (issue 12)")
    ap.add_argument("--size", choices=tuple(SIZES), default=None, help="model size")
    ap.add_argument("--images", type=int, default=None, help="unlabelled images scored")
    ap.add_argument("--chunk", type=int, default=None, help="images per jitted call")
    ap.add_argument("--k", type=int, default=30, help="neighbours")
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="what to measure")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    size = args.size or ("paper" if args.gpu else "cpu")
    cfg = SIZES[size]
    on_cpu = jax.default_backend() == "cpu"
    n = args.images or (2 if size == "paper" and on_cpu else 32)
    chunk = args.chunk or min(n, 8)
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    groups = 3 if size == "paper" else 5
    variants = [("separate", "xla", "float32"), ("vmap", "xla", "float32"),
                ("vmap", "im2col", "float32"), (groups, "xla", "float32"),
                (groups, "im2col", "float32"), ("vmap", "im2col", "bfloat16"),
                ("vmap", "xla", "bfloat16")]  # fmt: skip
    per_image, rates = {}, {}
    if "engines" in args.parts:
        per_image = bench_engines(cfg, n, args.k, chunk, variants, args.repeats)
        shared = [v for v in per_image if v[0] != "separate" and v[2] == "float32"]
        cot, kg, _ = min(shared, key=per_image.get)  # the fastest float32 engine
    else:  # the presets' engines
        cot, kg = groups, "im2col" if size == "paper" else "xla"
    if "estimators" in args.parts:
        bench_estimators(cfg, n, args.k, chunk, cot, kg, args.repeats)
    if "training" in args.parts:
        n_train = args.train_images or (16 if size == "paper" and on_cpu else 256)
        rates = bench_training(cfg, n_train, 16, 1 if size == "paper" else 2,
                               ("float32", "bfloat16"), baseline=True)  # fmt: skip
    bytes_, what = peak_memory_bytes()
    print(f"\n{what}: {bytes_ / 2**30:.2f} GiB")
    if size == "paper" and per_image and rates:
        project_paper_preset(max(rates.values()), 1 / min(per_image.values()))


if __name__ == "__main__":
    main()
