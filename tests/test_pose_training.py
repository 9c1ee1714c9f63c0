"""Pose training: the loss, that training fits, fine-tuning, save/load, argument checks."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from egltheory.pose.hourglass import HourglassConfig
from egltheory.pose.synthetic import make_synthetic
from egltheory.pose.training import (
    TrainConfig,
    batch_heatmap_loss,
    evaluate,
    heatmap_loss,
    train_pose_model,
    train_steps,
)

CFG = HourglassConfig(n_stacks=2, channels=4, depth=1, n_joints=16, input_size=16)


def test_heatmap_loss_matches_numpy():
    rng = np.random.default_rng(0)
    out, target = rng.normal(size=(2, 3, 4, 4, 5)), rng.normal(size=(3, 4, 4, 5))
    expected = [((o - target[None]) ** 2).mean(axis=(1, 2, 3)).sum() for o in out]
    np.testing.assert_allclose(batch_heatmap_loss(out, np.stack([target] * 2)), expected)
    np.testing.assert_allclose(heatmap_loss(out[0], target), expected[0])


def test_training_fits_and_finetune_starts_from_init():
    data = make_synthetic(16, seed=2, image_size=16)
    cfg = TrainConfig(epochs=15, batch_size=8, learning_rate=3e-3, augment=False)
    model, losses = train_pose_model(data, np.arange(16), CFG, cfg, seed=0)
    assert losses[-4:].mean() < 0.5 * losses[:2].mean()  # memorises 16 images
    before = np.array(nnx.state(model, nnx.Param)["hourglass"]["head"][0]["kernel"][...])
    tuned, tl = train_pose_model(data, np.arange(8), CFG, TrainConfig(epochs=1, batch_size=8), 1,
                                 init=model)  # fmt: skip
    # the initial model is not modified (cloned), fine-tuning starts at its loss level
    after = np.asarray(nnx.state(model, nnx.Param)["hourglass"]["head"][0]["kernel"][...])
    np.testing.assert_array_equal(after, before)
    tuned_head = nnx.state(tuned, nnx.Param)["hourglass"]["head"][0]["kernel"][...]
    assert not np.array_equal(np.asarray(tuned_head), before)
    assert tl[0] < losses[0]
    res = evaluate(tuned, data)
    assert res["metric"] == "PCKh@0.5" and 0.0 <= res["mean"] <= 1.0 and len(res["per_joint"]) == 16


def test_bad_arguments():
    data = make_synthetic(8, seed=2, image_size=16)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=3)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="labelled"):
        train_pose_model(data, np.array([], int), CFG, TrainConfig(), 0)
    with pytest.raises(ValueError, match="input_size"):
        train_pose_model(data, np.arange(4), HourglassConfig(1, 8, 1, 16, 32), TrainConfig(), 0)


def test_step_compiles_once_per_architecture_whatever_the_epochs():
    """Epochs and the labelled-set size are not read by the traced steps: no recompilation."""
    data = make_synthetic(16, seed=4, image_size=16)
    cfg = HourglassConfig(n_stacks=1, channels=8, depth=1, n_joints=16, input_size=16)
    train_steps.clear_cache()
    model, _ = train_pose_model(data, np.arange(8), cfg, TrainConfig(epochs=1, batch_size=4), 0)
    assert train_steps._cache_size() == 1
    for epochs, n in ((2, 8), (3, 12), (5, 16)):
        tc = TrainConfig(epochs=epochs, batch_size=4)
        _, losses = train_pose_model(data, np.arange(n), cfg, tc, 1, init=model)
        assert losses.shape == (epochs * n // 4,) and np.all(np.isfinite(losses))
    assert train_steps._cache_size() == 1
    # settings the steps do read compile another program each
    for changed in ({"learning_rate": 5e-4}, {"augment": False}):
        train_pose_model(data, np.arange(8), cfg, TrainConfig(epochs=1, batch_size=4, **changed),
                         0)  # fmt: skip
    assert train_steps._cache_size() == 3


def _is_bias_before_batchnorm(path) -> bool:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    module = [n for n in names[:-2] if not n.isdigit()][-1]
    return names[-2:] == ["bias", "value"] and module != "head" and "bn" not in module


def _training_mode_gradients(model, data):
    """Gradients of a heatmap loss on 8 images, BatchNorm on batch statistics, as leaves in
    the order of ``nnx.state(model, nnx.Param)``."""
    model.train()
    images = jnp.asarray(data.images[:8], jnp.float32) / 255.0

    def loss(m):
        return jnp.mean(m.hourglass(images) ** 2)

    grads = nnx.grad(loss)(model)
    model.eval()
    return jax.tree.leaves(grads)


def test_steps_per_dispatch_and_bfloat16_training():
    """The number of steps per call does not change training; bfloat16 compute keeps float32
    parameters and trains to a similar loss."""
    data = make_synthetic(16, seed=5, image_size=16)
    base = TrainConfig(epochs=3, batch_size=4, steps_per_dispatch=8)
    a, la = train_pose_model(data, np.arange(12), CFG, base, 0)
    b, lb = train_pose_model(data, np.arange(12), CFG, replace(base, steps_per_dispatch=3), 0)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    # The two dispatch sizes compile different programs, so they round differently. Every conv
    # bias but the heads' feeds a BatchNorm, which in training mode removes any constant shift:
    # their gradient is zero in exact arithmetic, and Adam turns its rounding noise into ±lr steps.
    # Compare every other parameter; check that the excluded ones really have no gradient.
    flat_a = jax.tree_util.tree_flatten_with_path(nnx.state(a, nnx.Param))[0]
    flat_b = jax.tree.leaves(nnx.state(b, nnx.Param))
    null = [_is_bias_before_batchnorm(path) for path, _ in flat_a]
    assert 0 < sum(null) < len(null)
    for (_, x), y, skip in zip(flat_a, flat_b, null, strict=True):
        if not skip:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    grads = _training_mode_gradients(a, data)
    scale = max(float(jnp.abs(g).max()) for g in grads)
    for g, skip in zip(grads, null, strict=True):
        if skip:
            assert float(jnp.abs(g).max()) < 1e-5 * scale
    h, lh = train_pose_model(data, np.arange(12), CFG, replace(base, compute_dtype="bfloat16"), 0)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(h, nnx.Param)))
    assert h.hourglass.cfg.dtype is None  # returned computing in float32 again
    assert lh[-1] < 2 * la[-1] and not np.allclose(lh, la)
    with pytest.raises(ValueError, match="compute_dtype"):
        TrainConfig(compute_dtype="float16")
