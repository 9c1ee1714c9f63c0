"""A convolution whose kernel derivative is one matrix product: fast per-example kernel gradients.

EGL++ needs K gradients of one image's loss (one per neighbour label, Eq. 12) and takes them as K
pullbacks of one shared forward (:mod:`egltheory.eglpp`). For a convolution ``y = x ⋆ W`` each
pullback's kernel gradient ``∂l/∂W = patches(x)ᵀ δ_k`` reaches XLA as a "backward-filter"
convolution whose window is the whole feature map; XLA:CPU runs those well below its matmul speed,
and when the K cotangents are vmapped it turns them into grouped convolutions.

:func:`conv_general_dilated` is a drop-in for :func:`jax.lax.conv_general_dilated` (pass it to
``nnx.Conv(conv_general_dilated=...)``). Its value is exactly XLA's convolution. A
:func:`jax.custom_jvp` writes the tangent in the kernel as the im2col product

    ẏ = ẋ ⋆ W + patches(x) · vec(Ẇ),        patches(x): [B, H_out, W_out, k_h·k_w·C_in],

so reverse mode (the transpose of that linear map) computes ``∂l/∂W = patches(x)ᵀ δ``: a GEMM
over ``B·H_out·W_out``, with ``patches(x)`` built once (from the shared forward) and reused by all K
pullbacks. The input derivative stays XLA's convolution. Forward mode, ``vmap`` and higher-order
derivatives all work (the rule is made of differentiable operations).

The fast path covers 2-D ``NHWC``/``HWIO`` convolutions (what ``nnx.Conv`` emits for images) with
any strides and padding, no dilation and no feature groups; every other call is forwarded to
:func:`jax.lax.conv_general_dilated` unchanged. ``patches(x)`` holds ``k_h·k_w`` shifted copies of
the input, built from strided slices (no FLOPs).

When it pays (measured by ``benchmarks/bench_pose.py``; numbers in docs/pose.md, "Benchmark"):
where many per-example kernel gradients of a wide network on large feature maps share one
forward, as in EGL++ on the paper's 256-channel hourglass at 256 px. On smaller models, and for
batch-summed training gradients, XLA's own convolution derivatives are faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

__all__ = ["conv_general_dilated", "image_patches"]

_NHWC = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], tuple[int, int]]


def image_patches(
    x: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """im2col: ``x [B, H, W, C] → [B, H_out, W_out, k_h·k_w·C]``, ordered ``(i, j, c)``.

    The ordering matches an ``HWIO`` kernel reshaped to ``[k_h·k_w·C_in, C_out]``, so
    ``image_patches(x, ...) @ W.reshape(-1, C_out)`` equals the convolution ``x ⋆ W``.
    Built from ``k_h·k_w`` strided slices of the zero-padded input (memory only, no FLOPs).
    """
    (kh, kw), (sh, sw) = kernel_size, strides
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    if kh == kw == 1 and sh == sw == 1:
        return xp
    cols = [
        lax.slice(
            xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(cols, axis=-1)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv_nhwc(lhs, rhs, strides, padding, precision, preferred_element_type):
    return lax.conv_general_dilated(
        lhs,
        rhs,
        strides,
        padding,
        dimension_numbers=_NHWC,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _conv_nhwc_jvp(strides, padding, precision, preferred_element_type, primals, tangents):
    lhs, rhs = primals
    lhs_dot, rhs_dot = tangents
    conv = partial(
        lax.conv_general_dilated,
        window_strides=strides,
        padding=padding,
        dimension_numbers=_NHWC,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    out = conv(lhs, rhs)
    terms = []
    if not isinstance(lhs_dot, SymbolicZero):
        terms.append(conv(lhs_dot, rhs))
    if not isinstance(rhs_dot, SymbolicZero):
        kh, kw, c_in, c_out = rhs.shape
        cols = image_patches(lhs, (kh, kw), strides, padding)
        terms.append(
            jnp.einsum(
                "bhwi,io->bhwo",
                cols,
                rhs_dot.reshape(kh * kw * c_in, c_out),
                precision=precision,
                preferred_element_type=preferred_element_type,
            ).astype(out.dtype)
        )
    out_dot = sum(terms[1:], terms[0]) if terms else jnp.zeros(out.shape, out.dtype)
    return out, out_dot


_conv_nhwc.defjvp(_conv_nhwc_jvp, symbolic_zeros=True)


def _is_nhwc(lhs_shape, rhs_shape, dimension_numbers) -> bool:
    if len(lhs_shape) != 4 or len(rhs_shape) != 4:
        return False
    given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return given == lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)


def _all_ones(dilation: Sequence[int] | None) -> bool:
    return dilation is None or all(int(d) == 1 for d in dilation)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """:func:`jax.lax.conv_general_dilated` with an im2col-GEMM kernel derivative (module doc).

    Same arguments and the same value as ``lax.conv_general_dilated``. 2-D ``NHWC``/``HWIO``
    convolutions without dilation or groups take the custom-derivative path
    (``lhs [B, H, W, C_in]``, ``rhs [k_h, k_w, C_in, C_out]`` → ``[B, H_out, W_out, C_out]``);
    anything else (and any extra keyword such as a non-``None`` ``out_sharding``) is forwarded
    to ``lax.conv_general_dilated`` unchanged.
    """
    fast = (
        _is_nhwc(jnp.shape(lhs), jnp.shape(rhs), dimension_numbers)
        and _all_ones(lhs_dilation)
        and _all_ones(rhs_dilation)
        and feature_group_count == 1
        and batch_group_count == 1
        and all(v is None for v in kwargs.values())
    )
    if not fast:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **kwargs,
        )
    strides = tuple(int(s) for s in window_strides)
    kernel = tuple(jnp.shape(rhs)[:2])
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(jnp.shape(lhs)[1:3], kernel, strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return _conv_nhwc(lhs, rhs, strides, pads, precision, preferred_element_type)
