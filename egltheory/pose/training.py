"""Training and inference for the pose network: optax, one jitted step, fine-tune or retrain.

Loss (Newell et al., intermediate supervision): for one example,

    l(x, y) = Σ_s mean_{h, w, j} (H_s(x) − y)²                       (``heatmap_loss``)

summed over the stacks ``s`` of the hourglass; ``y`` are Gaussian target heatmaps (zero for
unannotated joints). The same ``l`` is the loss whose gradient EGL++ measures (Eq. 12). With a
learning-loss head the objective adds ``ll_weight ×`` the margin ranking loss.

``train_pose_model`` runs a fixed number of steps over a cycling shuffled order of the labelled
set, augmenting each batch on the host. The step is one module-level jitted function whose static
arguments are the architecture and :class:`StepSettings` (what the traced step reads), so it
compiles once per architecture and settings, whatever the number of epochs. ``init_model`` builds
a fresh model; passing ``init=`` a previous model fine-tunes it (the EGL++ authors' protocol).
``infer`` returns the last stack's heatmaps, the embeddings and (if present) predicted losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from egltheory.pose.datasets import PoseDataset
from egltheory.pose.hourglass import HourglassConfig
from egltheory.pose.learning_loss import PoseNet, margin_ranking_loss
from egltheory.pose.metrics import decode_heatmaps, pck_lsp, pckh
from egltheory.pose.transforms import augment, gaussian_heatmaps

__all__ = [
    "StepSettings",
    "TrainConfig",
    "batch_heatmap_loss",
    "evaluate",
    "heatmap_loss",
    "infer",
    "init_model",
    "preprocess",
    "train_pose_model",
    "train_step",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``epochs`` = passes over the labelled set (rounded up to steps)."""

    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # "adam" or "rmsprop" (Newell: RMSprop, 2.5e-4)
    heatmap_sigma: float = 1.0  # in heatmap pixels
    augment: bool = True
    max_rotation_deg: float = 30.0
    scale_range: tuple[float, float] = (0.75, 1.25)
    ll_weight: float = 1.0
    ll_margin: float = 1.0
    ll_detach_features: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")

    def step_settings(self) -> StepSettings:
        """The settings the compiled training step reads (not epochs, batch or augmentation)."""
        return StepSettings(
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            heatmap_sigma=self.heatmap_sigma,
            ll_weight=self.ll_weight,
            ll_margin=self.ll_margin,
            ll_detach_features=self.ll_detach_features,
        )


@dataclass(frozen=True)
class StepSettings:
    """The part of :class:`TrainConfig` a training step depends on: a static jit argument."""

    optimizer: str
    learning_rate: float
    heatmap_sigma: float
    ll_weight: float
    ll_margin: float
    ll_detach_features: bool

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return optax.adam(self.learning_rate)
        return optax.rmsprop(self.learning_rate)


def heatmap_loss(outputs: jax.Array, target: jax.Array) -> jax.Array:
    """outputs: [S, H, W, J] (all stacks); target: [H, W, J] -> scalar Σ_s mean (H_s − y)²."""
    return jnp.sum(jnp.mean((outputs - target[None]) ** 2, axis=(1, 2, 3)))


def batch_heatmap_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """outputs: [B, S, H, W, J]; targets: [B, H, W, J] -> per-example loss [B]."""
    return jax.vmap(heatmap_loss)(outputs, targets)


def preprocess(images) -> np.ndarray:
    """uint8 [N, S, S, 3] -> float32 in [−0.5, 0.5]."""
    return np.asarray(images, dtype=np.float32) / 255.0 - 0.5


def init_model(cfg: HourglassConfig, seed: int, learning_loss: bool = False) -> PoseNet:
    return PoseNet(cfg, learning_loss=learning_loss, rngs=nnx.Rngs(seed))


def _loss(graphdef, settings, heatmap_size, stride, use_ll, params, rest, images, joints, vis):
    # Fresh copies so BatchNorm may update its statistics inside this trace.
    params, rest = jax.tree.map(lambda a: a, (params, rest))
    model = nnx.merge(graphdef, params, rest)
    heat, _, levels = model.hourglass.forward_with_features(images)
    targets = gaussian_heatmaps(joints, vis, heatmap_size, stride, settings.heatmap_sigma)
    per_example = batch_heatmap_loss(heat, targets)
    loss = jnp.mean(per_example)
    if use_ll:
        feats = (
            [jax.lax.stop_gradient(f) for f in levels] if settings.ll_detach_features else levels
        )
        predicted = model.loss_module(feats)
        loss = loss + settings.ll_weight * margin_ranking_loss(
            predicted, per_example, settings.ll_margin
        )
    return loss, nnx.state(model, nnx.BatchStat)


