"""Figures of the theory verification (matplotlib, Agg): each saved as PNG and PDF.

* ``closed_form_vs_monte_carlo``: Eq. 10 against the Monte-Carlo definition (Eq. 5), ±2 SE bars.
* ``mc_error_vs_samples``: Monte-Carlo relative error against the number of samples, with 1/√n.
* ``toy1d_terms``: on the 1-D toy, EGL, its three terms and the Kendall–Gal variance along x.
* ``rank_agreement``: Spearman heat-maps among EGL, EGL/(c‖∇f‖²), Kendall–Gal variance and EMCM.

Inputs are the ``report`` and ``arrays`` of :func:`egltheory.verification.run_verification`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from egltheory.files import atomic_write_bytes

SCORE_LABELS = {
    "egl": "EGL (Eq. 10)",
    "egl_over_grad": "EGL / (c‖∇f_z‖²)",
    "kendall_gal": "Kendall–Gal Var (Eq. 11)",
    "emcm": "EMCM (Eq. 2)",
}
FAMILY_LABELS = {"linear": "Linear (OLS)", "aleatoric": "Aleatoric MLP", "gp": "Gaussian process"}
DATASET_MARKERS = {"toy1d": "o", "diabetes": "s", "autompg": "^", "concrete": "D", "cpus": "v"}


# No timestamps or software versions in the files: unchanged results give identical bytes.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> list[str]:
    """Save ``fig`` as ``name.png`` (150 dpi) and ``name.pdf`` atomically and byte-stable;
    return the paths; close it."""
    out = Path(out_dir)
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{name}.{ext}"
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=_METADATA[ext])
        atomic_write_bytes(path, buf.getvalue())
        paths.append(str(path))
    plt.close(fig)
    return paths


def _families(arrays) -> list[str]:
    return list(dict.fromkeys(family for family, _ in arrays))


def closed_form_vs_monte_carlo(
    arrays: dict[tuple[str, str], dict[str, np.ndarray]], threshold: float | None = None
) -> plt.Figure:
    """Closed-form EGL against the Monte-Carlo estimate (top) and their z-scores (bottom)."""
    families = _families(arrays)
    fig, axes = plt.subplots(
        2,
        len(families),
        figsize=(4.6 * len(families), 7.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    for col, family in enumerate(families):
        ax, ax_z = axes[0, col], axes[1, col]
        lo, hi = np.inf, -np.inf
        for (fam, dataset), arr in arrays.items():
            if fam != family:
                continue
            closed, mc, se = arr["check_closed"], arr["check_mc"], arr["check_stderr"]
            marker = DATASET_MARKERS.get(dataset, "o")
            ax.errorbar(
                closed, mc, yerr=2 * se, fmt=marker, ms=4, capsize=2, label=dataset, alpha=0.85
            )
            ax_z.plot(closed, (closed - mc) / se, marker, ms=4, label=dataset, alpha=0.85)
            lo, hi = min(lo, closed.min(), (mc - 2 * se).min()), max(hi, closed.max(), mc.max())
        lo = max(lo, hi * 1e-8)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("Monte-Carlo EGL (Eq. 5), ±2 SE")
        ax.set_title(FAMILY_LABELS.get(family, family))
        ax.legend(fontsize=8)
        ax_z.axhspan(-2, 2, color="0.9", zorder=0, label="±2 SE")
        if threshold is not None:
            for sign in (-1, 1):
                ax_z.axhline(sign * threshold, color="crimson", ls="--", lw=1)
            ax_z.plot([], [], color="crimson", ls="--", label=f"check threshold ±{threshold:.2f}")
        ax_z.set_xscale("log")
        ax_z.set_xlabel("closed-form EGL (Eq. 10)")
        ax_z.set_ylabel("z = (closed − MC) / SE")
        ax_z.legend(fontsize=7, ncol=2)
    fig.suptitle("Closed form agrees with the Monte-Carlo definition of EGL", y=1.0)
    fig.tight_layout()
    return fig


def mc_error_vs_samples(report: dict[str, Any], dataset: str = "toy1d") -> plt.Figure:
    """Mean relative Monte-Carlo error against samples per member, with the 1/√n reference."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    n_ref = None
    for family, label in FAMILY_LABELS.items():
        conv = report.get(family, {}).get(dataset, {}).get("mc_convergence", {})
        if not conv:
            continue
        n = np.array(sorted(int(k) for k in conv))
        err = np.array([conv[str(k)]["mean_abs_rel_error"] for k in n])
        se = np.array([conv[str(k)]["mean_rel_stderr"] for k in n])
        (line,) = ax.plot(n, err, "o-", label=f"{label}: |MC / closed − 1|")
        ax.plot(n, se, ":", color=line.get_color(), label=f"{label}: reported SE / closed")
        n_ref = n if n_ref is None else n_ref
        anchor = se[0] * np.sqrt(n[0])
    if n_ref is not None:
        ax.plot(n_ref, anchor / np.sqrt(n_ref), "k--", lw=1.2, label="∝ 1/√n")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Monte-Carlo samples per member n")
    ax.set_ylabel("mean relative error over checked inputs")
    ax.set_title(f"Monte-Carlo EGL converges at the 1/√n rate ({dataset})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def toy1d_terms(
    arrays: dict[tuple[str, str], dict[str, np.ndarray]],
    c: float,
    gaps: list[list[float]] | None = None,
) -> plt.Figure:
    """Per family: data and fits (top); the bracket's terms, Var_KG and EGL along x (bottom)."""
    families = [f for f, d in arrays if d == "toy1d"]
    fig, axes = plt.subplots(
        2, len(families), figsize=(4.8 * len(families), 7), squeeze=False, sharex=True
    )
    for col, family in enumerate(families):
        arr = arrays[(family, "toy1d")]
        x = arr["x_pool"][:, 0]
        top, bottom = axes[0, col], axes[1, col]
        for ax in (top, bottom):
            for lo, hi in gaps or []:
                ax.axvspan(lo, hi, color="0.9", zorder=0)
        top.scatter(arr["x_train"][:, 0], arr["y_train"], s=8, c="0.4", label="training points")
        for k, mean in enumerate(arr["means"]):
            top.plot(x, mean, lw=0.8, alpha=0.7, label="members μ_k" if k == 0 else None)
        top.plot(x, arr["f_z"], "k", lw=1.6, label="f_z (all data)")
        top.set_ylabel("y")
        top.set_title(f"{FAMILY_LABELS.get(family, family)} on the 1-D toy")
        top.legend(fontsize=7, loc="lower left")

        bottom.plot(x, arr["aleatoric"], label="aleatoric: mean σ_k² (noise)")
        bottom.plot(x, arr["epistemic"], label="epistemic: spread of μ_k")
        bottom.plot(x, arr["squared_bias"], label="squared bias: (μ̄ − f_z)²")
        bottom.plot(
            x, arr["aleatoric"] + arr["epistemic"], "k--", lw=1.2, label="Kendall–Gal Var (Eq. 11)"
        )
        bottom.set_yscale("log")
        top_value = float(np.max(arr["aleatoric"] + arr["epistemic"] + arr["squared_bias"]))
        bottom.set_ylim(top_value * 1e-5, top_value * 3)  # hide the zero-crossings of the bias
        bottom.set_xlabel("x  (grey bands: no training inputs)")
        bottom.set_ylabel("bracket terms of Eq. 10")
        twin = bottom.twinx()
        twin.plot(
            x, arr["score_egl"], color="crimson", lw=1.6, label=f"EGL (c = {c:g}), right axis"
        )
        twin.set_yscale("log")
        twin.set_ylabel("EGL = c‖∇f_z‖² · bracket", color="crimson")
        if col == 0:
            handles, labels = bottom.get_legend_handles_labels()
            twin_handles, twin_labels = twin.get_legend_handles_labels()
            legend_items = (handles + twin_handles, labels + twin_labels)
    fig.suptitle("EGL = c‖∇f_z‖² [aleatoric + epistemic + squared bias] along x", y=1.0)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(*legend_items, loc="lower center", ncol=5, fontsize=8, frameon=False)
    return fig


