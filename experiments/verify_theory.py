"""Theory check: closed-form EGL vs Monte-Carlo, identity 1 and rank gaps on fitted ensembles.

    python experiments/verify_theory.py --out results/verify_theory            # make demo
    python experiments/verify_theory.py --out /tmp/v --quick --figures-dir /tmp/v/fig

Writes ``report.json`` ({family: {dataset: {...}}, "checks": ...}) atomically into ``--out``, the
figures (PNG + PDF) into ``--figures-dir``, prints a summary and exits 1 if any check fails.
All the work is in :mod:`egltheory.verification` and :mod:`egltheory.figures_theory`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from tqdm import tqdm  # noqa: E402

from egltheory.figures_theory import write_all_figures  # noqa: E402
from egltheory.verification import VerificationConfig, run_verification  # noqa: E402


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON to a temp file in the same folder, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(obj, handle, indent=2)
    os.replace(tmp, path)


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/verify_theory", help="folder for report.json")
    parser.add_argument("--quick", action="store_true", help="small setting (used by the tests)")
    parser.add_argument("--figures-dir", default="paper_figures", help="folder for the figures")
    args = parser.parse_args(argv)

    config = VerificationConfig.quick() if args.quick else VerificationConfig.default()
    report, arrays = run_verification(
        config, progress=lambda jobs: tqdm(jobs, desc="family × dataset", unit="fit")
    )
    out = Path(args.out)
    atomic_write_json(out / "report.json", report)
    figures = write_all_figures(report, arrays, args.figures_dir)
    print("\n".join(summary_lines(report)))
    print(f"report: {out / 'report.json'}; figures: {len(figures)} files in {args.figures_dir}")
    return 0 if report["checks"]["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
