"""End-to-end: verify_theory.py --preset tiny writes a complete report and byte-stable figures."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("gpjax", reason="fits GPs: the `gp` extra (gpjax 1.0 needs jax < 0.11)")

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "verify_theory.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("verify_theory_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_verify_theory_quick(tmp_path, capsys):
    out, figures = tmp_path / "out", tmp_path / "figures"
    script = _load_script()
    code = script.main(["--preset", "tiny", "--out", str(out), "--figures-dir", str(figures)])
    report = json.loads((out / "report.json").read_text())
    assert code == 0, report["checks"]
    assert report["checks"]["all_passed"]
    for family in ("linear", "aleatoric", "gp"):
        for dataset in ("toy1d", "diabetes"):
            entry = report[family][dataset]
            assert entry["mc_max_abs_z"] < report["checks"]["mc_threshold"]
            assert entry["identity_max_rel_err"] < 1e-10
            assert 0.0 <= entry["bias_share"] <= 1.0
            assert len(entry["spearman"]) == 6
            assert all(-1.0 <= v <= 1.0 for v in entry["spearman"].values())
    for name in (
        "closed_form_vs_monte_carlo",
        "mc_error_vs_samples",
        "toy1d_egl_terms",
        "rank_agreement",
    ):
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "ALL PASSED" in printed
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # atomic writes
    # Unchanged results give identical figure files (no timestamps, no software metadata);
    # the default figures folder is inside --out, never the repository's paper_figures/.
    before = {p.name: p.read_bytes() for p in figures.iterdir()}
    assert script.main(["--preset", "tiny", "--out", str(out)]) == 0
    after = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    assert after == before


def test_verify_theory_refuses_an_unwritable_out_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exc:
        _load_script().main(["--preset", "tiny", "--out", str(blocker / "sub")])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err
