"""Theory check: closed-form EGL vs Monte-Carlo, identity 1 and rank gaps on fitted ensembles.

    python experiments/verify_theory.py --out results/verify_theory            # make demo
    python experiments/verify_theory.py --preset tiny --out /tmp/v             # smoke test
    python experiments/verify_theory.py --figures-dir paper_figures            # the committed set

Writes ``report.json`` ({family: {dataset: {...}}, "checks": ...}) atomically into ``--out``, the
figures (PNG + PDF) into ``--figures-dir`` (default ``<out>/figures``: runs never write into the
repository unless asked to), prints a summary and exits 1 if any check fails.
All the work is in :mod:`egltheory.verification` and :mod:`egltheory.figures_theory`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from tqdm import tqdm  # noqa: E402

from egltheory.figures_theory import write_all_figures  # noqa: E402
from egltheory.files import atomic_write_json  # noqa: E402
from egltheory.studies.cli import add_output_flags, check_output, show_progress  # noqa: E402
from egltheory.verification import PRESETS, run_verification  # noqa: E402


def summary_lines(report: dict) -> list[str]:
    checks = report["checks"]
    lines = [
        f"{'family':<10} {'dataset':<9} {'max|z|':>7} {'ident.err':>9} {'bias':>6} "
        f"{'ρ(EGL,KG)':>9} {'ρ(EGL/g,KG)':>11}"
    ]
    for family in report["config"]["families"]:
        for dataset, e in report[family].items():
            rho = e["spearman"]
            lines.append(
                f"{family:<10} {dataset:<9} {e['mc_max_abs_z']:7.2f} "
                f"{e['identity_max_rel_err']:9.1e} {e['bias_share']:6.3f} "
                f"{rho['egl|kendall_gal']:9.3f} {rho['egl_over_grad|kendall_gal']:11.3f}"
            )
    failed = [name for name, item in checks["items"].items() if not item["passed"]]
    lines.append(
        f"checks: {'ALL PASSED' if checks['all_passed'] else 'FAILED: ' + ', '.join(failed)} "
        f"(MC |z| threshold {checks['mc_threshold']:.2f}, identity tol "
        f"{checks['identity_tolerance']:.0e})"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_output_flags(parser, "results/verify_theory", PRESETS)
    parser.add_argument("--figures-dir", default=None, help="folder for the figures")
    args = parser.parse_args(argv)
    out = Path(args.out)
    figures_dir = Path(args.figures_dir) if args.figures_dir else out / "figures"
    check_output(parser, str(out))
    check_output(parser, str(figures_dir))

    bar = show_progress(args)
    report, arrays = run_verification(
        PRESETS[args.preset],
        progress=lambda jobs: tqdm(jobs, desc="family × dataset", unit="fit", disable=not bar),
    )
    atomic_write_json(out / "report.json", report)
    figures = write_all_figures(report, arrays, figures_dir)
    print("\n".join(summary_lines(report)))
    print(f"report: {out / 'report.json'}; figures: {len(figures)} files in {figures_dir}")
    return 0 if report["checks"]["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
