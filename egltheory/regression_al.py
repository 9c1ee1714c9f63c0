"""Cai et al.-style pool-based active learning for regression on real data sets.

For every data set, ensemble family and seed, the data are split once into a test set and a pool
(the same split, initial labelled set and root key for every strategy: the comparison is paired).
Each strategy then runs :func:`egltheory.active.run_active_learning` with the ensemble refitted
from scratch on the labelled set every cycle, and is scored by the RMSE and the correlation
coefficient (CC) of ``f_z`` on the test set, as in Cai et al. (2013).

Strategies (all greedy top-``budget`` except random and core-set):

* ``random`` — uniform;
* ``core-set`` — k-center greedy on the standardised inputs;
* ``emcm`` — Cai's EMCM, Eq. 2 as printed (unsquared), features φ(x) = x (``egl.emcm``);
* ``egl`` — closed-form EGL, Eq. 7 / Eq. 10 (``egl.egl_closed_form``, c = 4 for l = (y − f)²);
* ``variance`` — Kendall–Gal predictive variance, Eq. 11 (``egl.predictive_variance``);
* ``egl++`` — Eq. 12 with t-SNE neighbours (Eq. 13) among the labelled points in the standardised
  input space, their true labels as y_n, l = (y − f_z)² and exact ‖∇_θ l‖² of ``f_z``
  (``egltheory.eglpp``); no ensemble needed.

Significance: for each strategy, a one-tailed paired t-test (``scipy.stats.ttest_rel``, pairs =
seeds) of H1 "EGL is better": RMSE_strategy > RMSE_EGL (``alternative="greater"``) and
CC_strategy < CC_EGL (``alternative="less"``), on the final cycle and on the mean over the
learning curve (area under the curve / number of cycles).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from egltheory import egl
from egltheory.active import (
    CoreSetSelection,
    PoolState,
    RandomSelection,
    TopScoreSelection,
    atomic_write_bytes,
    atomic_write_json,
    check_pool_features,
    run_active_learning,
)
from egltheory.eglpp import eglpp_pool_scores

__all__ = [
    "STRATEGY_NAMES",
    "RegressionALConfig",
    "make_ensemble",
    "make_strategy",
    "paired_split",
    "plot_curves",
    "run_regression_al",
    "summarise",
    "write_config",
    "write_curves_csv",
    "write_tables",
]

STRATEGY_NAMES = ("random", "core-set", "emcm", "egl", "variance", "egl++")
REFERENCE = "egl"


@dataclass(frozen=True)
class RegressionALConfig:
    """Everything a run depends on (stored in each run's ``run.json`` and checked on resume)."""

    datasets: tuple[str, ...] = ("diabetes", "autompg")
    families: tuple[str, ...] = ("linear",)
    strategies: tuple[str, ...] = STRATEGY_NAMES
    seeds: int = 5
    n_members: int = 4
    ridge: float = 1.0  # linear family; bootstrap replicas of 20 points are rank-deficient for OLS
    initial: int = 20
    budget: int = 10
    n_cycles: int = 10
    test_fraction: float = 0.3
    loss_c: float = 4.0  # l = (y − f)², the loss EGL++ differentiates
    perplexity: float = 10.0
    top_k: int = 10
    nn_steps: int = 1000  # aleatoric MLPs and the GP family's MLP f_z
    gp_steps: int = 100
    hidden: tuple[int, ...] = field(default=(32, 32))

    def __post_init__(self):
        unknown = sorted(set(self.strategies) - set(STRATEGY_NAMES))
        if unknown:
            raise ValueError(f"`strategies` has unknown names {unknown}; known: {STRATEGY_NAMES}.")
        if self.seeds < 2:
            raise ValueError(f"`seeds` must be ≥ 2 for a paired t-test, got {self.seeds}.")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"`test_fraction` must be in (0, 1), got {self.test_fraction}.")
        if self.initial < 2 or self.budget < 1 or self.n_cycles < 1:
            raise ValueError("need `initial` ≥ 2, `budget` ≥ 1 and `n_cycles` ≥ 1.")


