"""Pose-estimation metrics: PCK, PCKh@0.5 (MPII), PCK@0.2 (LSP) and heatmap decoding.

* ``pck(pred, gt, visible, normalisers, threshold)``: per joint, the share of its visible instances
  whose error ``‖pred − gt‖ / normaliser ≤ threshold``.
* ``pckh``: MPII's official evaluation (``evalPCKh.m``): normaliser = ``0.6 ×`` head-box diagonal
  (``SC_BIAS = 0.6``), threshold 0.5; the reported mean excludes pelvis and thorax.
  ``convention="authors"`` reproduces the EGL++ authors' public code, which normalises by the FULL
  head diagonal (no 0.6 factor): at the same threshold it is more lenient (threshold × 1/0.6).
  ``pck_curve`` evaluates a grid of thresholds (the authors report areas under such a grid too).
* ``pckh_per_image``: the same test per image, averaged over that image's visible evaluated
  joints (NaN for an image with none); their mean weighted by those counts is ``pckh``'s mean.
* ``pck_lsp``: PCK@0.2 with the torso diameter (left shoulder ↔ right hip) as normaliser.
* ``decode_heatmaps``: arg-max per joint heatmap refined by a quarter pixel toward the higher
  neighbour (Newell et al.), mapped to input-image pixel coordinates.

Coordinates are ``(x, y)`` in pixels with pixel centres at integers. A heatmap pixel ``u``
covers input pixels ``[stride·u, stride·(u+1))``, so its centre is at ``stride·(u + ½) − ½``.

Inputs that have no meaningful score raise ``ValueError`` naming the argument instead of
returning a number: an empty evaluation set, a NaN/inf or non-positive threshold, NaN/inf
heatmaps, a stride below 1, a zero torso diameter at an instance with visible joints, joints in
another order than ``joint_names``. A joint with no visible instance scores NaN, and so does a
mean over no visible instance.
"""

from __future__ import annotations

import numpy as np

from egltheory.pose.skeletons import LSP_JOINTS, MPII_JOINTS
from egltheory.validation import check_count, check_finite

__all__ = [
    "decode_heatmaps",
    "head_normaliser",
    "heatmap_to_image_coords",
    "image_to_heatmap_coords",
    "pck",
    "pck_curve",
    "pck_lsp",
    "pckh",
    "pckh_per_image",
    "torso_diameter",
]

MPII_SC_BIAS = 0.6


def _check_pose_arrays(pred, gt, visible, normalisers):
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    visible, normalisers = np.asarray(visible), np.asarray(normalisers, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[-1] != 2:
        raise ValueError(f"gt must have shape [N, J, 2], got {gt.shape}")
    if gt.shape[0] == 0:
        raise ValueError(
            f"`gt` must hold at least one instance (N ≥ 1), got shape {gt.shape}: "
            "a PCK over an empty set is undefined."
        )
    if pred.shape != gt.shape:
        raise ValueError(f"pred must have the shape of gt {gt.shape}, got {pred.shape}")
    if visible.shape != gt.shape[:2] or visible.dtype != bool:
        raise ValueError(f"visible must be a bool array of shape {gt.shape[:2]}, got "
                         f"{visible.dtype} {visible.shape}")  # fmt: skip
    if normalisers.shape != gt.shape[:1]:
        raise ValueError(f"normalisers must have shape [{gt.shape[0]}], got {normalisers.shape}")
    if not np.all(np.isfinite(normalisers)) or np.any(normalisers <= 0):
        raise ValueError("normalisers must be finite and > 0")
    if np.any(~np.isfinite(pred)):
        raise ValueError("pred contains NaN or inf")
    if np.any(~np.isfinite(gt[visible])):
        raise ValueError("gt contains NaN or inf at visible joints")
    return pred, gt, visible, normalisers


def _check_thresholds(thresholds) -> np.ndarray:
    """[T] finite thresholds ≥ 0 (a scalar counts as T = 1)."""
    values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if values.ndim != 1:
        raise ValueError(
            f"`thresholds` must be a scalar or a 1-D grid [T], got shape {np.shape(thresholds)}."
        )
    if values.size == 0:
        raise ValueError(
            f"`thresholds` must hold at least one threshold [T], got shape {values.shape}."
        )
    if not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"`thresholds` must be finite and ≥ 0, got {values.tolist()}.")
    return values


