"""Geometry on pose crops: affine resampling, crops, augmentation and Gaussian target heatmaps.

Coordinates are ``(x, y)`` in pixels with pixel centres at integers (:mod:`egltheory.pose.metrics`).
**Heatmaps**: ``gaussian_heatmaps`` (σ in heatmap pixels, unnormalised peak 1, zero for invisible
joints), in ``jax.numpy`` so training builds targets inside the jitted step. **Augmentation**:
random flip (left/right joints swapped), scale and rotation about the crop centre, one bilinear
resampling of the whole batch: on the device inside the training step (:func:`augment_on_device`,
float32) or on the host (:func:`augment`, NumPy float64, the reference it is tested against).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "affine_sample",
    "affine_sample_on_device",
    "augment",
    "augment_on_device",
    "augment_with",
    "augmentation_parameters",
    "crop_person",
    "flip_permutation",
    "gaussian_heatmaps",
]


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


def _augmentation_matrix_np(angle, scale, flip, size: int) -> np.ndarray:
    """Forward maps input → output pixel ``[B, 2, 3]``: rotation by ``angle`` and scaling about
    the crop centre, then an optional mirror (``flip``)."""
    b = len(angle)
    ctr = (size - 1) / 2
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    fwd = np.zeros((b, 2, 3))
    fwd[:, 0, 0], fwd[:, 0, 1], fwd[:, 1, 0], fwd[:, 1, 1] = cos, -sin, sin, cos
    fwd[:, :, 2] = ctr - np.einsum("nij,j->ni", fwd[:, :, :2], np.array([ctr, ctr]))
    mirror = np.where(flip, -1.0, 1.0)
    fwd[:, 0, :] *= mirror[:, None]
    fwd[:, 0, 2] += np.where(flip, size - 1, 0.0)
    return fwd


def flip_permutation(n_joints: int, flip_pairs) -> tuple[int, ...]:
    """Joint order after a horizontal flip: each (left, right) pair swapped."""
    perm = list(range(n_joints))
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    return tuple(perm)


def augment_with(images, joints, visible, flip_pairs, angle, scale, flip):
    """Newell's augmentation with given parameters ``angle [B]`` (radians), ``scale [B]``,
    ``flip [B]`` bool (NumPy, float64 geometry: the reference for :func:`augment_on_device`).

    images: [B, S, S, 3] uint8; joints: [B, J, 2]; visible: [B, J] bool
    -> (images float32 [B, S, S, 3] in [0, 1], joints [B, J, 2], visible [B, J]).
    A flip mirrors x and swaps each (left, right) pair; joints leaving the crop become invisible.
    """
    s = images.shape[1]
    fwd = _augmentation_matrix_np(np.asarray(angle), np.asarray(scale), np.asarray(flip), s)
    out = affine_sample(images, _invert_affine(fwd), s) / 255.0
    new_joints = _apply_affine(np.asarray(joints, dtype=np.float64), fwd)
    new_vis = np.asarray(visible).copy()
    perm = np.asarray(flip_permutation(joints.shape[1], flip_pairs))
    flip = np.asarray(flip)
    new_joints = np.where(flip[:, None, None], new_joints[:, perm], new_joints)
    new_vis = np.where(flip[:, None], new_vis[:, perm], new_vis)
    new_vis &= np.all((new_joints >= 0) & (new_joints <= s - 1), axis=-1)
    return out.astype(np.float32), new_joints.astype(np.float32), new_vis


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
    """Random flip / scale / rotation about the crop centre (Newell's augmentation) on the host,
    parameters from ``rng``; :func:`augment_with` does the work."""
    b = len(images)
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, b))
    scale = rng.uniform(*scale_range, b)
    flip = rng.random(b) < flip_probability
    return augment_with(images, joints, visible, flip_pairs, angle, scale, flip)


def augmentation_parameters(key, batch: int, max_rotation_deg, scale_range, flip_probability):
    """``(angle [B] radians, scale [B], flip [B] bool)`` drawn on the device from ``key``."""
    k_angle, k_scale, k_flip = jax.random.split(key, 3)
    limit = jnp.deg2rad(max_rotation_deg)
    angle = jax.random.uniform(k_angle, (batch,), minval=-limit, maxval=limit)
    scale = jax.random.uniform(k_scale, (batch,), minval=scale_range[0], maxval=scale_range[1])
    flip = jax.random.uniform(k_flip, (batch,)) < flip_probability
    return angle, scale, flip


def affine_sample_on_device(images: jax.Array, inverse: jax.Array, out_size: int) -> jax.Array:
    """:func:`affine_sample` in ``jax.numpy`` (traceable): bilinear, zero padding.

    images: [B, H, W, C] (any dtype); inverse: [B, 2, 3] OUTPUT → INPUT pixel maps
    -> [B, out_size, out_size, C] float32.
    """
    b, h, w, c = images.shape
    grid = jnp.arange(out_size, dtype=jnp.float32)
    xx, yy = grid[None, :], grid[:, None]
    m = inverse.astype(jnp.float32)
    src_x = m[:, 0, 0, None, None] * xx + m[:, 0, 1, None, None] * yy + m[:, 0, 2, None, None]
    src_y = m[:, 1, 0, None, None] * xx + m[:, 1, 1, None, None] * yy + m[:, 1, 2, None, None]
    x0, y0 = jnp.floor(src_x), jnp.floor(src_y)
    fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    flat = images.reshape(b, h * w, c).astype(jnp.float32)

    def tap(yi, xi):
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        index = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).reshape(b, -1)
        vals = jnp.take_along_axis(flat, index[..., None], axis=1).reshape(b, *yi.shape[1:], c)
        return jnp.where(ok[..., None], vals, 0.0)

    return (1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)) + fy * (
        (1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)
    )


def augment_on_device(images, joints, visible, flip_perm, angle, scale, flip):
    """:func:`augment_with` in ``jax.numpy`` (traceable, float32 geometry), so training augments
    inside its compiled step. ``flip_perm``: :func:`flip_permutation` (a static tuple)."""
    s = images.shape[1]
    ctr = (s - 1) / 2
    cos, sin = jnp.cos(angle) * scale, jnp.sin(angle) * scale
    # as _augmentation_matrix_np: rotate and scale about the centre, then mirror row 0
    a = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], 1)  # [B, 2, 2]
    t = ctr - a @ jnp.array([ctr, ctr], jnp.float32)
    mirror = jnp.stack([jnp.where(flip, -1.0, 1.0), jnp.ones_like(cos)], -1)  # [B, 2]
    a, t = a * mirror[..., None], t * mirror
    t = t.at[:, 0].add(jnp.where(flip, s - 1.0, 0.0))
    a_inv = jnp.linalg.inv(a)
    inverse = jnp.concatenate([a_inv, -(a_inv @ t[..., None])], axis=-1)
    out = affine_sample_on_device(images, inverse, s) / 255.0
    new_joints = jnp.einsum("nij,nkj->nki", a, joints.astype(jnp.float32)) + t[:, None, :]
    perm = jnp.asarray(flip_perm)
    new_joints = jnp.where(flip[:, None, None], new_joints[:, perm], new_joints)
    new_vis = jnp.where(flip[:, None], visible[:, perm], visible)
    new_vis &= jnp.all((new_joints >= 0) & (new_joints <= s - 1), axis=-1)
    return out, new_joints, new_vis


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
