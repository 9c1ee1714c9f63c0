"""The scripts' shared flag vocabulary: usage errors before any work, locks, extending a study."""

import importlib.util
from pathlib import Path

import pytest

from egltheory.files import OutputLockedError, exclusive_lock
from egltheory.studies.regression import PRESETS
from egltheory.studies.runner import run_study

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("regression_al", ["--seeds", "0", "0"], "--seeds lists a value twice"),
        ("regression_al", ["--seeds", "-1"], "must be ≥ 0"),
        ("regression_al", ["--seeds", "one"], "expected an integer"),
        ("regression_al", ["--strategies", "egl", "egl"], "--strategies lists a value twice"),
        ("regression_al", ["--strategies", "bald"], "invalid choice"),
        ("regression_al", ["--datasets", "mnist"], "not available"),
        ("regression_al", ["--budget", "0"], "must be ≥ 1"),
        ("regression_al", ["--quick"], "unrecognized arguments"),
        ("pose_eglpp", ["--cotangents", "0"], "expected unroll, vmap or a positive int"),
        ("pose_eglpp", ["--data-dir", "/x"], "--data-dir is only used"),
        ("pose_eglpp", ["--data", "mpii"], "needs a data directory"),
        ("pose_eglpp", ["--seeds", "3", "3"], "--seeds lists a value twice"),
        ("pose_eglpp", ["--preset", "huge"], "invalid choice"),
        ("verify_theory", ["--preset", "quick"], "invalid choice"),
        ("pose_eglpp", ["--eglpp-estimator", "lowrank"], "expected exact, lowrank:M"),
        ("regression_al", ["--eglpp-estimator", "sketch:2:1"], "probes"),
        ("regression_al", ["--eglpp-estimator", "lowrank:-1"], "`m`"),
    ],
)
def test_misused_flags_are_usage_errors_before_any_work(tmp_path, capsys, script, argv, message):
    with pytest.raises(SystemExit) as exc:
        _script(script).main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize("script", ["regression_al", "pose_eglpp", "verify_theory"])
def test_unwritable_out_is_refused_first(tmp_path, capsys, script):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exc:
        _script(script).main(["--preset", "tiny", "--out", str(tmp_path / "file" / "x")])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_a_second_process_on_the_same_out_is_refused(tmp_path):
    study = PRESETS["tiny"].with_families(["linear"])
    with exclusive_lock(tmp_path, "a study"), pytest.raises(OutputLockedError, match="pid"):
        run_study(study, tmp_path)


@pytest.mark.slow
def test_a_finished_study_is_extended_by_more_cycles(tmp_path, capsys):
    script = _script("regression_al")
    base = ["--preset", "tiny", "--families", "linear", "--strategies", "random", "egl",
            "--no-progress"]  # fmt: skip
    script.main([*base, "--out", str(tmp_path / "full"), "--cycles", "3"])
    script.main([*base, "--out", str(tmp_path / "grown"), "--cycles", "1"])
    script.main([*base, "--out", str(tmp_path / "grown"), "--cycles", "3", "--resume"])
    full, grown = ((tmp_path / d / "rows.csv").read_text() for d in ("full", "grown"))
    assert grown == full
    with pytest.raises(ValueError, match=r"budget: 5 → 7"):
        script.main([*base, "--out", str(tmp_path / "grown"), "--budget", "7", "--resume"])
    assert "random seed 0" in capsys.readouterr().out  # one line per finished run


def test_estimator_flag_values():
    from egltheory.eglpp import LowRank, Sketch
    from egltheory.studies.cli import eglpp_estimator

    assert eglpp_estimator("exact") == "exact"
    assert eglpp_estimator("lowrank:4") == LowRank(4)
    assert eglpp_estimator("sketch:2") == Sketch(2)
    assert eglpp_estimator("sketch:2:8") == Sketch(2, 8)
