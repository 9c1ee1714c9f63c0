"""Pose active learning: EGL++ vs random, core-set, multi-peak entropy and learning loss.

    python experiments/pose_eglpp.py                       # synthetic data, CPU-sized (default)
    python experiments/pose_eglpp.py --preset tiny         # smoke test
    python experiments/pose_eglpp.py --preset paper --data mpii --data-dir /path/to/mpii  # GPU

Writes runs/<strategy>/seed_<s>/ (per-cycle results), rows.csv, table.md / table.csv,
learning_curves.png and eglpp_neighbours.png to --out. --resume continues from the last finished
cycle of every run. Run times: README.md, "Run times". All logic: egltheory.studies.pose.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from egltheory.pose.acquisition import NEIGHBOUR_LABELS, STRATEGIES
from egltheory.pose.hourglass import KERNEL_GRAD_CHOICES
from egltheory.studies.cli import (
    add_study_flags,
    check_output,
    eglpp_estimator,
    protocol_from_flags,
    show_progress,
)
from egltheory.studies.pose import DATA_SOURCES, PRESETS
from egltheory.studies.runner import run_study


def _cotangents(text: str) -> str | int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text in ("unroll", "vmap"):
        return text
    raise argparse.ArgumentTypeError(f"expected unroll, vmap or a positive int, got {text!r}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_study_flags(parser, STRATEGIES, "results/pose_eglpp", PRESETS)
    parser.add_argument("--data", choices=DATA_SOURCES, default=None, help="default: synthetic")
    parser.add_argument("--data-dir", default=None, help="MPII or LSP root (lspet/ inside)")
    parser.add_argument("--cache-dir", default=None, help="synthetic-data cache (.npz)")
    parser.add_argument("--retrain", action="store_true",
                        help="retrain each cycle from scratch (default: fine-tune)")  # fmt: skip
    parser.add_argument("--neighbour-labels", choices=NEIGHBOUR_LABELS, default=None)
    parser.add_argument("--cotangents", type=_cotangents, default=None,
                        help="EGL++ pullbacks: unroll, vmap or G (groups of G)")  # fmt: skip
    parser.add_argument("--eglpp-estimator", type=eglpp_estimator, default=None,
                        help="exact (Eq. 12), lowrank:M or sketch:M[:P] (identity 6)")  # fmt: skip
    parser.add_argument("--kernel-grad", choices=KERNEL_GRAD_CHOICES, default=None,
                        help="EGL++ conv kernel gradients: XLA's or im2col GEMMs")  # fmt: skip
    args = parser.parse_args(argv)
    if args.data_dir is not None and args.data in (None, "synthetic"):
        parser.error("--data-dir is only used with --data mpii or --data lsp")
    check_output(parser, args.out)

    study = PRESETS[args.preset]
    try:
        data = replace(
            study.data,
            **{k: v for k, v in (("source", args.data), ("data_dir", args.data_dir),
                                 ("cache_dir", args.cache_dir)) if v is not None},
        )  # fmt: skip
        eglpp = study.eglpp.replace(
            **{k: v for k, v in (("neighbour_labels", args.neighbour_labels),
                                 ("cotangents", args.cotangents),
                                 ("kernel_grad", args.kernel_grad),
                                 ("estimator", args.eglpp_estimator)) if v is not None}
        )  # fmt: skip
        training = replace(study.training, finetune=False) if args.retrain else study.training
        study = replace(
            study,
            protocol=protocol_from_flags(parser, study.protocol, args),
            data=data,
            training=training,
            eglpp=eglpp,
        )
    except ValueError as err:
        parser.error(str(err))
    t0 = time.perf_counter()
    bars = show_progress(args)
    log = None if bars else (lambda line: print(line, flush=True))
    run_study(study, args.out, resume=args.resume, progress=bars, log=log)
    print((Path(args.out) / "table.md").read_text())
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {args.out}")


if __name__ == "__main__":
    main()
