"""Learning loss (Yoo & Kweon, CVPR 2019) for the stacked hourglass.

A loss-prediction module reads the last hourglass's multi-scale features (one per pooling level):
each is global-average-pooled, mapped by ``Linear(F → hidden) + ReLU``, the results concatenated and
mapped by ``Linear(levels·hidden → 1)`` to a predicted loss ``l̂(x)``. It is trained with the
margin ranking loss on pairs (first half of the batch vs second half):

    L_loss = mean_i max(0, −sign(l_i − l_j) · (l̂_i − l̂_j) + ξ),   ξ = 1,

where ``l`` are the (detached) per-example heatmap losses. Acquisition picks the largest ``l̂``.
By default the features are detached (``stop_gradient``), so the module does not change the pose
network; Yoo & Kweon also detach them for the last part of training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from egltheory.eglpp import global_average_pool
from egltheory.pose.hourglass import HourglassConfig, StackedHourglass

__all__ = ["LossPredictionModule", "PoseNet", "margin_ranking_loss"]


class LossPredictionModule(nnx.Module):
    """features: list of [B, H_l, W_l, F] -> predicted loss [B]."""

    def __init__(self, channels: int, n_levels: int, hidden: int = 64, *, rngs: nnx.Rngs):
        self.fcs = nnx.List([nnx.Linear(channels, hidden, rngs=rngs) for _ in range(n_levels)])
        self.out = nnx.Linear(n_levels * hidden, 1, rngs=rngs)

    def __call__(self, features: list[jax.Array]) -> jax.Array:
        h = [
            jax.nn.relu(fc(global_average_pool(f)))
            for fc, f in zip(self.fcs, features, strict=True)
        ]
        return self.out(jnp.concatenate(h, axis=-1))[:, 0]


def margin_ranking_loss(predicted: jax.Array, target: jax.Array, margin: float = 1.0) -> jax.Array:
    """predicted, target: [B] (B even) -> scalar; pairs (i, i + B/2) as in Yoo & Kweon."""
    if predicted.shape != target.shape or predicted.ndim != 1 or predicted.shape[0] % 2:
        raise ValueError(
            f"predicted and target must be [B] with even B, got {predicted.shape}, {target.shape}"
        )
    half = predicted.shape[0] // 2
    target = jax.lax.stop_gradient(target)
    sign = jnp.sign(target[:half] - target[half:])
    return jnp.mean(jnp.maximum(0.0, -sign * (predicted[:half] - predicted[half:]) + margin))


class PoseNet(nnx.Module):
    """Stacked hourglass plus an optional loss-prediction head (the learning-loss baseline)."""

    def __init__(
        self, cfg: HourglassConfig, learning_loss: bool = False, hidden: int = 64, *, rngs: nnx.Rngs
    ):
        self.hourglass = StackedHourglass(cfg, rngs=rngs)
        self.loss_module = (
            LossPredictionModule(cfg.channels, cfg.depth, hidden, rngs=rngs)
            if learning_loss
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.hourglass(x)
