"""Acquisition strategies behind one protocol, ``select(state, budget, key) -> [budget] indices``.

:class:`RandomSelection`, :class:`TopScoreSelection` (EMCM, EGL, Kendall–Gal variance, EGL++,
multi-peak entropy … any ``score_fn(state, key) -> [U]``), :class:`CoreSetSelection` (k-center
greedy on embeddings, Sener & Savarese 2018) and the wrapper :class:`OnCandidateSubset`, which
lets any strategy choose from a random subset of the unlabelled pool (Yoo & Kweon's protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.active.state import PoolState, check_budget, check_pool_features

__all__ = [
    "CoreSetSelection",
    "OnCandidateSubset",
    "RandomSelection",
    "Strategy",
    "TopScoreSelection",
    "k_center_greedy",
    "select_top",
]


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
        budget = check_budget(budget, state.unlabelled.size)
        pick = jax.random.choice(key, state.unlabelled.size, (budget,), replace=False)
        return state.unlabelled[np.asarray(pick)]


@dataclass(frozen=True)
class TopScoreSelection:
    """Greedy top-``budget`` by ``score_fn(state, key) -> [U]`` (higher = more informative)."""

    name: str
    score_fn: Callable[[PoolState, jax.Array], Any] = field(repr=False)

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray:
        budget = check_budget(budget, state.unlabelled.size)
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
    budget = check_budget(budget, cand_emb.shape[0])
    check_pool_features("cand_emb", cand_emb)
    picks = _k_center_greedy(labelled_emb, cand_emb, jnp.ones((budget,), bool))
    return np.asarray(picks)


@dataclass(frozen=True)
class CoreSetSelection:
    """k-center greedy (core-set) on ``embed_fn(model, pool_indices) -> [n, E]`` embeddings."""

    embed_fn: Callable[[Any, np.ndarray], Any] = field(repr=False)
    name: str = "core-set"

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray:
        budget = check_budget(budget, state.unlabelled.size)
        cand = jnp.asarray(self.embed_fn(state.model, state.unlabelled))
        lab = (
            jnp.asarray(self.embed_fn(state.model, state.labelled))
            if state.labelled.size
            else jnp.zeros((0, cand.shape[1]), cand.dtype)
        )
        return state.unlabelled[k_center_greedy(lab, cand, budget)]


@dataclass(frozen=True)
class OnCandidateSubset:
    """``strategy`` restricted to a random subset of ``n_candidates`` unlabelled items per cycle.

    Keys: ``(k_subset, k_inner) = split(key)``; the subset is ``max(n_candidates, budget)`` items
    drawn without replacement with ``k_subset`` and sorted, and ``strategy.select`` sees it as the
    unlabelled pool, with ``k_inner``. ``n_candidates=None`` (or ≥ U) keeps the whole pool (the key
    is still split, so a run's keys do not depend on the pool size).
    """

    strategy: Strategy
    n_candidates: int | None = None

    def __post_init__(self) -> None:
        if self.n_candidates is not None and int(self.n_candidates) < 1:
            raise ValueError(f"`n_candidates` must be ≥ 1 or None, got {self.n_candidates}.")

    @property
    def name(self) -> str:
        return self.strategy.name

    def select(self, state: PoolState, budget: int, key: jax.Array) -> np.ndarray:
        unl = np.asarray(state.unlabelled)
        budget = check_budget(budget, unl.size)
        k_subset, k_inner = jax.random.split(key)
        cand = unl
        if self.n_candidates is not None and self.n_candidates < unl.size:
            size = max(int(self.n_candidates), budget)
            cand = np.sort(unl[np.asarray(jax.random.choice(k_subset, unl.size, (size,), False))])
        return self.strategy.select(replace(state, unlabelled=cand), budget, k_inner)
