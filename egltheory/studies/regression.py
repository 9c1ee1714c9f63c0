"""The regression study: Cai et al.-style pool-based active learning on real data sets.

For every data set, ensemble family and seed (a :class:`~egltheory.studies.runner.Trial`), the
data are split once into a test set and a pool, with one initial labelled set and root key shared
by every strategy. The ensemble is refitted from scratch on the labelled set each cycle and scored
by the RMSE and the correlation coefficient (CC) of ``f_z`` on the test set, as in Cai et al.

Strategies (all greedy top-``budget`` except random and core-set):

* ``random``; ``core-set``: k-center greedy on the standardised inputs;
* ``emcm``: Cai's EMCM, Eq. 2 as printed (unsquared), features φ(x) = x (``egl.emcm``);
* ``egl``: closed-form EGL, Eq. 7 / Eq. 10 (``egl.egl_closed_form``, c = 4 for l = (y − f)²);
* ``variance``: Kendall–Gal predictive variance, Eq. 11 (``egl.predictive_variance``);
* ``egl++``: Eq. 12 with t-SNE neighbours (Eq. 13) among the labelled points in the standardised
  input space, their true labels as y_n, l = (y − f_z)², exact ‖∇_θ l‖² of ``f_z``
  (:func:`egltheory.eglpp.eglpp_pool_scores`); no ensemble needed.

The reference of the paired tests is ``egl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from egltheory import egl
from egltheory.active import (
    CoreSetSelection,
    PoolState,
    RandomSelection,
    Strategy,
    TopScoreSelection,
    check_pool_features,
)
from egltheory.datasets import load_regression_dataset
from egltheory.eglpp import EGLPPOptions, eglpp_pool_scores
from egltheory.ensembles import (
    AleatoricEnsemble,
    GPEnsemble,
    LinearEnsemble,
    family_name,
)
from egltheory.files import atomic_write_bytes, read_pickle
from egltheory.studies.report import MetricSpec
from egltheory.studies.runner import Protocol, Trial

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "RegressionStudy",
    "make_strategy",
    "paired_split",
]

STRATEGIES = ("random", "core-set", "emcm", "egl", "variance", "egl++")
METRICS = (
    MetricSpec("rmse", "test RMSE", higher_is_better=False, digits=4),
    MetricSpec("cc", "test CC", higher_is_better=True, digits=4),
)


@dataclass(frozen=True)
class RegressionStudy:
    """A regression study: protocol, data sets, ensembles (unfitted, one per family) and the
    settings of the scores. ``loss_c``: l = c·(y − f)²/4-style constant of Eq. 10 (4 for
    (y − f)²)."""

    protocol: Protocol
    datasets: tuple[str, ...] = ("diabetes", "autompg")
    ensembles: tuple = (LinearEnsemble(n_members=4, ridge=1.0),)
    test_fraction: float = 0.3
    loss_c: float = 4.0
    eglpp: EGLPPOptions = EGLPPOptions(perplexity=10.0, top_k=10)
    title: str = field(default="Regression active learning", init=False)
    metrics: tuple[MetricSpec, ...] = field(default=METRICS, init=False)
    group_keys: tuple[str, ...] = field(default=("dataset", "family"), init=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocol.strategies) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"`strategies` has unknown names {unknown}; known: {STRATEGIES}.")
        if not self.datasets or len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"`datasets` must be distinct names, got {list(self.datasets)}.")
        families = [family_name(e) for e in self.ensembles]
        if not families or len(set(families)) != len(families):
            raise ValueError(f"`ensembles` needs one ensemble per family, got {families}.")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"`test_fraction` must be in (0, 1), got {self.test_fraction}.")
        if self.protocol.n_initial < 2:
            raise ValueError(f"`n_initial` must be ≥ 2, got {self.protocol.n_initial}.")

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(family_name(e) for e in self.ensembles)

    def with_families(self, families) -> RegressionStudy:
        """The same study with the ensembles of ``families``, sized as in :data:`ENSEMBLES`."""
        unknown = sorted(set(families) - set(ENSEMBLES))
        if unknown:
            raise ValueError(f"`families` has unknown names {unknown}; known: {list(ENSEMBLES)}.")
        mine = dict(zip(self.families, self.ensembles, strict=True))
        return replace(self, ensembles=tuple(mine.get(f, ENSEMBLES[f]) for f in families))

    def settings(self) -> dict:
        return {
            "study": "regression",
            "protocol": asdict(self.protocol),
            "datasets": list(self.datasets),
            "ensembles": {family_name(e): asdict(e) for e in self.ensembles},
            "test_fraction": self.test_fraction,
            "loss_c": self.loss_c,
            "eglpp": asdict(self.eglpp),
        }

    def trials(self, out: Path, progress: bool = False) -> Iterator[Trial]:
        return _trials(self, progress)

    def write_extras(self, rows, out: Path, progress: bool) -> None:
        """Nothing beyond the shared report."""


# Default ensembles of each family in the study (sizes for a CPU).
ENSEMBLES = {
    "linear": LinearEnsemble(n_members=4, ridge=1.0),  # bootstrap replicas of 20 points need λ > 0
    "aleatoric": AleatoricEnsemble(n_members=4, hidden=(32, 32), steps=1000),
    "gp": GPEnsemble(n_members=4, steps=100, mlp_hidden=(32, 32), mlp_steps=1000),
}


def paired_split(
    n: int, seed: int, test_fraction: float, initial: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pool_rows [n_pool], test_rows [n_test], initial_labelled [initial])`` for one seed.

    ``initial_labelled`` indexes the pool. The same seed gives the same split to every strategy.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = max(1, math.ceil(test_fraction * n))
    test, pool = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    if initial > pool.size:
        raise ValueError(f"`initial` {initial} exceeds the pool of {pool.size} points.")
    initial_labelled = np.sort(rng.choice(pool.size, size=initial, replace=False))
    return pool, test, initial_labelled


@dataclass(frozen=True)
class _BatchedApply:
    """``apply_fn(params, x [d]) -> scalar`` as ``(params, x [B, d]) -> [B]``; equal for equal
    ``apply_fn``, so EGL++'s compiled programs are reused across cycles."""

    apply_fn: Callable

    def __call__(self, params, xb):
        return jax.vmap(lambda xi: self.apply_fn(params, xi))(xb)