def rank_agreement(report: dict[str, Any]) -> plt.Figure:
    """Spearman heat-maps of the four acquisition scores, one per (family, data set)."""
    entries = [
        (family, dataset, entry)
        for family in FAMILY_LABELS
        for dataset, entry in report.get(family, {}).items()
    ]
    datasets = list(dict.fromkeys(d for _, d, _ in entries))
    families = list(dict.fromkeys(f for f, _, _ in entries))
    names = list(SCORE_LABELS)
    fig, axes = plt.subplots(
        len(families),
        len(datasets),
        figsize=(3.4 * len(datasets) + 1.2, 3.6 * len(families)),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for family, dataset, entry in entries:
        ax = axes[families.index(family), datasets.index(dataset)]
        matrix = np.eye(len(names))
        for key, value in entry["spearman"].items():
            a, b = key.split("|")
            i, j = names.index(a), names.index(b)
            matrix[i, j] = matrix[j, i] = value
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        for i in range(len(names)):
            for j in range(len(names)):
                colour = "white" if abs(matrix[i, j]) > 0.6 else "black"
                ax.text(
                    j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour
                )
        short = ["EGL", "EGL/‖∇f‖²", "Var_KG", "EMCM"]
        ax.set_xticks(range(len(names)), short, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), short, fontsize=7)
        ax.set_title(f"{FAMILY_LABELS.get(family, family)} / {dataset}", fontsize=9)
    for ax in axes.flat:
        if not ax.images:
            ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="Spearman rank correlation")
    fig.suptitle("Rank agreement (Spearman) of acquisition scores on the pool")
    return fig


def write_all_figures(
    report: dict[str, Any],
    arrays: dict[tuple[str, str], dict[str, np.ndarray]],
    out_dir: str | os.PathLike,
) -> list[str]:
    """All verification figures into ``out_dir``; returns the written paths."""
    threshold = report.get("checks", {}).get("mc_threshold")
    fig = closed_form_vs_monte_carlo(arrays, threshold)
    paths = save_figure(fig, out_dir, "closed_form_vs_monte_carlo")
    paths += save_figure(mc_error_vs_samples(report), out_dir, "mc_error_vs_samples")
    if any(d == "toy1d" for _, d in arrays):
        c = float(report["config"]["c"])
        fig = toy1d_terms(arrays, c, report.get("toy1d_gaps"))
        paths += save_figure(fig, out_dir, "toy1d_egl_terms")
    paths += save_figure(rank_agreement(report), out_dir, "rank_agreement")
    return paths
