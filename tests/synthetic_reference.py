"""The previous synthetic renderer (full-image float64 NumPy), kept as a reference (not a test
module; not part of the package, which does not ship it).

``make_synthetic`` used to render whole chunks of images at once: every limb, the head disk and
the occluders over every pixel of every image in float64, then ``scipy.ndimage`` blur per σ and
pixel noise. ``egltheory.pose.synthetic._render_range`` now draws the same scene per image in
float32, inside each shape's bounding box; ``tests/test_pose_render.py`` compares the two and
``benchmarks/bench_render.py`` times both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from egltheory.pose.datasets import PoseDataset
from egltheory.pose.synthetic import (
    _HEAD,
    _LEFT,
    _NECK,
    _SEGMENTS,
    _add_noise,
    _appearance,
    _noise_generator,
    _sample_pose_angles,
    _skeleton_from_angles,
)


def smooth_noise_reference(grid: np.ndarray, size: int) -> np.ndarray:
    """[n, size, size]: the grids [n, c + 1, c + 1] bilinearly upsampled (previous code)."""
    cells = grid.shape[1] - 1
    t = np.linspace(0, cells, size)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    rows = grid[:, i0] * (1 - f)[None, :, None] + grid[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def render_reference(
    joints: np.ndarray, torso_px: np.ndarray, look: dict, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The previous vectorised renderer (before blur and noise), unchanged but for the noise
    grid's upsampling, which ``_smooth_noise`` now leaves to the renderer.

    joints: [n, 16, 2] px; torso_px: [n]; look: per-image appearance.
    Returns (images float64 [n, S, S, 3] in [0, 1], occluded [n, 16] bool).
    """
    n = len(joints)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Background: two sinusoid gratings and smooth noise between two colours.
    tex = np.zeros((n, size, size))
    for g in range(2):
        th, fr, ph = look["bg_theta"][:, g], look["bg_freq"][:, g], look["bg_phase"][:, g]
        proj = xx[None] * np.cos(th)[:, None, None] + yy[None] * np.sin(th)[:, None, None]
        tex += 0.25 * (1 + np.sin(2 * np.pi * fr[:, None, None] * proj / size + ph[:, None, None]))
    tex = 0.6 * tex + 0.4 * smooth_noise_reference(look["bg_noise"], size)
    img = look["bg0"][:, None, None] + (look["bg1"] - look["bg0"])[:, None, None] * tex[..., None]

    def paint(alpha, colour):
        return img * (1 - alpha[..., None]) + colour[:, None, None, :] * alpha[..., None]

    for a, b, width, slot in _SEGMENTS:
        pa, pb = joints[:, a], joints[:, b]
        d = pb - pa
        len2 = np.maximum(np.sum(d * d, axis=-1), 1e-9)
        t = (
            (xx[None] - pa[:, 0, None, None]) * d[:, 0, None, None]
            + (yy[None] - pa[:, 1, None, None]) * d[:, 1, None, None]
        ) / len2[:, None, None]
        t = np.clip(t, 0.0, 1.0)
        dx = xx[None] - (pa[:, 0, None, None] + t * d[:, 0, None, None])
        dy = yy[None] - (pa[:, 1, None, None] + t * d[:, 1, None, None])
        half = 0.5 * width * torso_px * look["width_scale"]
        alpha = np.clip(half[:, None, None] - np.sqrt(dx * dx + dy * dy) + 0.5, 0.0, 1.0)
        shade = 0.75 if (a in _LEFT or b in _LEFT) else 1.0
        img = paint(alpha, shade * look["colours"][:, slot])
    centre = 0.5 * (joints[:, _NECK] + joints[:, _HEAD])
    radius = 0.55 * np.linalg.norm(joints[:, _HEAD] - joints[:, _NECK], axis=-1)
    dist = np.sqrt(
        (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2
    )
    img = paint(np.clip(radius[:, None, None] - dist + 0.5, 0.0, 1.0), look["colours"][:, 3])
    # Occluders: up to two axis-aligned rectangles with stripes.
    occluded = np.zeros((n, 16), dtype=bool)
    for k in range(2):
        on = look["occ_on"][:, k]
        x0, y0, w, h = (look["occ_box"][:, k, i] for i in range(4))
        inside = (
            (xx[None] >= x0[:, None, None])
            & (xx[None] < (x0 + w)[:, None, None])
            & (yy[None] >= y0[:, None, None])
            & (yy[None] < (y0 + h)[:, None, None])
        )
        inside &= on[:, None, None]
        stripes = 0.8 + 0.2 * np.sign(np.sin(xx[None] * look["occ_freq"][:, k, None, None]))
        colour = look["occ_colour"][:, k][:, None, None, :] * stripes[..., None]
        img = np.where(inside[..., None], colour, img)
        jx, jy = joints[..., 0], joints[..., 1]
        in_box = (
            (jx >= x0[:, None])
            & (jx < (x0 + w)[:, None])
            & (jy >= y0[:, None])
            & (jy < (y0 + h)[:, None])
        )
        occluded |= on[:, None] & in_box
    return img, occluded


def blur_reference(img: np.ndarray, blur: np.ndarray) -> np.ndarray:
    """The previous blur: ``scipy.ndimage.gaussian_filter`` per σ group of [n, S, S, 3]."""
    img = img.copy()
    for sigma in np.unique(blur):
        sel = blur == sigma
        if sigma > 0:
            img[sel] = ndimage.gaussian_filter(img[sel], sigma=(0, sigma, sigma, 0))
    return img


def images_reference(
    scene: dict, size: int, index: np.ndarray | None = None, chunk_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``index`` (default all) of ``synthetic._sample_scene``'s scene the previous way:
    chunks rendered by ``render_reference``, blurred by ``blur_reference``, plus the same pixel
    noise as ``synthetic._render_range`` (each image's generator), rounded to uint8.

    Returns (uint8 [m, S, S, 3], occluded [m, 16] before the inside-the-crop mask).
    """
    n = len(scene["joints"])
    index = np.arange(n) if index is None else np.asarray(index)
    images = np.empty((len(index), size, size, 3), dtype=np.uint8)
    occluded = np.empty((len(index), 16), dtype=bool)
    for lo in range(0, len(index), chunk_size):
        idx = index[lo : lo + chunk_size]
        look = {k: v[idx] for k, v in scene["look"].items()}
        img, occluded[lo : lo + len(idx)] = render_reference(
            scene["joints"][idx], scene["torso_px"][idx], look, size
        )
        img = blur_reference(img, look["blur"])
        noise = np.zeros((len(idx), size * size * 3), np.float32)  # std · N(0, 1) per image
        m = -(-noise.shape[1] // 2)
        u, z = np.empty(2 * m, np.float32), np.empty(m, np.float32)
        for j, i in enumerate(idx):
            rng = _noise_generator(scene["noise_key"], int(i))
            _add_noise(noise[j], float(look["noise"][j]), rng, u, z)
        img = img + noise.reshape(img.shape)
        images[lo : lo + len(idx)] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return images, occluded


def make_synthetic_reference(
    n: int,
    seed: int,
    image_size: int = 64,
    athletic_fraction: float = 0.3,
    max_clip_length: int = 12,
    chunk_size: int = 256,
) -> PoseDataset:
    """The previous ``make_synthetic``, verbatim but for ``render_reference`` and
    ``blur_reference`` (its renderer and blur, here) in place of ``_render`` and the blur loop.

    Its scene draws are ``synthetic._sample_scene``'s (in the same order, from the same
    ``_sample_pose_angles`` / ``_appearance``); its pixel noise came from one float64
    ``standard_normal`` array drawn after them. Used by the tests (same annotations) and the
    benchmark (old speed).
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not 0.0 <= athletic_fraction <= 1.0:
        raise ValueError(f"athletic_fraction must be in [0, 1], got {athletic_fraction}")
    if max_clip_length < 1:
        raise ValueError(f"max_clip_length must be >= 1, got {max_clip_length}")
    rng = np.random.default_rng(seed)
    # Clip lengths: half singletons, the rest 2..max (video-like near-duplicates).
    lengths = np.where(rng.random(n) < 0.5, 1, rng.integers(2, max_clip_length + 1, n))
    groups = np.repeat(np.arange(n), lengths)[:n]
    n_clips = int(groups[-1]) + 1
    athletic = rng.random(n_clips) < athletic_fraction
    ang = _sample_pose_angles(rng, n_clips, athletic)
    look = _appearance(rng, n_clips, image_size, athletic)
    height_frac = np.where(
        athletic, rng.uniform(0.45, 0.85, n_clips), rng.uniform(0.5, 0.85, n_clips)
    )
    torso = height_frac * image_size / 3.4
    rotation = rng.normal(0.0, np.where(athletic, 0.35, 0.12))
    rotation = np.where(ang["rare"] & (rng.random(n_clips) < 0.5), np.pi + rotation, rotation)
    shift = rng.normal(0.0, 0.04 * image_size, (n_clips, 2))

    # Per-frame jitter of the clip's pose and placement.
    frame_ang = {
        k: (v[groups] + rng.normal(0.0, 0.08, n) if k != "rare" else v[groups])
        for k, v in ang.items()
    }
    rel = _skeleton_from_angles(frame_ang, torso[groups])  # torso units, pelvis at 0
    rot = rotation[groups] + rng.normal(0.0, 0.03, n)
    c, s = np.cos(rot), np.sin(rot)
    rel = np.stack(
        [
            c[:, None] * rel[..., 0] - s[:, None] * rel[..., 1],
            s[:, None] * rel[..., 0] + c[:, None] * rel[..., 1],
        ],
        axis=-1,
    )
    px = rel * torso[groups][:, None, None]
    bbox_centre = 0.5 * (px.min(axis=1) + px.max(axis=1))
    centre = (image_size - 1) / 2 + shift[groups] + rng.normal(0.0, 0.6, (n, 2))
    joints = px - bbox_centre[:, None] + centre[:, None]
    frame_look = {k: v[groups] for k, v in look.items()}

    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    occluded = np.empty((n, 16), dtype=bool)
    noise = rng.standard_normal((n, image_size, image_size, 3)).astype(np.float32)
    for lo in range(0, n, chunk_size):
        sl = slice(lo, min(lo + chunk_size, n))
        chunk_look = {k: v[sl] for k, v in frame_look.items()}
        img, occluded[sl] = render_reference(joints[sl], torso[groups][sl], chunk_look, image_size)
        img = blur_reference(img, chunk_look["blur"])
        img = img + chunk_look["noise"][:, None, None, None] * noise[sl]
        images[sl] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)

    inside = np.all((joints >= 0) & (joints <= image_size - 1), axis=-1)
    head_c = 0.5 * (joints[:, _NECK] + joints[:, _HEAD])
    half = 0.6 * np.linalg.norm(joints[:, _HEAD] - joints[:, _NECK], axis=-1)
    head_boxes = np.concatenate([head_c - half[:, None], head_c + half[:, None]], axis=-1)
    return PoseDataset(
        images=images,
        joints=joints.astype(np.float32),
        visible=inside,
        head_boxes=head_boxes.astype(np.float32),
        groups=groups.astype(np.int64),
        domains=athletic[groups].astype(np.int64),
        occluded=occluded & inside,  # occluded joints stay annotated (evaluated), as in MPII
        metric="pckh",
    )
