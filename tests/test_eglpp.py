"""Tests for egltheory.eglpp: exact per-example gradient norms, identity 5, embeddings, errors."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings

from egltheory.egl import egl_closed_form, grad_sq_norm
from egltheory.eglpp import (
    EGLPPOptions,
    NormEngine,
    eglpp_pool_scores,
    eglpp_scores,
    embed,
    gather_neighbour_targets,
    global_average_pool,
    intermediate_features,
    loss_grad_sq_norms,
    naive_loss_grad_sq_norms,
    nnx_apply,
    squared_error,
)
from egltheory.tsne import conditional_probabilities, top_k_neighbours


class TinyConvNet(nnx.Module):
    """Conv → BatchNorm → ReLU → GAP → Linear: ``[B, 6, 6, 2] → [B, out]`` (``[B]`` if out=1)."""

    def __init__(self, out: int = 1, *, rngs: nnx.Rngs):
        f64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs, **f64)
        self.bn = nnx.BatchNorm(4, rngs=rngs, **f64)
        self.head = nnx.Linear(4, out, rngs=rngs, **f64)
        self.out = out

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        y = self.head(global_average_pool(h))
        return y[:, 0] if self.out == 1 else y


_CACHE: dict = {}


def _cached_apply(seed):
    """One (model, apply_fn, params) per seed, so hypothesis examples reuse compiled programs."""
    if seed not in _CACHE:
        model = _model(seed=seed)
        apply_fn, params, _ = nnx_apply(model)
        _CACHE[seed] = (model, apply_fn, params, lambda prm, xi: apply_fn(prm, xi[None])[0])
    return _CACHE[seed]


def _model(out=1, seed=0):
    model = TinyConvNet(out, rngs=nnx.Rngs(seed))
    # Non-trivial BatchNorm statistics and affine parameters, so that BN matters.
    model.bn.mean[...] = jnp.linspace(-0.2, 0.3, 4, dtype=model.bn.mean[...].dtype)
    model.bn.var[...] = jnp.linspace(0.5, 2.0, 4, dtype=model.bn.var[...].dtype)
    model.bn.scale[...] = jnp.linspace(0.7, 1.4, 4, dtype=model.bn.scale[...].dtype)
    model.bn.bias[...] = jnp.linspace(-0.1, 0.2, 4, dtype=model.bn.bias[...].dtype)
    return model


def _inputs(seed, n):
    return jax.random.normal(jax.random.key(seed), (n, 6, 6, 2))


def test_params_cover_batchnorm_and_rest_holds_statistics():
    _, params, rest = nnx_apply(_model())
    names = {tuple(map(str, k)) for k, _ in nnx.to_flat_state(params)}
    assert ("bn", "scale") in names and ("bn", "bias") in names
    assert ("conv", "kernel") in names and ("head", "bias") in names
    rest_names = {tuple(map(str, k)) for k, _ in nnx.to_flat_state(rest)}
    assert ("bn", "mean") in rest_names and ("bn", "var") in rest_names


@settings(max_examples=8)  # each example compiles fresh programs; 8 cover every mode/chunk
@given(
    seed=st.integers(0, 1000),
    n=st.sampled_from([1, 3]),
    k=st.sampled_from([1, 3]),
    mode=st.sampled_from(["unroll", "vmap", 1, 2, 5]),  # ints: groups of ≤ 2 or ≥ K cotangents
    chunk=st.sampled_from([1, 2, 8]),
)
def test_shared_forward_equals_per_example_nnx_grad(seed, n, k, mode, chunk):
    model = _model(out=3, seed=seed % 3)
    x = _inputs(seed, n)
    targets = jax.random.normal(jax.random.key(seed + 1), (n, k, 3))
    apply_fn, params, _ = nnx_apply(model)
    engine = NormEngine(chunk_size=chunk, cotangents=mode)
    got = loss_grad_sq_norms(apply_fn, params, x, targets, squared_error, engine)
    # Independent reference: nnx.grad of the loss w.r.t. the model itself, one example and one
    # target at a time (gradient w.r.t. every nnx.Param, BatchNorm included).
    expected = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            g = nnx.grad(lambda m, i=i, j=j: jnp.sum((m(x[i : i + 1])[0] - targets[i, j]) ** 2))(
                model
            )
            expected[i, j] = sum(float(jnp.sum(v**2)) for v in jax.tree_util.tree_leaves(g))
    np.testing.assert_allclose(got, expected, rtol=1e-10)  # float64: round-off only
    naive = naive_loss_grad_sq_norms(apply_fn, params, x, targets, squared_error)
    np.testing.assert_allclose(naive, expected, rtol=1e-10)


def test_batchnorm_gradients_are_included():
    model = _model()
    x = _inputs(3, 4)
    targets = jnp.ones((4, 2))
    apply_fn, params, rest = nnx_apply(model)
    full = loss_grad_sq_norms(apply_fn, params, x, targets)
    # Drop BN scale/bias from the differentiated set: the norm must shrink strictly.
    graphdef = nnx.graphdef(model)
    bn_params = nnx.State({"bn": {"scale": params["bn"]["scale"], "bias": params["bn"]["bias"]}})
    other = nnx.filter_state(params, lambda path, _: path[0] != "bn")

    def apply_no_bn(p, xb):
        return nnx.merge(graphdef, p, bn_params, rest)(xb)

    partial_norms = loss_grad_sq_norms(apply_no_bn, other, x, targets)
    assert np.all(np.asarray(full) > np.asarray(partial_norms) + 1e-8)


@settings(max_examples=10)
@given(seed=st.integers(0, 1000), k=st.sampled_from([2, 5]), renorm=st.booleans())
def test_identity_5_scalar_squared_error(seed, k, renorm):
    _, apply_fn, params, scalar_fn = _cached_apply(seed % 2)
    n = 6
    x = _inputs(seed, n)
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, k))
    p = rng.dirichlet(np.ones(k + 2), size=n)[:, :k]  # top-K mass m < 1 unless renormalised
    if renorm:
        p = p / p.sum(1, keepdims=True)
    scores = np.asarray(eglpp_scores(apply_fn, params, x, jnp.asarray(y), jnp.asarray(p)))
    # Identity 5 with c = 4 (l = (y − f)²), ‖∇f‖² from egl.grad_sq_norm (an independent path).
    f = np.asarray(apply_fn(params, x))
    g2 = np.asarray(grad_sq_norm(scalar_fn, params, x))
    m = p.sum(1)
    pt = p / m[:, None]
    ybar = np.sum(pt * y, 1)
    var = np.sum(pt * (y - ybar[:, None]) ** 2, 1)
    np.testing.assert_allclose(scores, 4 * g2 * m * (var + (ybar - f) ** 2), rtol=1e-9)
    assert np.all(scores >= 0)
    if not renorm:
        return
    # Uniform neighbour weights = a K-member "ensemble" of point masses: Eq. 10 with c = 4.
    uniform = np.full((n, k), 1.0 / k)
    s_uniform = eglpp_scores(apply_fn, params, x, jnp.asarray(y), jnp.asarray(uniform))
    closed = egl_closed_form(jnp.asarray(y.T), jnp.zeros((k, n)), jnp.asarray(f), g2, c=4.0)
    np.testing.assert_allclose(s_uniform, closed, rtol=1e-9)


def test_pool_scores_pipeline_matches_manual_composition():
    model = _model()
    x = _inputs(5, 7)
    apply_fn, params, _ = nnx_apply(model)
    emb_pool = jax.random.normal(jax.random.key(1), (7, 3))
    emb_lab = jax.random.normal(jax.random.key(2), (12, 3))
    y_lab = jax.random.normal(jax.random.key(3), (12,))
    options = EGLPPOptions(perplexity=4.0, top_k=5)
    scores = eglpp_pool_scores(apply_fn, params, x, emb_pool, emb_lab, y_lab, options=options)
    probs = conditional_probabilities(emb_pool, emb_lab, 4.0)
    pk, idx = top_k_neighbours(probs, 5)
    targets = np.asarray(y_lab)[np.asarray(idx)]  # NumPy gather
    expected = eglpp_scores(apply_fn, params, x, jnp.asarray(targets), pk)
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    np.testing.assert_array_equal(gather_neighbour_targets(y_lab, idx), targets)


def test_embeddings_hook_and_global_average_pool():
    model = _model()
    x = _inputs(6, 5)
    feats = intermediate_features(model, x, "conv")
    expected_conv = model.conv(x)
    np.testing.assert_allclose(feats, expected_conv, rtol=1e-12)
    emb = embed(model, x, path="conv", batch_size=2)
    np.testing.assert_allclose(emb, np.asarray(expected_conv).mean(axis=(1, 2)), rtol=1e-12)
    emb2 = embed(model, x, lambda m, xb: m.bn(m.conv(xb)), batch_size=3)
    np.testing.assert_allclose(emb2, np.asarray(model.bn(model.conv(x))).mean((1, 2)), rtol=1e-12)
    with pytest.raises(ValueError, match="path"):
        intermediate_features(model, x, "nope")
    with pytest.raises(ValueError, match="exactly one"):
        embed(model, x)


def test_bad_input_is_refused():
    apply_fn, params, _ = nnx_apply(_model())
    x = _inputs(0, 3)
    with pytest.raises(ValueError, match="targets"):
        loss_grad_sq_norms(apply_fn, params, x, jnp.ones((2, 2)))
    for bad in ("loop", 0, -2, True, 2.0):
        with pytest.raises(ValueError, match="cotangents"):
            NormEngine(cotangents=bad)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="chunk_size"):
            NormEngine(chunk_size=bad)
    with pytest.raises(ValueError, match="engine"):
        loss_grad_sq_norms(apply_fn, params, x, jnp.ones((3, 2)), squared_error, "vmap")
    with pytest.raises(ValueError, match="`x`"):
        loss_grad_sq_norms(apply_fn, params, x[:0], jnp.ones((0, 2)))
    with pytest.raises(ValueError, match="neighbour_probs"):
        eglpp_scores(apply_fn, params, x, jnp.ones((3, 2)), jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="neighbour_probs"):
        eglpp_scores(apply_fn, params, x, jnp.ones((3, 2)), -jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="`x`"):
        loss_grad_sq_norms(apply_fn, params, x.at[0, 0, 0, 0].set(jnp.nan), jnp.ones((3, 2)))


def test_targets_that_would_broadcast_or_be_clamped_are_refused():
    """Shape or row-count mismatches used to give plausible scores (clamped or broadcast)."""
    apply_fn, params, _ = nnx_apply(_model())
    x = _inputs(0, 3)
    with pytest.raises(ValueError, match="output shape"):  # scalar output, targets [N, K, 1]
        loss_grad_sq_norms(apply_fn, params, x, jnp.ones((3, 2, 1)))
    emb_lab = jax.random.normal(jax.random.key(2), (6, 3))
    emb_pool = jax.random.normal(jax.random.key(1), (3, 3))
    with pytest.raises(ValueError, match="one row per labelled embedding"):
        eglpp_pool_scores(apply_fn, params, x, emb_pool, emb_lab, jnp.ones(4))
    with pytest.raises(ValueError, match=r"\[0, L=4\)"):
        gather_neighbour_targets(jnp.ones(4), jnp.array([[0, 5]]))
    with pytest.raises(ValueError, match="scalar"):
        loss_grad_sq_norms(apply_fn, params, x, jnp.ones((3, 2)), lambda f, y: f * jnp.ones(2))


def test_small_labelled_sets_cap_perplexity_and_top_k_in_one_place():
    """One labelled reference: perplexity capped at 1 (probability 1), never a value < 1."""
    options = EGLPPOptions(perplexity=20.0, top_k=30)
    assert options.for_references(1) == (1.0, 1)
    assert options.for_references(10) == (5.0, 10)
    assert options.for_references(100) == (20.0, 30)
    nats = EGLPPOptions(perplexity=20.0, convention="nats-as-bits")
    p, _ = nats.for_references(10)
    from egltheory.tsne import effective_perplexity

    assert effective_perplexity(p, "nats-as-bits") == pytest.approx(5.0)
    apply_fn, params, _ = nnx_apply(_model())
    x = _inputs(0, 3)
    one = eglpp_pool_scores(
        apply_fn, params, x, jnp.ones((3, 2)), jnp.zeros((1, 2)), jnp.ones(1), options=options
    )
    expected = eglpp_scores(apply_fn, params, x, jnp.ones((3, 1)), jnp.ones((3, 1)))
    np.testing.assert_allclose(one, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="at least one labelled"):
        options.for_references(0)
    for bad in ({"perplexity": 0.5}, {"top_k": 0}, {"convention": "nits"}, {"engine": "vmap"}):
        with pytest.raises(ValueError):
            EGLPPOptions(**bad)


def test_auto_chunk_size_fits_the_memory_budget_and_changes_no_value():
    from egltheory.eglpp import auto_chunk_size, free_device_memory, intermediate_bytes

    apply_fn, params, _ = nnx_apply(_model(out=3))
    x = _inputs(1, 5)
    targets = jax.random.normal(jax.random.key(2), (5, 4, 3))
    fixed = loss_grad_sq_norms(apply_fn, params, x, targets, squared_error, NormEngine(2))
    auto = loss_grad_sq_norms(apply_fn, params, x, targets, squared_error, NormEngine("auto"))
    np.testing.assert_allclose(auto, fixed, rtol=1e-12)
    assert free_device_memory() > 0

    def per_example(xi, ti):
        return jnp.sum(jnp.outer(xi.ravel(), ti.ravel()) ** 2)

    args = (x[0], targets[0])
    # [6·6·2] x [4·3] outer product (72 × 12 float64) and its square: ≥ 2 × 6,912 bytes
    one = intermediate_bytes(jax.make_jaxpr(per_example)(*args).jaxpr)
    assert one >= 2 * 72 * 12 * 8
    for budget in (one - 1, one, 3 * one + 5, 10**12):
        chunk = auto_chunk_size(per_example, args, 100, budget)
        assert chunk == max(1, min(100, 256, budget // one))
        assert chunk == 1 or chunk * one <= budget
    with pytest.raises(ValueError, match="chunk_size"):
        NormEngine(chunk_size="big")
    with pytest.raises(ValueError, match="memory_fraction"):
        NormEngine(memory_fraction=0.0)
