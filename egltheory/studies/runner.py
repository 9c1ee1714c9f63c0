"""One runner for paired-seed active-learning studies: trials × strategies → long result rows.

A study definition (regression, pose …) supplies its :class:`Protocol` (strategies, seeds, the
labelling schedule, the reference strategy), its metrics, and its :class:`Trial` s: the paired
units, one per group (e.g. data set × ensemble family) and seed, each with one pool, one initial
labelled set and one root key shared by every strategy. :func:`run_study` runs
:func:`egltheory.active.run_active_learning` for every trial × strategy in
``out/runs/<group …>/<strategy>/seed_<s>/`` (resumable cycle by cycle), then writes ``rows.csv``
(one row per trial × strategy × cycle), ``table.md`` / ``table.csv`` and the learning curves
(:mod:`egltheory.studies.report`) and whatever the definition adds. The output directory is
locked for the duration: a second process on the same ``out`` is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import jax
import numpy as np

from egltheory.active import OnCandidateSubset, Strategy, run_active_learning
from egltheory.files import atomic_write_json, exclusive_lock, jsonable
from egltheory.studies.report import MetricSpec, plot_curves, write_csv, write_tables

__all__ = ["Protocol", "StudyDefinition", "Trial", "rows_of", "run_study"]


@dataclass(frozen=True)
class Protocol:
    """The paired comparison: which strategies, which seeds, how many labels when.

    ``n_candidates``: if set, every strategy chooses from a fresh random subset of that many
    unlabelled items per cycle (:class:`egltheory.active.OnCandidateSubset`).
    """

    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    n_initial: int
    budget: int
    n_cycles: int
    reference: str
    n_candidates: int | None = None

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ValueError("`strategies` is empty; name at least one strategy.")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"`strategies` has duplicates: {list(self.strategies)}.")
        if not self.seeds:
            raise ValueError("`seeds` is empty; give at least one seed.")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
                raise ValueError(f"`seeds` must be non-negative ints, got {s!r}.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(
                f"`seeds` has duplicates: {list(self.seeds)}; paired seeds must be distinct."
            )
        for name, low in (("n_initial", 1), ("budget", 1), ("n_cycles", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int ≥ {low}, got {value!r}.")
        if self.n_candidates is not None and (
            not isinstance(self.n_candidates, int) or self.n_candidates < 1
        ):
            raise ValueError(f"`n_candidates` must be a positive int or None, got "
                             f"{self.n_candidates!r}.")  # fmt: skip

    @property
    def labels_needed(self) -> int:
        """Pool items the schedule labels in total."""
        return self.n_initial + self.budget * self.n_cycles


@dataclass(frozen=True)
class Trial:
    """One paired unit, shared by every strategy: a group and a seed with its pool and models.

    ``make_strategy(name)``: the strategy ``name`` on this trial's pool; ``train_fn``,
    ``evaluate_fn``, ``save_model``, ``load_model``, ``features``, ``describe_selection``: as in
    :func:`egltheory.active.run_active_learning`; ``run_info``: the settings a resume must match.
    """

    group: tuple[tuple[str, Any], ...]
    seed: int
    pool_size: int
    initial: np.ndarray
    make_strategy: Callable[[str], Strategy]
    train_fn: Callable
    evaluate_fn: Callable[[Any], dict]
    save_model: Callable | None = None
    load_model: Callable | None = None
    features: Any = None
    run_info: dict = field(default_factory=dict)
    describe_selection: Callable[[np.ndarray], dict] | None = None


class StudyDefinition(TypingProtocol):
    """What a study supplies to :func:`run_study`."""

    title: str
    protocol: Protocol
    metrics: tuple[MetricSpec, ...]
    group_keys: tuple[str, ...]

    def settings(self) -> dict: ...  # JSON: written to config.json

    def trials(self, out: Path, progress: bool) -> Iterator[Trial]: ...

    def write_extras(self, rows: list[dict], out: Path, progress: bool) -> None: ...


def rows_of(trial: Trial, records: Sequence[dict]) -> list[dict]:
    """Long rows of one run: group fields, strategy, seed, cycle, n_labelled, scalar metrics and
    the scalar descriptions of each cycle's selection."""
    rows = []
    for r in records:
        metrics = {  # sorted: fresh and resumed (JSON, sorted) records give the same columns
            k: v
            for k, v in sorted(r["metrics"].items())
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        selection = dict(sorted(r.get("selection", {}).items()))
        rows.append(
            {
                **dict(trial.group),
                "strategy": r["strategy"],
                "seed": trial.seed,
                "cycle": r["cycle"],
                "n_labelled": r["n_labelled"],
                **metrics,
                **selection,
            }
        )
    return rows


def _run_dir(out: Path, trial: Trial, strategy: str) -> Path:
    parts = [str(v) for _, v in trial.group]
    return out.joinpath("runs", *parts, strategy, f"seed_{trial.seed}")


def run_study(
    study: StudyDefinition,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run (or resume) every trial × strategy of ``study`` and write its report into ``out``.

    Returns the long rows (also in ``out/rows.csv``). With ``resume``, every run continues from
    its last finished cycle (its settings must match); without, runs start afresh. ``progress``:
    tqdm bars; ``log``: called with one line per finished run.
    """
    out = Path(out)
    protocol = study.protocol
    with exclusive_lock(out, f"the study {study.title!r}"):
        atomic_write_json(out / "config.json", jsonable(study.settings()))
        rows: list[dict] = []
        for trial in study.trials(out, progress):
            if trial.pool_size < protocol.labels_needed:
                raise ValueError(
                    f"the pool of {dict(trial.group)} has {trial.pool_size} items but the "
                    f"protocol labels {protocol.labels_needed} (n_initial + budget × n_cycles)."
                )
            for name in protocol.strategies:
                strategy = trial.make_strategy(name)
                if protocol.n_candidates is not None:
                    strategy = OnCandidateSubset(strategy, protocol.n_candidates)
                records = run_active_learning(
                    out_dir=_run_dir(out, trial, name),
                    strategy=strategy,
                    initial_labelled=trial.initial,
                    pool_size=trial.pool_size,
                    budget=protocol.budget,
                    n_cycles=protocol.n_cycles,
                    train_fn=trial.train_fn,
                    evaluate_fn=trial.evaluate_fn,
                    key=jax.random.key(trial.seed),
                    resume=resume,
                    save_model=trial.save_model,
                    load_model=trial.load_model,
                    features=trial.features,
                    progress=progress,
                    run_info=trial.run_info,
                    describe_selection=trial.describe_selection,
                )
                rows += rows_of(trial, records)
                if log is not None:
                    last = records[-1]
                    scores = ", ".join(
                        f"{m.label} {m.scale * last['metrics'][m.key]:.{m.digits + 2}g}"
                        for m in study.metrics
                    )
                    where = " ".join(str(v) for _, v in trial.group)
                    log(f"{where + ' ' if where else ''}{name} seed {trial.seed}: "
                        f"{last['n_labelled']} labelled, {scores}")  # fmt: skip
        write_csv(out / "rows.csv", rows)
        keys = study.group_keys
        write_tables(rows, study.metrics, protocol.reference, out, keys, protocol.strategies,
                     study.title)  # fmt: skip
        plot_curves(rows, study.metrics, protocol.reference, out, keys, protocol.strategies)
        study.write_extras(rows, out, progress)
    return rows
