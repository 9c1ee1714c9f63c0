"""Pose active learning: EGL++ vs random, core-set, multi-peak entropy and learning loss.

    python experiments/pose_eglpp.py                       # synthetic data, CPU-sized (≤ 15 min)
    python experiments/pose_eglpp.py --preset tiny         # smoke test (≤ 2 min)
    python experiments/pose_eglpp.py --preset paper --data mpii --data-dir /path/to/mpii  # GPU

Writes per-cycle results, table.md / table.csv, learning_curves.png and eglpp_neighbours.png to
--out. --resume continues from the last finished cycle of every run. See docs/pose.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from egltheory.pose.acquisition import KERNEL_GRAD_CHOICES, STRATEGIES
from egltheory.pose.study import PRESETS, preset_with, run_study


def _cotangents(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--data", choices=("synthetic", "mpii", "lsp"), default="synthetic")
    ap.add_argument("--data-dir", default=None, help="MPII or LSP root (lspet/ inside for LSPET)")
    ap.add_argument("--out", default="results/pose_eglpp")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--cycles", type=int, default=None, help="override the preset's n_cycles")
    ap.add_argument(
        "--retrain", action="store_true", help="retrain each cycle (default: fine-tune)"
    )
    ap.add_argument("--neighbour-labels", choices=("prediction", "ground_truth"), default=None)
    ap.add_argument(
        "--cotangents",
        type=_cotangents,
        default=None,
        help="EGL++ pullbacks: unroll, vmap or an int G (vmapped groups of G); preset default",
    )
    ap.add_argument(
        "--kernel-grad",
        choices=KERNEL_GRAD_CHOICES,
        default=None,
        help="EGL++ conv kernel gradients: XLA's or im2col GEMMs; preset default",
    )
    ap.add_argument("--cache-dir", default=None, help="synthetic-data cache (.npz)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    preset = preset_with(
        PRESETS[args.preset],
        seeds=args.seeds,
        n_cycles=args.cycles,
        finetune=False if args.retrain else None,
        neighbour_labels=args.neighbour_labels,
        cotangents=args.cotangents,
        kernel_grad=args.kernel_grad,
    )
    t0 = time.perf_counter()
    run_study(
        preset,
        args.out,
        data=args.data,
        data_dir=args.data_dir,
        strategies=tuple(args.strategies),
        resume=args.resume,
        progress=not args.no_progress,
        cache_dir=args.cache_dir,
    )
    print((Path(args.out) / "table.md").read_text())
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {args.out}")


if __name__ == "__main__":
    main()
