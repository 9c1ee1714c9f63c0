"""Fit and predict time of each ensemble family; aleatoric joint vs one-at-a-time training.

    python benchmarks/bench_ensembles.py            # ~3-5 min on a 2-core CPU
    python benchmarks/bench_ensembles.py --small    # seconds, for a smoke run

For n = 200 and n = 2,000 labelled points (d = 8, synthetic heteroscedastic data) it reports the
first fit (includes XLA compilation), a second fit with a new key (compiled), and the time to score
a pool (predict + f_z + ‖∇f_z‖², compiled) of 10⁵ points. Reduced settings, printed with the
results: aleatoric nets are trained for ``--aleatoric-steps`` full-batch steps; GP hyper-parameters
get ``--gp-steps`` Adam steps (fewer at n = 2,000, where each step costs K + 1 Cholesky gradients
of a 2,000 × 2,000 matrix); the GP pool at n = 2,000 is 10⁴ points (exact prediction costs
n² per pool point and member). Timings are wall-clock on a machine other jobs may share; the
joint-vs-sequential ratio is measured in the same process, back to back.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

from egltheory.ensembles import AleatoricEnsemble, GPEnsemble, LinearEnsemble  # noqa: E402


def synthetic(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + (0.1 + 0.2 * np.abs(X[:, 2])) * rng.normal(size=n)
    return X, y


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return out, time.perf_counter() - start


def score_pool(fitted, pool):
    means, variances = fitted.predict(pool)
    return means, variances, fitted.f_z(pool), fitted.grad_sq_norm(pool)


def bench_family(name, model, n, pool_size, d=8):
    X, y = synthetic(n, d, seed=n)
    pool, _ = synthetic(pool_size, d, seed=n + 1)
    fitted, first = timed(lambda: model.fit(jax.random.key(0), X, y))
    fitted, second = timed(lambda: model.fit(jax.random.key(1), X, y))
    timed(lambda: score_pool(fitted, pool))  # compile the scoring path for this pool shape
    _, t_pool = timed(lambda: score_pool(fitted, pool))
    print(
        f"{name:<10} n={n:>5}  fit first {first:7.2f} s  fit compiled {second:7.2f} s  "
        f"score pool of {pool_size:>6}: {t_pool:7.2f} s"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--aleatoric-steps", type=int, default=500)
    parser.add_argument("--gp-steps", type=int, default=20)
    parser.add_argument("--gp-steps-large", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = (50, 200) if args.small else (200, 2000)
    pool = 2000 if args.small else 100_000
    steps = 50 if args.small else args.aleatoric_steps
    print(
        f"settings: K = 4, d = 8, aleatoric hidden (64, 64) x {steps} steps, GP {args.gp_steps} "
        f"Adam steps at n = {sizes[0]} and {args.gp_steps_large} at n = {sizes[1]}, "
        f"GP f_z = weight-space GP mean"
    )
    for n in sizes:
        bench_family("linear", LinearEnsemble(), n, pool)
    for n in sizes:
        bench_family("aleatoric", AleatoricEnsemble(hidden=(64, 64), steps=steps), n, pool)
    # Aleatoric: K + 1 networks in one compiled vmapped program vs the same nets one at a time.
    X, y = synthetic(sizes[0], 8, seed=7)
    timings = {}
    for mode in ("together", "one_at_a_time"):
        model = AleatoricEnsemble(hidden=(64, 64), steps=steps, train_mode=mode)
        timed(lambda model=model: model.fit(jax.random.key(0), X, y))  # compile
        runs = [timed(lambda model=model: model.fit(jax.random.key(1), X, y))[1] for _ in range(2)]
        timings[mode] = min(runs)
    print(
        f"aleatoric training, n={sizes[0]}, K+1 = 5 nets x {steps} steps (compiled, best of 2): "
        f"together {timings['together']:.2f} s, one at a time {timings['one_at_a_time']:.2f} s, "
        f"ratio one-at-a-time / together = {timings['one_at_a_time'] / timings['together']:.2f}x"
    )
    for n, gp_steps in zip(sizes, (args.gp_steps, args.gp_steps_large), strict=True):
        gp_pool = pool if n == sizes[0] else pool // 10
        model = GPEnsemble(steps=gp_steps, f_z="gp_mean", chunk_size=2048)
        bench_family("gp", model, n, gp_pool)


if __name__ == "__main__":
    main()
