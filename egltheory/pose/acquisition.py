"""Acquisition for pose models: per-image scores and the strategies of the pose study.

* ``multi_peak_entropy`` (Liu & Ferrari 2017): per joint heatmap, the local maxima (3×3
  neighbourhood) at least ``rel_threshold`` × the joint's maximum; a softmax over the peak values;
  its entropy (nats), summed over joints. One confident peak → 0.
* learning loss (Yoo & Kweon 2019): the loss-prediction head's output
  (``infer(...)["predicted_loss"]``).
* core-set (Sener & Savarese 2018): k-center greedy on the embeddings
  (:class:`egltheory.active.CoreSetSelection`).
* EGL++ (Eq. 12–13): :func:`egltheory.eglpp.neighbours` over the labelled set's embeddings, then
  ``Σ_n p_n ‖∇_θ l(x, y_n)‖²`` with ``l`` = :func:`~egltheory.pose.training.heatmap_loss` (MSE
  over all stacks' outputs) and ``y_n`` the model's predicted heatmaps of the neighbours (default,
  as the authors) or their ground-truth heatmaps. Gradients cover every trainable parameter of
  the hourglass (BatchNorm in inference mode), one shared forward per image
  (:func:`egltheory.eglpp.loss_grad_sq_norms`), compiled once per architecture. Through identity
  6 (:func:`egltheory.eglpp.eglpp_terms`): ``egl++-bias``, the bias term alone (one pullback),
  and ``egl++-lowrank``, bias + the top-4 spread directions (:class:`egltheory.eglpp.LowRank`).

:func:`make_strategy` returns the generic strategies of :mod:`egltheory.active` with these scores;
candidate subsampling is :class:`egltheory.active.OnCandidateSubset`, applied by the study.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.active import (
    CoreSetSelection,
    RandomSelection,
    Strategy,
    TopScoreSelection,
)
from egltheory.eglpp import (
    EGLPPOptions,
    EGLPPTerms,
    LowRank,
    NormEngine,
    eglpp_terms,
    gather_neighbour_targets,
    loss_grad_sq_norms,
    neighbours,
    nnx_apply,
)
from egltheory.pose.datasets import PoseDataset
from egltheory.pose.hourglass import COMPUTE_DTYPES, KERNEL_GRAD_CHOICES, with_engine
from egltheory.pose.learning_loss import PoseNet
from egltheory.pose.training import heatmap_loss, infer, preprocess
from egltheory.pose.transforms import gaussian_heatmaps

__all__ = [
    "EGLPP_VARIANTS",
    "NEIGHBOUR_LABELS",
    "STRATEGIES",
    "PoseEGLPPOptions",
    "eglpp_pose_scores",
    "eglpp_pose_terms",
    "heatmap_grad_sq_norms",
    "make_strategy",
    "multi_peak_entropy",
    "neighbour_heatmaps",
]

STRATEGIES = (
    "random", "core-set", "multi-peak-entropy", "learning-loss", "egl++", "egl++-bias",
    "egl++-lowrank",
)  # fmt: skip
# EGL++ through identity 6: the bias term alone (one pullback) and a rank-4 spread.
EGLPP_VARIANTS = {"egl++-bias": LowRank(0), "egl++-lowrank": LowRank(4)}
NEIGHBOUR_LABELS = ("prediction", "ground_truth")


@dataclass(frozen=True)
class PoseEGLPPOptions:
    """EGL++ for a pose model: the generic options plus where neighbour labels and kernel
    gradients come from; validated once.

    ``neighbour_labels``: ``"prediction"`` (the model's last-stack heatmaps of the labelled
    neighbours, as the authors) or ``"ground_truth"`` (Gaussian targets of σ ``heatmap_sigma``).
    ``kernel_grad``, ``compute_dtype``: the scoring view of the model
    (:func:`egltheory.pose.hourglass.with_engine`; ``"bfloat16"`` computes the pullbacks in
    bfloat16 with float32 parameters: faster on GPUs, its error is measured by
    ``benchmarks/bench_pose.py``).
    """

    eglpp: EGLPPOptions = EGLPPOptions(engine=NormEngine(cotangents="vmap"))
    neighbour_labels: str = "prediction"
    kernel_grad: str = "auto"
    compute_dtype: str | None = None
    heatmap_sigma: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.eglpp, EGLPPOptions):
            raise ValueError(f"`eglpp` must be an EGLPPOptions, got {self.eglpp!r}.")
        if self.neighbour_labels not in NEIGHBOUR_LABELS:
            raise ValueError(
                f"`neighbour_labels` must be one of {NEIGHBOUR_LABELS}, got "
                f"{self.neighbour_labels!r}."
            )
        if self.kernel_grad not in KERNEL_GRAD_CHOICES:
            raise ValueError(
                f"`kernel_grad` must be one of {KERNEL_GRAD_CHOICES}, got {self.kernel_grad!r}."
            )
        if self.compute_dtype not in (None, *COMPUTE_DTYPES):
            raise ValueError(
                f"`compute_dtype` must be None or one of {COMPUTE_DTYPES}, got "
                f"{self.compute_dtype!r}."
            )
        if not (np.isfinite(self.heatmap_sigma) and self.heatmap_sigma > 0):
            raise ValueError(f"`heatmap_sigma` must be > 0, got {self.heatmap_sigma!r}.")

    def replace(self, **changes) -> PoseEGLPPOptions:
        """A copy with fields of this object or of its ``eglpp`` / ``eglpp.engine`` replaced."""
        engine_fields = {"chunk_size", "cotangents"}
        eglpp_fields = set(EGLPPOptions.__dataclass_fields__) - {"engine"}
        engine = replace(
            self.eglpp.engine, **{k: v for k, v in changes.items() if k in engine_fields}
        )
        eglpp = replace(
            self.eglpp,
            engine=engine,
            **{k: v for k, v in changes.items() if k in eglpp_fields},
        )
        own = {k: v for k, v in changes.items() if k not in engine_fields | eglpp_fields}
        return replace(self, eglpp=eglpp, **own)


@jax.jit
def _multi_peak_entropy(heatmaps: jax.Array, rel_threshold: float) -> jax.Array:
    hm = jnp.moveaxis(heatmaps, -1, 1)  # [N, J, H, W]
    pooled = jax.lax.reduce_window(hm, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 1, 1), "SAME")
    mx = jnp.max(hm, axis=(2, 3), keepdims=True)
    floor = jnp.where(mx > 0, rel_threshold * mx, mx)
    peak = (hm >= pooled) & (hm >= floor)
    n, j = hm.shape[:2]
    logits = jnp.where(peak, hm, -jnp.inf).reshape(n, j, -1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(logp)
    ent = -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)  # [N, J]
    return jnp.sum(ent, axis=-1)


def multi_peak_entropy(heatmaps, rel_threshold: float = 0.1) -> np.ndarray:
    """heatmaps: [N, H, W, J] -> [N] Σ_j entropy(softmax(peak values of joint j))."""
    hm = jnp.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must have shape [N, H, W, J], got {hm.shape}")
    if not 0.0 <= rel_threshold <= 1.0:
        raise ValueError(f"rel_threshold must be in [0, 1], got {rel_threshold}")
    return np.asarray(_multi_peak_entropy(hm, rel_threshold))


def neighbour_heatmaps(
    model: PoseNet, data: PoseDataset, labelled: np.ndarray, source: str, sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the labelled set for EGL++ and its embeddings.

    source: "prediction" (the model's last-stack heatmaps, default as in the authors' code) or
    "ground_truth" (Gaussian target heatmaps). -> (targets [L, h, w, J], embeddings [L, F]).
    """
    out = infer(model, data.images[labelled])
    if source == "prediction":
        return out["heatmaps"], out["embeddings"]
    if source == "ground_truth":
        size = model.hourglass.cfg.heatmap_size
        gt = gaussian_heatmaps(data.joints[labelled], data.visible[labelled], size, 4, sigma)
        return np.asarray(gt), out["embeddings"]
    raise ValueError(f"source must be one of {NEIGHBOUR_LABELS}, got {source!r}")


