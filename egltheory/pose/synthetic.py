"""Synthetic person crops rendered from an integer seed (no download), cached as ``.npz``.

A kinematic skeleton in MPII's joint order drawn as anti-aliased thick limbs and a head disk over
textured backgrounds (sinusoid gratings + smooth noise), with occluding rectangles, Gaussian blur
and pixel noise; varied poses, limb widths, scale, rotation and colours. Designed so that active
learning has something to find:

* unequal difficulty (small people, low contrast, heavy blur/noise, occluders);
* clusters of near-duplicates: each "clip" renders 1–12 frames of one person/background with small
  pose and position changes (like video frames);
* rare poses (inverted / arms-over-head, ~4%);
* two domains, ``"everyday"`` (upright, small limb angles) and ``"athletic"`` (large limb angles,
  lean, rotation) to mimic the LSP → LSPET shift.

Rendering (``_render_range``) is per image in float32: the background is a sum of separable
(outer-product) terms, each limb and the head are drawn only inside their bounding boxes, the
blur is a separable Gaussian; chunks of images are rendered by a thread pool (NumPy releases the
GIL in array code). All scene parameters are drawn from ``seed`` before any rendering and each
image's pixel noise comes from its own generator (``SeedSequence(key, spawn_key=(i,))``), so the
images are bit-identical whatever ``chunk_size`` and ``workers``. ``tests/synthetic_reference.py``
keeps the previous full-image float64 renderer, against which the tests check this one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from egltheory.files import DamagedFileError
from egltheory.pose.datasets import PoseDataset, load_npz, save_npz

__all__ = ["load_synthetic", "make_synthetic"]


_R_ANK, _R_KNE, _R_HIP, _L_HIP, _L_KNE, _L_ANK, _PELV, _THOR, _NECK, _HEAD = range(10)
_R_WRI, _R_ELB, _R_SHO, _L_SHO, _L_ELB, _L_WRI = range(10, 16)
# Drawing order (back to front): segment (a, b, width in torso lengths, colour slot).
# Colour slots: 0 legs, 1 torso, 2 arms, 3 skin; left limbs are drawn 25% darker.
_SEGMENTS = (
    (_L_HIP, _L_KNE, 0.17, 0), (_L_KNE, _L_ANK, 0.13, 0),
    (_R_HIP, _R_KNE, 0.17, 0), (_R_KNE, _R_ANK, 0.13, 0),
    (_PELV, _THOR, 0.42, 1), (_R_HIP, _L_HIP, 0.22, 0), (_R_SHO, _L_SHO, 0.2, 1),
    (_THOR, _NECK, 0.12, 3),
    (_L_SHO, _L_ELB, 0.12, 2), (_L_ELB, _L_WRI, 0.1, 3),
    (_R_SHO, _R_ELB, 0.12, 2), (_R_ELB, _R_WRI, 0.1, 3),
)  # fmt: skip
_LEFT = {_L_HIP, _L_KNE, _L_ANK, _L_SHO, _L_ELB, _L_WRI}


def _unit(angle: np.ndarray) -> np.ndarray:
    """Angle measured from 'straight down' (image +y), counter-clockwise on screen -> [..., 2]."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _sample_pose_angles(rng: np.random.Generator, n: int, athletic: np.ndarray) -> dict:
    """Per-person joint angles (radians); athletic people get wider ranges. -> dict of [n]."""
    a = athletic.astype(float)

    def u(lo_e, hi_e, lo_a, hi_a):
        return np.where(athletic, rng.uniform(lo_a, hi_a, n), rng.uniform(lo_e, hi_e, n))

    ang = {
        "lean": rng.normal(0.0, 0.08 + 0.3 * a),
        "head": rng.normal(0.0, 0.15 + 0.15 * a),
        # abduction away from the body: right limbs to image-left (-x), left limbs to +x.
        "r_arm": u(0.1, 0.6, 0.0, 3.0),
        "l_arm": u(0.1, 0.6, 0.0, 3.0),
        "r_elbow": u(-0.2, 1.0, -1.8, 1.8),
        "l_elbow": u(-0.2, 1.0, -1.8, 1.8),
        "r_leg": u(-0.05, 0.25, -0.3, 1.3),
        "l_leg": u(-0.05, 0.25, -0.3, 1.3),
        "r_knee": u(-0.3, 0.3, -1.8, 1.8),
        "l_knee": u(-0.3, 0.3, -1.8, 1.8),
    }
    # Rare pose (~4%): both arms straight over the head.
    rare = rng.random(n) < 0.04
    for side in ("r_arm", "l_arm"):
        ang[side] = np.where(rare, rng.uniform(2.7, 3.1, n), ang[side])
    for side in ("r_elbow", "l_elbow"):
        ang[side] = np.where(rare, rng.uniform(-0.15, 0.15, n), ang[side])
    ang["rare"] = rare
    return ang


