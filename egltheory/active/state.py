"""Where a pool stands (labelled / unlabelled indices, model, cycle) and the checks on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PoolState",
    "as_index_array",
    "check_budget",
    "check_pool_features",
    "initial_state",
    "validate_selection",
]


@dataclass(frozen=True)
class PoolState:
    """Where the pool stands: which indices are labelled, the current model, the cycle number."""

    labelled: np.ndarray  # [L] int pool indices, unique
    unlabelled: np.ndarray  # [U] int pool indices, disjoint from labelled
    model: Any = None  # the current trained model, opaque to the loop
    cycle: int = 0


def as_index_array(name: str, indices, pool_size: int) -> np.ndarray:
    """``indices`` as unique int64 pool indices in ``[0, pool_size)``; errors name ``name``."""
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
    labelled = as_index_array("initial_labelled", initial_labelled, int(pool_size))
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


def check_budget(budget: int, n_unlabelled: int) -> int:
    """``budget`` as an int in ``[1, n_unlabelled]``; the one budget check of the package."""
    budget = int(budget)
    if budget < 1:
        raise ValueError(f"`budget` must be ≥ 1, got {budget}.")
    if n_unlabelled == 0:
        raise ValueError("the unlabelled pool is empty; nothing to select.")
    if budget > n_unlabelled:
        raise ValueError(f"`budget` {budget} exceeds the {n_unlabelled} unlabelled pool items.")
    return budget


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
