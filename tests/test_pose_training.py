"""Pose training: the loss, that training fits, fine-tuning, save/load, argument checks."""

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
    train_step,
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
    """Epochs (and augmentation) are not read by the traced step: no recompilation."""
    data = make_synthetic(16, seed=4, image_size=16)
    cfg = HourglassConfig(n_stacks=1, channels=8, depth=1, n_joints=16, input_size=16)
    train_step.clear_cache()
    model, _ = train_pose_model(data, np.arange(8), cfg, TrainConfig(epochs=1, batch_size=4), 0)
    assert train_step._cache_size() == 1
    for epochs, augment in ((2, True), (3, False)):
        train_pose_model(data, np.arange(8), cfg,
                         TrainConfig(epochs=epochs, batch_size=4, augment=augment), 1,
                         init=model)  # fmt: skip
    assert train_step._cache_size() == 1
    # a setting the step does read compiles a second program
    train_pose_model(data, np.arange(8), cfg, TrainConfig(epochs=1, batch_size=4,
                                                          learning_rate=5e-4), 0)  # fmt: skip
    assert train_step._cache_size() == 2