def _skeleton_from_angles(ang: dict, torso: np.ndarray) -> np.ndarray:
    """Joint positions relative to the pelvis, in torso lengths. ang: dict of [n] -> [n, 16, 2]."""
    n = len(torso)
    j = np.zeros((n, 16, 2))
    up = np.pi + ang["lean"]  # torso direction (pointing up), rotated by the lean
    side = _unit(up - np.pi / 2)  # person's left, on screen +x when upright
    j[:, _THOR] = _unit(up)
    j[:, _NECK] = j[:, _THOR] + 0.22 * _unit(up + 0.3 * ang["head"])
    j[:, _HEAD] = j[:, _NECK] + 0.42 * _unit(up + ang["head"])
    for s, sho, elb, wri, hip, kne, ank in (
        (-1, _R_SHO, _R_ELB, _R_WRI, _R_HIP, _R_KNE, _R_ANK),
        (1, _L_SHO, _L_ELB, _L_WRI, _L_HIP, _L_KNE, _L_ANK),
    ):
        key = "r" if s < 0 else "l"
        j[:, sho] = j[:, _THOR] - 0.06 * _unit(up) + s * 0.3 * side
        arm = ang["lean"] + s * ang[f"{key}_arm"]
        j[:, elb] = j[:, sho] + 0.55 * _unit(arm)
        j[:, wri] = j[:, elb] + 0.5 * _unit(arm + s * ang[f"{key}_elbow"])
        j[:, hip] = s * 0.18 * side
        leg = ang["lean"] + s * ang[f"{key}_leg"]
        j[:, kne] = j[:, hip] + 0.8 * _unit(leg)
        j[:, ank] = j[:, kne] + 0.75 * _unit(leg - s * ang[f"{key}_knee"])
    return j


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random cells×cells grid [n, cells + 1, cells + 1], bilinearly
    upsampled to size×size by the renderer (``_bilinear_weights``), so only the grid is kept."""
    return rng.random((n, cells + 1, cells + 1))


@lru_cache(maxsize=32)
def _bilinear_weights(cells: int, size: int) -> np.ndarray:
    """[size, cells + 1] float64 weights W: the upsampled noise is ``W @ grid @ W.T``."""
    t = np.linspace(0, cells, size)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    w = np.zeros((size, cells + 1))
    w[np.arange(size), i0] = 1 - f
    w[np.arange(size), i0 + 1] = f
    w.flags.writeable = False
    return w


@lru_cache(maxsize=32)
def _gaussian_weights(sigma: float) -> tuple[float, ...]:
    """scipy.ndimage.gaussian_filter's 1-D kernel (truncate 4): 2r + 1 weights."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return tuple((phi / phi.sum()).tolist())


