"""Pool-based active learning: pool state, strategies, per-cycle checkpoints, a resumable loop.

=================  ==========================================================================
``state``          :class:`PoolState` and the checks on indices, budgets and pool features
``strategies``     ``select(state, budget, key)``: random, top-score, core-set, candidate subsets
``checkpoint``     the files of one run (settings, per-cycle records, the last checkpoint)
``loop``           :func:`run_active_learning`, resumable cycle by cycle
=================  ==========================================================================
"""

from egltheory.active.loop import cycle_keys, run_active_learning
from egltheory.active.state import (
    PoolState,
    as_index_array,
    check_budget,
    check_pool_features,
    initial_state,
    validate_selection,
)
from egltheory.active.strategies import (
    CoreSetSelection,
    OnCandidateSubset,
    RandomSelection,
    Strategy,
    TopScoreSelection,
    k_center_greedy,
    select_top,
)

__all__ = [
    "CoreSetSelection",
    "OnCandidateSubset",
    "PoolState",
    "RandomSelection",
    "Strategy",
    "TopScoreSelection",
    "as_index_array",
    "check_budget",
    "check_pool_features",
    "cycle_keys",
    "initial_state",
    "k_center_greedy",
    "run_active_learning",
    "select_top",
    "validate_selection",
]
