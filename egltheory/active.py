"""Pool-based active learning: strategies behind ``select(state, budget, key)``, a resumable loop.

The loop (:func:`run_active_learning`) is the one every experiment uses:

    cycle 0:      model_0 = train_fn(None, L_0, k_0);            record evaluate_fn(model_0)
    cycle c ≥ 1:  S_c = strategy.select(state_{c-1}, budget, k_c); L_c = L_{c-1} ∪ S_c
                  model_c = train_fn(model_{c-1}, L_c, k_c');     record evaluate_fn(model_c)

with ``k_c, k_c' = split(fold_in(key, c))``: every random choice is a pure function of the root key
and the cycle number, so a resumed run draws exactly the keys an uninterrupted run draws.

Persistence, per finished cycle ``c`` (in this order):

1. ``checkpoint_{c:04d}.pkl`` — labelled/unlabelled indices, the cycle's key data and the model
   (``save_model(model, path)`` if given, else a pickle of the model with its JAX arrays moved to
   host NumPy). Pickle is the default because the models here are small pytrees/dataclasses whose
   exact bits must round-trip (so that ``--resume`` is bit-identical) and it needs no target
   structure to restore; pass orbax-based ``save_model``/``load_model`` for large networks.
2. ``cycle_{c:04d}.json`` — the cycle's record; its presence marks the cycle as finished.
3. ``results.json`` — all records so far.

Every file is written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX), so a kill leaves either the old or the new file, never half of
one. ``resume=True`` reloads the records and the checkpoint of the last cycle whose record exists
and continues from there; the final records equal those of an uninterrupted run (tested).

Strategies: :class:`RandomSelection`, :class:`TopScoreSelection` (EMCM, EGL, Kendall–Gal variance,
EGL++ … any ``score_fn(state, key) -> [U]``), :class:`CoreSetSelection` (k-center greedy on
embeddings, Sener & Savarese 2018).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CoreSetSelection",
    "PoolState",
    "RandomSelection",
    "Strategy",
    "TopScoreSelection",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_pool_features",
    "cycle_keys",
    "initial_state",
    "k_center_greedy",
    "run_active_learning",
    "select_top",
    "validate_selection",
]


# ----------------------------------------------------------------------------- state & checks


@dataclass(frozen=True)
class PoolState:
    """Where the pool stands: which indices are labelled, the current model, the cycle number."""

    labelled: np.ndarray  # [L] int pool indices, unique
    unlabelled: np.ndarray  # [U] int pool indices, disjoint from labelled
    model: Any = None  # the current trained model, opaque to the loop
    cycle: int = 0


def _as_index_array(name: str, indices, pool_size: int) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of pool indices, got shape {arr.shape}.")
    if (
        arr.size
        and not np.issubdtype(arr.dtype, np.integer)
        and not np.all(np.equal(np.mod(arr, 1), 0))
    ):
        raise ValueError(f"`{name}` must hold integer pool indices, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= pool_size):
        raise ValueError(
            f"`{name}` has out-of-range indices (pool has {pool_size} items, valid "
            f"0..{pool_size - 1}), got min {arr.min()} and max {arr.max()}."
        )
    if np.unique(arr).size != arr.size:
        values, counts = np.unique(arr, return_counts=True)
        raise ValueError(f"`{name}` has duplicate indices: {values[counts > 1][:10].tolist()}.")
    return arr


def initial_state(initial_labelled: Sequence[int] | np.ndarray, pool_size: int) -> PoolState:
    """Validated cycle-0 state: ``initial_labelled`` unique, in ``[0, pool_size)``."""
    if int(pool_size) < 1:
        raise ValueError(f"`pool_size` must be ≥ 1 (empty pool), got {pool_size}.")
    labelled = _as_index_array("initial_labelled", initial_labelled, int(pool_size))
    unlabelled = np.setdiff1d(np.arange(int(pool_size)), labelled)
    return PoolState(labelled=labelled, unlabelled=unlabelled, model=None, cycle=0)


def check_pool_features(name: str, features, pool_size: int | None = None) -> np.ndarray:
    """Refuse an empty pool, a wrong length or NaN/inf features; returns ``features`` as NumPy."""
    arr = np.asarray(features)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty pool (shape {arr.shape}); need ≥ 1 item.")
    if pool_size is not None and arr.shape[0] != pool_size:
        raise ValueError(
            f"`{name}` must have {pool_size} rows (one per pool item), got {arr.shape[0]}."
        )
    if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
        bad = np.unique(np.nonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)))[0])
        raise ValueError(
            f"`{name}` has NaN/inf values in {bad.size} pool item(s), e.g. rows {bad[:5].tolist()}."
        )
    return arr


def validate_selection(selected, state: PoolState, budget: int) -> np.ndarray:
    """Check a strategy's answer: exactly ``budget`` unique indices, all currently unlabelled."""
    sel = np.asarray(selected).astype(np.int64).reshape(-1)
    if sel.size != budget:
        raise ValueError(f"strategy returned {sel.size} indices, expected budget = {budget}.")
    if np.unique(sel).size != sel.size:
        raise ValueError("strategy returned duplicate indices.")
    if not np.all(np.isin(sel, state.unlabelled)):
        bad = sel[~np.isin(sel, state.unlabelled)]
        raise ValueError(f"strategy selected indices that are not unlabelled: {bad[:10].tolist()}.")
    return sel


