"""Pose acquisition: multi-peak entropy, learning loss, strategies, EGL++ vs a naive computation."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from egltheory.active import OnCandidateSubset, PoolState, TopScoreSelection
from egltheory.eglpp import EGLPPOptions, LowRank, NormEngine
from egltheory.pose.acquisition import (
    EGLPP_VARIANTS,
    STRATEGIES,
    PoseEGLPPOptions,
    eglpp_pose_scores,
    eglpp_pose_terms,
    heatmap_grad_sq_norms,
    make_strategy,
    multi_peak_entropy,
)
from egltheory.pose.hourglass import HourglassConfig, StackedHourglass, resolve_kernel_grad
from egltheory.pose.learning_loss import margin_ranking_loss
from egltheory.pose.synthetic import make_synthetic
from egltheory.pose.training import TrainConfig, heatmap_loss, infer, preprocess, train_pose_model

CFG = HourglassConfig(n_stacks=2, channels=4, depth=1, n_joints=16, input_size=16)


@pytest.fixture(scope="module")
def setup():
    data = make_synthetic(40, seed=5, image_size=16)
    model, _ = train_pose_model(
        data, np.arange(16), CFG, TrainConfig(epochs=1, batch_size=8), 0, learning_loss=True
    )
    return data, model


def test_multi_peak_entropy_hand_computed():
    hm = np.zeros((1, 7, 7, 3))
    hm[0, 1, 1, 0], hm[0, 5, 5, 0] = 1.0, 0.5  # two peaks
    hm[0, 3, 3, 1] = 1.0  # one peak
    hm[0, 1, 1, 2], hm[0, 5, 5, 2] = 1.0, 0.05  # second peak below 0.1 × max: ignored
    p = np.exp([1.0, 0.5]) / np.exp([1.0, 0.5]).sum()
    expected = -(p * np.log(p)).sum()
    np.testing.assert_allclose(multi_peak_entropy(hm), [expected], rtol=1e-6)
    hm[0, 5, 5, 2] = 1.0  # two equal peaks: entropy log 2 more
    np.testing.assert_allclose(multi_peak_entropy(hm), [expected + np.log(2)], rtol=1e-6)
    with pytest.raises(ValueError, match="heatmaps"):
        multi_peak_entropy(np.zeros((7, 7, 3)))


def test_margin_ranking_loss_hand_computed():
    pred = jnp.array([0.5, 0.0, 0.2, 1.0])
    target = jnp.array([2.0, 1.0, 1.0, 3.0])  # pairs (0, 2): l0 > l2; (1, 3): l1 < l3
    # pair 0: max(0, −(0.5 − 0.2) + 1) = 0.7; pair 1: max(0, +(0.0 − 1.0) + 1) = 0
    np.testing.assert_allclose(margin_ranking_loss(pred, target), 0.35, rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        margin_ranking_loss(pred[:3], target[:3])


def _naive_sq_norms(model, x, targets):
    """Independent: one jax.grad per (example, neighbour), through XLA's own convolution
    derivatives (the model under test differentiates kernels by im2col GEMMs on CPU)."""
    hg = StackedHourglass(replace(model.hourglass.cfg, kernel_grad="xla"), rngs=nnx.Rngs(0))
    nnx.update(hg, nnx.state(model.hourglass))
    hg.eval()
    graphdef, params, rest = nnx.split(hg, nnx.Param, ...)

    @jax.jit
    def sq(xi, ti):
        g = jax.grad(lambda p: heatmap_loss(nnx.merge(graphdef, p, rest)(xi[None])[0], ti))(params)
        return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(g))

    return np.array([[float(sq(x[i], targets[i, k])) for k in range(targets.shape[1])]
                     for i in range(len(x))])  # fmt: skip


def _tsne_rows_numpy(query, ref, perplexity):
    """Bisection on β so that 2^{H_bits(P_i)} = perplexity (Eq. 13), in float64 NumPy."""
    d = ((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    out = np.zeros_like(d)
    for i, row in enumerate(d):
        lo, hi = -50.0, 50.0  # log β
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            w = np.exp(-(row - row.min()) * np.exp(mid))
            p = w / w.sum()
            h_bits = -(p[p > 0] * np.log2(p[p > 0])).sum()
            lo, hi = (mid, hi) if h_bits > np.log2(perplexity) else (lo, mid)
        out[i] = p
    return out


def test_eglpp_equals_naive_per_example_computation(setup):
    data, model = setup
    labelled, cand = np.arange(12), np.arange(20, 26)
    options = PoseEGLPPOptions(eglpp=EGLPPOptions(perplexity=4.0, top_k=5))
    scores, probs, nbrs = eglpp_pose_scores(
        model, data, labelled, cand, options, return_neighbours=True
    )
    out_l = infer(model, data.images[labelled])
    emb_c = infer(model, data.images[cand])["embeddings"]
    p_full = _tsne_rows_numpy(emb_c.astype(np.float64), out_l["embeddings"].astype(np.float64), 4.0)
    top = np.argsort(-p_full, axis=1)[:, :5]
    # same neighbour sets (near-duplicate clip frames tie in probability, so order may differ)
    np.testing.assert_array_equal(np.sort(labelled[top], 1), np.sort(nbrs, 1))
    # rtol 1e-4: float32 embeddings and the engine's entropy tolerance (1e-5 nats). atol 1e-6:
    # rows with 4 identical near-duplicate neighbours reach perplexity 4 only as β → ∞; both
    # solvers stop at a large β and leave < 1e-6 on the far neighbours.
    np.testing.assert_allclose(
        np.sort(np.take_along_axis(p_full, top, 1), 1), np.sort(probs, 1), rtol=1e-4, atol=1e-6
    )
    targets = out_l["heatmaps"][top]  # default: the model's predictions of the neighbours
    naive = _naive_sq_norms(model, preprocess(data.images[cand]), targets)
    expected = (np.take_along_axis(p_full, top, 1) * naive).sum(1)
    np.testing.assert_allclose(scores, expected, rtol=2e-4)  # float32 gradients (+ the above)


def test_grad_norms_unroll_vmap_and_naive_k_passes_agree(setup):
    from egltheory.eglpp import naive_loss_grad_sq_norms, nnx_apply

    data, model = setup
    x = preprocess(data.images[:3])
    targets = np.asarray(infer(model, data.images[3:5])["heatmaps"])[None].repeat(3, 0)  # [3,2,..]

    def opts(engine, **more):
        return PoseEGLPPOptions(eglpp=EGLPPOptions(engine=engine), **more)

    a = heatmap_grad_sq_norms(model, x, targets, opts(NormEngine(2, "vmap")))  # padded chunk
    b = heatmap_grad_sq_norms(model, x, targets, opts(NormEngine(3, "unroll")))
    for kernel_grad in ("im2col", "xla"):  # explicit either way, groups of one cotangent
        one = opts(NormEngine(cotangents=1), kernel_grad=kernel_grad)
        np.testing.assert_allclose(heatmap_grad_sq_norms(model, x, targets, one), a, rtol=1e-5)
    # bfloat16 compute, float32 parameters: close to float32 (8 mantissa bits), not equal
    bf16 = heatmap_grad_sq_norms(model, x, targets, opts(NormEngine(), compute_dtype="bfloat16"))
    rel = np.abs(bf16 - a) / a
    assert 0 < rel.max() < 0.1
    apply_fn, params, _ = nnx_apply(model.hourglass)
    # K separate forward + backward passes (jax.grad per neighbour target): independent of the vjp
    c = np.asarray(naive_loss_grad_sq_norms(apply_fn, params, x, targets, heatmap_loss))
    np.testing.assert_allclose(a, b, rtol=1e-5)  # float32
    np.testing.assert_allclose(a, c, rtol=1e-4)
    with pytest.raises(ValueError, match="compute_dtype"):
        PoseEGLPPOptions(compute_dtype="float16")


def test_auto_kernel_grad_is_im2col_only_from_the_paper_size_up():
    paper = HourglassConfig()  # 256 px, 256 channels, depth 4
    small = HourglassConfig(n_stacks=1, channels=32, depth=2, input_size=48)
    assert resolve_kernel_grad("auto", paper) == "im2col"
    assert resolve_kernel_grad("auto", small) == "xla"
    assert resolve_kernel_grad("auto", replace(paper, channels=128)) == "xla"
    assert resolve_kernel_grad("auto", replace(paper, input_size=128, depth=3)) == "xla"
    for explicit in ("xla", "im2col"):
        assert resolve_kernel_grad(explicit, small) == explicit
    with pytest.raises(ValueError, match="kernel_grad"):
        resolve_kernel_grad("fast", small)


def test_ground_truth_neighbour_labels_change_scores(setup):
    data, model = setup
    options = PoseEGLPPOptions(eglpp=EGLPPOptions(top_k=5))
    a = eglpp_pose_scores(model, data, np.arange(12), np.arange(20, 24), options)
    gt = options.replace(neighbour_labels="ground_truth")
    b = eglpp_pose_scores(model, data, np.arange(12), np.arange(20, 24), gt)
    assert a.shape == b.shape == (4,) and np.all(b > 0) and not np.allclose(a, b)
    with pytest.raises(ValueError, match="labelled"):
        eglpp_pose_scores(model, data, np.arange(0), np.arange(20, 24))


@pytest.mark.parametrize("kind", STRATEGIES)
def test_each_strategy_selects_valid_unlabelled_items(setup, kind):
    data, model = setup
    state = PoolState(np.arange(12), np.arange(12, 40), model, 0)
    options = PoseEGLPPOptions(eglpp=EGLPPOptions(top_k=5))
    inner = make_strategy(kind, data, options)
    strategy = OnCandidateSubset(inner, 10)
    picks = strategy.select(state, 4, jax.random.key(0))
    assert picks.shape == (4,) and len(set(picks)) == 4 and set(picks) <= set(range(12, 40))
    np.testing.assert_array_equal(picks, strategy.select(state, 4, jax.random.key(0)))
    if kind not in ("random", "core-set"):
        assert isinstance(inner, TopScoreSelection)
        # top-scored candidates are picked: every pick scores ≥ every unpicked candidate
        k_sub, k_inner = jax.random.split(jax.random.key(0))
        pos = np.asarray(jax.random.choice(k_sub, 28, (10,), False))
        cand = np.sort(state.unlabelled[pos])
        s = np.asarray(inner.score_fn(PoolState(state.labelled, cand, model, 0), k_inner))
        picked = np.isin(cand, picks)
        assert picked.sum() == 4 and s[picked].min() >= s[~picked].max()


def test_strategy_and_option_errors(setup):
    data, model = setup
    with pytest.raises(ValueError, match="strategy"):
        make_strategy("bald", data)
    state = PoolState(np.arange(38), np.arange(38, 40), model, 0)
    with pytest.raises(ValueError, match="budget"):
        OnCandidateSubset(make_strategy("random", data), 10).select(state, 3, jax.random.key(0))
    for bad in ({"neighbour_labels": "truth"}, {"kernel_grad": "gemm"}, {"heatmap_sigma": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PoseEGLPPOptions(**bad)
    with pytest.raises(ValueError, match="cotangents"):
        PoseEGLPPOptions().replace(cotangents="loop")
    assert PoseEGLPPOptions().replace(top_k=7, cotangents=3).eglpp == EGLPPOptions(
        top_k=7, engine=NormEngine(cotangents=3)
    )


def test_identity_6_on_the_hourglass_and_its_strategies(setup):
    """float32 hourglass: bias + spread = the K-pullback score; the bias-only and low-rank
    strategies score with LowRank(0) and LowRank(4), never above the exact score."""
    data, model = setup
    labelled, cand = np.arange(12), np.arange(20, 26)
    options = PoseEGLPPOptions(eglpp=EGLPPOptions(top_k=6))
    exact = eglpp_pose_scores(model, data, labelled, cand, options)
    terms, _, _ = eglpp_pose_terms(model, data, labelled, cand, options)
    np.testing.assert_allclose(terms.bias + terms.spread, exact, rtol=1e-4)  # float32
    for m, name in ((0, "egl++-bias"), (4, "egl++-lowrank")):
        assert EGLPP_VARIANTS[name] == LowRank(m)
        low = eglpp_pose_scores(model, data, labelled, cand, options.replace(estimator=LowRank(m)))
        assert np.all(low <= exact * (1 + 1e-4))
        if m == 0:
            np.testing.assert_allclose(low, terms.bias, rtol=1e-4)
        state = PoolState(labelled, cand, model, 0)
        s = make_strategy(name, data, options).score_fn(state, jax.random.key(0))
        np.testing.assert_allclose(s, low, rtol=1e-6)