def make_strategy(
    name: str, X_pool: np.ndarray, y_pool: np.ndarray, study: RegressionStudy
) -> Strategy:
    """A strategy whose ``state.model`` is a fitted ensemble (``egltheory.ensembles``)."""
    Xp = jnp.asarray(X_pool)
    yp = jnp.asarray(y_pool)

    def member_stats(state: PoolState):
        xu = Xp[state.unlabelled]
        means, variances = state.model.predict(xu)
        return xu, means, variances, state.model.f_z(xu)

    def emcm_scores(state, key):
        xu, means, _, f_z = member_stats(state)
        return egl.emcm(means, f_z, xu, squared=False)

    def egl_scores(state, key):
        xu, means, variances, f_z = member_stats(state)
        g2 = state.model.grad_sq_norm(xu)
        return egl.egl_closed_form(means, variances, f_z, g2, c=study.loss_c)

    def variance_scores(state, key):
        _, means, variances, _ = member_stats(state)
        return egl.predictive_variance(means, variances)

    def eglpp_scores(state, key):
        xu, xl = Xp[state.unlabelled], Xp[state.labelled]
        return eglpp_pool_scores(
            _BatchedApply(state.model.apply_fn),
            state.model.params,
            xu,
            xu,
            xl,
            yp[state.labelled],
            options=study.eglpp,
            key=key,
        )

    if name == "random":
        return RandomSelection()
    if name == "core-set":
        return CoreSetSelection(lambda model, idx: Xp[np.asarray(idx)])
    scorers = {
        "emcm": emcm_scores,
        "egl": egl_scores,
        "variance": variance_scores,
        "egl++": eglpp_scores,
    }
    if name not in scorers:
        raise ValueError(f"`name` must be one of {STRATEGIES}, got {name!r}.")
    return TopScoreSelection(name, scorers[name])