@partial(jax.jit, static_argnames=("graphdef", "settings", "heatmap_size", "stride", "use_ll"))
def train_step(
    graphdef, settings: StepSettings, heatmap_size, stride, use_ll, params, rest, opt_state,
    images, joints, visible,
):  # fmt: skip
    """One optimiser step: ``(params, rest, opt_state, loss)`` after a batch ``images [B, S, S,
    3]`` float32, ``joints [B, J, 2]``, ``visible [B, J]`` (targets built inside the step)."""
    loss_fn = partial(_loss, graphdef, settings, heatmap_size, stride, use_ll)
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, rest, images, joints, visible
    )
    updates, opt_state = settings.make_optimizer().update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    rest = nnx.merge_state(rest, new_stats)
    return params, rest, opt_state, loss


def train_pose_model(
    data: PoseDataset,
    labelled: np.ndarray,
    model_cfg: HourglassConfig,
    train_cfg: TrainConfig,
    seed: int,
    init: PoseNet | None = None,
    learning_loss: bool = False,
    progress: bool = False,
) -> tuple[PoseNet, np.ndarray]:
    """Train on ``data.subset(labelled)``; from ``init`` (fine-tune) or a fresh model (seed).

    Returns (model in eval mode, per-step losses [n_steps]).
    """
    labelled = np.asarray(labelled)
    if labelled.ndim != 1 or labelled.size == 0:
        raise ValueError(f"labelled must be a non-empty 1-d index array, got {labelled.shape}")
    if data.image_size != model_cfg.input_size:
        raise ValueError(
            f"data images are {data.image_size}px but model_cfg.input_size={model_cfg.input_size}"
        )
    rng = np.random.default_rng(seed)
    model = init_model(model_cfg, seed, learning_loss) if init is None else nnx.clone(init)
    use_ll = model.loss_module is not None
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    settings = train_cfg.step_settings()
    opt_state = settings.make_optimizer().init(params)
    step = partial(
        train_step, graphdef, settings, model_cfg.heatmap_size, 4, use_ll and settings.ll_weight > 0
    )
    bs = train_cfg.batch_size
    n_steps = train_cfg.epochs * math.ceil(len(labelled) / bs)
    order = np.concatenate(
        [rng.permutation(labelled) for _ in range(math.ceil(n_steps * bs / len(labelled)) + 1)]
    )
    losses = np.empty(n_steps)
    iterator = range(n_steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="train", leave=False)
    for t in iterator:
        idx = order[t * bs : (t + 1) * bs]
        if train_cfg.augment:
            imgs, joints, vis = augment(
                rng,
                data.images[idx],
                data.joints[idx],
                data.visible[idx],
                data.flip_pairs,
                train_cfg.max_rotation_deg,
                train_cfg.scale_range,
            )
            imgs = imgs - 0.5
        else:
            imgs, joints, vis = preprocess(data.images[idx]), data.joints[idx], data.visible[idx]
        params, rest, opt_state, loss = step(params, rest, opt_state, imgs, joints, vis)
        losses[t] = float(loss)
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model, losses


@partial(jax.jit, static_argnames=("graphdef",))
def _infer_batch(graphdef, state, images):
    model = nnx.merge(graphdef, state)
    heat, emb, levels = model.hourglass.forward_with_features(images)
    pred_loss = (
        model.loss_module(levels) if model.loss_module is not None else jnp.zeros(images.shape[0])
    )
    return heat[:, -1], emb, pred_loss


def infer(model: PoseNet, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """images: uint8 [N, S, S, 3] -> {"heatmaps": [N, h, w, J] (last stack),
    "embeddings": [N, F], "predicted_loss": [N] (zeros without a loss head)}; eval mode, chunked."""
    model.eval()
    graphdef, state = nnx.split(model)
    run = partial(_infer_batch, graphdef)
    n = len(images)
    outs = {"heatmaps": [], "embeddings": [], "predicted_loss": []}
    for lo in range(0, n, batch_size):
        chunk = preprocess(images[lo : lo + batch_size])
        keep = len(chunk)
        if keep < batch_size:  # fixed batch shape: one compilation whatever N is
            pad = np.zeros((batch_size - keep, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        heat, emb, pl = run(state, chunk)
        outs["heatmaps"].append(np.asarray(heat[:keep]))
        outs["embeddings"].append(np.asarray(emb[:keep]))
        outs["predicted_loss"].append(np.asarray(pl[:keep]))
    return {k: np.concatenate(v) for k, v in outs.items()}


def evaluate(model: PoseNet, data: PoseDataset, convention: str = "official") -> dict:
    """PCKh@0.5 (MPII order) or PCK@0.2 (LSP order) of ``model`` on ``data``.

    Returns {"metric": name, "mean": float, "per_joint": list[J]} (per-joint NaN -> None).
    """
    heat = infer(model, data.images)["heatmaps"]
    pred = decode_heatmaps(heat, stride=data.image_size // heat.shape[1])
    if data.metric == "pckh":
        per_joint, mean = pckh(pred, data.joints, data.visible, data.head_boxes, 0.5, convention)
        name = "PCKh@0.5"
    else:
        per_joint, mean = pck_lsp(pred, data.joints, data.visible, 0.2, data.joint_names)
        name = "PCK@0.2"
    return {
        "metric": name,
        "mean": float(mean),
        "per_joint": [None if np.isnan(v) else float(v) for v in per_joint],
    }
