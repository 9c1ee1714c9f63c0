"""Stacked hourglass: shapes, embedding, parameter count (independent formula), used parameters."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from egltheory.pose.hourglass import (
    HourglassConfig,
    StackedHourglass,
    count_params,
    with_engine,
)

TINY = HourglassConfig(n_stacks=2, channels=8, depth=2, n_joints=5, input_size=32)


def _conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out  # Newell's convs have biases


def _bn(c):
    return 2 * c  # scale and bias; running statistics are not parameters


def _residual(c_in, c_out):
    mid = c_out // 2
    skip = _conv(c_in, c_out, 1) if c_in != c_out else 0
    return (
        _bn(c_in) + _conv(c_in, mid, 1) + _bn(mid) + _conv(mid, mid, 3) + _bn(mid)
        + _conv(mid, c_out, 1) + skip
    )  # fmt: skip


def expected_params(stacks, f, depth, joints, c_in=3):
    """Newell's hg.lua (nModules = 1), counted by hand from the architecture."""
    stem = _conv(c_in, f // 4, 7) + _bn(f // 4) + _residual(f // 4, f // 2)
    stem += _residual(f // 2, f // 2) + _residual(f // 2, f)
    hourglass = (3 * depth + 1) * _residual(f, f)  # up1, low1, low3 per level + innermost low2
    per_stack = hourglass + _residual(f, f) + _conv(f, f, 1) + _bn(f) + _conv(f, joints, 1)
    between = _conv(f, f, 1) + _conv(joints, f, 1)
    return stem + stacks * per_stack + (stacks - 1) * between


def _abstract(cfg):
    """The model's structure without computing initial values (fast)."""
    return nnx.eval_shape(lambda: StackedHourglass(cfg, rngs=nnx.Rngs(0)))


def test_paper_config_parameter_count():
    n = count_params(_abstract(HourglassConfig()))
    assert n == expected_params(2, 256, 4, 16)
    assert 6.3e6 < n < 6.8e6  # "≈ 6.5 M" in the issue


@pytest.mark.parametrize(("stacks", "f", "depth", "joints"), [(1, 8, 1, 3), (3, 16, 2, 14)])
def test_parameter_count_formula_small(stacks, f, depth, joints):
    cfg = HourglassConfig(stacks, f, depth, joints, input_size=4 * 2**depth * 2)
    assert count_params(_abstract(cfg)) == expected_params(stacks, f, depth, joints)


def _jitted(model, method):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: method(nnx.merge(graphdef, s), x)), state


def test_shapes_and_embedding():
    model = StackedHourglass(TINY, rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3), jnp.float32)
    run, state = _jitted(model, lambda m, x: (m.forward_with_features(x), m(x), m.embed(x)))
    (heat, emb, levels), heat2, emb2 = run(state, x)
    assert heat.shape == (3, 2, 8, 8, 5)
    assert emb.shape == (3, 8)
    assert [lv.shape[1] for lv in levels] == [8, 4]
    np.testing.assert_allclose(heat2, heat)
    np.testing.assert_allclose(emb2, emb)
    # the embedding is the global average of the last stack's penultimate features: finite, and
    # examples do not interact in eval mode
    (_, emb_one, _), _, _ = run(state, x[:1])
    np.testing.assert_allclose(emb_one, emb[:1], rtol=1e-5, atol=1e-6)


def test_every_parameter_is_used():
    model = StackedHourglass(TINY, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)

    def f(p):
        heat, emb, _ = nnx.merge(graphdef, p, rest).forward_with_features(x)
        return jnp.sum(jnp.sin(heat)) + jnp.sum(jnp.sin(emb))

    grads = jax.jit(jax.grad(f))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert float(jnp.max(jnp.abs(g))) > 0, f"unused parameter {path}"


def test_heads_start_near_zero():
    """The heads' N(0, head_init_std²) kernels and zero biases: first heatmaps ≈ 0 (targets peak
    at 1), while LeCun-normal heads (None) start with unit-scale noise."""
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
    small = StackedHourglass(TINY, rngs=nnx.Rngs(0))(x)
    lecun = StackedHourglass(replace(TINY, head_init_std=None), rngs=nnx.Rngs(0))(x)
    assert float(jnp.max(jnp.abs(small))) < 0.05 < float(jnp.std(lecun))
    with pytest.raises(ValueError, match="head_init_std"):
        replace(TINY, head_init_std=0.0)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    cfg = HourglassConfig(1, 8, 1, 3, input_size=16, dtype=jnp.bfloat16)
    model = StackedHourglass(cfg, rngs=nnx.Rngs(0))
    model.eval()
    run, state = _jitted(model, lambda m, x: m(x))
    heat = run(state, jnp.ones((1, 16, 16, 3), jnp.float32))
    assert heat.dtype == jnp.float32
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in leaves)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="input_size"):
        HourglassConfig(input_size=100)
    with pytest.raises(ValueError, match="channels"):
        HourglassConfig(channels=30)
    with pytest.raises(ValueError, match="n_stacks"):
        HourglassConfig(n_stacks=0)
    model = StackedHourglass(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="x must have shape"):
        model(jnp.zeros((1, 16, 16, 3)))


def test_im2col_and_xla_kernel_gradients_agree():
    """Same parameters, same forward, same loss gradient for every parameter (float32)."""
    models = {
        kind: StackedHourglass(replace(TINY, kernel_grad=kind), rngs=nnx.Rngs(0))
        for kind in ("im2col", "xla")
    }
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    outs, grads = {}, {}
    for kind, model in models.items():
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, graphdef=graphdef, rest=rest):
            return jnp.sum(jnp.sin(nnx.merge(graphdef, p, rest)(x)))

        outs[kind] = nnx.merge(graphdef, params, rest)(x)
        grads[kind] = jax.jit(jax.grad(loss))(params)
    np.testing.assert_array_equal(outs["im2col"], outs["xla"])
    flat = [jax.tree_util.tree_leaves(grads[k]) for k in ("im2col", "xla")]
    assert len(flat[0]) == len(flat[1]) > 0
    for got, want in zip(*flat, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="kernel_grad"):
        HourglassConfig(kernel_grad="fast")


def test_with_engine_shares_the_weights():
    model = StackedHourglass(TINY, rngs=nnx.Rngs(1))
    twin = with_engine(model, "im2col")
    assert twin.cfg.kernel_grad == "im2col" and model.cfg.kernel_grad == "xla"
    assert with_engine(model, "xla") is model
    leaves = [jax.tree_util.tree_leaves(nnx.state(m)) for m in (model, twin)]
    assert len(leaves[0]) == len(leaves[1]) > 0
    for a, b in zip(*leaves, strict=True):
        assert a is b  # the same arrays, not copies
    model.eval()
    twin.eval()
    x = jnp.ones((1, 32, 32, 3))
    np.testing.assert_array_equal(model(x), twin(x))
    half = with_engine(model, "xla", "bfloat16")
    half.eval()
    assert half.cfg.dtype == jnp.bfloat16 and model.cfg.dtype is None
    out = half(x)
    assert out.dtype == jnp.float32  # heatmaps come back in float32
    rel = np.abs(np.asarray(out) - np.asarray(model(x))).max() / np.abs(np.asarray(model(x))).max()
    assert 0 < rel < 0.05  # bfloat16 rounding, parameters shared
    with pytest.raises(ValueError, match="compute_dtype"):
        with_engine(model, "xla", "float16")
