"""Tests for egltheory.active: strategies, k-center greedy, atomic files, exact resume, errors."""

import json

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from egltheory.active import (
    CoreSetSelection,
    PoolState,
    RandomSelection,
    TopScoreSelection,
    check_pool_features,
    initial_state,
    k_center_greedy,
    run_active_learning,
    validate_selection,
)
from egltheory.files import DamagedFileError, atomic_write_json

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * RNG.normal(size=40)


def _train(prev, labelled, key):
    """Ridge fit plus key-dependent jitter and a warm-start term: depends on all three inputs."""
    xl, yl = X[labelled], Y[labelled]
    w = np.linalg.solve(xl.T @ xl + np.eye(3), xl.T @ yl)
    w = w + 1e-3 * np.asarray(jax.random.normal(key, (3,)))
    if prev is not None:
        w = 0.9 * w + 0.1 * prev["w"]
    return {"w": jnp.asarray(w)}


def _evaluate(model):
    return {"rmse": float(np.sqrt(np.mean((X @ np.asarray(model["w"]) - Y) ** 2)))}


def _abs_residual_scores(state, key):
    pred = X[state.unlabelled] @ np.asarray(state.model["w"])
    noise = 1e-6 * np.asarray(jax.random.uniform(key, (state.unlabelled.size,)))
    return np.abs(pred) + noise


STRATEGIES = {
    "random": RandomSelection(),
    "score": TopScoreSelection("score", _abs_residual_scores),
    "core-set": CoreSetSelection(lambda model, idx: X[idx]),
}


def _naive_k_center(lab, cand, budget):
    picks = []
    min_d = (
        np.min(((cand[:, None] - lab[None]) ** 2).sum(-1), 1)
        if len(lab)
        else np.full(len(cand), np.inf)
    )
    for _ in range(budget):
        score = min_d.copy()
        score[picks] = -np.inf
        j = int(np.argmax(score))
        picks.append(j)
        min_d = np.minimum(min_d, ((cand - cand[j]) ** 2).sum(-1))
    return np.array(picks)


@given(seed=st.integers(0, 10_000), n_lab=st.sampled_from([0, 3]), budget=st.integers(1, 8))
def test_k_center_greedy_matches_naive(seed, n_lab, budget):
    rng = np.random.default_rng(seed)
    lab, cand = rng.normal(size=(n_lab, 2)), rng.normal(size=(12, 2))
    got = k_center_greedy(lab, cand, budget)
    np.testing.assert_array_equal(got, _naive_k_center(lab, cand, budget))
    assert len(set(got.tolist())) == budget


@given(seed=st.integers(0, 10_000), budget=st.sampled_from([1, 4, 10]))
def test_strategies_return_distinct_unlabelled(seed, budget):
    state = initial_state(np.arange(5), 40)
    state = PoolState(
        state.labelled, state.unlabelled, _train(None, state.labelled, jax.random.key(0))
    )
    for strategy in STRATEGIES.values():
        sel = strategy.select(state, budget, jax.random.key(seed))
        validate_selection(sel, state, budget)


def test_top_score_selection_takes_highest():
    state = initial_state([0, 1], 6)
    scores = {2: 0.1, 3: 5.0, 4: 2.0, 5: 3.0}
    strat = TopScoreSelection("s", lambda st_, key: np.array([scores[i] for i in st_.unlabelled]))
    np.testing.assert_array_equal(strat.select(state, 2, jax.random.key(0)), [3, 5])


def _run(out, strategy, resume=False, train=_train, n_cycles=4):
    return run_active_learning(
        out_dir=out,
        strategy=strategy,
        initial_labelled=np.arange(4),
        pool_size=40,
        budget=3,
        n_cycles=n_cycles,
        train_fn=train,
        evaluate_fn=_evaluate,
        key=jax.random.key(7),
        resume=resume,
        features=X,
    )


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_resume_after_kill_gives_identical_results(tmp_path, name):
    strategy = STRATEGIES[name]
    full = _run(tmp_path / "full", strategy)
    assert [r["cycle"] for r in full] == [0, 1, 2, 3, 4]
    assert [r["n_labelled"] for r in full] == [4, 7, 10, 13, 16]

    calls = {"n": 0}

    def dying_train(prev, labelled, key):
        calls["n"] += 1
        if calls["n"] == 3:  # cycles 0 and 1 finish, the process "dies" during cycle 2
            raise KeyboardInterrupt
        return _train(prev, labelled, key)

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", strategy, train=dying_train)
    files = sorted(p.name for p in (tmp_path / "killed").iterdir())
    assert "cycle_0001.json" in files and "cycle_0002.json" not in files
    assert not any(f.endswith(".tmp") for f in files)  # no half-written files left behind
    resumed = _run(tmp_path / "killed", strategy, resume=True)
    assert resumed == full
    assert json.loads((tmp_path / "killed" / "results.json").read_text()) == full
    # Resuming a finished run changes nothing; a fresh (non-resume) run starts over.
    assert _run(tmp_path / "killed", strategy, resume=True) == full
    assert _run(tmp_path / "killed", strategy) == full


