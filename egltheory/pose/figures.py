"""The paper's Fig. 3 for a trained pose model: EGL++'s lowest- and highest-scoring images with
their most probable labelled neighbours."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from egltheory.files import atomic_write_bytes
from egltheory.pose.acquisition import PoseEGLPPOptions, eglpp_pose_scores
from egltheory.pose.datasets import PoseDataset
from egltheory.pose.learning_loss import PoseNet
from egltheory.pose.metrics import decode_heatmaps
from egltheory.pose.training import infer

__all__ = ["plot_eglpp_neighbours"]


def _draw_skeleton(ax, image, joints, visible, skeleton, colour) -> None:
    ax.imshow(image, interpolation="nearest")
    for a, b in skeleton:
        if visible[a] and visible[b]:
            ax.plot(joints[[a, b], 0], joints[[a, b], 1], "-", color=colour, lw=1.5)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_eglpp_neighbours(
    model: PoseNet,
    pool: PoseDataset,
    labelled,
    candidates,
    options: PoseEGLPPOptions,
    path: str | Path,
    caption: str,
    n_show: int = 3,
    n_neighbours: int = 3,
) -> Path:
    """The ``n_show`` lowest- and highest-EGL++ images among ``candidates`` (predicted skeleton,
    red) and their ``n_neighbours`` most probable labelled neighbours (ground truth, green) with
    their t-SNE probabilities; ``caption`` says which model drew it. PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled, cand = np.asarray(labelled), np.asarray(candidates)
    scores, probs, nbrs = eglpp_pose_scores(
        model, pool, labelled, cand, options, return_neighbours=True
    )
    n_show = min(n_show, cand.size)
    n_neighbours = min(n_neighbours, nbrs.shape[1])
    order = np.argsort(scores)
    picks = [*order[:n_show], *order[::-1][:n_show]]
    heat = infer(model, pool.images[cand[picks]])["heatmaps"]
    pred = decode_heatmaps(heat, stride=pool.image_size // heat.shape[1])
    fig, axes = plt.subplots(
        2 * n_show,
        n_neighbours + 1,
        figsize=(1.8 * (n_neighbours + 1), 1.9 * 2 * n_show + 0.4),
        squeeze=False,
    )
    for row, (p, jp) in enumerate(zip(picks, pred, strict=True)):
        i = cand[p]
        kind = "lowest" if row < n_show else "highest"
        _draw_skeleton(axes[row, 0], pool.images[i], jp, np.ones(len(jp), bool), pool.skeleton, "r")
        axes[row, 0].set_title(f"{kind} EGL++\n{scores[p]:.3g}", fontsize=8)
        for k in range(n_neighbours):
            nb = nbrs[p, k]
            _draw_skeleton(
                axes[row, k + 1], pool.images[nb], pool.joints[nb], pool.visible[nb],
                pool.skeleton, "lime",
            )  # fmt: skip
            axes[row, k + 1].set_title(f"p = {probs[p, k]:.2f}", fontsize=8)
    fig.suptitle(
        "EGL++: lowest (top) and highest (bottom) scores, with labelled neighbours\n" + caption,
        fontsize=8,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
