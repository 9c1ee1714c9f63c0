"""pose_eglpp.py --preset tiny end to end; kill-and-resume gives identical results."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from egltheory.studies.pose import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "pose_eglpp.py"
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pose_e2e")]
STRATEGIES = PRESETS["tiny"].protocol.strategies


def _rows(out):
    with open(out / "rows.csv") as fh:
        return list(csv.DictReader(fh))


def _cmd(out, cache, *extra):
    return [sys.executable, str(SCRIPT), "--preset", "tiny", "--out", str(out), "--cache-dir",
            str(cache), "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pose_e2e")
    out = base / "full"
    subprocess.run(_cmd(out, base / "cache"), check=True, cwd=ROOT, timeout=600)
    return base, out


def test_tiny_preset_writes_table_and_figures(full_run):
    _, out = full_run
    for name in (
        "table.md",
        "table.csv",
        "rows.csv",
        "learning_curves.png",
        "eglpp_neighbours.png",
        "fit.md",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = _rows(out)
    assert {r["strategy"] for r in rows} == set(STRATEGIES)
    for s in STRATEGIES:
        for seed in ("0", "1"):
            mine = [r for r in rows if r["strategy"] == s and r["seed"] == seed]
            assert [int(r["n_labelled"]) for r in mine] == [24, 36, 48]
    # paired seeds: every strategy starts from the same base model -> identical cycle-0 metrics
    first = {s: [r["mean"] for r in rows if r["strategy"] == s and r["cycle"] == "0"]
             for s in STRATEGIES}  # fmt: skip
    assert len({tuple(v) for v in first.values()}) == 1
    table = (out / "table.md").read_text()
    assert "egl++" in table and "PCKh@0.5" in table


def test_fit_table_reevaluates_the_saved_final_models(full_run):
    """fit.md's test column re-evaluates the saved final checkpoints: it must reproduce the
    final cycle's test PCKh recorded during the run (mean ± σ over the seeds)."""
    _, out = full_run
    rows = _rows(out)
    fit = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
           for line in (out / "fit.md").read_text().splitlines()
           if line.startswith("| ") and not line.startswith("| strategy")}  # fmt: skip
    assert set(fit) == set(STRATEGIES)
    for s in STRATEGIES:
        final = [100 * float(r["mean"]) for r in rows if r["strategy"] == s and r["cycle"] == "2"]
        mean, sd = (float(x) for x in fit[s][2].split(" ± "))
        assert fit[s][0] == "48"
        assert abs(mean - np.mean(final)) < 0.006 and abs(sd - np.std(final, ddof=1)) < 0.006
        assert 0 <= float(fit[s][1].split(" ± ")[0]) <= 100


def test_kill_and_resume_matches_uninterrupted_run(full_run):
    base, full = full_run
    out = base / "resumed"
    cmd = _cmd(out, base / "cache", "--strategies", "random", "--seeds", "0")
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    marker = out / "runs" / "random" / "seed_0" / "cycle_0001.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be interrupted"
    assert not (out / "table.md").exists()
    subprocess.run([*cmd, "--resume"], check=True, cwd=ROOT, timeout=600)
    run = Path("runs") / "random" / "seed_0" / "results.json"
    resumed = json.loads((out / run).read_text())
    assert resumed == json.loads((full / run).read_text())
    assert len(resumed) == 3
