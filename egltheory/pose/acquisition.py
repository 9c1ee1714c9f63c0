"""Acquisition scores for pose active learning (higher = label first).

* ``multi_peak_entropy`` (Liu & Ferrari 2017): per joint heatmap, the local maxima (3×3
  neighbourhood) at least ``rel_threshold`` × the joint's maximum; a softmax over the peak values;
  its entropy (nats), summed over joints. One confident peak → 0.
* learning loss (Yoo & Kweon 2019): the loss-prediction head's output
  (``infer(...)["predicted_loss"]``).
* core-set (Sener & Savarese 2018): k-center greedy on the embeddings (``egltheory.active``).
* EGL++ (Eq. 12–13): ``Σ_n p_n ‖∇_θ l(x, y_n)‖²`` over the top-K labelled neighbours in embedding
  space (t-SNE conditionals, Eq. 13, perplexity 20, K = 30, "bits" convention by default), with
  ``l`` = :func:`~egltheory.pose.training.heatmap_loss` (MSE over all stacks' outputs) and
  ``y_n`` = the model's predicted heatmaps of the neighbours (default, as the authors) or their
  ground-truth heatmaps. Gradients cover every trainable parameter of the hourglass (BatchNorm
  in inference mode); one shared forward per unlabelled image (``jax.vjp`` once, K cotangents,
  unrolled or vmapped) by ``egltheory.eglpp.loss_grad_sq_norms``, whose compiled program is
  cached per architecture, so a new model each cycle does not recompile. Probabilities and top-K
  come from ``egltheory.tsne``.

``PoseStrategy`` wraps all five for ``egltheory.active.run_active_learning``. Each cycle it scores
a random candidate subset of the unlabelled pool (``n_candidates``; ``None`` = all), as Yoo &
Kweon do, so that EGL++'s K backward passes per image fit a CPU budget; every strategy sees the
same kind of subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.eglpp import loss_grad_sq_norms, nnx_apply
from egltheory.pose.data import PoseDataset, gaussian_heatmaps
from egltheory.pose.hourglass import KERNEL_GRADS, HourglassConfig, with_kernel_grad
from egltheory.pose.learning_loss import PoseNet
from egltheory.pose.training import heatmap_loss, infer, preprocess

__all__ = [
    "KERNEL_GRAD_CHOICES",
    "STRATEGIES",
    "PoseStrategy",
    "check_kernel_grad",
    "eglpp_pose_scores",
    "heatmap_grad_sq_norms",
    "multi_peak_entropy",
    "neighbour_heatmaps",
    "resolve_kernel_grad",
]

STRATEGIES = ("random", "core-set", "multi-peak-entropy", "learning-loss", "egl++")


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
    raise ValueError(f"source must be 'prediction' or 'ground_truth', got {source!r}")


# im2col kernel gradients beat XLA's on CPU only from the paper's size up (resolve_kernel_grad).
IM2COL_MIN_INPUT_SIZE = 256
IM2COL_MIN_CHANNELS = 256


KERNEL_GRAD_CHOICES = ("auto", *KERNEL_GRADS)


def check_kernel_grad(kernel_grad: str) -> None:
    """Accept ``"auto"``, ``"xla"`` or ``"im2col"``."""
    if kernel_grad not in KERNEL_GRAD_CHOICES:
        raise ValueError(
            f"kernel_grad must be 'auto' or one of {KERNEL_GRADS}, got {kernel_grad!r}"
        )


def resolve_kernel_grad(kernel_grad: str, cfg: HourglassConfig) -> str:
    """The kernel-gradient engine EGL++ scoring uses for an hourglass of config ``cfg``.

    ``"xla"`` or ``"im2col"`` are returned as given. ``"auto"`` → ``"im2col"`` on the CPU backend
    for hourglasses at least the paper's size (input ≥ 256 px, ≥ 256 channels), ``"xla"``
    otherwise. Measured with ``benchmarks/bench_pose.py`` on a 2-core CPU, K = 30, speed of
    im2col relative to XLA: 0.70× at 48 px / 32 ch, 0.49× at 64 px / 64 ch, 0.71× at 64 px /
    128 ch, 0.87× at 128 px / 128 ch, 0.92× at 128 px / 256 ch (1 stack, groups of 5), and at the
    paper's 256 px / 256 ch / 2 stacks 1.1× in groups of 5 and 1.55× vmapped. Not measured on
    GPU: there XLA's (cuDNN's) kernel gradients are kept.
    """
    check_kernel_grad(kernel_grad)
    if kernel_grad != "auto":
        return kernel_grad
    large = cfg.input_size >= IM2COL_MIN_INPUT_SIZE and cfg.channels >= IM2COL_MIN_CHANNELS
    return "im2col" if jax.default_backend() == "cpu" and large else "xla"


def heatmap_grad_sq_norms(
    model: PoseNet,
    x,
    targets,
    *,
    chunk_size: int = 8,
    cotangents: str | int = "vmap",
    kernel_grad: str = "auto",
) -> np.ndarray:
    """‖∇_θ heatmap_loss(hourglass(x_i), targets[i, k])‖² for all i, k.

    x: [N, S, S, 3] preprocessed float32; targets: [N, K, h, w, J] -> [N, K]. θ = every
    ``nnx.Param`` of the hourglass, BatchNorm in inference mode. One forward per input;
    ``cotangents`` as in :func:`egltheory.eglpp.loss_grad_sq_norms`; ``kernel_grad``: how the
    convolutions' kernel gradients are computed (:func:`resolve_kernel_grad`; same values).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    x, targets = np.asarray(x, np.float32), np.asarray(targets, np.float32)
    if x.ndim != 4 or targets.ndim != 5 or targets.shape[0] != x.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"x must be [N, S, S, 3] and targets [N, K, h, w, J] with N > 0, got {x.shape}, "
            f"{targets.shape}"
        )
    hourglass = with_kernel_grad(
        model.hourglass, resolve_kernel_grad(kernel_grad, model.hourglass.cfg)
    )
    apply_fn, params, _ = nnx_apply(hourglass)  # inference mode, every nnx.Param
    # eglpp pads the last chunk to the chunk shape and caches the compiled program per
    # architecture, so successive cycles' models reuse it.
    norms = loss_grad_sq_norms(
        apply_fn, params, x, targets, heatmap_loss, chunk_size=chunk_size, cotangents=cotangents
    )
    return np.asarray(norms)


