"""The pose data set type, its ``.npz`` cache format, and readers for MPII / LSP / LSPET.

Everything returns a :class:`PoseDataset` of fixed-size crops centred on the person, in the joint
order of :mod:`egltheory.pose.skeletons` (MPII: 16 joints, LSP: 14 joints). Real data come from a
user's path (no download code): MPII (``mpii_human_pose_v1_u12_1.mat``, single-person rectangles
of training images, validation = Newell's image-name list) and LSP (``joints.mat`` 3×14×2000,
first 1000 train / last 1000 test) + LSPET (``joints.mat`` 14×3×10000, all train). Crops follow
Newell: box side ``200 · scale · 1.25`` around ``objpos`` (``y`` shifted by ``15 · scale``) for
MPII; for LSP a square around the joints' bounding box.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from egltheory.files import DamagedFileError, atomic_write_bytes
from egltheory.pose.metrics import head_normaliser, torso_diameter
from egltheory.pose.skeletons import (
    LSP_FLIP_PAIRS,
    LSP_JOINTS,
    LSP_SKELETON,
    MPII_FLIP_PAIRS,
    MPII_JOINTS,
    MPII_SKELETON,
)
from egltheory.pose.transforms import crop_person

__all__ = ["PoseDataset", "load_lsp", "load_mpii", "load_npz", "save_npz"]


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

    @functools.cached_property
    def on_device(self):
        """``(images uint8, joints float32, visible bool)`` as device arrays, copied once."""
        return (
            jnp.asarray(self.images),
            jnp.asarray(self.joints, jnp.float32),
            jnp.asarray(self.visible),
        )

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


def save_npz(path: str | os.PathLike, data: PoseDataset) -> None:
    """Write ``data`` as a compressed ``.npz`` atomically (:mod:`egltheory.files`)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=data.images,
        joints=data.joints,
        visible=data.visible,
        head_boxes=data.head_boxes,
        groups=data.groups,
        domains=data.domains,
        occluded=data.occluded,
        metric=np.array(data.metric),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> PoseDataset:
    """Read a :func:`save_npz` file; a truncated or corrupted file raises ``DamagedFileError``."""
    try:
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
    except (zipfile.BadZipFile, EOFError, KeyError, OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DamagedFileError(f"{path} is damaged ({err!r}); delete it to recompute.") from err


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
