"""Geometry on pose crops: affine resampling, crops, augmentation and Gaussian target heatmaps.

Coordinates are ``(x, y)`` in pixels with pixel centres at integers (:mod:`egltheory.pose.metrics`).
**Heatmaps**: ``gaussian_heatmaps`` (σ in heatmap pixels, unnormalised peak 1, zero for invisible
joints), in ``jax.numpy`` so training builds targets inside the jitted step. **Augmentation**:
``augment`` = random flip (left/right joints swapped), scale and rotation about the crop centre,
one bilinear resampling of the whole batch in NumPy.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["affine_sample", "augment", "crop_person", "gaussian_heatmaps"]


def affine_sample(images: np.ndarray, matrices: np.ndarray, out_size: int) -> np.ndarray:
    """Bilinear resampling with zero padding.

    images: [N, H, W, C]; matrices: [N, 2, 3] mapping OUTPUT pixel (x, y, 1) -> INPUT pixel (x, y)
    -> [N, out_size, out_size, C] float32.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape [N, H, W, C], got {images.shape}")
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.shape != (len(images), 2, 3):
        raise ValueError(f"matrices must have shape [{len(images)}, 2, 3], got {matrices.shape}")
    n, h, w, c = images.shape
    yy, xx = np.mgrid[0:out_size, 0:out_size].astype(np.float64)
    src_x = (
        matrices[:, 0, 0, None, None] * xx
        + matrices[:, 0, 1, None, None] * yy
        + matrices[:, 0, 2, None, None]
    )
    src_y = (
        matrices[:, 1, 0, None, None] * xx
        + matrices[:, 1, 1, None, None] * yy
        + matrices[:, 1, 2, None, None]
    )
    x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
    fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]
    flat = images.reshape(n, h * w, c).astype(np.float32)
    batch = np.arange(n)[:, None, None]

    def tap(yi, xi):
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        vals = flat[batch, np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)]
        return np.where(ok[..., None], vals, 0.0)

    out = (1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)) + fy * (
        (1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)
    )
    return out.astype(np.float32)


def _apply_affine(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """points: [N, J, 2]; matrices: [N, 2, 3] -> [N, J, 2]."""
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def _invert_affine(m: np.ndarray) -> np.ndarray:
    """[N, 2, 3] -> inverse [N, 2, 3]."""
    a_inv = np.linalg.inv(m[:, :, :2])
    return np.concatenate([a_inv, -np.einsum("nij,nj->ni", a_inv, m[:, :, 2])[..., None]], axis=-1)


def augment(
    rng: np.random.Generator,
    images: np.ndarray,
    joints: np.ndarray,
    visible: np.ndarray,
    flip_pairs,
    max_rotation_deg: float = 30.0,
    scale_range: tuple[float, float] = (0.75, 1.25),
    flip_probability: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random flip / scale / rotation about the crop centre (Newell's augmentation).

    images: [B, S, S, 3] uint8; joints: [B, J, 2]; visible: [B, J] bool
    -> (images float32 [B, S, S, 3] in [0, 1], joints [B, J, 2], visible [B, J]).
    A flip mirrors x and swaps each (left, right) pair; joints leaving the crop become invisible.
    """
    b, s = len(images), images.shape[1]
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, b))
    scale = rng.uniform(*scale_range, b)
    flip = rng.random(b) < flip_probability
    ctr = (s - 1) / 2
    # forward map input -> output: p' = ctr + scale·R(angle)(p − ctr), then optional mirror
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    fwd = np.zeros((b, 2, 3))
    fwd[:, 0, 0], fwd[:, 0, 1], fwd[:, 1, 0], fwd[:, 1, 1] = cos, -sin, sin, cos
    fwd[:, :, 2] = ctr - np.einsum("nij,j->ni", fwd[:, :, :2], np.array([ctr, ctr]))
    mirror = np.where(flip, -1.0, 1.0)
    fwd[:, 0, :] *= mirror[:, None]
    fwd[:, 0, 2] += np.where(flip, s - 1, 0.0)
    out = affine_sample(images, _invert_affine(fwd), s) / 255.0
    new_joints = _apply_affine(np.asarray(joints, dtype=np.float64), fwd)
    new_vis = np.asarray(visible).copy()
    perm = np.arange(joints.shape[1])
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    new_joints = np.where(flip[:, None, None], new_joints[:, perm], new_joints)
    new_vis = np.where(flip[:, None], new_vis[:, perm], new_vis)
    new_vis &= np.all((new_joints >= 0) & (new_joints <= s - 1), axis=-1)
    return out.astype(np.float32), new_joints.astype(np.float32), new_vis


def gaussian_heatmaps(joints, visible, heatmap_size: int, stride: int, sigma: float = 1.0):
    """Target heatmaps (jax.numpy; traceable).

    joints: [N, J, 2] input pixels; visible: [N, J] bool
    -> [N, H, H, J], H = heatmap_size: exp(−‖u − u_j‖² / 2σ²) around each visible joint (u in
    heatmap pixels, σ = ``sigma`` heatmap pixels), zero for invisible joints.
    """
    u = (jnp.asarray(joints, dtype=jnp.float32) + 0.5) / stride - 0.5  # heatmap coords
    grid = jnp.arange(heatmap_size, dtype=jnp.float32)
    gx = jnp.exp(-((grid[None, None, :] - u[..., 0:1]) ** 2) / (2 * sigma**2))  # [N, J, W]
    gy = jnp.exp(-((grid[None, None, :] - u[..., 1:2]) ** 2) / (2 * sigma**2))  # [N, J, H]
    hm = gy[:, :, :, None] * gx[:, :, None, :]  # [N, J, H, W]
    hm = hm * jnp.asarray(visible, dtype=jnp.float32)[:, :, None, None]
    return jnp.transpose(hm, (0, 2, 3, 1))


def crop_person(
    image: np.ndarray, joints: np.ndarray, centre, box_size: float, out_size: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Square crop of side ``box_size`` (input pixels) around ``centre`` resized to ``out_size``.

    image: [H, W, 3]; joints: [J, 2] -> (crop uint8 [out, out, 3], joints [J, 2] in crop pixels,
    scale = out_size / box_size). Areas outside the image are black.
    """
    if box_size <= 0:
        raise ValueError(f"box_size must be > 0, got {box_size}")
    k = out_size / box_size
    cx, cy = float(centre[0]), float(centre[1])
    # Continuous coordinates (pixel i spans [i − ½, i + ½]): the box [c − B/2, c + B/2] maps to
    # the output's [−½, S − ½], so output pixel u ↔ input c − B/2 + (u + ½)/k.
    x0, y0 = cx - box_size / 2, cy - box_size / 2
    inv = np.array([[[1 / k, 0, x0 + 0.5 / k], [0, 1 / k, y0 + 0.5 / k]]])
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    crop = affine_sample(img[None, ..., :3], inv, out_size)[0]
    fwd = _invert_affine(inv)
    new_joints = _apply_affine(np.asarray(joints, dtype=np.float64)[None], fwd)[0]
    return np.clip(np.round(crop), 0, 255).astype(np.uint8), new_joints, k
