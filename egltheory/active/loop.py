"""The resumable active-learning loop every study uses.

    cycle 0:      model_0 = train_fn(None, L_0, k_0);            record evaluate_fn(model_0)
    cycle c ≥ 1:  S_c = strategy.select(state_{c-1}, budget, k_c); L_c = L_{c-1} ∪ S_c
                  model_c = train_fn(model_{c-1}, L_c, k_c');     record evaluate_fn(model_c)

with ``k_c, k_c' = split(fold_in(key, c))``: every random choice is a pure function of the root key
and the cycle number, so a resumed run draws exactly the keys an uninterrupted run draws, and a
finished run can be extended by more cycles. Files: :mod:`egltheory.active.checkpoint`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from egltheory.active.checkpoint import (
    clear_run,
    describe_settings_change,
    finished_cycles,
    key_data,
    load_checkpoint,
    load_records,
    pickle_model,
    remove_checkpoint,
    unpickle_model,
    write_cycle,
)
from egltheory.active.state import (
    PoolState,
    check_pool_features,
    initial_state,
    validate_selection,
)
from egltheory.active.strategies import Strategy
from egltheory.files import atomic_write_json, jsonable, read_json, remove_stale_temp_files

__all__ = ["cycle_keys", "run_active_learning"]


def cycle_keys(key: jax.Array, cycle: int) -> tuple[jax.Array, jax.Array]:
    """``(select_key, train_key)`` of a cycle: ``split(fold_in(key, cycle))``."""
    k_select, k_train = jax.random.split(jax.random.fold_in(key, cycle))
    return k_select, k_train


def _check_schedule(state: PoolState, budget: int, n_cycles: int) -> tuple[int, int]:
    budget, n_cycles = int(budget), int(n_cycles)
    if n_cycles < 0:
        raise ValueError(f"`n_cycles` must be ≥ 0, got {n_cycles}.")
    if budget < 1:
        raise ValueError(f"`budget` must be ≥ 1, got {budget}.")
    if budget * n_cycles > state.unlabelled.size:
        raise ValueError(
            f"`budget` × `n_cycles` = {budget * n_cycles} exceeds the {state.unlabelled.size} "
            "unlabelled pool items."
        )
    return budget, n_cycles


def _resume_point(out: Path, info: dict, load_model) -> tuple[list[dict], PoolState | None]:
    """Records and state after the last finished cycle in ``out`` (``([], None)``: none)."""
    done = finished_cycles(out)
    if not done:
        return [], None
    stored = read_json(out / "run.json", f"delete {out} to rerun this run")
    if stored != info:
        change = describe_settings_change(stored, info)
        raise ValueError(
            f"cannot resume in {out}: its settings differ ({change}); use another --out, or "
            "drop --resume to start this run afresh."
        )
    last = done[-1]
    if done != list(range(last + 1)):
        raise ValueError(f"cannot resume in {out}: cycle files are not contiguous: {done}.")
    ckpt, model = load_checkpoint(out, last, load_model)
    state = PoolState(ckpt["labelled"], ckpt["unlabelled"], model, last)
    return load_records(out, done), state


def run_active_learning(
    *,
    out_dir: str | os.PathLike,
    strategy: Strategy,
    initial_labelled: Sequence[int] | np.ndarray,
    pool_size: int,
    budget: int,
    n_cycles: int,
    train_fn: Callable[[Any, np.ndarray, jax.Array], Any],
    evaluate_fn: Callable[[Any], dict],
    key: jax.Array,
    resume: bool = False,
    save_model: Callable[[Any, Path], None] | None = None,
    load_model: Callable[[Path], Any] | None = None,
    features=None,
    progress: bool = False,
    run_info: dict | None = None,
    describe_selection: Callable[[np.ndarray], dict] | None = None,
) -> list[dict]:
    """Run (or resume) ``n_cycles`` acquisition cycles; returns the ``n_cycles + 1`` records.

    Args:
      out_dir: directory of this run's files (one directory per strategy/seed).
      strategy: any :class:`~egltheory.active.strategies.Strategy`.
      initial_labelled: ``[L0]`` unique pool indices labelled before cycle 1.
      pool_size: number of pool items (indices ``0..pool_size-1``).
      budget: items acquired per cycle.
      n_cycles: acquisition cycles (cycle 0 is the initial model). A resumed run with more
        cycles than it has finished continues; with fewer, its first ``n_cycles + 1`` records
        are returned.
      train_fn: ``train_fn(prev_model_or_None, labelled [L], key) -> model``.
      evaluate_fn: ``evaluate_fn(model) -> dict`` of JSON-serialisable metrics.
      key: root ``jax.random`` key.
      resume: continue from the last finished cycle in ``out_dir`` (else start afresh, deleting
        this loop's old files there).
      save_model, load_model: ``save_model(model, path)`` / ``load_model(path)``; default pickle.
      features: optional ``[pool_size, ...]`` pool features, checked for NaN/inf up front.
      progress: show a tqdm bar over cycles.
      run_info: extra JSON metadata stored in ``run.json`` and checked on resume.
      describe_selection: ``describe_selection(indices) -> dict`` of JSON scalars about the items
        a cycle labelled (cycle 0: the initial set), stored as the record's ``"selection"``.

    Returns:
      Records ``{"cycle", "n_labelled", "strategy", "selected", "metrics"}``, one per cycle.
    """
    out = Path(out_dir)
    state = initial_state(initial_labelled, pool_size)
    if features is not None:
        check_pool_features("features", features, int(pool_size))
    budget, n_cycles = _check_schedule(state, budget, n_cycles)
    save_model = save_model or pickle_model
    load_model = load_model or unpickle_model
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    info = jsonable(
        {
            "strategy": strategy.name,
            "pool_size": int(pool_size),
            "budget": budget,
            "initial_labelled": state.labelled,
            "key_data": key_data(key),
            **(run_info or {}),
        }
    )

    records, resumed = _resume_point(out, info, load_model) if resume else ([], None)
    if resumed is None:
        clear_run(out)
        atomic_write_json(out / "run.json", info)
    else:
        state = resumed
    start = state.cycle + 1 if resumed is not None else 0
    records = records[: n_cycles + 1]

    cycles = range(start, n_cycles + 1)
    if progress:
        from tqdm.auto import tqdm

        cycles = tqdm(cycles, desc=f"{strategy.name}", leave=False)
    for c in cycles:
        k_select, k_train = cycle_keys(key, c)
        selected = np.zeros((0,), np.int64)
        if c > 0:
            selected = validate_selection(strategy.select(state, budget, k_select), state, budget)
            state = replace(
                state,
                labelled=np.concatenate([state.labelled, selected]),
                unlabelled=np.setdiff1d(state.unlabelled, selected),
            )
        model = train_fn(state.model, state.labelled, k_train)
        state = replace(state, model=model, cycle=c)
        record = jsonable(
            {
                "cycle": c,
                "n_labelled": int(state.labelled.size),
                "strategy": strategy.name,
                "selected": selected,
                "metrics": dict(evaluate_fn(model)),
            }
        )
        if describe_selection is not None:
            record["selection"] = jsonable(describe_selection(selected if c else state.labelled))
        checkpoint = {
            "cycle": c,
            "labelled": state.labelled,
            "unlabelled": state.unlabelled,
            "select_key_data": key_data(k_select),
            "train_key_data": key_data(k_train),
        }
        records.append(record)
        write_cycle(out, c, record, checkpoint, model, save_model, records)
        remove_checkpoint(out, c - 1)
    return records
