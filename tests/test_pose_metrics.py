"""PCK / PCKh / PCK@0.2 and heatmap decoding against hand-computed cases."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egltheory.pose.metrics import (
    decode_heatmaps,
    head_normaliser,
    heatmap_to_image_coords,
    image_to_heatmap_coords,
    pck,
    pck_curve,
    pck_lsp,
    pckh,
    pckh_per_image,
    torso_diameter,
)
from egltheory.pose.skeletons import MPII_JOINTS


def test_pck_hand_computed():
    gt = np.zeros((3, 2, 2))
    pred = np.array([[[0.5, 0.0], [3.0, 4.0]], [[0.0, 2.0], [0.0, 0.1]], [[9.0, 9.0], [0.0, 0.0]]])
    visible = np.array([[True, True], [True, True], [False, True]])
    norm = np.array([1.0, 2.0, 1.0])
    # joint 0: errors/norm = 0.5, 1.0, (invisible) -> 2 of 2 within 1.0, 1 of 2 within 0.5
    # joint 1: errors/norm = 5.0, 0.05, 0.0 -> within 1.0: 2 of 3
    np.testing.assert_allclose(pck(pred, gt, visible, norm, 1.0), [1.0, 2 / 3])
    np.testing.assert_allclose(pck(pred, gt, visible, norm, 0.5), [0.5, 2 / 3])
    np.testing.assert_allclose(
        pck_curve(pred, gt, visible, norm, [0.0, 10.0]), [[0, 1 / 3], [1, 1]]
    )


def test_pck_joint_without_visible_instances_is_nan():
    out = pck(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.array([[True, False]] * 2), [1, 1], 0.5)
    assert out[0] == 1.0 and np.isnan(out[1])


def test_pckh_official_vs_authors_and_mean_excludes_pelvis_thorax():
    n = 1
    gt = np.zeros((n, 16, 2))
    pred = np.zeros((n, 16, 2))
    # head box 3 × 4 -> diagonal 5; official normaliser 0.6 · 5 = 3, authors' 5.
    boxes = np.array([[0.0, 0.0, 3.0, 4.0]])
    np.testing.assert_allclose(head_normaliser(boxes), [3.0])
    np.testing.assert_allclose(head_normaliser(boxes, "authors"), [5.0])
    pred[0, 0] = (2.0, 0.0)  # error 2: 2/3 > 0.5 (official miss), 2/5 ≤ 0.5 (authors hit)
    pred[0, MPII_JOINTS.index("pelvis")] = (100.0, 0.0)  # pelvis miss is excluded from the mean
    visible = np.ones((n, 16), bool)
    per_joint, mean = pckh(pred, gt, visible, boxes)
    assert per_joint[0] == 0.0 and per_joint[MPII_JOINTS.index("pelvis")] == 0.0
    assert mean == pytest.approx(13 / 14)
    per_joint_a, mean_a = pckh(pred, gt, visible, boxes, convention="authors")
    assert per_joint_a[0] == 1.0 and mean_a == pytest.approx(1.0)


def test_pckh_per_image_hand_computed_and_consistent_with_pckh():
    gt = np.zeros((3, 16, 2))
    pred = np.zeros((3, 16, 2))
    boxes = np.array([[0.0, 0.0, 3.0, 4.0], [0.0, 0.0, 6.0, 8.0], [0.0, 0.0, 3.0, 4.0]])
    visible = np.ones((3, 16), bool)
    pelvis, thorax = MPII_JOINTS.index("pelvis"), MPII_JOINTS.index("thorax")
    # image 0: normaliser 3 (threshold 1.5); joints 0, 1 miss (errors 2, 1.6), joint 2 hits (1.5)
    pred[0, 0], pred[0, 1], pred[0, 2] = (2.0, 0.0), (0.0, 1.6), (0.9, 1.2)
    pred[0, pelvis] = (50.0, 0.0)  # not evaluated
    # image 1: normaliser 6 (threshold 3); 3 evaluated joints invisible, one visible miss (error 4)
    visible[1, 3:6] = False
    pred[1, 3] = (100.0, 0.0)  # invisible: ignored
    pred[1, 8] = (0.0, 4.0)
    # image 2: only pelvis and thorax visible -> no evaluated joint -> NaN
    visible[2] = False
    visible[2, [pelvis, thorax]] = True
    per_image = pckh_per_image(pred, gt, visible, boxes)
    np.testing.assert_allclose(per_image[:2], [12 / 14, 10 / 11])
    assert np.isnan(per_image[2])
    # The authors' convention (full diagonal 5 -> threshold 2.5) turns image 0's misses into hits.
    np.testing.assert_allclose(pckh_per_image(pred, gt, visible, boxes, convention="authors")[0], 1)
    np.testing.assert_allclose(pckh_per_image(pred, gt, visible, boxes, threshold=0.1)[0], 11 / 14)
    # pckh's mean is the per-image values weighted by their evaluated-joint counts.
    rng = np.random.default_rng(0)
    gt, pred = rng.uniform(0, 20, (9, 16, 2)), rng.uniform(0, 20, (9, 16, 2))
    visible = rng.random((9, 16)) < 0.7
    boxes = np.column_stack([np.zeros((9, 2)), rng.uniform(4, 12, (9, 2))])
    per_image = pckh_per_image(pred, gt, visible, boxes)
    counts = np.delete(visible, [pelvis, thorax], axis=1).sum(1)
    ok = counts > 0
    assert np.all(np.isnan(per_image) == ~ok)
    _, mean = pckh(pred, gt, visible, boxes)
    np.testing.assert_allclose(np.sum(per_image[ok] * counts[ok]) / counts.sum(), mean)
    for bad in (np.nan, 0.0, "0.5"):
        with pytest.raises(ValueError, match="threshold"):
            pckh_per_image(pred, gt, visible, boxes, threshold=bad)
    with pytest.raises(ValueError, match="MPII"):
        pckh_per_image(pred[:, :14], gt[:, :14], visible[:, :14], boxes)


def test_pck_lsp_torso_diameter():
    gt = np.zeros((1, 14, 2))
    gt[0, 9] = (6.0, 0.0)  # left shoulder
    gt[0, 2] = (0.0, 8.0)  # right hip -> torso diameter 10, threshold 0.2 · 10 = 2
    np.testing.assert_allclose(torso_diameter(gt), [10.0])
    pred = gt.copy()
    pred[0, 0] += (0.0, 2.0)  # exactly at the threshold: counted
    pred[0, 1] += (2.1, 0.0)  # just beyond
    per_joint, mean = pck_lsp(pred, gt, np.ones((1, 14), bool))
    assert per_joint[0] == 1.0 and per_joint[1] == 0.0 and mean == pytest.approx(13 / 14)


def test_decode_quarter_offset_toward_higher_neighbour():
    hm = np.zeros((1, 5, 5, 2))
    hm[0, 2, 2, 0], hm[0, 2, 3, 0], hm[0, 1, 2, 0] = 1.0, 0.5, 0.2  # right and up neighbours
    hm[0, 0, 4, 1] = 1.0  # border peak: no refinement
    coords = decode_heatmaps(hm, stride=1)
    np.testing.assert_allclose(coords[0, 0], [2.25, 1.75])
    np.testing.assert_allclose(coords[0, 1], [4.0, 0.0])
    np.testing.assert_allclose(decode_heatmaps(hm, stride=1, refine=False)[0, 0], [2.0, 2.0])
    # stride 4: heatmap pixel u has its centre at input 4u + 1.5
    np.testing.assert_allclose(decode_heatmaps(hm, stride=4, refine=False)[0, 0], [9.5, 9.5])


@given(st.floats(-50, 50), st.integers(1, 8))
def test_heatmap_coordinate_maps_are_inverse(x, stride):
    assert image_to_heatmap_coords(heatmap_to_image_coords(x, stride), stride) == pytest.approx(x)


@given(st.floats(0.1, 10.0), st.integers(0, 2**16))
def test_pck_scale_invariant(scale, seed):
    rng = np.random.default_rng(seed)
    gt, pred = rng.normal(size=(6, 4, 2)), rng.normal(size=(6, 4, 2))
    vis = rng.random((6, 4)) < 0.8
    norm = rng.uniform(0.5, 2.0, 6)
    np.testing.assert_array_equal(
        pck(pred, gt, vis, norm, 0.7), pck(scale * pred, scale * gt, vis, scale * norm, 0.7)
    )


def test_bad_inputs():
    z = np.zeros((2, 3, 2))
    vis = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="pred"):
        pck(np.zeros((2, 4, 2)), z, vis, [1, 1], 0.5)
    with pytest.raises(ValueError, match="visible"):
        pck(z, z, np.ones((2, 3)), [1, 1], 0.5)
    with pytest.raises(ValueError, match="normalisers"):
        pck(z, z, vis, [1, 0], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        pck(np.full((2, 3, 2), np.nan), z, vis, [1, 1], 0.5)
    with pytest.raises(ValueError, match="convention"):
        head_normaliser(np.zeros((1, 4)), "other")
    with pytest.raises(ValueError, match="MPII"):
        pckh(z, z, vis, np.ones((2, 4)))


# ---------------------------------------------------------------------------------------------
# Inputs that used to give a plausible number are refused (or give NaN where documented)
# ---------------------------------------------------------------------------------------------

Z = np.zeros((2, 3, 2))
VIS = np.ones((2, 3), bool)


@pytest.mark.parametrize("threshold", [np.nan, np.inf, -0.5, 0.0, [0.5, 0.6], "0.5"])
def test_pck_threshold_must_be_a_finite_scalar_above_zero(threshold):
    # before: NaN compared False everywhere -> PCK 0.0 for every joint
    with pytest.raises(ValueError, match=r"`threshold` must be a finite scalar > 0, got"):
        pck(Z + 1.0, Z, VIS, [1, 1], threshold)


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ([0.5, np.nan], r"`thresholds` must be finite and ≥ 0, got \[0.5, nan\]"),
        ([-1.0], r"`thresholds` must be finite and ≥ 0"),
        ([], r"`thresholds` must hold at least one threshold \[T\], got shape \(0,\)"),
        ([[0.5, 0.6]], r"`thresholds` must be a scalar or a 1-D grid \[T\], got shape \(1, 2\)"),
    ],
)
def test_pck_curve_thresholds_are_validated(thresholds, message):
    with pytest.raises(ValueError, match=message):
        pck_curve(Z, Z, VIS, [1, 1], thresholds)


def test_empty_evaluation_sets_are_refused():
    # before: pckh on N = 0 returned (all-NaN, 0.0), pck_lsp too
    empty = np.zeros((0, 16, 2))
    with pytest.raises(ValueError, match=r"`gt` must hold at least one instance \(N ≥ 1\), got"):
        pckh(empty, empty, np.zeros((0, 16), bool), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"`gt` must hold at least one instance"):
        pck_lsp(np.zeros((0, 14, 2)), np.zeros((0, 14, 2)), np.zeros((0, 14), bool))
    with pytest.raises(ValueError, match=r"`gt` must hold at least one instance"):
        pck(np.zeros((0, 3, 2)), np.zeros((0, 3, 2)), np.zeros((0, 3), bool), [], 0.5)


def test_mean_over_no_visible_instance_is_nan_not_zero():
    gt = np.zeros((1, 16, 2))
    boxes = np.array([[0.0, 0.0, 3.0, 4.0]])
    per_joint, mean = pckh(gt, gt, np.zeros((1, 16), bool), boxes)
    assert np.all(np.isnan(per_joint)) and np.isnan(mean)  # before: mean 0.0
    lsp = np.zeros((1, 14, 2))
    lsp[0, 9] = (6.0, 8.0)  # torso 10
    per_joint, mean = pck_lsp(lsp, lsp, np.zeros((1, 14), bool))
    assert np.all(np.isnan(per_joint)) and np.isnan(mean)


def test_pck_lsp_refuses_a_degenerate_torso_and_joints_in_another_order():
    gt = np.zeros((2, 14, 2))
    gt[:, 9] = (6.0, 8.0)  # left shoulder; right hip at the origin: torso 10
    gt[1, 9] = gt[1, 2]  # instance 1: shoulder on the hip, torso 0
    pred = gt + 0.001
    # before: the torso was clamped to 1e-6, so every joint of instance 1 was a silent miss
    with pytest.raises(
        ValueError,
        match=r"torso diameter .* is 0 or not finite for 1 instance"
        r"\(s\) with visible joints \(first: 1\)",
    ):
        pck_lsp(pred, gt, np.ones((2, 14), bool))
    # an instance without visible joints does not need a torso
    _, mean = pck_lsp(pred, gt, np.array([[True] * 14, [False] * 14]))
    assert mean == 1.0
    # MPII-order joints (16) with the default LSP names used to pick head_top as the shoulder
    with pytest.raises(
        ValueError,
        match=r"`gt` must have shape \[N, 14, 2\] \(one column per "
        r"joint name\), got \(1, 16, 2\)",
    ):
        pck_lsp(np.zeros((1, 16, 2)), np.ones((1, 16, 2)), np.ones((1, 16), bool))
    with pytest.raises(ValueError, match=r"`gt` must have shape \[N, 14, 2\]"):
        torso_diameter(np.zeros((3, 14)))


def test_decode_refuses_nan_and_inf_heatmaps_naming_them():
    hm = np.zeros((2, 4, 4, 3))
    hm[1, 2, 2, 0] = np.nan  # before: NaN heatmaps decoded to (0, 0) silently
    with pytest.raises(
        ValueError,
        match=r"`heatmaps` must be finite, found 1 NaN and 0 inf "
        r"values \(1 of 6 heatmaps\)",
    ):
        decode_heatmaps(hm)
    hm[1, 2, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"`heatmaps` must be finite, found 0 NaN and 1 inf"):
        decode_heatmaps(hm)
    with pytest.raises(ValueError, match=r"`heatmaps` must have H ≥ 1 and W ≥ 1"):
        decode_heatmaps(np.zeros((1, 0, 4, 2)))


@pytest.mark.parametrize("stride", [0, -4, 2.5, True])
def test_stride_must_be_a_positive_integer(stride):
    # before: stride 0 mapped every joint to (−0.5, −0.5), and the inverse divided by zero
    hm = np.random.default_rng(0).random((1, 4, 4, 2))
    for call in (
        lambda: decode_heatmaps(hm, stride=stride),
        lambda: heatmap_to_image_coords(np.ones(2), stride),
        lambda: image_to_heatmap_coords(np.ones(2), stride),
    ):
        with pytest.raises(ValueError, match=r"`stride` must be an integer ≥ 1"):
            call()


def test_head_boxes_must_be_finite():
    with pytest.raises(ValueError, match=r"`head_boxes` must be finite, found 1 NaN"):
        head_normaliser(np.array([[0.0, 0.0, np.nan, 1.0]]))
