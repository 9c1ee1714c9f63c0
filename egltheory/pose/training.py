"""Training and inference for the pose network: optax, one jitted step, fine-tune or retrain.

Loss (Newell et al., intermediate supervision): for one example,

    l(x, y) = Σ_s mean_{h, w, j} (H_s(x) − y)²                       (``heatmap_loss``)

summed over the stacks ``s`` of the hourglass; ``y`` are Gaussian target heatmaps (zero for
unannotated joints). The same ``l`` is the loss whose gradient EGL++ measures (Eq. 12). With a
learning-loss head the objective adds ``ll_weight ×`` the margin ranking loss.

``train_pose_model`` runs a fixed number of steps over a cycling shuffled order of the labelled
set. The pool lives on the device (``PoseDataset.on_device``); each step gathers its batch there,
augments it (:func:`egltheory.pose.transforms.augment_on_device`) and builds the target heatmaps
inside the compiled program; ``steps_per_dispatch`` steps run per call (``lax.scan``) and losses
come back to the host once per call, so nothing waits on the host between steps. The program
(:func:`train_steps`) is one module-level jitted function whose static arguments are the
architecture and :class:`StepSettings` (what the traced step reads), so it compiles once per
architecture and settings, whatever the number of epochs. ``compute_dtype="bfloat16"`` computes
in bfloat16 with float32 parameters and optimiser state. ``init_model`` builds a fresh model;
passing ``init=`` a previous model fine-tunes it (the EGL++ authors' protocol).
``infer`` returns the last stack's heatmaps, the embeddings and (if present) predicted losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from egltheory.pose.datasets import PoseDataset
from egltheory.pose.hourglass import COMPUTE_DTYPES, HourglassConfig
from egltheory.pose.learning_loss import PoseNet, margin_ranking_loss
from egltheory.pose.metrics import decode_heatmaps, pck_lsp, pckh
from egltheory.pose.transforms import (
    augment_on_device,
    augmentation_parameters,
    flip_permutation,
    gaussian_heatmaps,
)

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
    "train_steps",
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
    flip_probability: float = 0.5
    ll_weight: float = 1.0
    ll_margin: float = 1.0
    ll_detach_features: bool = True
    compute_dtype: str = "float32"
    steps_per_dispatch: int = 8

    def __post_init__(self) -> None:
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}"
            )
        if self.steps_per_dispatch < 1:
            raise ValueError(f"steps_per_dispatch must be >= 1, got {self.steps_per_dispatch}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")

    def step_settings(self, flip_pairs=()) -> StepSettings:
        """The settings the compiled training steps read (not the number of epochs)."""
        n_joints = 1 + max((max(pair) for pair in flip_pairs), default=-1)
        return StepSettings(
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            heatmap_sigma=self.heatmap_sigma,
            ll_weight=self.ll_weight,
            ll_margin=self.ll_margin,
            ll_detach_features=self.ll_detach_features,
            augment=self.augment,
            max_rotation_deg=self.max_rotation_deg,
            scale_range=tuple(self.scale_range),
            flip_probability=self.flip_probability,
            flip_perm=flip_permutation(n_joints, flip_pairs),
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
    augment: bool = False
    max_rotation_deg: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    flip_probability: float = 0.0
    flip_perm: tuple[int, ...] = ()

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


def _one_step(graphdef, settings, heatmap_size, stride, use_ll, state, batch):
    params, rest, opt_state = state
    images, joints, visible = batch
    loss_fn = partial(_loss, graphdef, settings, heatmap_size, stride, use_ll)
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, rest, images, joints, visible
    )
    updates, opt_state = settings.make_optimizer().update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, nnx.merge_state(rest, new_stats), opt_state), loss


@partial(jax.jit, static_argnames=("graphdef", "settings", "heatmap_size", "stride", "use_ll"))
def train_step(
    graphdef, settings: StepSettings, heatmap_size, stride, use_ll, params, rest, opt_state,
    images, joints, visible,
):  # fmt: skip
    """One optimiser step on a prepared batch: ``images [B, S, S, 3]`` float32 in [−0.5, 0.5],
    ``joints [B, J, 2]``, ``visible [B, J]`` → ``(params, rest, opt_state, loss)``."""
    state, loss = _one_step(graphdef, settings, heatmap_size, stride, use_ll,
                            (params, rest, opt_state), (images, joints, visible))  # fmt: skip
    return (*state, loss)


@partial(
    jax.jit,
    static_argnames=("graphdef", "settings", "heatmap_size", "stride", "use_ll"),
    donate_argnames=("params", "rest", "opt_state"),
)
def train_steps(
    graphdef, settings: StepSettings, heatmap_size, stride, use_ll, params, rest, opt_state,
    pool_images, pool_joints, pool_visible, batches, keys, active,
):  # fmt: skip
    """``T`` optimiser steps in one program (``lax.scan``), the pool on the device.

    pool_images [N, S, S, 3] uint8, pool_joints [N, J, 2], pool_visible [N, J]; batches [T, B]
    pool indices; keys [T] (augmentation); active [T] bool (inactive steps leave the state
    unchanged: a fixed T serves any number of steps). → ``(params, rest, opt_state, losses [T])``.
    """
    step = partial(_one_step, graphdef, settings, heatmap_size, stride, use_ll)

    def body(state, inputs):
        idx, key, on = inputs
        images, joints, visible = pool_images[idx], pool_joints[idx], pool_visible[idx]
        if settings.augment:
            params_aug = augmentation_parameters(
                key, idx.shape[0], settings.max_rotation_deg, settings.scale_range,
                settings.flip_probability,
            )  # fmt: skip
            images, joints, visible = augment_on_device(
                images, joints, visible, settings.flip_perm, *params_aug
            )
        else:
            images = images.astype(jnp.float32) / 255.0
        batch = (images - 0.5, joints.astype(jnp.float32), visible)
        new_state, loss = step(state, batch)
        # An inactive (padding) step keeps the state: a select, not lax.cond (slow on XLA:CPU).
        new_state = jax.tree.map(lambda a, b: jnp.where(on, a, b), new_state, state)
        return new_state, jnp.where(on, loss, jnp.nan)

    # XLA:CPU runs convolutions inside a while loop several times slower than straight-line
    # code (measured: benchmarks/bench_pose.py), so on CPU the T steps are unrolled.
    unroll = batches.shape[0] if jax.default_backend() == "cpu" else 1
    (params, rest, opt_state), losses = jax.lax.scan(
        body, (params, rest, opt_state), (batches, keys, active), unroll=unroll
    )
    return params, rest, opt_state, losses


def _compute_view(model: PoseNet, compute_dtype: str) -> PoseNet:
    """``model`` (shared arrays) computing in ``compute_dtype``; parameters stay float32."""
    dtype = None if compute_dtype == "float32" else jnp.bfloat16
    cfg = replace(model.hourglass.cfg, dtype=dtype)
    if cfg == model.hourglass.cfg:
        return model
    learning_loss = model.loss_module is not None
    twin = nnx.eval_shape(lambda: PoseNet(cfg, learning_loss=learning_loss, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(twin), nnx.state(model))


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

    Returns (model in eval mode, per-step losses [n_steps]). The batch order comes from
    ``numpy.random.default_rng(seed)``, the augmentation from ``jax.random.key(seed)``.
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
    model = _compute_view(model, train_cfg.compute_dtype)
    use_ll = model.loss_module is not None
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # Own copies: the steps donate their buffers, and ``init``'s arrays must survive.
    params, rest = jax.tree.map(jnp.copy, (params, rest))
    settings = train_cfg.step_settings(data.flip_pairs)
    opt_state = settings.make_optimizer().init(params)
    run = partial(train_steps, graphdef, settings, model_cfg.heatmap_size, 4,
                  use_ll and settings.ll_weight > 0)  # fmt: skip
    bs, per_call = train_cfg.batch_size, train_cfg.steps_per_dispatch
    n_steps = train_cfg.epochs * math.ceil(len(labelled) / bs)
    n_calls = math.ceil(n_steps / per_call)
    order = (
        np.concatenate(
            [
                rng.permutation(labelled)
                for _ in range(math.ceil(n_calls * per_call * bs / len(labelled)) + 1)
            ]
        )[: n_calls * per_call * bs]
        .reshape(n_calls, per_call, bs)
        .astype(np.int32)
    )
    keys = jax.random.split(jax.random.key(seed), n_calls * per_call).reshape(n_calls, per_call)
    active = (np.arange(n_calls * per_call) < n_steps).reshape(n_calls, per_call)
    pool = data.on_device
    calls = range(n_calls)
    if progress:
        from tqdm.auto import tqdm

        calls = tqdm(calls, desc="train", leave=False)
    losses = []
    for c in calls:
        params, rest, opt_state, loss = run(params, rest, opt_state, *pool, order[c], keys[c],
                                            active[c])  # fmt: skip
        losses.append(loss)  # fetched once, after the last call
    model = nnx.merge(graphdef, params, rest)
    model = _compute_view(model, "float32")
    model.eval()
    return model, np.concatenate(jax.device_get(losses))[:n_steps]


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


def _score(pred, data: PoseDataset, convention: str):
    if data.metric == "pckh":
        return pckh(pred, data.joints, data.visible, data.head_boxes, 0.5, convention)
    return pck_lsp(pred, data.joints, data.visible, 0.2, data.joint_names)


def evaluate(model: PoseNet, data: PoseDataset, convention: str = "official") -> dict:
    """PCKh@0.5 (MPII order) or PCK@0.2 (LSP order) of ``model`` on ``data``, overall and per
    domain present in ``data`` (``data.domains``: synthetic 0 everyday / 1 athletic; LSP / LSPET).

    Returns {"metric": name, "mean": float, "mean_domain<d>": float per domain d,
    "per_joint": list[J]} (per-joint NaN -> None).
    """
    heat = infer(model, data.images)["heatmaps"]
    pred = decode_heatmaps(heat, stride=data.image_size // heat.shape[1])
    per_joint, mean = _score(pred, data, convention)
    out = {"metric": "PCKh@0.5" if data.metric == "pckh" else "PCK@0.2", "mean": float(mean)}
    for d in np.unique(data.domains):
        keep = data.domains == d
        out[f"mean_domain{int(d)}"] = float(_score(pred[keep], data.subset(keep), convention)[1])
    out["per_joint"] = [None if np.isnan(v) else float(v) for v in per_joint]
    return out
