"""Paired statistics of a study and their tables and learning curves, one format for every study.

Rows are long: one per (group …, strategy, seed, cycle) with ``n_labelled`` and the metrics. For
each group, metric and strategy, :func:`paired_table` gives per cycle (and for the mean over the
learning curve, cycle ``"curve"``) the mean and σ (ddof 1) over the seeds that every strategy of
the group ran, and the one-tailed paired t-test p-value of H1 "the reference strategy is better"
(:func:`paired_p_value`). The p-value's rule for ties: when every paired difference is exactly 0
the test has no evidence either way and p = 0.5 (the t statistic's limit 0/0 taken as 0;
``scipy.stats.ttest_rel`` would return NaN); otherwise it is ``ttest_rel``'s.

:func:`spearman_ci` is Spearman's rank correlation with a seeded percentile-bootstrap confidence
interval, optionally the mean of within-group correlations with a stratified bootstrap (e.g. one
group per model, whose scores rank only against each other).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import stats

from egltheory.files import atomic_write_bytes, atomic_write_text

__all__ = [
    "MetricSpec",
    "SpearmanCI",
    "curves",
    "detectable_difference",
    "paired_p_value",
    "paired_table",
    "plot_curves",
    "spearman_ci",
    "table_markdown",
    "write_csv",
    "write_tables",
]


@dataclass(frozen=True)
class MetricSpec:
    """A metric column of the rows: how to name, orient and print it."""

    key: str
    label: str
    higher_is_better: bool
    scale: float = 1.0  # printed values are value × scale (100 → percent)
    digits: int = 2


def paired_p_value(reference, other, higher_is_better: bool) -> float:
    """One-tailed paired t-test p-value of H1 "``reference`` is better than ``other``".

    ``reference``, ``other``: ``[S]`` values of the same seeds. Better = higher when
    ``higher_is_better``, else lower. All paired differences exactly 0 → 0.5 (module docstring);
    fewer than 2 pairs → NaN.
    """
    reference, other = np.asarray(reference, float), np.asarray(other, float)
    if reference.shape != other.shape or reference.ndim != 1:
        raise ValueError(
            f"`reference` and `other` must be [S] paired values, got {reference.shape} and "
            f"{other.shape}."
        )
    if reference.size < 2:
        return float("nan")
    if np.all(reference == other):
        return 0.5
    better, worse = (reference, other) if higher_is_better else (other, reference)
    return float(stats.ttest_rel(better, worse, alternative="greater").pvalue)


def detectable_difference(std_of_differences: float, n_pairs: int, alpha=0.05, power=0.8):
    """The smallest true mean paired difference a one-tailed paired t-test at level ``alpha``
    detects with probability ``power``, given the σ of the paired differences (normal
    approximation with t quantiles: (t_{1−α} + t_{power}) · σ / √n)."""
    if n_pairs < 2 or not np.isfinite(std_of_differences):
        return float("nan")
    df = n_pairs - 1
    factor = stats.t.ppf(1 - alpha, df) + stats.t.ppf(power, df)
    return float(factor * std_of_differences / math.sqrt(n_pairs))


class SpearmanCI(NamedTuple):
    """Spearman's ρ, the bounds of its bootstrap confidence interval, and the pairs and groups
    it rests on (those without NaN, in the groups whose ρ is defined)."""

    rho: float
    low: float
    high: float
    n: int
    n_groups: int


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman ρ of ``a``, ``b`` ``[B, N]`` (average ranks for ties; NaN where a row
    has constant ranks)."""
    ra = stats.rankdata(a, axis=-1)
    rb = stats.rankdata(b, axis=-1)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    den = np.sqrt(np.sum(ra * ra, axis=-1) * np.sum(rb * rb, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.sum(ra * rb, axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_ci(
    a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95, groups=None
) -> SpearmanCI:
    """Spearman's ρ of the pairs ``(a[i], b[i])`` with a percentile-bootstrap confidence interval.

    ``a``, ``b``: ``[N]``; pairs where either is NaN are dropped. The bootstrap draws ``n_boot``
    resamples of the pairs with replacement from ``numpy.random.default_rng(seed)``; the interval
    is the ``(1 − level) / 2`` and ``(1 + level) / 2`` quantiles of their ρ. With ``groups``
    ``[N]`` (labels) the statistic is the mean over groups of the within-group ρ (e.g. one group
    per model, whose scores rank only against each other), and each resample redraws every
    group's pairs from that group (stratified).

    ρ is undefined for constant ranks: such a group carries no ranking information and is left
    out of the mean (``n``, ``n_groups``: the pairs and groups used; none: ρ and bounds NaN); a
    group that turns constant in a resample is left out of that resample's mean, and a resample
    with no defined ρ is left out of the quantiles. A group with fewer than 3 pairs raises
    ``ValueError``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"`a` and `b` must be paired [N] values, got {a.shape} and {b.shape}.")
    g = np.zeros(a.shape, np.int64) if groups is None else np.asarray(groups)
    if g.shape != a.shape:
        raise ValueError(f"`groups` must have the shape of `a` {a.shape}, got {g.shape}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"`n_boot` must be an int ≥ 1, got {n_boot!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, g = a[keep], b[keep], g[keep]
    if a.size == 0:
        raise ValueError("`a` and `b` have no pair without NaN.")
    rng = np.random.default_rng(seed)
    rhos, boots, used = [], [], 0
    for label in np.unique(g):
        ga, gb = a[g == label], b[g == label]
        if ga.size < 3:
            raise ValueError(
                f"group {label!r} has {ga.size} pairs without NaN; Spearman's ρ with a bootstrap "
                "needs at least 3."
            )
        idx = rng.integers(0, ga.size, size=(n_boot, ga.size))  # drawn for every group
        rho = _spearman_rows(ga[None], gb[None])[0]
        if np.isfinite(rho):
            rhos.append(rho)
            used += ga.size
            boots.append(_spearman_rows(ga[idx], gb[idx]))
    nan = float("nan")
    if not rhos:
        return SpearmanCI(nan, nan, nan, 0, 0)
    boots = np.asarray(boots)  # [groups, n_boot]
    defined = np.isfinite(boots)
    count = defined.sum(axis=0)
    boot = np.where(defined, boots, 0.0).sum(axis=0)[count > 0] / count[count > 0]
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if boot.size else (nan, nan)
    return SpearmanCI(float(np.mean(rhos)), float(low), float(high), used, len(rhos))


def _ordered(names, preferred: Sequence[str]) -> list[str]:
    known = [s for s in preferred if s in names]
    return known + sorted(set(names) - set(known))


def curves(rows: Sequence[dict], metric: str, strategy: str, where: dict | None = None):
    """``(seeds [S], n_labelled [C], values [S, C])`` of one strategy (rows matching ``where``)."""
    sel = [
        r
        for r in rows
        if r["strategy"] == strategy and all(r[k] == v for k, v in (where or {}).items())
    ]
    seeds = sorted({r["seed"] for r in sel})
    cycles = sorted({r["cycle"] for r in sel})
    values = np.full((len(seeds), len(cycles)), np.nan)
    n_lab = np.zeros(len(cycles), int)
    for r in sel:
        values[seeds.index(r["seed"]), cycles.index(r["cycle"])] = r[metric]
        n_lab[cycles.index(r["cycle"])] = r["n_labelled"]
    return seeds, n_lab, values


def paired_table(
    rows: Sequence[dict],
    metric: MetricSpec,
    reference: str,
    group_keys: Sequence[str] = (),
    order: Sequence[str] = (),
) -> list[dict]:
    """Per group × strategy × cycle (and ``"curve"``): mean, σ, p vs ``reference``, seeds.

    Returns entries ``{**group, "metric", "strategy", "cycle", "n_labelled", "mean", "std",
    "p", "detectable", "n_seeds"}`` (``p`` NaN for the reference itself or when it did not run;
    ``detectable``: :func:`detectable_difference` of the paired differences with the reference).
    """
    table = []
    groups = sorted({tuple(r[k] for k in group_keys) for r in rows})
    for values_of_group in groups:
        where = dict(zip(group_keys, values_of_group, strict=True))
        in_group = [r for r in rows if all(r[k] == v for k, v in where.items())]
        strategies = _ordered({r["strategy"] for r in in_group}, order)
        per = {s: curves(in_group, metric.key, s) for s in strategies}
        shared = sorted(set.intersection(*(set(p[0]) for p in per.values())))
        for strategy in strategies:
            seeds, n_lab, values = per[strategy]
            values = values[[seeds.index(s) for s in shared]]
            ref = None
            if reference in per and strategy != reference:
                ref_seeds, _, ref_values = per[reference]
                ref = ref_values[[ref_seeds.index(s) for s in shared]]
            columns = [(c, n_lab[c], values[:, c], None if ref is None else ref[:, c])
                       for c in range(values.shape[1])]  # fmt: skip
            columns.append(("curve", None, values.mean(1), None if ref is None else ref.mean(1)))
            for cycle, n, v, r in columns:
                table.append(
                    {
                        **where,
                        "metric": metric.key,
                        "strategy": strategy,
                        "cycle": cycle if cycle == "curve" else int(cycle),
                        "n_labelled": None if n is None else int(n),
                        "mean": float(np.mean(v)),
                        "std": float(np.std(v, ddof=1)) if v.size > 1 else float("nan"),
                        "p": float("nan")
                        if r is None
                        else paired_p_value(r, v, metric.higher_is_better),
                        "detectable": float("nan")
                        if r is None
                        else detectable_difference(float(np.std(r - v, ddof=1)), v.size),
                        "n_seeds": int(v.size),
                    }
                )
    return table


def _fmt_p(p: float) -> str:
    return "" if not np.isfinite(p) else (f" ({p:.3f})" if p >= 1e-3 else f" ({p:.1e})")


def table_markdown(table: Sequence[dict], metric: MetricSpec, reference: str) -> str:
    """Table-1 layout: one row per strategy, one column per labelled-set size (+ curve mean);
    cells ``mean ± σ (p)`` in display units."""
    if not table:
        return ""
    cols = []
    for e in table:
        if (e["cycle"], e["n_labelled"]) not in cols:
            cols.append((e["cycle"], e["n_labelled"]))
    head = [str(n) if c != "curve" else "curve mean" for c, n in cols]
    lines = [
        f"| {metric.label} | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for strategy in dict.fromkeys(e["strategy"] for e in table):
        cells = []
        for c, _ in cols:
            e = next(x for x in table if x["strategy"] == strategy and x["cycle"] == c)
            m, s, d = metric.scale * e["mean"], metric.scale * e["std"], metric.digits
            cells.append(f"{m:.{d}f} ± {s:.{d}f}{_fmt_p(e['p'])}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    power = []
    for c, _ in cols:
        values = [
            x["detectable"] for x in table if x["cycle"] == c and np.isfinite(x["detectable"])
        ]
        power.append(f"{metric.scale * np.median(values):.{metric.digits}f}" if values else "")
    if any(power):
        lines.append("| *detectable Δ* | " + " | ".join(power) + " |")
    n_seeds = table[0]["n_seeds"]
    better = "higher" if metric.higher_is_better else "lower"
    lines.append("")
    lines.append(
        f"mean ± σ over {n_seeds} paired seeds; (p): one-tailed paired t-test p-value of H1 "
        f"'{reference} is better' ({better} {metric.label}); p = 0.5 when all paired "
        "differences are 0. *detectable Δ*: the smallest true mean difference such a test "
        "detects with probability 0.8 at α = 0.05, given the σ of the paired differences "
        "(median over the strategies)."
    )
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Long rows as CSV, atomically (columns: the union of keys, in first-seen order)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_tables(
    rows: Sequence[dict],
    metrics: Sequence[MetricSpec],
    reference: str,
    out: str | Path,
    group_keys: Sequence[str] = (),
    order: Sequence[str] = (),
    title: str = "",
) -> str:
    """``table.md`` (one Table-1 block per group × metric) and ``table.csv`` (long) in ``out``."""
    out = Path(out)
    all_entries, blocks = [], [f"# {title}\n"] if title else []
    for metric in metrics:
        table = paired_table(rows, metric, reference, group_keys, order)
        all_entries += table
        for group in dict.fromkeys(tuple(e[k] for k in group_keys) for e in table):
            sub = [e for e in table if tuple(e[k] for k in group_keys) == group]
            name = ", ".join(f"{k} {v}" for k, v in zip(group_keys, group, strict=True))
            blocks.append((f"## {name}: {metric.label}\n\n" if name else f"## {metric.label}\n\n")
                          + table_markdown(sub, metric, reference))  # fmt: skip
    md = "\n".join(blocks)
    atomic_write_text(out / "table.md", md)
    if all_entries:
        write_csv(out / "table.csv", all_entries)
    return md


def plot_curves(
    rows: Sequence[dict],
    metrics: Sequence[MetricSpec],
    reference: str,
    out: str | Path,
    group_keys: Sequence[str] = (),
    order: Sequence[str] = (),
    stem: str = "learning_curves",
) -> list[Path]:
    """Learning curves, mean and 95% t-interval of the mean over seeds, one figure per group
    (one panel per metric), PNG written atomically and without timestamps (byte-stable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    written = []
    for group in sorted({tuple(r[k] for k in group_keys) for r in rows}):
        where = dict(zip(group_keys, group, strict=True))
        in_group = [r for r in rows if all(r[k] == v for k, v in where.items())]
        strategies = _ordered({r["strategy"] for r in in_group}, order)
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            for strategy in strategies:
                _, n_lab, values = curves(in_group, metric.key, strategy)
                s = values.shape[0]
                mean = metric.scale * values.mean(0)
                half = (
                    metric.scale * stats.t.ppf(0.975, s - 1) * values.std(0, ddof=1) / np.sqrt(s)
                    if s > 1
                    else 0 * mean
                )
                lw = 2.5 if strategy == reference else 1.4
                ax.plot(n_lab, mean, marker="o", ms=3, lw=lw, label=strategy)
                ax.fill_between(n_lab, mean - half, mean + half, alpha=0.15)
            ax.set_xlabel("labelled items")
            ax.set_ylabel(metric.label)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        name = ", ".join(f"{v}" for v in group)
        n_seeds = len({r["seed"] for r in in_group})
        fig.suptitle(f"{name + ': ' if name else ''}mean and 95% CI over {n_seeds} seeds")
        fig.tight_layout()
        suffix = "_".join(str(v) for v in group)
        path = out / (f"{stem}_{suffix}.png" if suffix else f"{stem}.png")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written
