"""Pose data: synthetic data set, MPII / LSP / LSPET loaders, crops, heatmaps, augmentation.

Everything returns a :class:`PoseDataset` of fixed-size crops centred on the person, in the joint
order of :mod:`egltheory.pose.metrics` (MPII: 16 joints, LSP: 14 joints).

**Synthetic data** (``make_synthetic`` / ``load_synthetic``) is rendered with vectorised NumPy from
an integer seed, no download: a kinematic skeleton in MPII's joint order drawn as anti-aliased thick
limbs and a head disk over textured backgrounds (sinusoid gratings + smooth noise), with occluding
rectangles, Gaussian blur and pixel noise. Varied poses, limb widths, scale, rotation and colours.
Designed so that active learning has something to find:

* unequal difficulty (small people, low contrast, heavy blur/noise, occluders);
* clusters of near-duplicates: each "clip" renders 1–12 frames of one person/background with small
  pose and position changes (like video frames);
* rare poses (inverted / arms-over-head, ~4%);
* two domains, ``"everyday"`` (upright, small limb angles) and ``"athletic"`` (large limb angles,
  lean, rotation) to mimic the LSP → LSPET shift.

**Real data** from a user's path (no download code): MPII (``mpii_human_pose_v1_u12_1.mat``,
single-person rectangles of training images, validation = Newell's image-name list) and
LSP (``joints.mat`` 3×14×2000, first 1000 train / last 1000 test) + LSPET (``joints.mat``
14×3×10000, all train). Crops follow Newell: box side ``200 · scale · 1.25`` around ``objpos``
(``y`` shifted by ``15 · scale``) for MPII; for LSP a square around the joints' bounding box.

**Heatmaps**: ``gaussian_heatmaps`` (σ in heatmap pixels, unnormalised peak 1, zero for
invisible joints), in ``jax.numpy`` so training builds targets inside the jitted step.
**Augmentation**: ``augment`` = random flip (left/right joints swapped), scale and rotation about
the crop centre, one bilinear resampling of the whole batch in NumPy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from egltheory.pose.metrics import (
    LSP_FLIP_PAIRS,
    LSP_JOINTS,
    MPII_FLIP_PAIRS,
    MPII_JOINTS,
    head_normaliser,
    torso_diameter,
)

__all__ = [
    "MPII_SKELETON",
    "PoseDataset",
    "affine_sample",
    "augment",
    "crop_person",
    "gaussian_heatmaps",
    "load_lsp",
    "load_mpii",
    "load_synthetic",
    "make_synthetic",
]

# (parent, child) limbs in MPII order, used for drawing skeletons.
MPII_SKELETON = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
)  # fmt: skip
LSP_SKELETON = (
    (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 12), (12, 9), (9, 10),
    (10, 11), (12, 13), (2, 8), (3, 9),
)  # fmt: skip


@dataclass(frozen=True)
class PoseDataset:
    """Fixed-size person crops with joint annotations (all arrays share the leading axis N)."""

    images: np.ndarray  # [N, S, S, 3] uint8
    joints: np.ndarray  # [N, J, 2] float32, (x, y) in crop pixels
    visible: np.ndarray  # [N, J] bool: annotated and inside the crop (the PCK mask)
    head_boxes: np.ndarray  # [N, 4] float32 (x1, y1, x2, y2) in crop pixels (zeros for LSP)
    groups: np.ndarray  # [N] int: near-duplicate clip id (synthetic), else the sample index
    domains: np.ndarray  # [N] int: 0 everyday / 1 athletic (synthetic); 0 LSP, 1 LSPET; 0 MPII
    occluded: np.ndarray  # [N, J] bool: annotated but hidden (occluder / dataset flag)
    metric: str = "pckh"  # "pckh" (MPII order) or "pck" (LSP order, torso)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 [N, S, S, 3], got {self.images.dtype} {self.images.shape}"
            )
        for name in ("joints", "visible", "head_boxes", "groups", "domains", "occluded"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have {n} rows, got {len(getattr(self, name))}")
        if self.metric not in ("pckh", "pck"):
            raise ValueError(f"metric must be 'pckh' or 'pck', got {self.metric!r}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return MPII_JOINTS if self.joints.shape[1] == 16 else LSP_JOINTS

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        return MPII_FLIP_PAIRS if self.joints.shape[1] == 16 else LSP_FLIP_PAIRS

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return MPII_SKELETON if self.joints.shape[1] == 16 else LSP_SKELETON

    @property
    def image_size(self) -> int:
        return self.images.shape[1]

    def normalisers(self, convention: str = "official") -> np.ndarray:
        """[N] PCK normalisers: head (PCKh) or torso diameter (PCK) in crop pixels."""
        if self.metric == "pckh":
            return head_normaliser(self.head_boxes, convention)
        return np.maximum(torso_diameter(self.joints, self.joint_names), 1e-6)

    def subset(self, indices) -> PoseDataset:
        idx = np.asarray(indices)
        return replace(
            self,
            images=self.images[idx],
            joints=self.joints[idx],
            visible=self.visible[idx],
            head_boxes=self.head_boxes[idx],
            groups=self.groups[idx],
            domains=self.domains[idx],
            occluded=self.occluded[idx],
        )


# ----------------------------------------------------------------------------- synthetic data
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


def _save_npz_atomic(path: Path, data: PoseDataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez_compressed(
        tmp,
        images=data.images,
        joints=data.joints,
        visible=data.visible,
        head_boxes=data.head_boxes,
        groups=data.groups,
        domains=data.domains,
        occluded=data.occluded,
        metric=np.array(data.metric),
    )
    os.replace(tmp, path)


def _load_npz(path: Path) -> PoseDataset:
    with np.load(path) as z:
        return PoseDataset(
            images=z["images"],
            joints=z["joints"],
            visible=z["visible"],
            head_boxes=z["head_boxes"],
            groups=z["groups"],
            domains=z["domains"],
            occluded=z["occluded"],
            metric=str(z["metric"]),
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
        return _load_npz(path)
    data = make_synthetic(n, seed, image_size, athletic_fraction)
    _save_npz_atomic(path, data)
    return data


# ----------------------------------------------------------------------------- geometry
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


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- MPII
def _as_list(x) -> list:
    """MATLAB struct arrays load as an object, an ndarray of objects, or empty arrays."""
    if isinstance(x, np.ndarray):
        return list(x.ravel())
    return [x]


def load_mpii(
    data_dir: str | os.PathLike,
    image_size: int = 256,
    valid_list: str | os.PathLike | None = None,
    annotation_file: str = "mpii_human_pose_v1_u12_1.mat",
    images_subdir: str = "images",
) -> tuple[PoseDataset, PoseDataset]:
    """MPII single-person training annotations -> (train, valid) crops.

    ``data_dir`` holds ``annotation_file`` and ``images_subdir/``; ``valid_list`` (default
    ``data_dir/valid_images.txt``) lists Newell's validation image names, one per line: those
    images' single-person rectangles form the validation set, the rest of the training images
    (``img_train == 1``) the training set.
    """
    from scipy.io import loadmat

    root = Path(data_dir)
    ann_path = root / annotation_file
    if not ann_path.exists():
        raise ValueError(f"data_dir must contain {annotation_file}; not found: {ann_path}")
    valid_path = Path(valid_list) if valid_list is not None else root / "valid_images.txt"
    if not valid_path.exists():
        raise ValueError(f"valid_list (Newell's validation image names) not found: {valid_path}")
    valid_names = {ln.strip() for ln in valid_path.read_text().splitlines() if ln.strip()}
    release = loadmat(ann_path, struct_as_record=False, squeeze_me=True)["RELEASE"]
    annolist = _as_list(release.annolist)
    img_train = np.atleast_1d(release.img_train).astype(int)
    single = _as_list(release.single_person)
    rows = {"train": [], "valid": []}
    for i, ann in enumerate(annolist):
        if img_train[i] != 1:
            continue
        rect_ids = np.atleast_1d(single[i]).astype(int)
        if rect_ids.size == 0:
            continue
        name = str(ann.image.name)
        rects = _as_list(ann.annorect)
        split = "valid" if name in valid_names else "train"
        image = None
        for r in rect_ids:
            rect = rects[r - 1]
            if not hasattr(rect, "annopoints") or not hasattr(rect.annopoints, "point"):
                continue
            joints = np.zeros((16, 2))
            annotated = np.zeros(16, dtype=bool)
            occluded = np.zeros(16, dtype=bool)
            for p in _as_list(rect.annopoints.point):
                joints[int(p.id)] = (float(p.x) - 1.0, float(p.y) - 1.0)  # MATLAB 1-based
                annotated[int(p.id)] = True
                flag = np.asarray(getattr(p, "is_visible", 1)).ravel()
                occluded[int(p.id)] = flag.size > 0 and str(flag[0]) in ("0", "0.0")
            scale = float(rect.scale)
            centre = (float(rect.objpos.x) - 1.0, float(rect.objpos.y) - 1.0 + 15.0 * scale)
            if image is None:
                image = _read_image(root / images_subdir / name)
            crop, cj, k = crop_person(image, joints, centre, 200.0 * scale * 1.25, image_size)
            box = np.array([rect.x1, rect.y1, rect.x2, rect.y2], dtype=np.float64) - 1.0
            offset = np.array([centre[0] - 100.0 * scale * 1.25, centre[1] - 100.0 * scale * 1.25])
            head = (box.reshape(2, 2) - offset) * k - 0.5
            inside = np.all((cj >= 0) & (cj <= image_size - 1), axis=-1)
            rows[split].append((crop, cj, annotated & inside, head.ravel(), occluded & inside))
    return _rows_to_dataset(rows["train"], "pckh"), _rows_to_dataset(rows["valid"], "pckh")


def _rows_to_dataset(rows: list, metric: str, domains=None) -> PoseDataset:
    if not rows:
        raise ValueError("no annotated people found for this split")
    n = len(rows)
    return PoseDataset(
        images=np.stack([r[0] for r in rows]),
        joints=np.stack([r[1] for r in rows]).astype(np.float32),
        visible=np.stack([r[2] for r in rows]),
        head_boxes=np.stack([r[3] for r in rows]).astype(np.float32),
        groups=np.arange(n, dtype=np.int64),
        domains=np.zeros(n, dtype=np.int64) if domains is None else np.asarray(domains),
        occluded=np.stack([r[4] for r in rows]),
        metric=metric,
    )


# ----------------------------------------------------------------------------- LSP / LSPET
def _lsp_rows(
    root: Path, joints_xyv: np.ndarray, name_fmt: str, indices, image_size: int, occluded_flag
):
    """joints_xyv: [N, 14, 3] (x, y, flag), 1-based pixel coordinates; occluded_flag: the flag
    value meaning "occluded"."""
    rows = []
    for i in indices:
        xy = joints_xyv[i, :, :2] - 1.0
        annotated = np.all(np.isfinite(xy), axis=-1) & np.all(xy > -1.0, axis=-1)
        if not annotated.any():
            continue
        lo, hi = xy[annotated].min(axis=0), xy[annotated].max(axis=0)
        centre = 0.5 * (lo + hi)
        box = 1.25 * max(hi[0] - lo[0], hi[1] - lo[1], 1.0)
        image = _read_image(root / "images" / name_fmt.format(i + 1))
        crop, cj, _ = crop_person(
            image, np.where(annotated[:, None], xy, 0.0), centre, box, image_size
        )
        inside = np.all((cj >= 0) & (cj <= image_size - 1), axis=-1)
        rows.append(
            (
                crop,
                cj,
                annotated & inside,
                np.zeros(4),
                annotated & inside & (joints_xyv[i, :, 2] == occluded_flag),
            )
        )
    return rows


def load_lsp(
    data_dir: str | os.PathLike,
    image_size: int = 256,
    lspet_dir: str | os.PathLike | None = None,
) -> tuple[PoseDataset, PoseDataset]:
    """LSP (``data_dir/joints.mat`` 3×14×2000, ``images/im0001.jpg`` ...) -> (train, test).

    Train = LSP images 1–1000 plus, if ``lspet_dir`` is given, all LSPET images
    (``joints.mat`` 14×3×10000, ``images/im00001.jpg`` ...; domain 1); test = LSP 1001–2000.
    Every LSP joint is annotated (all 14 are evaluated); LSP's third row is read as
    1 = occluded. LSPET's third column is 1 for annotated-and-visible joints and 0 otherwise;
    joints with flag 0 are excluded from training targets and evaluation.
    """
    from scipy.io import loadmat

    root = Path(data_dir)
    path = root / "joints.mat"
    if not path.exists():
        raise ValueError(f"data_dir must contain joints.mat (LSP); not found: {path}")
    raw = np.asarray(loadmat(path)["joints"], dtype=np.float64)
    if raw.ndim != 3 or raw.shape[:2] != (3, 14):
        raise ValueError(f"LSP joints.mat must hold 'joints' of shape 3×14×N, got {raw.shape}")
    lsp = np.transpose(raw, (2, 1, 0))  # [N, 14, 3]
    n = lsp.shape[0]
    half = n // 2
    train_rows = _lsp_rows(root, lsp, "im{:04d}.jpg", range(half), image_size, 1)
    test_rows = _lsp_rows(root, lsp, "im{:04d}.jpg", range(half, n), image_size, 1)
    domains = [0] * len(train_rows)
    if lspet_dir is not None:
        et_root = Path(lspet_dir)
        et_path = et_root / "joints.mat"
        if not et_path.exists():
            raise ValueError(f"lspet_dir must contain joints.mat (LSPET); not found: {et_path}")
        et = np.asarray(loadmat(et_path)["joints"], dtype=np.float64)
        if et.ndim != 3 or et.shape[:2] != (14, 3):
            raise ValueError(f"LSPET joints.mat must hold 'joints' of shape 14×3×N, got {et.shape}")
        et = np.transpose(et, (2, 0, 1)).copy()  # [N, 14, 3]
        et[..., :2] = np.where(et[..., 2:3] > 0, et[..., :2], -np.inf)
        et_rows = _lsp_rows(et_root, et, "im{:05d}.jpg", range(et.shape[0]), image_size, -1)
        train_rows += et_rows
        domains += [1] * len(et_rows)
    return _rows_to_dataset(train_rows, "pck", domains), _rows_to_dataset(test_rows, "pck")
