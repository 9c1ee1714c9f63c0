"""Pin the pre-redesign behaviour (commit d38af37): run once with the OLD API, write golden JSON.

Kept for the record of how the goldens were made; tests/test_golden.py reproduces them with the
new API. Run: python tests/golden/make_goldens_v0.py (from the repository root, old code).
"""

import json
import platform
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

# As the CLIs: x64 on for the theory check and regression, off (JAX's default) for pose.
X64 = {"regression": True, "theory": True, "pose": False}

HERE = Path(__file__).resolve().parent


def fingerprint():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    import jaxlib

    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": sys.version.split()[0],
    }


def regression(tmp):
    from egltheory.regression_al import RegressionALConfig, run_regression_al, summarise

    from egltheory.datasets import load_regression_dataset

    config = RegressionALConfig(
        datasets=("diabetes",),
        families=("linear", "aleatoric", "gp"),
        seeds=2,
        budget=5,
        n_cycles=2,
        initial=15,
        nn_steps=50,
        gp_steps=5,
    )
    out = Path(tmp) / "reg"
    rows = run_regression_al(config, out, load_regression_dataset, progress=False)
    runs = {}
    for r in rows:
        d = out / r["dataset"] / r["family"] / r["strategy"] / f"seed{r['seed']}"
        rec = json.loads((d / f"cycle_{r['cycle']:04d}.json").read_text())
        key = f"{r['dataset']}/{r['family']}/{r['strategy']}/{r['seed']}"
        runs.setdefault(key, []).append(
            {
                "cycle": rec["cycle"],
                "n_labelled": rec["n_labelled"],
                "selected": rec["selected"],
                "metrics": rec["metrics"],
            }
        )
    return {
        "config": {
            "datasets": ["diabetes"],
            "families": ["linear", "aleatoric", "gp"],
            "seeds": [0, 1],
            "budget": 5,
            "n_cycles": 2,
            "initial": 15,
            "nn_steps": 50,
            "gp_steps": 5,
        },
        "runs": runs,
        "table": summarise(rows),
    }


def pose(tmp):
    import csv
    import io

    from egltheory.pose.study import PRESETS, make_table, run_study

    results = run_study(
        PRESETS["tiny"], Path(tmp) / "pose", progress=False, cache_dir=Path(tmp) / "cache"
    )
    runs = {}
    for s, by_seed in results.items():
        for seed, recs in by_seed.items():
            runs[f"{s}/{seed}"] = [
                {
                    "cycle": r["cycle"],
                    "n_labelled": r["n_labelled"],
                    "selected": r["selected"],
                    "metrics": r["metrics"],
                }
                for r in recs
            ]
    _, table_csv = make_table(results)
    table = list(csv.DictReader(io.StringIO(table_csv)))
    return {"preset": "tiny", "runs": runs, "table": table}


def theory():
    from egltheory.verification import VerificationConfig, run_verification

    report, _ = run_verification(VerificationConfig.quick())
    return report


if __name__ == "__main__":
    which = sys.argv[1:]
    assert len(which) == 1, "one study per process (x64 differs): regression | pose | theory"
    jax.config.update("jax_enable_x64", X64[which[0]])
    with tempfile.TemporaryDirectory() as tmp:
        for name in which:
            obj = {
                "regression": lambda: regression(tmp),
                "pose": lambda: pose(tmp),
                "theory": theory,
            }[name]()
            doc = {"fingerprint": fingerprint(), "commit": "d38af37", "golden": obj}
            (HERE / f"{name}.json").write_text(
                json.dumps(doc, indent=1, sort_keys=True, default=lambda o: np.asarray(o).tolist())
            )
            print("wrote", name)