def eglpp_pose_scores(
    model: PoseNet,
    data: PoseDataset,
    labelled: np.ndarray,
    candidates: np.ndarray,
    *,
    labels: str = "prediction",
    perplexity: float = 20.0,
    top_k: int = 30,
    convention: str = "bits",
    renormalise: bool = False,
    chunk_size: int = 8,
    cotangents: str | int = "vmap",
    kernel_grad: str = "auto",
    sigma: float = 1.0,
    return_neighbours: bool = False,
):
    """EGL++ scores [C] (Eq. 12) of pool images ``candidates`` given the ``labelled`` indices.

    With the "bits" convention the perplexity is capped at ``len(labelled) / 2`` (tiny sets).

    With ``return_neighbours`` also returns (probs [C, K], neighbour pool indices [C, K]).
    """
    from egltheory.tsne import conditional_probabilities, top_k_neighbours

    labelled, candidates = np.asarray(labelled), np.asarray(candidates)
    if labelled.size == 0:
        raise ValueError("labelled must be non-empty for EGL++ (neighbours come from it)")
    if candidates.size == 0:
        raise ValueError("candidates must be non-empty")
    targets, lab_emb = neighbour_heatmaps(model, data, labelled, labels, sigma)
    cand_emb = infer(model, data.images[candidates])["embeddings"]
    if convention == "bits":  # a perplexity needs more references than itself: cap at L / 2
        perplexity = min(perplexity, labelled.size / 2)
    probs = conditional_probabilities(
        np.asarray(cand_emb, np.float64), np.asarray(lab_emb, np.float64), perplexity, convention
    )
    probs_k, idx = top_k_neighbours(probs, min(top_k, labelled.size), renormalise=renormalise)
    probs_k, idx = np.asarray(probs_k), np.asarray(idx)
    sq = heatmap_grad_sq_norms(
        model,
        preprocess(data.images[candidates]),
        targets[idx],
        chunk_size=chunk_size,
        cotangents=cotangents,
        kernel_grad=kernel_grad,
    )
    scores = np.sum(probs_k * sq, axis=1)
    if return_neighbours:
        return scores, probs_k, labelled[idx]
    return scores


@dataclass(frozen=True)
class PoseStrategy:
    """An ``egltheory.active`` strategy for pose models (``state.model`` is a ``PoseNet``).

    kind: one of ``STRATEGIES``. ``n_candidates``: random candidate subset scored per cycle
    (``None``: the whole unlabelled pool). ``eglpp``: keyword arguments of ``eglpp_pose_scores``.
    """

    kind: str
    data: PoseDataset
    n_candidates: int | None = None
    eglpp: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in STRATEGIES:
            raise ValueError(f"kind must be one of {STRATEGIES}, got {self.kind!r}")
        if self.n_candidates is not None and self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1 or None, got {self.n_candidates}")

    @property
    def name(self) -> str:
        return self.kind

    def scores(self, model: PoseNet, labelled: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """[C] acquisition scores of ``candidates`` (not for random / core-set)."""
        if self.kind == "egl++":
            return eglpp_pose_scores(model, self.data, labelled, candidates, **dict(self.eglpp))
        out = infer(model, self.data.images[candidates])
        if self.kind == "multi-peak-entropy":
            return multi_peak_entropy(out["heatmaps"])
        if self.kind == "learning-loss":
            if model.loss_module is None:
                raise ValueError("learning-loss needs a model trained with learning_loss=True")
            return out["predicted_loss"]
        raise ValueError(f"{self.kind} has no per-example score")

    def select(self, state, budget: int, key: jax.Array) -> np.ndarray:
        from egltheory.active import k_center_greedy, select_top

        unl = np.asarray(state.unlabelled)
        if budget < 1 or budget > unl.size:
            raise ValueError(f"budget must be in [1, {unl.size}] (unlabelled), got {budget}")
        k_sub, k_pick = jax.random.split(key)
        cand = unl
        if self.n_candidates is not None and self.n_candidates < unl.size:
            pos = jax.random.choice(k_sub, unl.size, (max(self.n_candidates, budget),), False)
            cand = np.sort(unl[np.asarray(pos)])
        if self.kind == "random":
            pick = jax.random.choice(k_pick, cand.size, (budget,), replace=False)
            return cand[np.asarray(pick)]
        if self.kind == "core-set":
            lab_emb = infer(state.model, self.data.images[state.labelled])["embeddings"]
            cand_emb = infer(state.model, self.data.images[cand])["embeddings"]
            return cand[k_center_greedy(lab_emb, cand_emb, budget)]
        return select_top(self.scores(state.model, state.labelled, cand), cand, budget)
