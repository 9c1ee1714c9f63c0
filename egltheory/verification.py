"""Theory verification on fitted ensembles: Eq. 10 vs Eq. 5, identity 1, and the ranking gap.

For one ensemble family and one data set, :func:`verify_entry` fits the ensemble on a labelled
subset, scores the remaining pool with closed-form EGL (Eq. 7/10), the Kendall–Gal predictive
variance (Eq. 11), ``EGL / (c ‖∇f_z‖²)`` and EMCM (Eq. 2), and checks

* ``mc_max_abs_z``: closed form vs the Monte-Carlo definition (Eq. 5) on ``n_check`` pool inputs,
  in units of the Monte-Carlo standard error;
* ``identity_max_rel_err``: ``EGL / (c‖∇f_z‖²) = Var_KG + (μ̄ − f_z)²`` (identity 1, exact);
* ``spearman``: rank agreement among the scores (identity 2: EGL and Var_KG differ in ranking);
* ``bias_share``: mean share of the bracket of Eq. 10 that is squared bias ``(μ̄ − f_z)²``.

All formulas come from :mod:`egltheory.egl`; this module only fits, scores and summarises.
:func:`run_verification` loops over families and data sets and adds a ``checks`` summary whose
Monte-Carlo threshold is Bonferroni-corrected for the total number of checked inputs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from egltheory import egl, ensembles
from egltheory.datasets import (
    TOY1D_GAPS,
    TOY1D_RANGE,
    available_regression_datasets,
    load_regression_dataset,
    toy1d,
)

FAMILIES = ("linear", "aleatoric", "gp")
SCORES = ("egl", "egl_over_grad", "kendall_gal", "emcm")
IDENTITY_TOLERANCE = 1e-10  # identity 1 is exact: float64 round-off only
MC_FAMILY_WISE_ALPHA = 1e-3  # chance that any checked input exceeds the |z| threshold


@dataclass(frozen=True)
class VerificationConfig:
    """Sizes of one verification run; ``PRESETS["default"]`` for ``make demo``, ``"tiny"`` for
    the tests. ``ensembles``: one unfitted ensemble per family checked."""

    ensembles: tuple = (
        ensembles.LinearEnsemble(n_members=4),
        ensembles.AleatoricEnsemble(n_members=4, hidden=(64, 64), steps=2000),
        ensembles.GPEnsemble(n_members=4, steps=100, mlp_hidden=(32, 32), mlp_steps=2000),
    )
    c: float = 4.0  # loss l = (y - f)²; c = 1 is the paper's ½(y - f)² (same ranking)
    n_train: int = 200
    n_train_toy: int = 150
    n_pool_toy: int = 400
    n_check: int = 25
    mc_samples: int = 4000
    mc_convergence_samples: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    datasets: tuple[str, ...] = ("toy1d", "diabetes", "autompg")
    seed: int = 0

    def __post_init__(self) -> None:
        names = self.families
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`ensembles` needs one ensemble per family, got {list(names)}.")

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(ensembles.family_name(e) for e in self.ensembles)

    def ensemble(self, family: str):
        """The unfitted ensemble of ``family``."""
        if family not in self.families:
            raise ValueError(f"`family` must be one of {self.families}, got {family!r}.")
        return self.ensembles[self.families.index(family)]


PRESETS = {
    "default": VerificationConfig(),
    "tiny": VerificationConfig(
        ensembles=(
            ensembles.LinearEnsemble(n_members=4),
            ensembles.AleatoricEnsemble(n_members=4, hidden=(16,), steps=150),
            ensembles.GPEnsemble(n_members=4, steps=10, mlp_hidden=(16,), mlp_steps=150),
        ),
        n_train=50,
        n_train_toy=40,
        n_pool_toy=60,
        n_check=5,
        mc_samples=400,
        mc_convergence_samples=(16, 128),
        datasets=("toy1d", "diabetes"),
    ),
}


def split_dataset(
    name: str, config: VerificationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train [n, d], y_train [n], X_pool [N, d])`` for a data set name.

    toy1d: fresh noisy draws for training and an even grid over a slightly wider range (gaps and
    both ends included) as the pool. Real data: a seeded random labelled subset of ``n_train``
    rows; the pool is every other row.
    """
    if name == "toy1d":
        X, y = toy1d(seed=config.seed, n=config.n_train_toy)
        lo, hi = TOY1D_RANGE
        pool = np.linspace(lo - 0.5, hi + 0.5, config.n_pool_toy)[:, None]
        return X, y, pool
    X, y = load_regression_dataset(name)
    if X.shape[0] <= config.n_train:
        raise ValueError(
            f"`n_train` = {config.n_train} leaves no pool in {name!r} ({X.shape[0]} rows)."
        )
    order = np.random.default_rng(config.seed).permutation(X.shape[0])
    train, pool = order[: config.n_train], order[config.n_train :]
    return X[train], y[train], X[pool]