def _scoring_apply(model: PoseNet, options: PoseEGLPPOptions):
    view = with_engine(model.hourglass, options.kernel_grad, options.compute_dtype)
    apply_fn, params, _ = nnx_apply(view)  # inference mode, every nnx.Param
    return apply_fn, params


def heatmap_grad_sq_norms(
    model: PoseNet, x, targets, options: PoseEGLPPOptions = PoseEGLPPOptions()
) -> np.ndarray:
    """‖∇_θ heatmap_loss(hourglass(x_i), targets[i, k])‖² for all i, k.

    x: [N, S, S, 3] preprocessed float32; targets: [N, K, h, w, J] -> [N, K]. θ = every
    ``nnx.Param`` of the hourglass, BatchNorm in inference mode; one forward per input arranged by
    ``options.eglpp.engine``, on the scoring view of ``options`` (kernel gradients, dtype).
    """
    x, targets = np.asarray(x, np.float32), np.asarray(targets, np.float32)
    if x.ndim != 4 or targets.ndim != 5 or targets.shape[0] != x.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"x must be [N, S, S, 3] and targets [N, K, h, w, J] with N > 0, got {x.shape}, "
            f"{targets.shape}"
        )
    apply_fn, params = _scoring_apply(model, options)
    norms = loss_grad_sq_norms(apply_fn, params, x, targets, heatmap_loss, options.eglpp.engine)
    return np.asarray(norms)