def _evaluate_fn(X_test: np.ndarray, y_test: np.ndarray) -> Callable:
    def evaluate(model) -> dict:
        pred = np.asarray(model.f_z(jnp.asarray(X_test)))
        rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
        cc = float(np.corrcoef(pred, y_test)[0, 1]) if np.std(pred) > 0 else 0.0
        return {"rmse": rmse, "cc": cc}

    return evaluate


def _refit_persistence(train_fn):
    """The model is refitted from scratch each cycle, so it is a function of (labelled set, train
    key), both in the loop's own checkpoint: store no model, refit it on resume (works for every
    family, including those holding closures pickle refuses)."""

    def save_model(model, path):
        atomic_write_bytes(path, b"refit from the labelled set and train key in the .pkl\n")

    def load_model(path):
        ckpt = read_pickle(path.with_suffix(".pkl"), f"delete {path.parent} to rerun it")
        key = jax.random.wrap_key_data(jnp.asarray(ckpt["train_key_data"]))
        return train_fn(None, ckpt["labelled"], key)

    return save_model, load_model


def _trials(study: RegressionStudy, progress: bool) -> Iterator[Trial]:
    protocol = study.protocol
    data = {}
    for dataset in study.datasets:
        X, y = load_regression_dataset(dataset)
        check_pool_features(f"{dataset} features", X)
        data[dataset] = (np.asarray(X, np.float64), np.asarray(y, np.float64))
    shared = {"test_fraction": study.test_fraction, "loss_c": study.loss_c,
              "eglpp": asdict(study.eglpp)}  # fmt: skip
    for dataset in study.datasets:
        X, y = data[dataset]
        for ensemble in study.ensembles:
            for seed in protocol.seeds:
                pool, test, initial = paired_split(
                    len(y), seed, study.test_fraction, protocol.n_initial
                )
                Xp, yp = X[pool], y[pool]

                def train_fn(prev, labelled, key, Xp=Xp, yp=yp, ensemble=ensemble):
                    return ensemble.fit(key, Xp[labelled], yp[labelled])

                save_model, load_model = _refit_persistence(train_fn)
                yield Trial(
                    group=(("dataset", dataset), ("family", family_name(ensemble))),
                    seed=int(seed),
                    pool_size=len(pool),
                    initial=initial,
                    make_strategy=lambda name, Xp=Xp, yp=yp: make_strategy(name, Xp, yp, study),
                    train_fn=train_fn,
                    evaluate_fn=_evaluate_fn(X[test], y[test]),
                    save_model=save_model,
                    load_model=load_model,
                    features=Xp,
                    run_info={"ensemble": asdict(ensemble), **shared},
                )


def _preset(seeds, n_initial, budget, n_cycles, datasets, ensembles) -> RegressionStudy:
    protocol = Protocol(
        strategies=STRATEGIES,
        seeds=tuple(seeds),
        n_initial=n_initial,
        budget=budget,
        n_cycles=n_cycles,
        reference="egl",
    )
    return RegressionStudy(protocol=protocol, datasets=datasets, ensembles=ensembles)


PRESETS = {
    "tiny": _preset(
        (0, 1), 15, 5, 2, ("diabetes",),
        (LinearEnsemble(n_members=4, ridge=1.0),
         AleatoricEnsemble(n_members=4, hidden=(32, 32), steps=50),
         GPEnsemble(n_members=4, steps=5, mlp_hidden=(32, 32), mlp_steps=50)),
    ),
    "default": _preset(range(5), 20, 10, 10, ("diabetes", "autompg"), (ENSEMBLES["linear"],)),
    # The documented results (docs/active_learning.md): every family, concrete needs the GPL extra.
    "full": _preset(range(10), 20, 10, 10, ("diabetes", "concrete"), tuple(ENSEMBLES.values())),
}  # fmt: skip
