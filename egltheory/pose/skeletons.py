"""Joint tables of the two annotation formats: names, left/right flip pairs, drawn limbs.

MPII order (16 joints) is also the synthetic data's; LSP order has 14 joints. Pairs are joint
indices in that order.
"""

from __future__ import annotations

__all__ = [
    "LSP_FLIP_PAIRS",
    "LSP_JOINTS",
    "LSP_SKELETON",
    "MPII_FLIP_PAIRS",
    "MPII_JOINTS",
    "MPII_SKELETON",
]

MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
    "l_wrist",
)  # fmt: skip
LSP_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow",
    "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top",
)  # fmt: skip
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
LSP_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))
# (parent, child) limbs, for drawing skeletons.
MPII_SKELETON = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
)  # fmt: skip
LSP_SKELETON = (
    (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 12), (12, 9), (9, 10),
    (10, 11), (12, 13), (2, 8), (3, 9),
)  # fmt: skip