def _check_budget(budget: int, n_unlabelled: int) -> int:
    budget = int(budget)
    if budget < 1:
        raise ValueError(f"`budget` must be ≥ 1, got {budget}.")
    if n_unlabelled == 0:
        raise ValueError("the unlabelled pool is empty; nothing to select.")
    if budget > n_unlabelled:
        raise ValueError(f"`budget` {budget} exceeds the {n_unlabelled} unlabelled pool items.")
    return budget


# ----------------------------------------------------------------------------- strategies


class Strategy(Protocol):
    """``select`` returns ``[budget]`` distinct indices from ``state.unlabelled``."""

    name: str

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray: ...


def select_top(scores, candidates: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` candidates with the highest scores (ties → lower position first)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (candidates.size,):
        raise ValueError(
            f"`scores` must have shape [U] = ({candidates.size},), got {scores.shape}."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"`scores` must be finite, found {int((~np.isfinite(scores)).sum())} bad.")
    order = np.argsort(-scores, kind="stable")
    return candidates[order[:budget]]


@dataclass(frozen=True)
class RandomSelection:
    """Uniform sampling without replacement from the unlabelled pool."""

    name: str = "random"

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray:
        budget = _check_budget(budget, state.unlabelled.size)
        pick = jax.random.choice(key, state.unlabelled.size, (budget,), replace=False)
        return state.unlabelled[np.asarray(pick)]


@dataclass(frozen=True)
class TopScoreSelection:
    """Greedy top-``budget`` by ``score_fn(state, key) -> [U]`` (higher = more informative)."""

    name: str
    score_fn: Callable[[PoolState, jax.Array], Any] = field(repr=False)

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray:
        budget = _check_budget(budget, state.unlabelled.size)
        return select_top(self.score_fn(state, key), state.unlabelled, budget)


@jax.jit
def _k_center_greedy(labelled_emb, cand_emb, budget_mask):
    def sq_dist(a, b):
        return jnp.maximum(
            jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0
        )

    if labelled_emb.shape[0]:
        min_d = jnp.min(sq_dist(cand_emb, labelled_emb), axis=1)
    else:
        min_d = jnp.full((cand_emb.shape[0],), jnp.inf, cand_emb.dtype)

    def step(carry, active):
        min_d, taken = carry
        score = jnp.where(taken, -jnp.inf, min_d)
        j = jnp.argmax(score)
        d_new = jnp.sum((cand_emb - cand_emb[j]) ** 2, axis=1)
        min_d = jnp.where(active, jnp.minimum(min_d, d_new), min_d)
        taken = taken.at[j].set(taken[j] | active)
        return (min_d, taken), j

    init = (min_d, jnp.zeros((cand_emb.shape[0],), bool))
    _, picks = jax.lax.scan(step, init, budget_mask)
    return picks


def k_center_greedy(labelled_emb, cand_emb, budget: int) -> np.ndarray:
    """Sener & Savarese's greedy k-center: repeatedly take the candidate farthest from all centres.

    Args:
      labelled_emb: ``[L, E]`` current centres (may be empty: the first pick is candidate 0).
      cand_emb: ``[U, E]`` candidates.
      budget: picks, ``1 ≤ budget ≤ U``.

    Returns:
      ``[budget]`` distinct positions into ``cand_emb``, in pick order.
    """
    cand_emb = jnp.asarray(cand_emb)
    labelled_emb = jnp.asarray(labelled_emb, dtype=cand_emb.dtype)
    if cand_emb.ndim != 2 or labelled_emb.ndim != 2:
        raise ValueError("`labelled_emb` and `cand_emb` must be [L, E] and [U, E] matrices.")
    if labelled_emb.shape[0] and labelled_emb.shape[1] != cand_emb.shape[1]:
        raise ValueError(
            f"embedding sizes differ: labelled {labelled_emb.shape[1]}, candidates "
            f"{cand_emb.shape[1]}."
        )
    budget = _check_budget(budget, cand_emb.shape[0])
    check_pool_features("cand_emb", cand_emb)
    picks = _k_center_greedy(labelled_emb, cand_emb, jnp.ones((budget,), bool))
    return np.asarray(picks)


@dataclass(frozen=True)
class CoreSetSelection:
    """k-center greedy (core-set) on ``embed_fn(model, pool_indices) -> [n, E]`` embeddings."""

    embed_fn: Callable[[Any, np.ndarray], Any] = field(repr=False)
    name: str = "core-set"

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray:
        budget = _check_budget(budget, state.unlabelled.size)
        cand = jnp.asarray(self.embed_fn(state.model, state.unlabelled))
        lab = (
            jnp.asarray(self.embed_fn(state.model, state.labelled))
            if state.labelled.size
            else jnp.zeros((0, cand.shape[1]), cand.dtype)
        )
        return state.unlabelled[k_center_greedy(lab, cand, budget)]


# ----------------------------------------------------------------------------- persistence


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` (NumPy/JAX values converted) as indented JSON."""
    atomic_write_bytes(path, json.dumps(_jsonable(obj), indent=1, sort_keys=True).encode())


def _to_host(tree):
    return jax.tree_util.tree_map(lambda v: np.asarray(v) if isinstance(v, jax.Array) else v, tree)


def _default_save(model, path: Path) -> None:
    try:
        data = pickle.dumps(_to_host(model), protocol=pickle.HIGHEST_PROTOCOL)
    except (AttributeError, TypeError, pickle.PicklingError) as err:
        raise ValueError(
            f"the model cannot be pickled ({err}); pass `save_model`/`load_model` to "
            "run_active_learning (e.g. orbax, or refit from the checkpointed labelled set)."
        ) from err
    atomic_write_bytes(path, data)


def _default_load(path: Path):
    with open(path, "rb") as fh:
        return pickle.load(fh)  # our own checkpoint, written by _default_save


def _key_data(key: jax.Array) -> np.ndarray:
    """Raw bits of a typed (``jax.random.key``) or legacy (``PRNGKey``) key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def cycle_keys(key: jax.Array, cycle: int) -> tuple[jax.Array, jax.Array]:
    """``(select_key, train_key)`` of a cycle: ``split(fold_in(key, cycle))``."""
    k_select, k_train = jax.random.split(jax.random.fold_in(key, cycle))
    return k_select, k_train


_CYCLE_RE = re.compile(r"^cycle_(\d{4})\.json$")


def _finished_cycles(out_dir: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in out_dir.iterdir() if (m := _CYCLE_RE.match(p.name)))


def _clear_run(out_dir: Path) -> None:
    for p in out_dir.iterdir():
        if (
            _CYCLE_RE.match(p.name)
            or re.match(r"^checkpoint_\d{4}", p.name)
            or p.name
            in (
                "results.json",
                "run.json",
            )
        ):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()


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
) -> list[dict]:
    """Run (or resume) ``n_cycles`` acquisition cycles; returns the ``n_cycles + 1`` records.

    Args:
      out_dir: directory of this run's files (one directory per strategy/seed).
      strategy: any :class:`Strategy`.
      initial_labelled: ``[L0]`` unique pool indices labelled before cycle 1.
      pool_size: number of pool items (indices ``0..pool_size-1``).
      budget: items acquired per cycle.
      n_cycles: acquisition cycles (cycle 0 is the initial model).
      train_fn: ``train_fn(prev_model_or_None, labelled [L], key) -> model``.
      evaluate_fn: ``evaluate_fn(model) -> dict`` of JSON-serialisable metrics.
      key: root ``jax.random`` key.
      resume: continue from the last finished cycle in ``out_dir`` (else start afresh, deleting
        this loop's old files there).
      save_model, load_model: ``save_model(model, path)`` / ``load_model(path)``; default pickle.
      features: optional ``[pool_size, ...]`` pool features, checked for NaN/inf up front.
      progress: show a tqdm bar over cycles.
      run_info: extra JSON metadata stored in ``run.json`` and checked on resume.

    Returns:
      Records ``{"cycle", "n_labelled", "strategy", "selected", "metrics"}``, one per cycle.
    """
    out = Path(out_dir)
    state = initial_state(initial_labelled, pool_size)
    if features is not None:
        check_pool_features("features", features, int(pool_size))
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
    save_model = save_model or _default_save
    load_model = load_model or _default_load
    out.mkdir(parents=True, exist_ok=True)
    info = _jsonable(
        {
            "strategy": strategy.name,
            "pool_size": int(pool_size),
            "budget": budget,
            "initial_labelled": state.labelled,
            "key_data": _key_data(key),
            **(run_info or {}),
        }
    )

    records: list[dict] = []
    start = 0
    done = _finished_cycles(out) if resume else []
    if done:
        stored = json.loads((out / "run.json").read_text())
        if stored != info:
            diff = sorted(k for k in set(stored) | set(info) if stored.get(k) != info.get(k))
            raise ValueError(f"cannot resume in {out}: run settings differ in {diff}.")
        last = done[-1]
        if done != list(range(last + 1)):
            raise ValueError(f"cannot resume in {out}: cycle files are not contiguous: {done}.")
        records = [json.loads((out / f"cycle_{c:04d}.json").read_text()) for c in done]
        with open(out / f"checkpoint_{last:04d}.pkl", "rb") as fh:
            ckpt = pickle.load(fh)  # our own checkpoint
        model = load_model(out / f"checkpoint_{last:04d}.model")
        state = PoolState(ckpt["labelled"], ckpt["unlabelled"], model, last)
        start = last + 1
        records = records[: n_cycles + 1]
    else:
        _clear_run(out)
        atomic_write_json(out / "run.json", info)

    cycles = range(start, n_cycles + 1)
    if progress:
        from tqdm.auto import tqdm

        cycles = tqdm(cycles, desc=f"{strategy.name}", leave=False)
    for c in cycles:
        k_select, k_train = cycle_keys(key, c)
        selected = np.zeros((0,), np.int64)
        if c > 0:
            selected = validate_selection(strategy.select(state, budget, k_select), state, budget)
            labelled = np.concatenate([state.labelled, selected])
            state = replace(
                state,
                labelled=labelled,
                unlabelled=np.setdiff1d(state.unlabelled, selected),
            )
        model = train_fn(state.model, state.labelled, k_train)
        state = replace(state, model=model, cycle=c)
        metrics = evaluate_fn(model)
        record = _jsonable(
            {
                "cycle": c,
                "n_labelled": int(state.labelled.size),
                "strategy": strategy.name,
                "selected": selected,
                "metrics": dict(metrics),
            }
        )
        save_model(model, out / f"checkpoint_{c:04d}.model")
        ckpt = {
            "cycle": c,
            "labelled": state.labelled,
            "unlabelled": state.unlabelled,
            "select_key_data": _key_data(k_select),
            "train_key_data": _key_data(k_train),
        }
        atomic_write_bytes(out / f"checkpoint_{c:04d}.pkl", pickle.dumps(ckpt))
        atomic_write_json(out / f"cycle_{c:04d}.json", record)
        records.append(record)
        atomic_write_json(out / "results.json", records)
        for old in (c - 1,):
            for suffix in (".pkl", ".model"):
                p = out / f"checkpoint_{old:04d}{suffix}"
                if old >= 0 and p.is_dir():
                    shutil.rmtree(p)
                elif old >= 0 and p.is_file():
                    p.unlink()
    return records
