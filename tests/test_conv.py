"""egltheory.conv: same value as XLA's convolution, same derivatives (all modes) as lax's autodiff.

Reference: ``jax.lax.conv_general_dilated`` differentiated by JAX's own rules (transposed
convolutions, an independent route from the im2col GEMM), and a NumPy loop for ``image_patches``.
Float64 throughout: derivatives agree to ~1e-15 relative; 1e-10 leaves room for summation order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from egltheory.conv import conv_general_dilated, image_patches

DN = ("NHWC", "HWIO", "NHWC")
TOL = dict(rtol=1e-10, atol=1e-10)


def lax_conv(x, w, strides, padding):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)


def our_conv(x, w, strides, padding):
    return conv_general_dilated(x, w, strides, padding, dimension_numbers=DN)


@st.composite
def conv_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(
        st.one_of(
            st.sampled_from(["SAME", "VALID"]),
            st.tuples(
                st.tuples(st.integers(0, 2), st.integers(0, 2)),
                st.tuples(st.integers(0, 2), st.integers(0, 2)),
            ),
        )
    )
    h, w = draw(st.integers(kh, kh + 6)), draw(st.integers(kw, kw + 6))
    b, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, h, w, c_in))
    kernel = rng.normal(size=(kh, kw, c_in, c_out))
    return x, kernel, (sh, sw), padding


def numpy_patches(x, kh, kw, strides, pads):
    """im2col by explicit loops (independent of the slicing implementation)."""
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // strides[0] + 1, (wp - kw) // strides[1] + 1
    out = np.zeros((b, ho, wo, kh * kw * c))
    for r in range(ho):
        for s in range(wo):
            window = xp[
                :, r * strides[0] : r * strides[0] + kh, s * strides[1] : s * strides[1] + kw
            ]
            out[:, r, s] = window.reshape(b, -1)
    return out


@given(conv_problems())
def test_image_patches_times_kernel_is_the_convolution(problem):
    x, kernel, strides, padding = problem
    kh, kw, _, c_out = kernel.shape
    pads = (
        jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
        if isinstance(padding, str)
        else padding
    )
    cols = np.asarray(image_patches(jnp.asarray(x), (kh, kw), strides, tuple(map(tuple, pads))))
    np.testing.assert_allclose(cols, numpy_patches(x, kh, kw, strides, pads), rtol=0, atol=0)
    np.testing.assert_allclose(
        cols @ kernel.reshape(-1, c_out), lax_conv(x, kernel, strides, padding), **TOL
    )


@given(conv_problems())
def test_value_vjp_and_jvp_match_lax(problem):
    x, kernel, strides, padding = problem
    ours = np.asarray(our_conv(x, kernel, strides, padding))
    ref, pullback_ref = jax.vjp(lambda a, b: lax_conv(a, b, strides, padding), x, kernel)
    np.testing.assert_array_equal(ours, np.asarray(ref))  # the primal is XLA's convolution

    cot = np.random.default_rng(1).normal(size=ref.shape)
    _, pullback = jax.vjp(lambda a, b: our_conv(a, b, strides, padding), x, kernel)
    for got, want in zip(pullback(cot), pullback_ref(cot), strict=True):
        np.testing.assert_allclose(got, want, **TOL)

    tangents = (np.ones_like(x), np.cos(kernel))
    _, jvp = jax.jvp(lambda a, b: our_conv(a, b, strides, padding), (x, kernel), tangents)
    _, jvp_ref = jax.jvp(lambda a, b: lax_conv(a, b, strides, padding), (x, kernel), tangents)
    np.testing.assert_allclose(jvp, jvp_ref, **TOL)


@given(conv_problems(), st.integers(1, 4))
def test_vmapped_cotangents_with_shared_input_match_separate_lax_pullbacks(problem, n_cot):
    """The EGL++ pattern: one forward, K kernel gradients by vmapping the pullback."""
    x, kernel, strides, padding = problem
    out = lax_conv(x, kernel, strides, padding)
    cots = np.random.default_rng(2).normal(size=(n_cot, *out.shape))
    _, pullback = jax.vjp(lambda b: our_conv(x, b, strides, padding), kernel)
    got = jax.jit(jax.vmap(lambda c: pullback(c)[0]))(cots)
    _, pullback_ref = jax.vjp(lambda b: lax_conv(x, b, strides, padding), kernel)
    for k in range(n_cot):
        np.testing.assert_allclose(got[k], pullback_ref(cots[k])[0], **TOL)


def test_second_derivatives_match_lax():
    rng = np.random.default_rng(3)
    x, kernel = rng.normal(size=(1, 5, 4, 2)), rng.normal(size=(3, 2, 2, 2))

    def loss(conv):
        return lambda a, b: jnp.sum(jnp.sin(conv(a, b, (2, 1), "SAME")))

    for argnums in (0, 1):
        hess = jax.hessian(loss(our_conv), argnums=argnums)(x, kernel)
        hess_ref = jax.hessian(loss(lax_conv), argnums=argnums)(x, kernel)
        np.testing.assert_allclose(hess, hess_ref, **TOL)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rhs_dilation=(2, 1)),
        dict(lhs_dilation=(1, 2)),
        dict(feature_group_count=2),
        dict(dimension_numbers=("NCHW", "OIHW", "NCHW")),
    ],
)
def test_other_convolutions_are_forwarded_to_lax(kwargs):
    rng = np.random.default_rng(4)
    kwargs = {"dimension_numbers": DN, **kwargs}
    nchw = kwargs["dimension_numbers"][0] == "NCHW"
    x = rng.normal(size=(2, 4, 6, 5) if nchw else (2, 6, 5, 4))
    groups = kwargs.get("feature_group_count", 1)
    kernel = rng.normal(size=(4, 4 // groups, 3, 2) if nchw else (3, 2, 4 // groups, 4))

    def loss(conv):
        return lambda a, b: jnp.sum(conv(a, b, (1, 1), pads, **kwargs) ** 2)

    pads = ((1, 1), (0, 1))  # lax accepts no string padding with lhs_dilation
    np.testing.assert_array_equal(
        conv_general_dilated(x, kernel, (1, 1), pads, **kwargs),
        jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, **kwargs),
    )
    for got, want in zip(
        jax.grad(loss(conv_general_dilated), (0, 1))(x, kernel),
        jax.grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, kernel),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, **TOL)


def test_drop_in_for_nnx_conv():
    """Same parameters and gradients as a default ``nnx.Conv`` (stride 2, SAME padding)."""

    def make(**kw):
        return nnx.Conv(3, 4, kernel_size=(3, 3), strides=(2, 2), rngs=nnx.Rngs(0), **kw)

    ours, ref = make(conv_general_dilated=conv_general_dilated), make()
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 7, 6, 3)))

    def grads(model):
        return nnx.grad(lambda m: jnp.sum(jnp.tanh(m(x))))(model)

    np.testing.assert_array_equal(ours(x), ref(x))
    got, want = nnx.state(grads(ours), nnx.Param), nnx.state(grads(ref), nnx.Param)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), got, want)
