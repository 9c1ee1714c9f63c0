"""Newell et al.'s stacked hourglass network (ECCV 2016) in Flax NNX.

Architecture (Newell's Torch ``hg.lua`` with ``nModules = 1``), for ``channels = F``:

* stem: 7×7/2 conv (3 → F/4) + BN + ReLU, Residual(F/4 → F/2), 2×2 max-pool,
  Residual(F/2 → F/2), Residual(F/2 → F): input ``H×W`` → features ``H/4 × W/4``;
* per stack: Hourglass(depth, F), Residual(F → F), "lin" = 1×1 conv + BN + ReLU (the
  penultimate feature map), a 1×1 conv to ``n_joints`` heatmaps; between stacks (not after the last
  one, so every parameter is used) the features are re-injected:
  ``x ← x + conv1×1(lin) + conv1×1(heatmaps)``;
* Residual = pre-activation bottleneck BN-ReLU-conv1×1(F/2)-BN-ReLU-conv3×3(F/2)-BN-ReLU-conv1×1(F)
  plus the identity (or a 1×1 conv when the channel count changes);
* Hourglass(n): ``up1 = Res(x)``; ``low = Res(maxpool(x))``; ``low = Hourglass(n-1)(low)`` or
  ``Res(low)`` at ``n = 1``; ``low = Res(low)``; output ``up1 + nearest_upsample(low)``.

Every conv has a bias, as in Newell's code. The heatmap heads start from N(0, ``head_init_std``²)
weights (default 0.001, as Xiao et al.), so the first heatmaps are ≈ 0; with the LeCun-normal init
of the other convs their noise would have a mean square of about 0.3, over ten times the targets'
(σ = 1 Gaussians on a mostly zero map), and training would first spend its steps removing it.
The paper configuration (2 stacks, 256 channels, depth 4, 16 joints) has 6,570,400 trainable
parameters (``count_params``; the test recomputes it from the formula above).

The model returns all stacks' heatmaps ``[B, S, H/4, W/4, J]`` (intermediate supervision: the loss
is applied to every stack). ``forward_with_features`` also returns the EGL++/core-set embedding,
the global-average-pooled penultimate ("lin") feature map of the last stack ``[B, F]``, and the
multi-scale features of the last hourglass used by the learning-loss module.

``dtype`` sets the compute dtype (``jnp.bfloat16`` on GPU), ``precision`` the matmul/conv precision
(``"tensorfloat32"`` / ``"highest"``); parameters stay float32. ``kernel_grad`` picks how kernel
derivatives are computed: ``"xla"`` (default) XLA's backward-filter convolutions, ``"im2col"``
:func:`egltheory.conv.conv_general_dilated` (same values; each kernel gradient is one GEMM on the
forward's im2col patches, which pays when many pullbacks share one forward on wide layers).
Models train with ``"xla"``; :func:`with_engine` gives EGL++ scoring a view of the same
weights with the engine :func:`resolve_kernel_grad` picks (``"auto"``: im2col from the paper's size
up; the measurements behind the rule are in docs/pose.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from egltheory.conv import conv_general_dilated as im2col_conv
from egltheory.eglpp import global_average_pool

__all__ = [
    "COMPUTE_DTYPES",
    "IM2COL_MIN_CHANNELS",
    "IM2COL_MIN_INPUT_SIZE",
    "KERNEL_GRADS",
    "KERNEL_GRAD_CHOICES",
    "Hourglass",
    "HourglassConfig",
    "Residual",
    "StackedHourglass",
    "count_params",
    "resolve_kernel_grad",
    "with_engine",
]


KERNEL_GRADS = ("xla", "im2col")
KERNEL_GRAD_CHOICES = ("auto", *KERNEL_GRADS)
# "auto" picks im2col on the CPU backend only from these sizes up (docs/pose.md, benchmark).
IM2COL_MIN_INPUT_SIZE = 256
IM2COL_MIN_CHANNELS = 256


@dataclass(frozen=True)
class HourglassConfig:
    """Hyper-parameters of a stacked hourglass.

    ``n_stacks=2, channels=256, depth=4, n_joints=16`` is the paper's (EGL++, Table 1) model.
    ``input_size`` must be divisible by ``4 · 2**depth`` so every pooling level is exact.
    ``head_init_std``: the heatmap heads (1×1 convs to ``n_joints``) start from N(0, std²) weights
    and zero bias (Xiao et al.'s SimpleBaselines init), so the first heatmaps are ≈ 0 rather than
    noise far above the targets' scale; ``None`` = the LeCun-normal init of every other conv.
    """

    n_stacks: int = 2
    channels: int = 256
    depth: int = 4
    n_joints: int = 16
    input_size: int = 256
    in_channels: int = 3
    bn_momentum: float = 0.9
    dtype: Any = None
    precision: Any = None
    kernel_grad: str = "xla"
    head_init_std: float | None = 1e-3

    def __post_init__(self) -> None:
        if self.head_init_std is not None and not self.head_init_std > 0:
            raise ValueError(f"head_init_std must be > 0 or None, got {self.head_init_std}")
        if self.kernel_grad not in KERNEL_GRADS:
            raise ValueError(f"kernel_grad must be one of {KERNEL_GRADS}, got {self.kernel_grad!r}")
        for name in ("n_stacks", "channels", "depth", "n_joints", "input_size", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.channels % 4:
            raise ValueError(f"channels must be divisible by 4, got {self.channels}")
        if self.input_size % (4 * 2**self.depth):
            raise ValueError(
                f"input_size must be divisible by 4 * 2**depth = {4 * 2**self.depth}, "
                f"got {self.input_size}"
            )

    @property
    def heatmap_size(self) -> int:
        return self.input_size // 4


def _conv(
    cfg: HourglassConfig,
    c_in: int,
    c_out: int,
    k: int,
    rngs: nnx.Rngs,
    stride: int = 1,
    init_std: float | None = None,
):
    """A biased k×k conv; ``init_std`` = N(0, std²) kernel (else the default LeCun normal)."""
    extra = {} if init_std is None else {"kernel_init": nnx.initializers.normal(init_std)}
    return nnx.Conv(
        c_in,
        c_out,
        kernel_size=(k, k),
        strides=(stride, stride),
        padding="SAME",
        dtype=cfg.dtype,
        precision=cfg.precision,
        conv_general_dilated=(
            im2col_conv if cfg.kernel_grad == "im2col" else jax.lax.conv_general_dilated
        ),
        rngs=rngs,
        **extra,
    )


def _bn(cfg: HourglassConfig, c: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(c, momentum=cfg.bn_momentum, epsilon=1e-5, dtype=cfg.dtype, rngs=rngs)


def _max_pool2(x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] -> [B, H/2, W/2, C]."""
    return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


def _upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour ×2 upsampling, x: [B, H, W, C] -> [B, 2H, 2W, C]."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Residual(nnx.Module):
    """Pre-activation bottleneck residual block (Newell's ``Residual(c_in, c_out)``)."""

    def __init__(self, cfg: HourglassConfig, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        mid = c_out // 2
        self.bn1 = _bn(cfg, c_in, rngs)
        self.conv1 = _conv(cfg, c_in, mid, 1, rngs)
        self.bn2 = _bn(cfg, mid, rngs)
        self.conv2 = _conv(cfg, mid, mid, 3, rngs)
        self.bn3 = _bn(cfg, mid, rngs)
        self.conv3 = _conv(cfg, mid, c_out, 1, rngs)
        self.skip = _conv(cfg, c_in, c_out, 1, rngs) if c_in != c_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, c_in] -> [B, H, W, c_out]."""
        h = self.conv1(jax.nn.relu(self.bn1(x)))
        h = self.conv2(jax.nn.relu(self.bn2(h)))
        h = self.conv3(jax.nn.relu(self.bn3(h)))
        return h + (x if self.skip is None else self.skip(x))


class Hourglass(nnx.Module):
    """One recursive hourglass of the given depth, ``channels`` features throughout."""

    def __init__(self, cfg: HourglassConfig, depth: int, *, rngs: nnx.Rngs):
        f = cfg.channels
        self.up1 = Residual(cfg, f, f, rngs=rngs)
        self.low1 = Residual(cfg, f, f, rngs=rngs)
        self.low2 = (
            Hourglass(cfg, depth - 1, rngs=rngs) if depth > 1 else Residual(cfg, f, f, rngs=rngs)
        )
        self.low3 = Residual(cfg, f, f, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """x: [B, H, W, F] -> (out [B, H, W, F], per-level outputs, finest first)."""
        up1 = self.up1(x)
        low = self.low1(_max_pool2(x))
        if isinstance(self.low2, Hourglass):
            low, inner = self.low2(low)
        else:
            low, inner = self.low2(low), []
        low = self.low3(low)
        out = up1 + _upsample2(low)
        return out, [out, *inner]


class StackedHourglass(nnx.Module):
    """Stacked hourglass: ``x [B, S_in, S_in, 3] -> heatmaps [B, n_stacks, S_in/4, S_in/4, J]``."""

    def __init__(self, cfg: HourglassConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        f = cfg.channels
        self.stem_conv = _conv(cfg, cfg.in_channels, f // 4, 7, rngs, stride=2)
        self.stem_bn = _bn(cfg, f // 4, rngs)
        self.stem_res1 = Residual(cfg, f // 4, f // 2, rngs=rngs)
        self.stem_res2 = Residual(cfg, f // 2, f // 2, rngs=rngs)
        self.stem_res3 = Residual(cfg, f // 2, f, rngs=rngs)
        self.hourglasses = nnx.List(
            [Hourglass(cfg, cfg.depth, rngs=rngs) for _ in range(cfg.n_stacks)]
        )
        self.post = nnx.List([Residual(cfg, f, f, rngs=rngs) for _ in range(cfg.n_stacks)])
        self.lin_conv = nnx.List([_conv(cfg, f, f, 1, rngs) for _ in range(cfg.n_stacks)])
        self.lin_bn = nnx.List([_bn(cfg, f, rngs) for _ in range(cfg.n_stacks)])
        self.head = nnx.List(
            [
                _conv(cfg, f, cfg.n_joints, 1, rngs, init_std=cfg.head_init_std)
                for _ in range(cfg.n_stacks)
            ]
        )
        # Re-injection convs exist only between stacks (none after the last): all params are used.
        self.merge_features = nnx.List([_conv(cfg, f, f, 1, rngs) for _ in range(cfg.n_stacks - 1)])
        self.merge_heatmaps = nnx.List(
            [_conv(cfg, cfg.n_joints, f, 1, rngs) for _ in range(cfg.n_stacks - 1)]
        )

    def _check_input(self, x: jax.Array) -> None:
        s, c = self.cfg.input_size, self.cfg.in_channels
        if x.ndim != 4 or x.shape[1:] != (s, s, c):
            raise ValueError(f"x must have shape [B, {s}, {s}, {c}], got {tuple(x.shape)}")

    def forward_with_features(self, x: jax.Array) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
        """x: [B, S, S, C_in] -> (heatmaps [B, n_stacks, S/4, S/4, J] float32,
        embedding [B, F] = GAP of the last stack's penultimate ("lin") features,
        multiscale: list of the last hourglass's per-level outputs [B, S/4/2**l, S/4/2**l, F])."""
        self._check_input(x)
        h = jax.nn.relu(self.stem_bn(self.stem_conv(x)))
        h = self.stem_res1(h)
        h = self.stem_res2(_max_pool2(h))
        h = self.stem_res3(h)
        heatmaps, lin, levels = [], None, []
        for s in range(self.cfg.n_stacks):
            hg, levels = self.hourglasses[s](h)
            lin = jax.nn.relu(self.lin_bn[s](self.lin_conv[s](self.post[s](hg))))
            out = self.head[s](lin)
            heatmaps.append(out.astype(jnp.float32))
            if s < self.cfg.n_stacks - 1:
                h = h + self.merge_features[s](lin) + self.merge_heatmaps[s](out)
        return jnp.stack(heatmaps, axis=1), global_average_pool(lin), levels

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, S, S, C_in] -> heatmaps [B, n_stacks, S/4, S/4, J] (float32)."""
        return self.forward_with_features(x)[0]

    def embed(self, x: jax.Array) -> jax.Array:
        """x: [B, S, S, C_in] -> embedding [B, F]."""
        return self.forward_with_features(x)[1]


def resolve_kernel_grad(kernel_grad: str, cfg: HourglassConfig) -> str:
    """The kernel-gradient engine for an hourglass of config ``cfg``: ``"xla"`` or ``"im2col"``.

    ``"xla"`` and ``"im2col"`` are returned as given. ``"auto"`` → ``"im2col"`` for hourglasses at
    least the paper's size (input ≥ ``IM2COL_MIN_INPUT_SIZE`` px and ≥ ``IM2COL_MIN_CHANNELS``
    channels), ``"xla"`` below it. On CPU the rule is measured (docs/pose.md); on GPUs it follows
    the measured symptom there (XLA turns vmapped kernel gradients into grouped convolutions far
    below the chip's rate, where im2col makes them batched GEMMs) and is checked by
    ``benchmarks/bench_pose.py --gpu``, which times both.
    """
    if kernel_grad not in KERNEL_GRAD_CHOICES:
        raise ValueError(f"kernel_grad must be one of {KERNEL_GRAD_CHOICES}, got {kernel_grad!r}")
    if kernel_grad != "auto":
        return kernel_grad
    large = cfg.input_size >= IM2COL_MIN_INPUT_SIZE and cfg.channels >= IM2COL_MIN_CHANNELS
    return "im2col" if large else "xla"


COMPUTE_DTYPES = ("float32", "bfloat16")


def with_engine(
    model: StackedHourglass, kernel_grad: str = "auto", compute_dtype: str | None = None
) -> StackedHourglass:
    """The same weights and statistics (shared arrays, no copy) in a model whose convolutions
    differentiate their kernels by ``kernel_grad`` (``"auto"``, ``"xla"`` or ``"im2col"``,
    :func:`resolve_kernel_grad`) and compute in ``compute_dtype`` (``"float32"`` or
    ``"bfloat16"``; None keeps the model's). Parameters stay float32; with float32 compute the
    values are identical and only the derivative program differs."""
    changes = {"kernel_grad": resolve_kernel_grad(kernel_grad, model.cfg)}
    if compute_dtype is not None:
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"`compute_dtype` must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}."
            )
        changes["dtype"] = None if compute_dtype == "float32" else jnp.bfloat16
    cfg = replace(model.cfg, **changes)
    if cfg == model.cfg:
        return model
    twin = nnx.eval_shape(lambda: StackedHourglass(cfg, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(twin)
    return nnx.merge(graphdef, nnx.state(model))


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param``; BatchNorm running statistics excluded)."""
    params = nnx.state(model, nnx.Param)
    return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))
