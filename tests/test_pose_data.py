"""Synthetic renderer, augmentation, heatmaps, crops and the MPII / LSP / LSPET loaders."""

import numpy as np
import pytest
from scipy.io import savemat

from egltheory.files import DamagedFileError
from egltheory.pose.datasets import PoseDataset, load_lsp, load_mpii, load_npz, save_npz
from egltheory.pose.metrics import decode_heatmaps
from egltheory.pose.skeletons import MPII_FLIP_PAIRS
from egltheory.pose.synthetic import load_synthetic, make_synthetic
from egltheory.pose.transforms import augment, crop_person, gaussian_heatmaps


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(120, seed=3, image_size=32, athletic_fraction=0.5)


def test_synthetic_is_deterministic_and_well_formed(synth):
    again = make_synthetic(120, seed=3, image_size=32, athletic_fraction=0.5)
    np.testing.assert_array_equal(synth.images, again.images)
    np.testing.assert_array_equal(synth.joints, again.joints)
    other = make_synthetic(120, seed=4, image_size=32, athletic_fraction=0.5)
    assert not np.array_equal(synth.images, other.images)
    assert synth.images.shape == (120, 32, 32, 3) and synth.joints.shape == (120, 16, 2)
    assert synth.visible.mean() > 0.9
    assert set(np.unique(synth.domains)) == {0, 1}
    # near-duplicate clips exist: some groups have several frames
    assert np.bincount(synth.groups).max() >= 2
    assert np.all(synth.head_boxes[:, 2] > synth.head_boxes[:, 0])
    assert np.all(synth.normalisers() > 0)


def test_synthetic_frames_of_a_clip_are_near_duplicates(synth):
    counts = np.bincount(synth.groups)
    g = int(np.argmax(counts))
    idx = np.flatnonzero(synth.groups == g)
    within = np.abs(synth.images[idx[0]].astype(float) - synth.images[idx[1]]).mean()
    across = np.abs(synth.images[idx[0]].astype(float) - synth.images[synth.groups != g]).mean()
    assert within < 0.5 * across


def test_max_clip_length_one_gives_singleton_clips():
    data = make_synthetic(20, seed=5, image_size=32, max_clip_length=1)
    np.testing.assert_array_equal(data.groups, np.arange(20))


def test_athletic_domain_has_wider_poses():
    ev = make_synthetic(300, seed=1, image_size=32, athletic_fraction=0.0)
    at = make_synthetic(300, seed=1, image_size=32, athletic_fraction=1.0)

    def wrist_height(d):  # wrists above the thorax (image y smaller) count as raised arms
        return np.mean(d.joints[:, [10, 15], 1] < d.joints[:, [7], 1])

    assert wrist_height(at) > wrist_height(ev) + 0.1