def _blur(img: np.ndarray, sigma: float, tmp: np.ndarray) -> None:
    """Gaussian blur, in place, of a float32 [S, 3S] image (pixels × RGB interleaved) over rows
    and pixel columns: scipy's kernel and edges (``mode="reflect"``, a half-sample reflection),
    separably, as sums of shifted copies. ``tmp``: float32 [S, 3S] scratch."""
    w = _gaussian_weights(sigma)
    r, size = len(w) // 2, img.shape[0]
    if r == 0:
        return
    for axis in (0, 1):  # rows, then pixel columns (3 interleaved values per pixel)
        pad = ((r, r), (0, 0), (0, 0)) if axis == 0 else ((0, 0), (r, r), (0, 0))
        p = np.pad(img.reshape(size, size, 3), pad, mode="symmetric")
        p = p.reshape(len(p), -1)  # [S + 2r, 3S] or [S, 3(S + 2r)]

        def shifted(k, p=p, axis=axis):
            lo = r + k
            return p[lo : lo + size] if axis == 0 else p[:, 3 * lo : 3 * (lo + size)]

        np.multiply(shifted(0), w[r], out=img)
        for k in range(1, r + 1):
            np.add(shifted(-k), shifted(k), out=tmp)
            tmp *= w[r + k]
            img += tmp


