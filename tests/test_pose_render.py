"""The synthetic renderer: bit-identical whatever the chunking, the same scene as the previous one.

``tests/synthetic_reference.py`` keeps the previous renderer (full-image float64 NumPy,
scipy blur) and the previous ``make_synthetic`` verbatim around it; the new one
(``synthetic._render_range``) draws per image in float32 inside bounding boxes. Speed is measured
in ``benchmarks/bench_render.py``, not here.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats

from egltheory.pose import synthetic as syn
from egltheory.pose.synthetic import make_synthetic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_reference as ref

FIELDS = ("images", "joints", "visible", "head_boxes", "groups", "domains", "occluded")
# Clean images (before blur and noise) of the new float32 renderer vs the float64 reference.
# float32 keeps 24 bits: pixel coordinates are taken relative to the limb's first joint (|x| <
# S <= 97 px, so distance errors are ~1e-5 px at worst, and alpha has slope 1 per px), the
# background terms are |.| <= 1 (errors ~1e-7); observed max 2.5e-6 at 256 px. A real change
# is far larger: moving every joint by 0.05 px changes the reference by ~0.1 (checked below).
CLEAN_TOL = 2e-5


def _same(a, b):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_images_do_not_depend_on_chunk_size_or_workers():
    """Every image has its own noise generator and is drawn alone: bit-identical whatever
    the split into chunks and threads (an odd size, chunk sizes that do not divide n)."""
    args = (41, 8, 35, 0.5)
    base = make_synthetic(*args, chunk_size=256, workers=1)
    for chunk_size, workers in ((7, 3), (1, 2), (5, 8), (41, 4)):
        _same(make_synthetic(*args, chunk_size=chunk_size, workers=workers), base)
    assert not np.array_equal(make_synthetic(41, 9, 35, 0.5).images, base.images)
    with pytest.raises(ValueError, match="workers"):
        make_synthetic(*args, workers=0)


@pytest.mark.parametrize(("size", "seed"), [(20, 0), (48, 1), (97, 2)])
def test_renderer_draws_the_reference_scene(size, seed):
    scene = syn._sample_scene(60, seed, size, 0.5, 12)
    look = scene["look"]
    # the scenes exercise occluders, both blur cases, both domains and several clips
    assert look["occ_on"].any() and (look["blur"] > 0).any() and (look["blur"] == 0).any()
    assert 0 < scene["athletic"].mean() < 1 and len(np.unique(scene["groups"])) < 60
    new = np.stack(
        [syn._draw(i, scene["params"], look, size).reshape(size, size, 3) for i in range(60)]
    )
    old, occluded = ref.render_reference(scene["joints"], scene["torso_px"], look, size)
    assert np.abs(new - old).max() <= CLEAN_TOL
    np.testing.assert_array_equal(syn._occlusion(scene["joints"], look), occluded)
    # the tolerance can tell a scene moved by 1/20 px
    moved, _ = ref.render_reference(scene["joints"] + 0.05, scene["torso_px"], look, size)
    assert np.abs(moved - old).max() > 100 * CLEAN_TOL


@pytest.mark.parametrize(("size", "sigma"), [(16, 0.6), (33, 1.2), (40, 2.5), (16, 4.2)])
def test_blur_matches_scipy(size, sigma):
    """Separable shifted sums = scipy.ndimage.gaussian_filter (kernel, reflect edges; 4.2:
    radius 17 > size, reflected more than once) up to float32 rounding."""
    img = np.random.default_rng(0).random((size, size, 3)).astype(np.float32)
    want = ndimage.gaussian_filter(img.astype(np.float64), sigma=(sigma, sigma, 0))
    got = img.reshape(size, 3 * size).copy()
    syn._blur(got, sigma, np.empty_like(got))
    assert np.abs(got.reshape(size, size, 3) - want).max() < 1e-6
    assert np.abs(img - want).max() > 1e-2  # the blur did something


def test_images_match_the_previous_pipeline_given_the_same_noise():
    """uint8 images = previous renderer + scipy blur + the same pixel noise, rounded: the float
    values differ by < 1e-5 (x 255 < 3e-3 levels), so a value can round differently only
    within 3e-3 of a rounding boundary (expected fraction < 6e-3; observed ~1e-5)."""
    n, size = 40, 40
    data = make_synthetic(n, 5, size, 0.5)
    scene = syn._sample_scene(n, 5, size, 0.5, 12)
    want, occluded = ref.images_reference(scene, size, chunk_size=16)
    diff = np.abs(data.images.astype(int) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    inside = data.visible
    np.testing.assert_array_equal(data.occluded, occluded & inside)


@pytest.mark.parametrize(
    ("n", "seed", "size", "athletic"), [(120, 3, 32, 0.5), (50, 9, 64, 0.3), (17, 1, 33, 1.0)]
)
def test_annotations_equal_the_previous_make_synthetic(n, seed, size, athletic):
    """Same scene draws in the same order: joints, clips, domains, visibility, head boxes and
    occluded flags are the previous make_synthetic's exactly; the images share the scene and
    differ by the pixel-noise draws only (variance of the difference = 2 std² per image)."""
    new = make_synthetic(n, seed, size, athletic)
    old = ref.make_synthetic_reference(n, seed, size, athletic)
    for name in FIELDS[1:]:
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    std = 255 * syn._sample_scene(n, seed, size, athletic, 12)["look"]["noise"]
    diff = new.images.astype(float) - old.images
    ratio = diff.reshape(n, -1).var(axis=1) / (2 * std**2 + 2 / 12)  # + rounding, both sides
    assert 0.9 < ratio.mean() < 1.05  # clipping at 0 / 255 lowers it a little


def test_scene_statistics_in_distribution():
    """Domains, clips and occluded flags over a larger pool: new = previous make_synthetic, and
    the clip / domain structure is as documented."""
    n, size, fraction = 3000, 16, 0.3
    new = make_synthetic(n, 11, size, fraction)
    old = ref.make_synthetic_reference(n, 11, size, fraction)
    for name in ("groups", "domains", "occluded", "visible"):
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    lengths = np.bincount(new.groups)
    assert np.all(np.diff(new.groups) >= 0) and lengths.min() >= 1 and lengths.max() <= 12
    clip_domain = new.domains[np.r_[0, np.flatnonzero(np.diff(new.groups)) + 1]]
    se = np.sqrt(fraction * (1 - fraction) / len(clip_domain))
    assert abs(clip_domain.mean() - fraction) < 4 * se
    assert abs(np.mean(lengths[:-1] == 1) - 0.5) < 0.1  # half the clips are singletons
    for domain in (0, 1):  # occluders in both domains, never on every joint
        rate = new.occluded[new.domains == domain].mean()
        assert 0.005 < rate < 0.5


def test_pixel_noise_is_standard_normal():
    """Box–Muller from float32 uniforms: N(0, std²), the cos and sin halves independent."""
    flat = np.zeros(200_001, np.float32)  # odd: the last sin value is dropped
    m = -(-len(flat) // 2)
    rng = np.random.default_rng(0)
    syn._add_noise(flat, 0.5, rng, np.empty(2 * m, np.float32), np.empty(m, np.float32))
    z = flat / 0.5
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 4 / np.sqrt(len(z)) and abs(z.var() - 1) < 4 * np.sqrt(2 / len(z))
    assert abs(np.corrcoef(z[: m - 1], z[m:])[0, 1]) < 4 / np.sqrt(m)
    assert np.abs(z).max() < 5.8  # sqrt(-2 log 2^-24): float32 uniforms bound the tail