def pck_curve(pred, gt, visible, normalisers, thresholds) -> np.ndarray:
    """PCK at several thresholds.

    pred, gt: [N ≥ 1, J, 2]; visible: [N, J] bool; normalisers: [N] > 0; thresholds: [T ≥ 1],
    finite, ≥ 0 -> [T, J] share of visible instances with ‖pred − gt‖ / normaliser ≤ threshold
    (NaN for a joint with no visible instance).
    """
    pred, gt, visible, normalisers = _check_pose_arrays(pred, gt, visible, normalisers)
    thresholds = _check_thresholds(thresholds)
    err = np.linalg.norm(np.where(visible[..., None], pred - gt, 0.0), axis=-1)
    err = err / normalisers[:, None]  # [N, J]
    hits = (err[None] <= thresholds[:, None, None]) & visible[None]  # [T, N, J]
    n_vis = visible.sum(axis=0)  # [J]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_vis > 0, hits.sum(axis=1) / np.maximum(n_vis, 1), np.nan)


def pck(pred, gt, visible, normalisers, threshold: float) -> np.ndarray:
    """pred, gt: [N ≥ 1, J, 2]; visible: [N, J] bool; normalisers: [N] -> per-joint PCK [J].

    ``threshold`` must be a finite scalar > 0 (a NaN threshold used to give PCK 0 everywhere).
    """
    return pck_curve(pred, gt, visible, normalisers, [_check_threshold(threshold)])[0]


def _check_threshold(threshold) -> float:
    """A finite scalar > 0 (a NaN threshold used to give PCK 0 everywhere)."""
    try:
        value = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        value = np.asarray(np.nan)
    if isinstance(threshold, str) or value.ndim != 0 or not np.isfinite(value) or value <= 0:
        raise ValueError(f"`threshold` must be a finite scalar > 0, got {threshold!r}.")
    return float(value)


def _visible_mean(per_joint, visible, keep=None) -> float:
    """Mean PCK over all visible instances of the kept joints; NaN if there are none."""
    counts = np.asarray(visible).sum(axis=0)
    if keep is not None:
        per_joint, counts = per_joint[keep], counts[keep]
    if counts.sum() == 0:
        return float("nan")
    return float(np.nansum(per_joint * counts) / counts.sum())


def head_normaliser(head_boxes, convention: str = "official") -> np.ndarray:
    """head_boxes: [N, 4] as (x1, y1, x2, y2) -> [N] PCKh normaliser.

    "official": 0.6 × diagonal (MPII ``evalPCKh.m``); "authors": the full diagonal (EGL++ code).
    """
    boxes = np.asarray(head_boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"head_boxes must have shape [N, 4], got {boxes.shape}")
    check_finite("head_boxes", boxes)
    diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if convention == "official":
        return MPII_SC_BIAS * diag
    if convention == "authors":
        return diag
    raise ValueError(f"convention must be 'official' or 'authors', got {convention!r}")


def _pckh_joints(gt) -> np.ndarray:
    """[16] bool: the joints PCKh's mean evaluates (all but pelvis and thorax)."""
    gt_arr = np.asarray(gt)
    if gt_arr.ndim != 3 or gt_arr.shape[1] != len(MPII_JOINTS):
        raise ValueError(f"gt must have shape [N, 16, 2] (MPII order), got {gt_arr.shape}")
    return np.array([j not in ("pelvis", "thorax") for j in MPII_JOINTS])


def pckh(pred, gt, visible, head_boxes, threshold: float = 0.5, convention: str = "official"):
    """PCKh (MPII). Returns (per_joint [16], mean over the 14 joints other than pelvis/thorax).

    The mean is over all visible instances of those joints (as MPII's table "Total"); NaN when
    there is none. An empty set (N = 0) raises ``ValueError``.
    """
    keep = _pckh_joints(gt)
    norm = head_normaliser(head_boxes, convention)
    per_joint = pck(pred, gt, visible, norm, threshold)
    return per_joint, _visible_mean(per_joint, visible, keep)


def pckh_per_image(
    pred, gt, visible, head_boxes, threshold: float = 0.5, convention: str = "official"
) -> np.ndarray:
    """PCKh per image: ``[N]`` share of the image's visible joints other than pelvis/thorax with
    ``‖pred − gt‖ / head normaliser ≤ threshold`` (:func:`head_normaliser`); NaN for an image with
    no such joint. Weighted by those joint counts, their mean is :func:`pckh`'s mean.
    """
    keep = _pckh_joints(gt)
    norm = head_normaliser(head_boxes, convention)
    pred, gt, visible, norm = _check_pose_arrays(pred, gt, visible, norm)
    value = _check_threshold(threshold)
    err = np.linalg.norm(np.where(visible[..., None], pred - gt, 0.0), axis=-1) / norm[:, None]
    scored = visible & keep[None]
    hits = ((err <= value) & scored).sum(axis=1)
    counts = scored.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def torso_diameter(gt, joint_names=LSP_JOINTS) -> np.ndarray:
    """gt: [N, J, 2], J = len(joint_names) -> [N] distance between left shoulder and right hip."""
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (len(joint_names), 2):
        raise ValueError(
            f"`gt` must have shape [N, {len(joint_names)}, 2] (one column per joint name), "
            f"got {gt.shape}."
        )
    ls, rh = joint_names.index("l_shoulder"), joint_names.index("r_hip")
    return np.linalg.norm(gt[:, ls] - gt[:, rh], axis=-1)