def _matmul(left: np.ndarray, right: np.ndarray, out: np.ndarray) -> None:
    """``out = left @ right`` (float32) in row blocks small enough that BLAS stays on this
    thread (a threaded GEMM per image, inside the render threads, is far slower)."""
    step = max(1, 200_000 // (right.shape[0] * right.shape[1]))
    for lo in range(0, len(left), step):
        np.matmul(left[lo : lo + step], right, out=out[lo : lo + step])


def _occlusion(joints: np.ndarray, look: dict) -> np.ndarray:
    """[n, 16] bool: joints inside an active occluder rectangle."""
    occluded = np.zeros(joints.shape[:2], dtype=bool)
    jx, jy = joints[..., 0], joints[..., 1]
    for k in range(2):
        x0, y0, w, h = (look["occ_box"][:, k, i] for i in range(4))
        in_box = (
            (jx >= x0[:, None])
            & (jx < (x0 + w)[:, None])
            & (jy >= y0[:, None])
            & (jy < (y0 + h)[:, None])
        )
        occluded |= look["occ_on"][:, k][:, None] & in_box
    return occluded


def _draw_params(joints: np.ndarray, torso_px: np.ndarray, look: dict) -> dict:
    """Per-image drawing parameters (vectorised over images) for ``_draw``."""
    shade = [0.75 if (a in _LEFT or b in _LEFT) else 1.0 for a, b, _, _ in _SEGMENTS]
    a_idx, b_idx, widths, slots = (list(col) for col in zip(*_SEGMENTS, strict=True))
    colour = np.array(shade)[None, :, None] * look["colours"][:, slots]
    return {
        "seg_a": joints[:, a_idx],  # [n, 12, 2]
        "seg_b": joints[:, b_idx],
        "seg_half": 0.5 * np.array(widths) * (torso_px * look["width_scale"])[:, None],
        "seg_colour": colour.astype(np.float32),  # [n, 12, 3]
        "head_centre": 0.5 * (joints[:, _NECK] + joints[:, _HEAD]),
        "head_radius": 0.55 * np.linalg.norm(joints[:, _HEAD] - joints[:, _NECK], axis=-1),
        "head_colour": look["colours"][:, 3].astype(np.float32),
    }


def _box(lo: float, hi: float, reach: float, size: int) -> tuple[int, int]:
    """Pixel range [i0, i1) holding every pixel centre within ``reach`` of [lo, hi]."""
    return max(math.floor(lo - reach), 0), min(math.ceil(hi + reach) + 1, size)


def _draw(i: int, params: dict, look: dict, size: int, img: np.ndarray | None = None) -> np.ndarray:
    """Image ``i`` before blur and noise, float32 [S, 3S] in [0, 1] (RGB interleaved: a view
    of [S, S, 3]), drawn into ``img`` if given."""
    img = np.empty((size, 3 * size), np.float32) if img is None else img
    xr = np.arange(size, dtype=np.float64)
    # Background: two sinusoid gratings and smooth noise between two colours,
    # bg0 + (bg1 - bg0) · (0.6 · Σ_g 0.25 (1 + sin(a x + b y + phase)) + 0.4 · W G Wᵀ), as one
    # product L @ R: sin(a x + b y + p) = sin(a x) cos(b y + p) + cos(a x) sin(b y + p).
    freq = 2 * np.pi * look["bg_freq"][i] / size
    a = (freq * np.cos(look["bg_theta"][i]))[:, None] * xr  # [2, S]
    b = (freq * np.sin(look["bg_theta"][i]))[:, None] * xr + look["bg_phase"][i][:, None]
    grid = look["bg_noise"][i]
    w = _bilinear_weights(grid.shape[0] - 1, size)
    left = np.concatenate([np.ones((1, size)), np.cos(b), np.sin(b), (w @ grid).T])  # [K, S]
    right = np.concatenate([np.full((1, size), 0.3), 0.15 * np.sin(a), 0.15 * np.cos(a), 0.4 * w.T])
    bg0, bg1 = look["bg0"][i], look["bg1"][i]
    right = (right[:, :, None] * (bg1 - bg0)).reshape(len(right), 3 * size)
    right[0] += np.tile(bg0, size)
    _matmul(left.T.astype(np.float32), right.astype(np.float32), img)

    def paint(x0, x1, y0, y1, alpha, colour):  # img ← img + alpha (colour - img) in the box
        box = img[y0:y1, 3 * x0 : 3 * x1]
        diff = np.subtract(np.tile(colour, x1 - x0), box)
        diff *= np.repeat(alpha, 3, axis=1)
        box += diff

    # Limbs and head: alpha = clip(half + 0.5 - distance, 0, 1) is 0 outside the bounding box
    # widened by half + 0.5, so only that box is computed (coordinates relative to the joint).
    seg_a, seg_b = params["seg_a"][i].tolist(), params["seg_b"][i].tolist()
    seg_half, seg_colour = params["seg_half"][i].tolist(), params["seg_colour"][i]
    for s in range(len(_SEGMENTS)):
        (ax, ay), (bx, by), reach = seg_a[s], seg_b[s], seg_half[s] + 0.5
        x0, x1 = _box(min(ax, bx), max(ax, bx), reach, size)
        y0, y1 = _box(min(ay, by), max(ay, by), reach, size)
        if x0 >= x1 or y0 >= y1:
            continue
        fx = (xr[x0:x1] - ax).astype(np.float32)[None, :]
        fy = (xr[y0:y1] - ay).astype(np.float32)[:, None]
        dx, dy = bx - ax, by - ay
        len2 = max(dx * dx + dy * dy, 1e-9)
        t = fx * (dx / len2) + fy * (dy / len2)
        np.clip(t, 0.0, 1.0, out=t)
        ex = fx - t * dx
        ey = fy - t * dy
        ex *= ex
        ey *= ey
        ex += ey
        alpha = reach - np.sqrt(ex, out=ex)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        paint(x0, x1, y0, y1, alpha, seg_colour[s])
    (cx, cy), reach = params["head_centre"][i].tolist(), float(params["head_radius"][i]) + 0.5
    (x0, x1), (y0, y1) = _box(cx, cx, reach, size), _box(cy, cy, reach, size)
    if x0 < x1 and y0 < y1:
        fx = (xr[x0:x1] - cx).astype(np.float32)[None, :]
        fy = (xr[y0:y1] - cy).astype(np.float32)[:, None]
        alpha = reach - np.sqrt(fx * fx + fy * fy)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        paint(x0, x1, y0, y1, alpha, params["head_colour"][i])
    # Occluders: up to two axis-aligned rectangles with vertical stripes, painted over.
    for k in range(2):
        if not look["occ_on"][i, k]:
            continue
        ox, oy, ow, oh = look["occ_box"][i, k]
        cols = np.flatnonzero((xr >= ox) & (xr < ox + ow))
        rows = np.flatnonzero((xr >= oy) & (xr < oy + oh))
        if len(cols) == 0 or len(rows) == 0:
            continue
        stripes = 0.8 + 0.2 * np.sign(np.sin(xr[cols] * look["occ_freq"][i, k]))
        colour = (stripes[:, None] * look["occ_colour"][i, k]).astype(np.float32).ravel()
        img[rows[0] : rows[-1] + 1, 3 * cols[0] : 3 * (cols[-1] + 1)] = colour
    return img


def _noise_generator(key: np.ndarray, i: int) -> np.random.Generator:
    """Image ``i``'s pixel-noise generator: independent of chunking and thread scheduling."""
    seq = np.random.SeedSequence(key.tolist(), spawn_key=(i,))
    return np.random.Generator(np.random.PCG64(seq))


def _add_noise(
    flat: np.ndarray, std: float, rng: np.random.Generator, u: np.ndarray, z: np.ndarray
) -> None:
    """``flat += std · N(0, 1)`` (float32 [N]) by Box–Muller from float32 uniforms (faster than
    ``standard_normal``, benchmarks/bench_render.py; |z| ≤ 5.8). Scratch: ``u`` [2m], ``z`` [m],
    m = ⌈N / 2⌉."""
    m = len(z)
    rng.random(out=u, dtype=np.float32)
    radius, angle = u[:m], u[m:]
    np.subtract(1, radius, out=radius)  # (0, 1]
    np.log(radius, out=radius)
    radius *= -2 * std * std
    np.sqrt(radius, out=radius)  # std · sqrt(-2 log u1)
    angle *= 2 * np.pi
    np.cos(angle, out=z)
    z *= radius
    flat[:m] += z
    np.sin(angle, out=z)
    z *= radius
    flat[m:] += z[: len(flat) - m]


def _render_range(out: np.ndarray, lo: int, hi: int, scene: dict, size: int) -> None:
    """Render images ``lo:hi`` of ``scene`` into ``out[lo:hi]`` (uint8): draw, blur, noise."""
    look, params = scene["look"], scene["params"]
    img, tmp = np.empty((2, size, 3 * size), np.float32)
    m = -(-img.size // 2)
    u, z = np.empty(2 * m, np.float32), np.empty(m, np.float32)
    for i in range(lo, hi):
        _draw(i, params, look, size, img)
        sigma = float(look["blur"][i])
        if sigma > 0:
            _blur(img, sigma, tmp)
        rng = _noise_generator(scene["noise_key"], i)
        _add_noise(img.reshape(-1), float(look["noise"][i]), rng, u, z)
        img *= 255
        np.rint(img, out=img)
        np.clip(img, 0, 255, out=img)
        out[i] = img.reshape(size, size, 3)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_workers(size: int) -> int:
    """Render threads by default: only from 128 px, at most 4. Per image, the Python-side calls
    hold the GIL for about the cost of a whole 16 px image, most of a small image's time, so
    threads pay only for large images (benchmarks/bench_render.py). The images do not depend on
    it."""
    return 1 if size < 128 else min(_usable_cores(), 4)


def _render_images(
    scene: dict, size: int, chunk_size: int = 256, workers: int | None = None
) -> np.ndarray:
    """All images of ``scene`` (uint8 [n, S, S, 3]); chunks of images spread over threads."""
    n = len(scene["joints"])
    workers = _default_workers(size) if workers is None else workers
    if workers < 1 or chunk_size < 1:
        raise ValueError(f"workers and chunk_size must be >= 1, got {workers}, {chunk_size}")
    step = max(1, min(chunk_size, -(-n // (4 * workers))))  # ≥ 4 chunks per worker
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    chunks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    if workers == 1 or len(chunks) == 1:
        for lo, hi in chunks:
            _render_range(images, lo, hi, scene, size)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            jobs = [pool.submit(_render_range, images, lo, hi, scene, size) for lo, hi in chunks]
            for job in jobs:
                job.result()
    return images


def _appearance(rng: np.random.Generator, n: int, size: int, athletic: np.ndarray) -> dict:
    """Per-clip appearance parameters (colours, texture, occluders, blur, noise)."""
    hard = rng.random(n) < 0.3  # low-contrast clips: clothing close to the background
    bg0, bg1 = rng.random((n, 3)), rng.random((n, 3))
    colours = rng.random((n, 4, 3))
    colours[:, 3] = np.array([0.85, 0.65, 0.5]) * rng.uniform(0.4, 1.1, (n, 1))  # skin
    mix = np.where(hard, 0.75, 0.0)[:, None, None]
    colours[:, :3] = (1 - mix) * colours[:, :3] + mix * (0.5 * (bg0 + bg1))[:, None, :]
    occ_size = rng.uniform(0.15, 0.4, (n, 2, 2)) * size
    occ_pos = rng.uniform(0, 1, (n, 2, 2)) * (size - occ_size)
    return {
        "bg0": bg0,
        "bg1": bg1,
        "bg_theta": rng.uniform(0, np.pi, (n, 2)),
        "bg_freq": rng.uniform(1, 8, (n, 2)),
        "bg_phase": rng.uniform(0, 2 * np.pi, (n, 2)),
        "bg_noise": _smooth_noise(rng, n, size, 4),
        "colours": colours,
        "width_scale": rng.uniform(0.7, 1.4, n),
        "occ_on": rng.random((n, 2)) < np.where(athletic, 0.35, 0.25)[:, None] * np.array([1, 0.4]),
        "occ_box": np.concatenate([occ_pos, occ_size], axis=-1),
        "occ_colour": rng.random((n, 2, 3)),
        "occ_freq": rng.uniform(0.3, 2.0, (n, 2)),
        "blur": rng.choice([0.0, 0.0, 0.6, 1.2], size=n),
        "noise": rng.uniform(0.0, 0.08, n),
    }


def _sample_scene(
    n: int, seed: int, image_size: int, athletic_fraction: float, max_clip_length: int
) -> dict:
    """Every random choice of ``make_synthetic`` (all drawn from ``seed`` before rendering)."""
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
    single = rng.random(n) < 0.5
    multi = rng.integers(2, max_clip_length + 1, n) if max_clip_length > 1 else 1
    lengths = np.where(single, 1, multi)
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

    # Pixel noise: one generator per image, seeded from this key (see ``_noise_generator``).
    noise_key = rng.integers(0, 2**32, size=4, dtype=np.uint64)
    return {
        "joints": joints,
        "torso_px": torso[groups],
        "look": frame_look,
        "params": _draw_params(joints, torso[groups], frame_look),
        "groups": groups,
        "athletic": athletic,
        "noise_key": noise_key,
    }


def make_synthetic(
    n: int,
    seed: int,
    image_size: int = 64,
    athletic_fraction: float = 0.3,
    max_clip_length: int = 12,
    chunk_size: int = 256,
    *,
    workers: int | None = None,
) -> PoseDataset:
    """Render ``n`` synthetic single-person crops (MPII joint order), deterministic from ``seed``.

    Clips of 1..``max_clip_length`` near-duplicate frames share a person, appearance and
    background; ``athletic_fraction`` of the clips are from the athletic domain (``domains == 1``).
    Chunks of at most ``chunk_size`` images are rendered on ``workers`` threads (default: up to
    4 from 128 px, else 1; see ``_default_workers``); the result does not depend on either.
    """
    scene = _sample_scene(n, seed, image_size, athletic_fraction, max_clip_length)
    images = _render_images(scene, image_size, chunk_size, workers)
    joints, groups = scene["joints"], scene["groups"]
    occluded = _occlusion(joints, scene["look"])
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
        domains=scene["athletic"][groups].astype(np.int64),
        occluded=occluded & inside,  # occluded joints stay annotated (evaluated), as in MPII
        metric="pckh",
    )


def load_synthetic(
    n: int,
    seed: int,
    image_size: int = 64,
    athletic_fraction: float = 0.3,
    cache_dir: str | os.PathLike | None = "results/cache/pose_synthetic",
) -> PoseDataset:
    """``make_synthetic`` cached as ``.npz`` under ``cache_dir`` (``None``: no cache)."""
    if cache_dir is None:
        return make_synthetic(n, seed, image_size, athletic_fraction)
    spec = {"n": n, "seed": seed, "size": image_size, "athletic": athletic_fraction, "v": 2}
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"synthetic_{n}_{image_size}_{seed}_{digest}.npz"
    if path.exists():
        try:
            return load_npz(path)
        except DamagedFileError as err:  # a damaged cache is re-rendered, with a warning
            warnings.warn(f"{err}: re-rendering it.", RuntimeWarning, stacklevel=2)
    data = make_synthetic(n, seed, image_size, athletic_fraction)
    save_npz(path, data)
    return data
