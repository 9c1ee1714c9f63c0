"""Recompute the golden studies with the CURRENT code, in the canonical form of the goldens.

    python tests/golden/canonical.py regression|pose|theory OUT_JSON WORKDIR

One study per process: x64 on for regression and the theory check, off for pose (as the CLIs).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

X64 = {"regression": True, "theory": True, "pose": False}


def _records(out: Path, key_of) -> dict:
    runs = {}
    for run_json in sorted(out.glob("runs/**/results.json")):
        recs = json.loads(run_json.read_text())
        runs[key_of(run_json.parent)] = [
            {k: r[k] for k in ("cycle", "n_labelled", "selected", "metrics")} for r in recs
        ]
    return runs


def regression(work: Path) -> dict:
    from egltheory.studies.regression import PRESETS
    from egltheory.studies.report import paired_table
    from egltheory.studies.runner import run_study

    study = PRESETS["tiny"]
    out = work / "reg"
    rows = run_study(study, out)
    runs = _records(
        out,
        lambda d: "{}/{}/{}/{}".format(
            d.parents[2].name, d.parents[1].name, d.parents[0].name, d.name.split("_")[1]
        ),
    )
    table = []
    for metric in study.metrics:
        table += paired_table(rows, metric, "egl", study.group_keys, study.protocol.strategies)
    return {"runs": runs, "table": table}


def pose(work: Path) -> dict:
    from egltheory.studies.pose import PRESETS
    from egltheory.studies.report import paired_table
    from egltheory.studies.runner import run_study

    study = PRESETS["tiny"]
    from dataclasses import replace

    study = replace(study, data=replace(study.data, cache_dir=str(work / "cache")))
    out = work / "pose"
    rows = run_study(study, out)
    runs = _records(out, lambda d: f"{d.parents[0].name}/{d.name.split('_')[1]}")
    table = paired_table(rows, study.metrics[0], "egl++", (), study.protocol.strategies)
    return {"runs": runs, "table": table}


def theory(work: Path) -> dict:
    from egltheory.verification import PRESETS, run_verification

    report, _ = run_verification(PRESETS["tiny"])
    return report


if __name__ == "__main__":
    which, out_json, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    jax.config.update("jax_enable_x64", X64[which])
    result = {"regression": regression, "pose": pose, "theory": theory}[which](work)
    out_json.write_text(json.dumps(result, default=lambda o: np.asarray(o).tolist()))