def pck_lsp(pred, gt, visible, threshold: float = 0.2, joint_names=LSP_JOINTS):
    """PCK@threshold, torso-diameter normaliser -> (per_joint [J], mean over visible instances).

    The mean is NaN when no joint is visible. An instance with visible joints must have a finite
    torso diameter > 0 (it used to be clamped to 1e-6, turning every joint into a silent miss);
    instances with no visible joint are not scored and need none.
    """
    norm = torso_diameter(gt, joint_names)
    _check_pose_arrays(pred, gt, visible, np.ones_like(norm))  # shapes, N ≥ 1, before the torso
    scored = np.asarray(visible).any(axis=1)
    degenerate = scored & ~(np.isfinite(norm) & (norm > 0))
    if np.any(degenerate):
        raise ValueError(
            f"`gt` torso diameter (l_shoulder ↔ r_hip) is 0 or not finite for "
            f"{int(degenerate.sum())} instance(s) with visible joints (first: "
            f"{int(np.argmax(degenerate))}): PCK@{threshold} is undefined there."
        )
    per_joint = pck(pred, gt, visible, np.where(scored, norm, 1.0), threshold)
    return per_joint, _visible_mean(per_joint, visible)


def heatmap_to_image_coords(coords, stride: int):
    """coords: [..., 2] in heatmap pixels -> input-image pixels (centre-aligned); stride ≥ 1."""
    check_count("stride", stride)
    return stride * (np.asarray(coords, dtype=np.float64) + 0.5) - 0.5


def image_to_heatmap_coords(coords, stride: int):
    """coords: [..., 2] in input-image pixels -> heatmap pixels (inverse of the above)."""
    check_count("stride", stride)
    return (np.asarray(coords, dtype=np.float64) + 0.5) / stride - 0.5


def decode_heatmaps(heatmaps, stride: int = 1, refine: bool = True) -> np.ndarray:
    """heatmaps: [N, H ≥ 1, W ≥ 1, J] finite -> coordinates [N, J, 2] (x, y) in input pixels.

    Arg-max per joint; with ``refine`` the peak moves 0.25 heatmap pixels toward the higher of its
    two neighbours along x and along y (Newell et al.), where both neighbours exist. NaN/inf
    heatmaps (e.g. a diverged model) raise ``ValueError``: their arg-max is meaningless and used
    to decode to pixel (0, 0). ``stride`` must be an integer ≥ 1.
    """
    check_count("stride", stride)
    hm = np.asarray(heatmaps, dtype=np.float64)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must have shape [N, H, W, J], got {hm.shape}")
    n, h, w, j = hm.shape
    if h == 0 or w == 0:
        raise ValueError(f"`heatmaps` must have H ≥ 1 and W ≥ 1, got shape {hm.shape}.")
    bad = ~np.isfinite(hm)
    if np.any(bad):
        raise ValueError(
            f"`heatmaps` must be finite, found {int(np.isnan(hm).sum())} NaN and "
            f"{int(np.isinf(hm).sum())} inf values ({int(bad.any(axis=(1, 2)).sum())} of "
            f"{n * j} heatmaps)."
        )
    flat = hm.transpose(0, 3, 1, 2).reshape(n, j, h * w)
    idx = np.argmax(flat, axis=-1)
    y, x = np.divmod(idx, w)
    coords = np.stack([x, y], axis=-1).astype(np.float64)
    if refine:
        hm_nj = hm.transpose(0, 3, 1, 2)  # [N, J, H, W]
        ni, ji = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
        xl, xr = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
        yu, yd = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
        dx = np.sign(hm_nj[ni, ji, y, xr] - hm_nj[ni, ji, y, xl])
        dy = np.sign(hm_nj[ni, ji, yd, x] - hm_nj[ni, ji, yu, x])
        inner_x = (x > 0) & (x < w - 1)
        inner_y = (y > 0) & (y < h - 1)
        coords[..., 0] += np.where(inner_x, 0.25 * dx, 0.0)
        coords[..., 1] += np.where(inner_y, 0.25 * dy, 0.0)
    return heatmap_to_image_coords(coords, stride)