def test_resume_refuses_different_settings(tmp_path):
    _run(tmp_path, RandomSelection(), n_cycles=1)
    with pytest.raises(ValueError, match="strategy"):
        _run(tmp_path, TopScoreSelection("score", _abs_residual_scores), resume=True)


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": np.arange(3), "y": np.float64(1.5)})
    atomic_write_json(path, {"x": [1]})
    assert json.loads(path.read_text()) == {"x": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty pool"):
        initial_state([], 0)
    with pytest.raises(ValueError, match="duplicate"):
        initial_state([1, 1, 2], 10)
    with pytest.raises(ValueError, match="out-of-range"):
        initial_state([1, 10], 10)
    with pytest.raises(ValueError, match="NaN"):
        check_pool_features("features", np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="empty pool"):
        check_pool_features("features", np.zeros((0, 2)))
    state = initial_state([0], 4)
    with pytest.raises(ValueError, match="budget"):
        RandomSelection().select(state, 4, jax.random.key(0))
    with pytest.raises(ValueError, match="not unlabelled"):
        validate_selection([0, 1], state, 2)
    with pytest.raises(ValueError, match="duplicate"):
        validate_selection([1, 1], state, 2)
    with pytest.raises(ValueError, match="exceeds"):
        _run(tmp_path, RandomSelection(), n_cycles=20)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_active_learning(
            out_dir=tmp_path,
            strategy=RandomSelection(),
            initial_labelled=[0],
            pool_size=40,
            budget=1,
            n_cycles=1,
            train_fn=_train,
            evaluate_fn=_evaluate,
            key=jax.random.key(0),
            features=bad,
        )
    with pytest.raises(ValueError, match="cannot be pickled"):
        run_active_learning(
            out_dir=tmp_path / "closure",
            strategy=RandomSelection(),
            initial_labelled=[0],
            pool_size=40,
            budget=1,
            n_cycles=1,
            train_fn=lambda prev, lab, key: lambda: 0,
            evaluate_fn=lambda model: {},
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="scores"):
        TopScoreSelection("s", lambda s, k: np.array([np.nan, 1, 2])).select(state, 1, None)


def test_a_finished_run_can_be_extended_by_more_cycles(tmp_path):
    """n_cycles is not a run setting: resuming with more cycles continues, exactly."""
    full = _run(tmp_path / "full", RandomSelection(), n_cycles=4)
    short = _run(tmp_path / "grow", RandomSelection(), n_cycles=2)
    assert short == full[:3]
    assert _run(tmp_path / "grow", RandomSelection(), resume=True, n_cycles=4) == full
    assert _run(tmp_path / "grow", RandomSelection(), resume=True, n_cycles=1) == full[:2]


def test_settings_mismatch_names_each_setting(tmp_path):
    _run(tmp_path, RandomSelection(), n_cycles=1)
    with pytest.raises(ValueError, match=r"budget: 3 → 2") as err:
        run_active_learning(
            out_dir=tmp_path, strategy=RandomSelection(), initial_labelled=np.arange(4),
            pool_size=40, budget=2, n_cycles=1, train_fn=_train, evaluate_fn=_evaluate,
            key=jax.random.key(7), resume=True, run_info={"lr": 0.1},
        )  # fmt: skip
    assert "lr: '<absent>' → 0.1" in str(err.value)


@pytest.mark.parametrize("victim", ["cycle_0001.json", "checkpoint_0001.pkl", "run.json"])
def test_damaged_files_are_named_with_a_remedy(tmp_path, victim):
    _run(tmp_path, RandomSelection(), n_cycles=1)
    path = tmp_path / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DamagedFileError, match=rf"{victim}.*delete"):
        _run(tmp_path, RandomSelection(), resume=True, n_cycles=2)


def test_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    _run(tmp_path, RandomSelection(), n_cycles=1)
    stale = tmp_path / ".checkpoint_0001.model.k2j4_x9.tmp"
    stale.write_bytes(b"partial")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("mine")
    _run(tmp_path, RandomSelection(), resume=True, n_cycles=2)
    assert not stale.exists() and unrelated.exists()
