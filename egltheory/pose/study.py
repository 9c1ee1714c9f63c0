"""The pose active-learning study (the paper's Table 1 protocol) as library calls.

For every seed: a random initial labelled set and ONE base model trained on it (cached, shared by
all strategies: paired seeds); then for every strategy ``egltheory.active.run_active_learning``
runs cycles of selection → labelling (from the held ground truth) → training (fine-tune from the
previous cycle's model, as the authors, or retrain) → evaluation. Results are written per cycle
atomically; ``resume`` continues every run from its last finished cycle.

Outputs in ``out``: ``runs/<strategy>/seed_<s>/`` (per-cycle JSON), ``table.md`` / ``table.csv``
(mean, σ over seeds and the one-tailed paired t-test p-value of "EGL++ > strategy" per cycle,
``scipy.stats.ttest_rel``), ``learning_curves.png`` and ``eglpp_neighbours.png`` (the paper's
Fig. 3: lowest- and highest-scoring EGL++ images with their most probable labelled neighbours).
Every model carries a learning-loss head trained on detached features, so one base model serves
all strategies and the head does not change the pose network.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from egltheory.eglpp import check_cotangents
from egltheory.pose.acquisition import (
    STRATEGIES,
    PoseStrategy,
    check_kernel_grad,
    eglpp_pose_scores,
)
from egltheory.pose.data import PoseDataset, load_lsp, load_mpii, load_synthetic
from egltheory.pose.hourglass import HourglassConfig
from egltheory.pose.learning_loss import PoseNet
from egltheory.pose.metrics import decode_heatmaps
from egltheory.pose.training import TrainConfig, evaluate, infer, init_model, train_pose_model

__all__ = ["PRESETS", "Preset", "load_study_data", "make_table", "run_study"]


@dataclass(frozen=True)
class Preset:
    """Sizes of one study. ``n_candidates``: unlabelled images scored per cycle (None = all).

    ``cotangents``: how EGL++'s K pullbacks share one forward (``egltheory.eglpp``);
    ``kernel_grad``: how their convolution kernel gradients are computed ("auto": im2col on CPU
    from the paper's size up, :func:`egltheory.pose.acquisition.resolve_kernel_grad`). Measured
    on a 2-core CPU at K = 30 (``benchmarks/bench_pose.py``; docs/pose.md): groups of 5 (48 px)
    and of 3 (paper size) are the fastest modes that compile in about two minutes or less;
    XLA's kernel gradients win at the default preset's 48 px, im2col at the paper's size.
    """

    name: str
    image_size: int
    n_stacks: int
    channels: int
    depth: int
    n_pool: int
    n_test: int
    n_initial: int
    budget: int
    n_cycles: int
    seeds: tuple[int, ...]
    base_epochs: int
    cycle_epochs: int
    batch_size: int = 16
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    finetune: bool = True
    n_candidates: int | None = None
    perplexity: float = 20.0
    top_k: int = 30
    neighbour_labels: str = "prediction"
    cotangents: str | int = "vmap"
    kernel_grad: str = "auto"
    data_seed: int = 2022

    def __post_init__(self) -> None:
        check_cotangents(self.cotangents)
        check_kernel_grad(self.kernel_grad)

    @property
    def eglpp_options(self) -> dict:
        """Keyword arguments of ``eglpp_pose_scores`` that this preset sets."""
        return {
            "labels": self.neighbour_labels,
            "perplexity": self.perplexity,
            "top_k": self.top_k,
            "cotangents": self.cotangents,
            "kernel_grad": self.kernel_grad,
        }


PRESETS = {
    "tiny": Preset("tiny", 32, 1, 16, 2, 96, 32, 24, 12, 2, (0, 1), 2, 1, 8, n_candidates=24),
    "default": Preset(
        "default", 48, 1, 32, 2, 700, 300, 100, 60, 3, (0, 1, 2), 30, 5, n_candidates=150,
        cotangents=5,
    ),
    "paper": Preset(
        "paper", 256, 2, 256, 4, 10000, 2000, 1000, 1000, 5, (0, 1, 2, 3, 4), 100, 30,
        learning_rate=2.5e-4, optimizer="rmsprop", cotangents=3,
    ),
}  # fmt: skip


def load_study_data(
    preset: Preset, data: str = "synthetic", data_dir: str | None = None, cache_dir=None
) -> tuple[PoseDataset, PoseDataset]:
    """(pool, test). Synthetic: pool and test rendered from different seeds (no shared clips);
    the test set is half athletic. MPII: Newell's train/valid; LSP: LSP(+LSPET) train / LSP test."""
    if data == "synthetic":
        cache = cache_dir if cache_dir is not None else "results/cache/pose_synthetic"
        pool = load_synthetic(preset.n_pool, preset.data_seed, preset.image_size, 0.3, cache)
        test = load_synthetic(preset.n_test, preset.data_seed + 1, preset.image_size, 0.5, cache)
        return pool, test
    if data_dir is None:
        raise ValueError(f"--data {data} needs --data-dir")
    if data == "mpii":
        return load_mpii(data_dir, preset.image_size)
    if data == "lsp":
        lspet = Path(data_dir) / "lspet"
        return load_lsp(data_dir, preset.image_size, lspet if lspet.exists() else None)
    raise ValueError(f"data must be 'synthetic', 'mpii' or 'lsp', got {data!r}")


def _model_cfg(preset: Preset, n_joints: int) -> HourglassConfig:
    return HourglassConfig(
        n_stacks=preset.n_stacks,
        channels=preset.channels,
        depth=preset.depth,
        n_joints=n_joints,
        input_size=preset.image_size,
    )


def _train_cfg(preset: Preset, epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        optimizer=preset.optimizer,
    )


def _save_model(model: PoseNet, path: Path) -> None:
    state = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_bytes(pickle.dumps(state))
    os.replace(tmp, path)


def _loader(cfg: HourglassConfig):
    def load(path: Path) -> PoseNet:
        model = init_model(cfg, 0, learning_loss=True)
        state = nnx.state(model)
        nnx.replace_by_pure_dict(state, pickle.loads(Path(path).read_bytes()))
        nnx.update(model, state)
        model.eval()
        return model

    return load


def _seed_from_key(key: jax.Array) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def _spec_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_study(
    preset: Preset,
    out: str | os.PathLike,
    data: str = "synthetic",
    data_dir: str | None = None,
    strategies=STRATEGIES,
    resume: bool = False,
    progress: bool = True,
    cache_dir=None,
) -> dict:
    """Run every strategy × seed; write tables and figures. Returns {strategy: {seed: records}}."""
    from egltheory.active import run_active_learning

    for s in strategies:
        if s not in STRATEGIES:
            raise ValueError(f"strategies must be among {STRATEGIES}, got {s!r}")
    if preset.n_initial + preset.budget * preset.n_cycles > preset.n_pool:
        raise ValueError("n_initial + budget × n_cycles exceeds the pool size")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool, test = load_study_data(preset, data, data_dir, cache_dir)
    if preset.n_initial + preset.budget * preset.n_cycles > len(pool):
        raise ValueError(f"the pool has {len(pool)} images, fewer than the study needs")
    cfg = _model_cfg(preset, pool.joints.shape[1])
    load_model = _loader(cfg)
    # The base models' cache key: everything that shapes training, not how EGL++ is computed.
    engine = ("cotangents", "kernel_grad")
    trained = {k: v for k, v in asdict(preset).items() if k not in engine}
    spec = {"preset": trained, "data": data, "n_pool": len(pool)}
    results: dict = {}
    seeds_iter = preset.seeds
    if progress:
        from tqdm.auto import tqdm

        seeds_iter = tqdm(seeds_iter, desc="seeds")
    for seed in seeds_iter:
        rng = np.random.default_rng(seed)
        initial = np.sort(rng.choice(len(pool), preset.n_initial, replace=False))
        base_path = out / "base_models" / f"seed_{seed}_{_spec_hash(spec)}.model"

        def train_fn(prev, labelled, key, base_path=base_path):
            if prev is None:
                if base_path.exists():
                    return load_model(base_path)
                model, _ = train_pose_model(
                    pool, labelled, cfg, _train_cfg(preset, preset.base_epochs),
                    _seed_from_key(key), learning_loss=True, progress=progress,
                )  # fmt: skip
                base_path.parent.mkdir(parents=True, exist_ok=True)
                _save_model(model, base_path)
                return model
            init = prev if preset.finetune else None
            epochs = preset.cycle_epochs if preset.finetune else preset.base_epochs
            model, _ = train_pose_model(
                pool, labelled, cfg, _train_cfg(preset, epochs), _seed_from_key(key),
                init=init, learning_loss=True, progress=progress,
            )  # fmt: skip
            return model

        def evaluate_fn(model):
            return evaluate(model, test)

        for name in strategies:
            strategy = PoseStrategy(
                name,
                pool,
                preset.n_candidates,
                eglpp=tuple(preset.eglpp_options.items()),
            )
            records = run_active_learning(
                out_dir=out / "runs" / name / f"seed_{seed}",
                strategy=strategy,
                initial_labelled=initial,
                pool_size=len(pool),
                budget=preset.budget,
                n_cycles=preset.n_cycles,
                train_fn=train_fn,
                evaluate_fn=evaluate_fn,
                key=jax.random.key(seed),
                resume=resume,
                save_model=_save_model,
                load_model=load_model,
                progress=progress,
                run_info={"spec": _spec_hash(spec)},
            )
            results.setdefault(name, {})[seed] = records
    table_md, table_csv = make_table(results)
    _atomic_text(out / "table.md", table_md)
    _atomic_text(out / "table.csv", table_csv)
    _atomic_text(out / "results.json", json.dumps(results, indent=1))
    plot_learning_curves(results, out / "learning_curves.png")
    fig_path = out / "eglpp_neighbours.png"
    if not fig_path.exists() or not resume:
        seed0 = preset.seeds[0]
        base_path = out / "base_models" / f"seed_{seed0}_{_spec_hash(spec)}.model"
        rng = np.random.default_rng(seed0)
        initial = np.sort(rng.choice(len(pool), preset.n_initial, replace=False))
        plot_eglpp_neighbours(load_model(base_path), pool, initial, preset, fig_path)
    return results


def _atomic_text(path: Path, text: str) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _curves(results: dict) -> tuple[list[int], dict]:
    """-> (n_labelled per cycle, {strategy: [n_seeds, n_cycles] metric array}) over shared seeds."""
    seeds = sorted(set.intersection(*(set(v) for v in results.values())))
    any_runs = next(iter(results.values()))[seeds[0]]
    n_lab = [r["n_labelled"] for r in any_runs]
    curves = {
        s: np.array([[r["metrics"]["mean"] for r in results[s][seed]] for seed in seeds])
        for s in results
    }
    return n_lab, curves


def make_table(results: dict, reference: str = "egl++") -> tuple[str, str]:
    """Table 1 format. Cells: 100 × mean ± σ (ddof 1) over seeds and the one-tailed paired t-test
    p-value of H1 "reference > strategy" (``scipy.stats.ttest_rel(..., alternative="greater")``).
    -> (markdown, csv)."""
    from scipy.stats import ttest_rel

    n_lab, curves = _curves(results)
    metric = next(iter(next(iter(results.values())).values()))[0]["metrics"]["metric"]
    n_seeds = next(iter(curves.values())).shape[0]
    rows = []
    for s, arr in curves.items():
        for c, n in enumerate(n_lab):
            mean = float(arr[:, c].mean())
            std = float(arr[:, c].std(ddof=1)) if n_seeds > 1 else float("nan")
            p = float("nan")
            if reference in curves and s != reference and n_seeds > 1:
                diff = curves[reference][:, c] - arr[:, c]
                if np.any(diff != 0):
                    p = float(
                        ttest_rel(curves[reference][:, c], arr[:, c], alternative="greater").pvalue
                    )
                else:
                    p = 0.5
            rows.append((s, c, n, mean, std, p))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["strategy", "cycle", "n_labelled", "mean", "std", "p_value_vs_" + reference, "n_seeds"]
    )
    for r in rows:
        w.writerow([*r, n_seeds])
    head = f"| {metric} (%) | " + " | ".join(str(n) for n in n_lab) + " |"
    lines = [
        f"{metric}, mean ± σ over {n_seeds} seeds; (p) = one-tailed paired t-test p-value of "
        f"{reference} > strategy.",
        "",
        head,
        "|" + "---|" * (len(n_lab) + 1),
    ]
    for s in curves:
        cells = []
        for r in rows:
            if r[0] != s:
                continue
            cell = f"{100 * r[3]:.2f} ± {100 * r[4]:.2f}"
            if not np.isnan(r[5]):
                cell += f" ({r[5]:.3f})"
            cells.append(cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", buf.getvalue()


def plot_learning_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_lab, curves = _curves(results)
    metric = next(iter(next(iter(results.values())).values()))[0]["metrics"]["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, arr in curves.items():
        m, sd = 100 * arr.mean(0), 100 * (arr.std(0, ddof=1) if len(arr) > 1 else 0 * arr[0])
        ax.plot(n_lab, m, marker="o", label=s, lw=2.5 if s == "egl++" else 1.5)
        ax.fill_between(n_lab, m - sd, m + sd, alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(
        f"Active learning for pose: mean ± σ over {len(next(iter(curves.values())))} seeds"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_skeleton(ax, image, joints, visible, skeleton, colour) -> None:
    ax.imshow(image, interpolation="nearest")
    for a, b in skeleton:
        if visible[a] and visible[b]:
            ax.plot(joints[[a, b], 0], joints[[a, b], 1], "-", color=colour, lw=1.5)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_eglpp_neighbours(
    model: PoseNet, pool: PoseDataset, labelled, preset: Preset, path: Path, n_show: int = 3,
    n_neighbours: int = 3,
) -> None:  # fmt: skip
    """Fig. 3 of the paper: the ``n_show`` lowest- and highest-EGL++ unlabelled images (predicted
    skeleton, red) and their ``n_neighbours`` most probable labelled neighbours (ground truth,
    green) with their t-SNE probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = np.asarray(labelled)
    unl = np.setdiff1d(np.arange(len(pool)), labelled)
    cand = unl[: preset.n_candidates] if preset.n_candidates else unl
    scores, probs, nbrs = eglpp_pose_scores(
        model, pool, labelled, cand, **preset.eglpp_options, return_neighbours=True
    )
    order = np.argsort(scores)
    picks = [*order[:n_show], *order[::-1][:n_show]]
    heat = infer(model, pool.images[cand[picks]])["heatmaps"]
    pred = decode_heatmaps(heat, stride=pool.image_size // heat.shape[1])
    fig, axes = plt.subplots(
        2 * n_show, n_neighbours + 1, figsize=(1.8 * (n_neighbours + 1), 1.9 * 2 * n_show)
    )
    for row, (p, jp) in enumerate(zip(picks, pred, strict=True)):
        i = cand[p]
        kind = "lowest" if row < n_show else "highest"
        _draw_skeleton(axes[row, 0], pool.images[i], jp, np.ones(len(jp), bool), pool.skeleton, "r")
        axes[row, 0].set_title(f"{kind} EGL++\n{scores[p]:.3g}", fontsize=8)
        for k in range(n_neighbours):
            nb = nbrs[p, k]
            _draw_skeleton(
                axes[row, k + 1], pool.images[nb], pool.joints[nb], pool.visible[nb],
                pool.skeleton, "lime",
            )  # fmt: skip
            axes[row, k + 1].set_title(f"p = {probs[p, k]:.2f}", fontsize=8)
    fig.suptitle(
        "EGL++: lowest (top) and highest (bottom) scores, with labelled neighbours", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def preset_with(preset: Preset, **overrides) -> Preset:
    """A copy of ``preset`` with some fields replaced (``seeds`` as a tuple)."""
    if "seeds" in overrides and overrides["seeds"] is not None:
        overrides["seeds"] = tuple(int(s) for s in overrides["seeds"])
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})
