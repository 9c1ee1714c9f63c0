"""Synthetic-renderer benchmark: images/s of the previous and the current renderer, one process.

* ``old``: the previous ``make_synthetic`` (kept in ``tests/synthetic_reference.py``): every limb,
  the head and the occluders over every pixel of whole chunks in float64, scipy blur, one float64
  noise array;
* ``new``: ``make_synthetic`` (per image in float32, bounding boxes, separable background and
  blur, Box–Muller noise), on 1 thread and on ``--workers`` threads (default: all usable cores;
  ``make_synthetic``'s own default is 1 below 128 px, else up to 4).

Both render the same scenes (same seed); times include scene sampling (whole ``make_synthetic``
calls), best of ``--repeats`` calls after a warm-up call. The paper preset renders 12,000 images at
256 px (10,000 pool + 2,000 test).

    python benchmarks/bench_render.py                 # 48, 96 and 256 px
    python benchmarks/bench_render.py --sizes 256 --workers 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from egltheory.pose.synthetic import make_synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_reference import make_synthetic_reference

PAPER_IMAGES = 12_000
# Images per timed call: about a second or more of work each on a 2-core machine.
N_OLD = {48: 256, 96: 128, 256: 32}
N_NEW = {48: 2048, 96: 1024, 256: 256}


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _rate(fn, n: int, repeats: int) -> float:
    """Best images/s of ``repeats`` calls ``fn(n)`` after a warm-up call."""
    fn(min(n, 8))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_render(sizes, workers: int, repeats: int, seed: int = 0) -> dict:
    """Print and return {size: (old, new on 1 thread, new on ``workers`` threads)} images/s."""
    out = {}
    print(f"{'size':>6}{'old img/s':>12}{'new, 1 thread':>16}{f'new, {workers} threads':>18}"
          f"{'ratio':>8}{'12k images':>13}")  # fmt: skip
    for size in sizes:
        n_old, n_new = N_OLD.get(size, 64), N_NEW.get(size, 512)

        def new(n, threads, s=size):
            return make_synthetic(n, seed, s, workers=threads)

        old = _rate(lambda n, s=size: make_synthetic_reference(n, seed, s), n_old, repeats)
        one = _rate(lambda n: new(n, 1), n_new, repeats)
        many = one if workers == 1 else _rate(lambda n: new(n, workers), n_new, repeats)
        best = max(one, many)
        print(f"{size:>6}{old:>12.1f}{one:>16.1f}{many:>18.1f}{best / old:>7.1f}x"
              f"{PAPER_IMAGES / best:>11.1f} s")  # fmt: skip
        out[size] = (old, one, many)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[48, 96, 256])
    ap.add_argument("--workers", type=int, default=None, help="threads (default: usable cores)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    workers = _usable_cores() if args.workers is None else args.workers
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"os.cpu_count() = {os.cpu_count()}, usable cores = {_usable_cores()}, "
          f"load average {load}")  # fmt: skip
    bench_render(args.sizes, workers, args.repeats)


if __name__ == "__main__":
    main()