def _pose_neighbours(model, data, labelled, candidates, options):
    """``(neighbour targets [C, K, h, w, J], probs [C, K], neighbour pool indices [C, K])``."""
    labelled, candidates = np.asarray(labelled), np.asarray(candidates)
    if labelled.size == 0:
        raise ValueError("`labelled` must be non-empty for EGL++ (neighbours come from it).")
    if candidates.size == 0:
        raise ValueError("`candidates` must be non-empty.")
    targets, lab_emb = neighbour_heatmaps(
        model, data, labelled, options.neighbour_labels, options.heatmap_sigma
    )
    cand_emb = infer(model, data.images[candidates])["embeddings"]
    probs_k, idx = neighbours(
        np.asarray(cand_emb, np.float64), np.asarray(lab_emb, np.float64), options.eglpp
    )
    probs_k, idx = np.asarray(probs_k), np.asarray(idx)
    return gather_neighbour_targets(targets, idx), probs_k, labelled[idx]


def eglpp_pose_terms(
    model: PoseNet,
    data: PoseDataset,
    labelled: np.ndarray,
    candidates: np.ndarray,
    options: PoseEGLPPOptions = PoseEGLPPOptions(),
    key: jax.Array | None = None,
) -> tuple[EGLPPTerms, np.ndarray, np.ndarray]:
    """Identity 6 for pool images ``candidates``: ``(terms [C] each, probs [C, K], neighbour pool
    indices [C, K])`` (:func:`egltheory.eglpp.eglpp_terms`; the estimator of ``options``)."""
    targets, probs, nbrs = _pose_neighbours(model, data, labelled, candidates, options)
    apply_fn, params = _scoring_apply(model, options)
    x = preprocess(data.images[np.asarray(candidates)])
    terms = eglpp_terms(apply_fn, params, x, targets, probs, heatmap_loss, options.eglpp, key)
    return EGLPPTerms(*(np.asarray(t) for t in terms)), probs, nbrs


def eglpp_pose_scores(
    model: PoseNet,
    data: PoseDataset,
    labelled: np.ndarray,
    candidates: np.ndarray,
    options: PoseEGLPPOptions = PoseEGLPPOptions(),
    return_neighbours: bool = False,
    key: jax.Array | None = None,
):
    """EGL++ scores [C] (Eq. 12) of pool images ``candidates`` given the ``labelled`` indices:
    exact, or estimated through identity 6 (``options.eglpp.estimator``; ``key`` for a Sketch).

    With ``return_neighbours`` also returns (probs [C, K], neighbour pool indices [C, K]).
    """
    if options.eglpp.estimator != "exact":
        terms, probs_k, nbrs = eglpp_pose_terms(model, data, labelled, candidates, options, key)
        scores = terms.score
    else:
        targets, probs_k, nbrs = _pose_neighbours(model, data, labelled, candidates, options)
        x = preprocess(data.images[np.asarray(candidates)])
        sq = heatmap_grad_sq_norms(model, x, targets, options)
        scores = np.sum(probs_k * sq, axis=1)
    if return_neighbours:
        return scores, probs_k, nbrs
    return scores


def _predicted_loss(model: PoseNet, data: PoseDataset, indices: np.ndarray) -> np.ndarray:
    if model.loss_module is None:
        raise ValueError("learning-loss needs a model trained with learning_loss=True")
    return infer(model, data.images[indices])["predicted_loss"]


def make_strategy(
    name: str, data: PoseDataset, options: PoseEGLPPOptions = PoseEGLPPOptions()
) -> Strategy:
    """The pose study's strategy ``name`` (one of ``STRATEGIES``) on pool ``data``; the state's
    model is a ``PoseNet`` trained with a learning-loss head."""

    def images(indices):
        return data.images[np.asarray(indices)]

    scorers = {
        "multi-peak-entropy": lambda s, key: multi_peak_entropy(
            infer(s.model, images(s.unlabelled))["heatmaps"]
        ),
        "learning-loss": lambda s, key: _predicted_loss(s.model, data, s.unlabelled),
        "egl++": lambda s, key: eglpp_pose_scores(
            s.model, data, s.labelled, s.unlabelled, options, key=key
        ),
    }
    for variant, estimator in EGLPP_VARIANTS.items():
        opts = options.replace(estimator=estimator)
        scorers[variant] = lambda s, key, opts=opts: eglpp_pose_scores(
            s.model, data, s.labelled, s.unlabelled, opts, key=key
        )
    if name == "random":
        return RandomSelection()
    if name == "core-set":
        return CoreSetSelection(lambda model, idx: infer(model, images(idx))["embeddings"])
    if name not in scorers:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    return TopScoreSelection(name, scorers[name])