def make_ensemble(family: str, config: RegressionALConfig):
    """The ensemble of ``family`` ("linear", "aleatoric", "gp") configured from ``config``."""
    from egltheory import ensembles

    options = {
        "linear": {"ridge": config.ridge},
        "aleatoric": {"hidden": config.hidden, "steps": config.nn_steps},
        "gp": {"steps": config.gp_steps, "mlp_hidden": config.hidden, "mlp_steps": config.nn_steps},
    }.get(family, {})
    return ensembles.make_ensemble(family, n_members=config.n_members, **options)


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


@functools.lru_cache(maxsize=64)
def _batched(apply_fn: Callable) -> Callable:
    """``apply_fn(params, x [d]) -> scalar`` as ``(params, x [B, d]) -> [B]`` (cached for jit)."""
    return lambda params, xb: jax.vmap(lambda xi: apply_fn(params, xi))(xb)


def make_strategy(name: str, X_pool: np.ndarray, y_pool: np.ndarray, config: RegressionALConfig):
    """A :class:`egltheory.active.Strategy` whose ``state.model`` is a fitted ensemble."""
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
        return egl.egl_closed_form(means, variances, f_z, g2, c=config.loss_c)

    def variance_scores(state, key):
        _, means, variances, _ = member_stats(state)
        return egl.predictive_variance(means, variances)

    def eglpp_scores(state, key):
        xu, xl = Xp[state.unlabelled], Xp[state.labelled]
        # Perplexity can be at most the number of labelled references.
        perplexity = min(config.perplexity, 0.5 * state.labelled.size)
        return eglpp_pool_scores(
            _batched(state.model.apply_fn),
            state.model.params,
            xu,
            xu,
            xl,
            yp[state.labelled],
            perplexity=perplexity,
            top_k=min(config.top_k, state.labelled.size),
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
        raise ValueError(f"`name` must be one of {STRATEGY_NAMES}, got {name!r}.")
    return TopScoreSelection(name, scorers[name])


def _evaluate_fn(X_test: np.ndarray, y_test: np.ndarray) -> Callable[[Any], dict]:
    def evaluate(model) -> dict:
        pred = np.asarray(model.f_z(jnp.asarray(X_test)))
        rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
        cc = float(np.corrcoef(pred, y_test)[0, 1]) if np.std(pred) > 0 else 0.0
        return {"rmse": rmse, "cc": cc}

    return evaluate


def run_regression_al(
    config: RegressionALConfig,
    out_dir: str | Path,
    load_dataset: Callable[[str], tuple[np.ndarray, np.ndarray]],
    *,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Run every (data set, family, strategy, seed); returns long-format curve rows.

    Each run lives in ``out_dir/<dataset>/<family>/<strategy>/seed<k>/`` (per-cycle atomic files,
    resumable). Rows: ``dataset, family, strategy, seed, cycle, n_labelled, rmse, cc``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    jobs = [
        (d, f, s, k)
        for d in config.datasets
        for f in config.families
        for k in range(config.seeds)
        for s in config.strategies
    ]
    rows: list[dict] = []
    data_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bar = tqdm(jobs, desc="regression AL", disable=not progress)
    for dataset, family, strategy_name, seed in bar:
        bar.set_postfix_str(f"{dataset}/{family}/{strategy_name}/seed{seed}")
        if dataset not in data_cache:
            X, y = load_dataset(dataset)
            check_pool_features(f"{dataset} features", X)
            data_cache[dataset] = (np.asarray(X, np.float64), np.asarray(y, np.float64))
        X, y = data_cache[dataset]
        pool, test, initial = paired_split(len(y), seed, config.test_fraction, config.initial)
        Xp, yp = X[pool], y[pool]
        ensemble = make_ensemble(family, config)

        def train_fn(prev, labelled, key, Xp=Xp, yp=yp, ensemble=ensemble):
            return ensemble.fit(key, Xp[labelled], yp[labelled])

        # The model is refitted from scratch each cycle, so it is a deterministic function of
        # (labelled set, train key), both in the loop's own checkpoint: store no model, refit it
        # on resume (works for every family, including those holding closures pickle refuses).
        def save_model(model, path):
            atomic_write_bytes(path, b"refit from the labelled set and train key in the .pkl\n")

        def load_model(path, train_fn=train_fn):
            with open(path.with_suffix(".pkl"), "rb") as fh:
                ckpt = pickle.load(fh)  # the loop's own checkpoint
            key = jax.random.wrap_key_data(jnp.asarray(ckpt["train_key_data"]))
            return train_fn(None, ckpt["labelled"], key)

        records = run_active_learning(
            out_dir=out / dataset / family / strategy_name / f"seed{seed}",
            strategy=make_strategy(strategy_name, Xp, yp, config),
            initial_labelled=initial,
            pool_size=len(pool),
            budget=config.budget,
            n_cycles=config.n_cycles,
            train_fn=train_fn,
            evaluate_fn=_evaluate_fn(X[test], y[test]),
            key=jax.random.key(seed),
            resume=resume,
            features=Xp,
            run_info={"config": asdict(config), "dataset": dataset, "family": family},
            save_model=save_model,
            load_model=load_model,
        )
        rows += [
            {
                "dataset": dataset,
                "family": family,
                "strategy": strategy_name,
                "seed": seed,
                "cycle": r["cycle"],
                "n_labelled": r["n_labelled"],
                "rmse": r["metrics"]["rmse"],
                "cc": r["metrics"]["cc"],
            }
            for r in records
        ]
    return rows


def _curves(rows: Sequence[dict], dataset: str, family: str, strategy: str, metric: str):
    """``[seeds, cycles]`` metric array and the ``[cycles]`` label counts."""
    sel = [
        r for r in rows if (r["dataset"], r["family"], r["strategy"]) == (dataset, family, strategy)
    ]
    seeds = sorted({r["seed"] for r in sel})
    cycles = sorted({r["cycle"] for r in sel})
    arr = np.full((len(seeds), len(cycles)), np.nan)
    n_lab = np.zeros(len(cycles), int)
    for r in sel:
        arr[seeds.index(r["seed"]), cycles.index(r["cycle"])] = r[metric]
        n_lab[cycles.index(r["cycle"])] = r["n_labelled"]
    return arr, n_lab


def _ordered(names) -> list[str]:
    """Strategy names in ``STRATEGY_NAMES`` order (unknown names last, sorted)."""
    known = [s for s in STRATEGY_NAMES if s in names]
    return known + sorted(set(names) - set(known))


def summarise(rows: Sequence[dict], reference: str = REFERENCE) -> list[dict]:
    """Table rows: mean ± σ over seeds and one-tailed paired t-test p-values against ``reference``.

    Columns: final RMSE / CC (last cycle) and curve-mean RMSE / CC (mean over all cycles).
    ``p_*`` tests H1 "``reference`` is better" (RMSE higher / CC lower than the reference's).
    """
    table = []
    groups = sorted({(r["dataset"], r["family"]) for r in rows})
    for dataset, family in groups:
        strategies = _ordered(
            {r["strategy"] for r in rows if (r["dataset"], r["family"]) == (dataset, family)}
        )
        ref = {
            m: _curves(rows, dataset, family, reference, m)[0] if reference in strategies else None
            for m in ("rmse", "cc")
        }
        for strategy in strategies:
            entry = {"dataset": dataset, "family": family, "strategy": strategy}
            for metric, alternative in (("rmse", "greater"), ("cc", "less")):
                arr, _ = _curves(rows, dataset, family, strategy, metric)
                for label, values, ref_values in (
                    ("final", arr[:, -1], None if ref[metric] is None else ref[metric][:, -1]),
                    ("curve", arr.mean(1), None if ref[metric] is None else ref[metric].mean(1)),
                ):
                    entry[f"{metric}_{label}_mean"] = float(np.mean(values))
                    entry[f"{metric}_{label}_std"] = float(np.std(values, ddof=1))
                    p = float("nan")
                    if ref_values is not None and strategy != reference:
                        # NaN when every paired difference is equal (no variance to test).
                        test = stats.ttest_rel(values, ref_values, alternative=alternative)
                        p = float(test.pvalue)
                    entry[f"p_{metric}_{label}"] = p
            entry["n_seeds"] = int(arr.shape[0])
            entry["final_labels"] = int(_curves(rows, dataset, family, strategy, "rmse")[1][-1])
            table.append(entry)
    return table


def _csv_bytes(rows: Sequence[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _fmt_p(p: float) -> str:
    return "—" if not np.isfinite(p) else (f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}")


def write_tables(table: Sequence[dict], out_dir: str | Path) -> str:
    """Write ``table.csv`` and ``table.md`` into ``out_dir``; returns the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if table:
        atomic_write_bytes(out / "table.csv", _csv_bytes(table))
    lines = [
        "| data set | family | strategy | RMSE final | p | CC final | p | RMSE curve mean | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['dataset']} | {e['family']} | {e['strategy']} "
            f"| {e['rmse_final_mean']:.4f} ± {e['rmse_final_std']:.4f} "
            f"| {_fmt_p(e['p_rmse_final'])} "
            f"| {e['cc_final_mean']:.4f} ± {e['cc_final_std']:.4f} | {_fmt_p(e['p_cc_final'])} "
            f"| {e['rmse_curve_mean']:.4f} ± {e['rmse_curve_std']:.4f} "
            f"| {_fmt_p(e['p_rmse_curve'])} |"
        )
    seeds = table[0]["n_seeds"] if table else 0
    note = (
        f"\nmean ± σ over {seeds} paired seeds (standardised targets). p: one-tailed paired t-test "
        f"(scipy.stats.ttest_rel) of H1 'EGL is better' (RMSE higher / CC lower than EGL's); "
        "'curve mean' averages over all cycles of the learning curve.\n"
    )
    md = "\n".join(lines) + "\n" + note
    atomic_write_bytes(out / "table.md", md.encode())
    return md


def plot_curves(rows: Sequence[dict], out_dir: str | Path) -> list[Path]:
    """RMSE and CC learning curves (mean ± standard error over seeds), PNG + PDF per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    written = []
    for dataset, family in sorted({(r["dataset"], r["family"]) for r in rows}):
        strategies = _ordered(
            {r["strategy"] for r in rows if (r["dataset"], r["family"]) == (dataset, family)}
        )
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for strategy in strategies:
            for ax, metric in zip(axes, ("rmse", "cc"), strict=True):
                arr, n_lab = _curves(rows, dataset, family, strategy, metric)
                mean = arr.mean(0)
                se = arr.std(0, ddof=1) / np.sqrt(arr.shape[0]) if arr.shape[0] > 1 else 0 * mean
                style = {"lw": 2.5} if strategy == REFERENCE else {"lw": 1.4}
                ax.plot(n_lab, mean, label=strategy, **style)
                ax.fill_between(n_lab, mean - se, mean + se, alpha=0.15)
        axes[0].set(xlabel="labelled points", ylabel="test RMSE (standardised y)")
        axes[1].set(xlabel="labelled points", ylabel="test correlation coefficient")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{dataset}, {family} ensemble: mean ± s.e. over seeds")
        fig.tight_layout()
        for ext in ("png", "pdf"):
            path = out / f"curves_{dataset}_{family}.{ext}"
            tmp = path.with_name(f".{path.name}.tmp.{ext}")
            fig.savefig(tmp, dpi=120)
            tmp.replace(path)
            written.append(path)
        plt.close(fig)
    return written


def write_curves_csv(rows: Sequence[dict], out_dir: str | Path) -> Path:
    """All learning-curve points in long format (``curves.csv``)."""
    path = Path(out_dir) / "curves.csv"
    atomic_write_bytes(path, _csv_bytes(rows))
    return path


def write_config(config: RegressionALConfig, out_dir: str | Path) -> None:
    """``config.json`` next to the results."""
    atomic_write_json(Path(out_dir) / "config.json", asdict(config))