def _check_indices(score: np.ndarray, n_check: int) -> np.ndarray:
    """Pool indices spread over the EGL distribution (quantiles), so small and large are checked."""
    order = np.argsort(score)
    positions = np.unique(np.linspace(0, len(order) - 1, min(n_check, len(order))).round())
    return order[positions.astype(int)]


def spearman_pairs(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Spearman rank correlation for every pair of scores, keyed ``"a|b"``."""
    return {
        f"{a}|{b}": float(stats.spearmanr(scores[a], scores[b]).statistic)
        for a, b in itertools.combinations(scores, 2)
    }


@dataclass
class EntryResult:
    """One (family, data set) verification: the JSON entry and arrays for the figures."""

    entry: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def verify_entry(
    family: str, dataset: str, config: VerificationConfig, key: jax.Array
) -> EntryResult:
    """Fit ``family`` on ``dataset`` and run every check; see the module docstring."""
    key_fit, key_mc, key_conv = jax.random.split(key, 3)
    X_train, y_train, X_pool = split_dataset(dataset, config)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    fitted = config.ensemble(family).fit(key_fit, X_train, y_train)
    jax.block_until_ready(fitted.params)
    timings["fit_s"] = time.perf_counter() - start

    start = time.perf_counter()
    means, variances = fitted.predict(X_pool)
    f_z = fitted.f_z(X_pool)
    grad_sq = fitted.grad_sq_norm(X_pool)
    jax.block_until_ready(grad_sq)
    timings["predict_s"] = time.perf_counter() - start

    c = config.c
    score_egl = egl.egl_closed_form(means, variances, f_z, grad_sq, c=c)
    terms = egl.bias_variance(means, variances, f_z)
    kendall_gal = egl.predictive_variance(means, variances)
    egl_over_grad = score_egl / (c * grad_sq)
    # EMCM (Eq. 2) needs only ‖φ(x)‖ with φ = ∇_θ f_z (x̃ for the linear model): ‖a φ‖ = |a|‖φ‖.
    score_emcm = egl.emcm(means, f_z, jnp.sqrt(grad_sq)[:, None])
    scores = {
        "egl": np.asarray(score_egl),
        "egl_over_grad": np.asarray(egl_over_grad),
        "kendall_gal": np.asarray(kendall_gal),
        "emcm": np.asarray(score_emcm),
    }

    # Identity 1: EGL / (c‖∇f_z‖²) = Var_KG + (μ̄ − f_z)².
    rhs = np.asarray(kendall_gal + terms.squared_bias)
    identity_rel = np.abs(scores["egl_over_grad"] - rhs) / np.abs(rhs)

    # Closed form vs the Monte-Carlo definition (Eq. 5) on inputs spread over the EGL range.
    check = _check_indices(scores["egl"], config.n_check)
    start = time.perf_counter()
    mc = egl.egl_monte_carlo(
        key_mc,
        fitted.apply_fn,
        fitted.params,
        jnp.asarray(X_pool[check]),
        means[:, check],
        variances[:, check],
        config.mc_samples,
        c=c,
    )
    timings["monte_carlo_s"] = time.perf_counter() - start
    z = (scores["egl"][check] - np.asarray(mc.estimate)) / np.asarray(mc.stderr)

    # Monte-Carlo error against the number of samples (should fall like 1/√n); on the toy only,
    # where the figure shows it (each sample size is one more compiled Monte-Carlo program).
    convergence = {}
    sample_sizes = config.mc_convergence_samples if dataset == "toy1d" else ()
    for i, n_samples in enumerate(sample_sizes):
        est = egl.egl_monte_carlo(
            jax.random.fold_in(key_conv, i),
            fitted.apply_fn,
            fitted.params,
            jnp.asarray(X_pool[check]),
            means[:, check],
            variances[:, check],
            n_samples,
            c=c,
        )
        rel_err = np.abs(np.asarray(est.estimate) / scores["egl"][check] - 1.0)
        rel_se = np.asarray(est.stderr) / scores["egl"][check]
        convergence[str(n_samples)] = {
            "mean_abs_rel_error": float(rel_err.mean()),
            "mean_rel_stderr": float(rel_se.mean()),
        }

    share = np.asarray(terms.squared_bias) / np.asarray(terms.total)
    entry = {
        "n_train": int(X_train.shape[0]),
        "n_pool": int(X_pool.shape[0]),
        "n_features": int(X_train.shape[1]),
        "K": int(fitted.n_members),
        "c": c,
        "n_checked": len(check),
        "mc_samples": config.mc_samples,
        "mc_max_abs_z": float(np.max(np.abs(z))),
        "mc_z": [float(v) for v in z],
        "identity_max_rel_err": float(identity_rel.max()),
        "spearman": spearman_pairs(scores),
        "bias_share": float(share.mean()),
        "term_means": {
            "aleatoric": float(np.mean(terms.aleatoric)),
            "epistemic": float(np.mean(terms.epistemic)),
            "squared_bias": float(np.mean(terms.squared_bias)),
        },
        "grad_sq_norm_cv": float(np.std(grad_sq) / np.mean(grad_sq)),
        "mc_convergence": convergence,
        "timings": timings,
    }
    arrays = {
        "x_pool": np.asarray(X_pool),
        "x_train": np.asarray(X_train),
        "y_train": np.asarray(y_train),
        "means": np.asarray(means),
        "f_z": np.asarray(f_z),
        "grad_sq_norm": np.asarray(grad_sq),
        "aleatoric": np.asarray(terms.aleatoric),
        "epistemic": np.asarray(terms.epistemic),
        "squared_bias": np.asarray(terms.squared_bias),
        "check_closed": scores["egl"][check],
        "check_mc": np.asarray(mc.estimate),
        "check_stderr": np.asarray(mc.stderr),
        **{f"score_{k}": v for k, v in scores.items()},
    }
    return EntryResult(entry=entry, arrays=arrays)


def mc_threshold(n_checked_total: int, alpha: float = MC_FAMILY_WISE_ALPHA) -> float:
    """|z| threshold with family-wise false-alarm probability ``alpha`` over all checked inputs.

    If the closed form is right, each z is ≈ N(0, 1) (CLT over the Monte-Carlo draws), so by the
    union bound P(max |z| > t) ≤ m · 2(1 − Φ(t)); t = Φ⁻¹(1 − α / (2m)). For m = 225, α = 1e-3 this
    is ≈ 4.6 (4 standard errors alone would fire by chance with probability ≈ 1.4%).
    """
    return float(stats.norm.isf(alpha / (2 * max(1, n_checked_total))))


def summarise_checks(report: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Pass/fail for every entry: Monte-Carlo |z| and the identity tolerance."""
    entries = [(f, d, e) for f, per in report.items() for d, e in per.items()]
    threshold = mc_threshold(sum(e["n_checked"] for _, _, e in entries))
    items = {}
    for family, dataset, entry in entries:
        items[f"{family}/{dataset}/mc_max_abs_z"] = {
            "value": entry["mc_max_abs_z"],
            "threshold": threshold,
            "passed": bool(entry["mc_max_abs_z"] < threshold),
        }
        items[f"{family}/{dataset}/identity_max_rel_err"] = {
            "value": entry["identity_max_rel_err"],
            "threshold": IDENTITY_TOLERANCE,
            "passed": bool(entry["identity_max_rel_err"] < IDENTITY_TOLERANCE),
        }
    return {
        "all_passed": all(item["passed"] for item in items.values()),
        "mc_threshold": threshold,
        "mc_threshold_rule": (
            "Bonferroni over all checked inputs: t = Phi^-1(1 - alpha/(2 m)), "
            f"alpha = {MC_FAMILY_WISE_ALPHA}"
        ),
        "identity_tolerance": IDENTITY_TOLERANCE,
        "items": items,
    }


def run_verification(
    config: VerificationConfig,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Every (family, data set) of ``config`` plus the checks.

    Returns ``(report, arrays)``: ``report = {family: {dataset: entry}, "checks": ..., "config":
    ...}`` (JSON-ready) and the per-entry arrays for the figures. Data sets not installed are
    skipped (listed in ``report["skipped_datasets"]``).
    """
    available = set(available_regression_datasets())
    datasets = [d for d in config.datasets if d in available]
    skipped = [d for d in config.datasets if d not in available]
    report: dict[str, Any] = {family: {} for family in config.families}
    arrays: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    jobs = list(itertools.product(config.families, datasets))
    key = jax.random.key(config.seed)
    for i, (family, dataset) in enumerate(progress(jobs)):
        result = verify_entry(family, dataset, config, jax.random.fold_in(key, i))
        report[family][dataset] = result.entry
        arrays[(family, dataset)] = result.arrays
    results = {f: report[f] for f in config.families}
    report["checks"] = summarise_checks(results)
    report["config"] = {
        **{k: v for k, v in asdict(config).items() if k != "ensembles"},
        "families": list(config.families),
        "ensembles": {f: asdict(e) for f, e in zip(config.families, config.ensembles, strict=True)},
    }
    report["skipped_datasets"] = skipped
    report["toy1d_gaps"] = [list(gap) for gap in TOY1D_GAPS]
    return report, arrays
