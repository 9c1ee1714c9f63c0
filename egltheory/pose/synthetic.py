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
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

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
    """[n, size, size] smooth noise in [0, 1]: a random cells×cells grid, bilinearly upsampled."""
    grid = rng.random((n, cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    rows = grid[:, i0] * (1 - f)[None, :, None] + grid[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def _render(
    rng: np.random.Generator, joints: np.ndarray, torso_px: np.ndarray, look: dict, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised renderer. joints: [n, 16, 2] px; torso_px: [n]; look: per-image appearance.

    Returns (images float [n, S, S, 3] in [0, 1], occluded [n, 16] bool).
    """
    n = len(joints)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Background: two sinusoid gratings and smooth noise between two colours.
    tex = np.zeros((n, size, size))
    for g in range(2):
        th, fr, ph = look["bg_theta"][:, g], look["bg_freq"][:, g], look["bg_phase"][:, g]
        proj = xx[None] * np.cos(th)[:, None, None] + yy[None] * np.sin(th)[:, None, None]
        tex += 0.25 * (1 + np.sin(2 * np.pi * fr[:, None, None] * proj / size + ph[:, None, None]))
    tex = 0.6 * tex + 0.4 * look["bg_noise"]
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


def make_synthetic(
    n: int,
    seed: int,
    image_size: int = 64,
    athletic_fraction: float = 0.3,
    max_clip_length: int = 12,
    chunk_size: int = 256,
) -> PoseDataset:
    """Render ``n`` synthetic single-person crops (MPII joint order), deterministic from ``seed``.

    Clips of 1..``max_clip_length`` near-duplicate frames share a person, appearance and
    background; ``athletic_fraction`` of the clips are from the athletic domain (``domains == 1``).
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
        img, occluded[sl] = _render(rng, joints[sl], torso[groups][sl], chunk_look, image_size)
        for sigma in np.unique(chunk_look["blur"]):
            sel = chunk_look["blur"] == sigma
            if sigma > 0:
                img[sel] = ndimage.gaussian_filter(img[sel], sigma=(0, sigma, sigma, 0))
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
    spec = {"n": n, "seed": seed, "size": image_size, "athletic": athletic_fraction, "v": 1}
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