def test_synthetic_cache_roundtrip(tmp_path):
    a = load_synthetic(20, 0, 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = load_synthetic(20, 0, 32, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.occluded, b.occluded)


def test_heatmaps_peak_at_joints_and_decode_back():
    joints = np.array([[[5.5, 9.5], [13.5, 1.5]]])  # centres of heatmap pixels (1, 2) and (3, 0)
    hm = np.asarray(gaussian_heatmaps(joints, np.array([[True, False]]), 8, 4, 1.0))
    assert hm.shape == (1, 8, 8, 2)
    assert hm[0, 2, 1, 0] == pytest.approx(1.0) and np.all(hm[..., 1] == 0)
    np.testing.assert_allclose(decode_heatmaps(hm[..., :1], stride=4), joints[:, :1])


def _dot_images(joints, size):
    """One white 3×3 blob per joint position (rounded) on black."""
    img = np.zeros((len(joints), size, size, 3), np.uint8)
    for n, js in enumerate(joints):
        for x, y in np.round(js).astype(int):
            img[n, y - 1 : y + 2, x - 1 : x + 2] = 255
    return img


def test_augment_moves_pixels_and_joints_together():
    rng = np.random.default_rng(0)
    size = 32
    joints = np.zeros((6, 16, 2))
    joints[:, :, :] = 15.5
    joints[:, 0] = (10.0, 12.0)  # right ankle: a single marked joint
    vis = np.zeros((6, 16), bool)
    vis[:, 0] = True
    images = _dot_images(joints[:, :1], size)
    out, new_j, new_v = augment(rng, images, joints, vis, MPII_FLIP_PAIRS, 30.0, (0.8, 1.2), 0.5)
    for n in range(6):
        j = 5 if new_v[n, 5] else 0  # a flip moves the right ankle's label to the left ankle
        assert new_v[n, j] and new_v[n].sum() == 1
        y, x = np.unravel_index(np.argmax(out[n, ..., 0]), out.shape[1:3])
        assert np.hypot(x - new_j[n, j, 0], y - new_j[n, j, 1]) <= 1.5


def test_crop_person_maps_joints():
    image = np.zeros((100, 80, 3), np.uint8)
    image[40:43, 30:33] = 255  # blob centred at (31, 41)
    crop, cj, k = crop_person(image, np.array([[31.0, 41.0]]), (40.0, 50.0), 40.0, 20)
    assert k == pytest.approx(0.5)
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert np.hypot(x - cj[0, 0], y - cj[0, 1]) <= 1.0
    with pytest.raises(ValueError, match="box_size"):
        crop_person(image, cj, (0, 0), 0.0, 20)


def _write_jpg(path, size=(60, 40)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def _mpii_fixture(root):
    """A 3-image mpii_human_pose_v1_u12_1.mat in the official struct layout."""
    point_dt = [("id", "O"), ("x", "O"), ("y", "O"), ("is_visible", "O")]
    rect_dt = [("x1", "O"), ("y1", "O"), ("x2", "O"), ("y2", "O"), ("annopoints", "O"),
               ("scale", "O"), ("objpos", "O")]  # fmt: skip
    ann = np.zeros((1, 3), dtype=[("image", "O"), ("annorect", "O")])
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        pts = np.zeros((1, 16), dtype=point_dt)
        for j in range(16):
            pts[0, j] = (j, 21.0 + j, 11.0 + j, 1 if j != 3 else 0)
        rect = np.zeros((1, 1), dtype=rect_dt)
        rect[0, 0] = (11.0, 6.0, 17.0, 14.0, {"point": pts}, 0.2, {"x": 30.0, "y": 20.0})
        ann[0, i] = ({"name": name}, rect)
        _write_jpg(root / "images" / name)
    single = np.empty((3, 1), dtype=object)
    single[0, 0], single[1, 0], single[2, 0] = np.array([[1]]), np.array([[1]]), np.array([[1]])
    release = {"annolist": ann, "img_train": np.array([[1, 1, 0]]), "single_person": single}
    savemat(root / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": release})
    (root / "valid_images.txt").write_text("b.jpg\n")


def test_load_mpii_fixture(tmp_path):
    _mpii_fixture(tmp_path)
    train, valid = load_mpii(tmp_path, image_size=32)
    assert len(train) == 1 and len(valid) == 1  # c.jpg is a test image (img_train = 0)
    assert train.metric == "pckh" and train.joints.shape == (1, 16, 2)
    # crop box side 200 · 0.2 · 1.25 = 50 px -> scale 32/50; centre (29, 19 + 3) (0-based)
    k = 32 / 50
    x0, y0 = 29.0 - 25.0, 22.0 - 25.0
    expected_j0 = ((20.0 - x0) * k - 0.5, (10.0 - y0) * k - 0.5)  # box edge -> -0.5
    np.testing.assert_allclose(train.joints[0, 0], expected_j0, atol=1e-4)
    diag = np.hypot(6.0, 8.0) * k
    np.testing.assert_allclose(train.normalisers(), [0.6 * diag], rtol=1e-5)
    assert train.occluded[0, 3] and not train.occluded[0, 2]
    with pytest.raises(ValueError, match="valid_list"):
        load_mpii(tmp_path, valid_list=tmp_path / "missing.txt")


def test_load_lsp_and_lspet_fixture(tmp_path):
    n = 4
    rng = np.random.default_rng(0)
    xy = rng.uniform(10, 30, (2, 14, n))
    lsp = np.concatenate([xy, np.zeros((1, 14, n))], axis=0)  # 3 × 14 × N
    savemat(tmp_path / "joints.mat", {"joints": lsp})
    for i in range(n):
        _write_jpg(tmp_path / "images" / f"im{i + 1:04d}.jpg")
    et_dir = tmp_path / "lspet"
    et = np.concatenate([rng.uniform(10, 30, (14, 2, 2)), np.ones((14, 1, 2))], axis=1)
    et[5, 2, 0] = 0  # an unannotated joint
    savemat(et_dir.mkdir() or et_dir / "joints.mat", {"joints": et})  # 14 × 3 × N
    for i in range(2):
        _write_jpg(et_dir / "images" / f"im{i + 1:05d}.jpg")
    train, test = load_lsp(tmp_path, image_size=32, lspet_dir=et_dir)
    assert len(train) == 2 + 2 and len(test) == 2
    assert train.metric == "pck" and train.joints.shape[1:] == (14, 2)
    np.testing.assert_array_equal(train.domains, [0, 0, 1, 1])
    assert not train.visible[2, 5] and train.visible[3, 5]
    assert np.all(test.visible)
    # joints are inside the square crop around their bounding box
    assert np.all((test.joints >= 0) & (test.joints <= 31))
    with pytest.raises(ValueError, match=r"joints\.mat"):
        load_lsp(tmp_path / "nowhere")


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must"):
        make_synthetic(0, 0)
    with pytest.raises(ValueError, match="athletic_fraction"):
        make_synthetic(5, 0, athletic_fraction=2.0)
    with pytest.raises(ValueError, match="images must"):
        PoseDataset(
            images=np.zeros((2, 4, 4, 3)), joints=np.zeros((2, 16, 2)),
            visible=np.ones((2, 16), bool), head_boxes=np.zeros((2, 4)), groups=np.zeros(2),
            domains=np.zeros(2), occluded=np.zeros((2, 16), bool),
        )  # fmt: skip


def test_damaged_cache_is_named_and_re_rendered(tmp_path):
    """A truncated .npz names the file; load_synthetic re-renders it (with a warning)."""
    first = load_synthetic(10, 7, 16, 0.3, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DamagedFileError, match=path.name):
        load_npz(path)
    with pytest.warns(RuntimeWarning, match="re-rendering"):
        again = load_synthetic(10, 7, 16, 0.3, tmp_path)
    np.testing.assert_array_equal(again.images, first.images)
    save_npz(tmp_path / "x.npz", first)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


@pytest.mark.parametrize("size", [16, 33])
def test_on_device_augmentation_matches_the_numpy_reference(synth, size):
    """Same parameters → the same images (float32 vs float64 geometry), joints and visibility."""
    import jax
    import jax.numpy as jnp

    from egltheory.pose.transforms import (
        augment_on_device,
        augment_with,
        augmentation_parameters,
        flip_permutation,
    )

    data = make_synthetic(12, seed=9, image_size=size)
    angle, scale, flip = (np.asarray(a) for a in augmentation_parameters(
        jax.random.key(3), 12, 30.0, (0.75, 1.25), 0.5))  # fmt: skip
    assert flip.any() and not flip.all()
    want = augment_with(data.images, data.joints, data.visible, MPII_FLIP_PAIRS, angle, scale, flip)
    perm = flip_permutation(16, MPII_FLIP_PAIRS)
    got = jax.jit(augment_on_device, static_argnums=3)(
        jnp.asarray(data.images), jnp.asarray(data.joints), jnp.asarray(data.visible), perm,
        jnp.asarray(angle), jnp.asarray(scale), jnp.asarray(flip),
    )  # fmt: skip
    # bilinear weights differ by float32 rounding of the source coordinates: ≤ 1e-3 of range
    np.testing.assert_allclose(got[0], want[0], atol=2e-3)
    assert np.mean(np.abs(np.asarray(got[0]) - want[0])) < 1e-4
    np.testing.assert_allclose(got[1], want[1], atol=1e-3)
    # visibility may differ only for joints within float32 rounding of the crop border
    j = want[1]
    border = np.any((np.abs(j) < 1e-3) | (np.abs(j - (size - 1)) < 1e-3), axis=-1)
    differ = np.asarray(got[2]) != want[2]
    assert not np.any(differ & ~border)
