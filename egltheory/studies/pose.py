"""The pose study (the paper's Table 1 protocol): EGL++ against random, core-set, multi-peak
entropy and learning loss on a stacked hourglass.

For every seed (a :class:`~egltheory.studies.runner.Trial`): a random initial labelled set and ONE
base model trained on it (cached in ``out/base_models``, shared by all strategies: paired seeds);
then every strategy runs cycles of selection → labelling (from the held ground truth) → training
(fine-tune from the previous cycle's model, as the authors, or retrain) → evaluation on the test
set. Every model carries a learning-loss head trained on detached features, so one base model
serves all strategies and the head does not change the pose network. Besides the shared report:
``domains.md`` (which domain each strategy picked), ``fit.md`` (the final models' PCKh on their own
labelled images against the test set) and ``eglpp_neighbours.png``, the paper's Fig. 3, drawn with
the final model of the first seed's EGL++ run (:mod:`egltheory.pose.figures`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from egltheory.active.checkpoint import finished_cycles, load_checkpoint
from egltheory.eglpp import EGLPPOptions, NormEngine
from egltheory.files import (
    DamagedFileError,
    atomic_write_bytes,
    atomic_write_text,
    jsonable,
    read_pickle,
    remove_stale_temp_files,
)
from egltheory.pose.acquisition import STRATEGIES, PoseEGLPPOptions, make_strategy
from egltheory.pose.datasets import PoseDataset, load_lsp, load_mpii
from egltheory.pose.hourglass import HourglassConfig
from egltheory.pose.learning_loss import PoseNet
from egltheory.pose.synthetic import load_synthetic
from egltheory.pose.training import TrainConfig, evaluate, init_model, train_pose_model
from egltheory.studies.report import MetricSpec, curves
from egltheory.studies.runner import Protocol, Trial

__all__ = [
    "DATA_SOURCES",
    "PAPER_STRATEGIES",
    "PRESETS",
    "PoseData",
    "PoseStudy",
    "PoseTraining",
    "load_study_data",
]

DATA_SOURCES = ("synthetic", "mpii", "lsp")
SYNTHETIC_DOMAINS = ("everyday", "athletic")  # PoseDataset.domains 0 and 1
# The paper's Table 1 strategies (the EGL++ variants of identity 6 are opt-in).
PAPER_STRATEGIES = ("random", "core-set", "multi-peak-entropy", "learning-loss", "egl++")


@dataclass(frozen=True)
class PoseData:
    """Where pool and test images come from. Synthetic: ``n_pool`` / ``n_test`` images rendered
    from seeds ``seed`` / ``seed + 1`` (no shared clips) with the given athletic fractions, cached
    under ``cache_dir``. MPII: Newell's train/valid; LSP: LSP (+LSPET) train / LSP test, from
    ``data_dir``."""

    source: str = "synthetic"
    n_pool: int = 700
    n_test: int = 300
    seed: int = 2022
    pool_athletic: float = 0.3
    test_athletic: float = 0.5
    data_dir: str | None = None
    cache_dir: str | None = "results/cache/pose_synthetic"

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"`source` must be one of {DATA_SOURCES}, got {self.source!r}.")
        if self.source != "synthetic" and self.data_dir is None:
            raise ValueError(f"data source {self.source!r} needs a data directory (--data-dir).")
        for name in ("n_pool", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be ≥ 1, got {getattr(self, name)}.")

    def identity(self) -> dict:
        """What determines the images (not where they are cached)."""
        return {k: v for k, v in asdict(self).items() if k != "cache_dir"}


@dataclass(frozen=True)
class PoseTraining:
    """``base``: training of the cycle-0 model (its ``epochs``); later cycles fine-tune the
    previous model for ``cycle_epochs`` (``finetune``) or retrain from scratch with ``base``."""

    base: TrainConfig = TrainConfig(epochs=30)
    cycle_epochs: int = 5
    finetune: bool = True

    def __post_init__(self) -> None:
        if self.cycle_epochs < 1:
            raise ValueError(f"`cycle_epochs` must be ≥ 1, got {self.cycle_epochs}.")

    def for_cycle(self, first: bool) -> TrainConfig:
        if first or not self.finetune:
            return self.base
        return replace(self.base, epochs=self.cycle_epochs)


@dataclass(frozen=True)
class PoseStudy:
    """A pose study: protocol, model, data, training and EGL++ settings (nested, validated)."""

    protocol: Protocol
    model: HourglassConfig
    data: PoseData = PoseData()
    training: PoseTraining = PoseTraining()
    eglpp: PoseEGLPPOptions = PoseEGLPPOptions()
    title: str = field(default="Pose active learning", init=False)
    group_keys: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocol.strategies) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"`strategies` has unknown names {unknown}; known: {STRATEGIES}.")
        if self.model.input_size % 4:
            raise ValueError("the model's input size must be a multiple of 4 (heatmap stride).")
        if self.eglpp.heatmap_sigma != self.training.base.heatmap_sigma:
            raise ValueError(
                f"EGL++'s ground-truth heatmaps (σ = {self.eglpp.heatmap_sigma}) must match the "
                f"training targets (σ = {self.training.base.heatmap_sigma})."
            )
        if self.data.source == "synthetic" and self.protocol.labels_needed > self.data.n_pool:
            raise ValueError(
                f"the protocol labels {self.protocol.labels_needed} images (n_initial + budget × "
                f"n_cycles) but the synthetic pool has {self.data.n_pool}."
            )

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        """Overall test PCKh (PCK on LSP), and on the synthetic data per domain."""
        label = "PCK@0.2" if self.data.source == "lsp" else "PCKh@0.5"
        metrics = [MetricSpec("mean", f"{label} (%)", higher_is_better=True, scale=100.0)]
        if self.data.source == "synthetic":
            metrics += [
                MetricSpec(f"mean_domain{d}", f"{label} {name} (%)", True, scale=100.0)
                for d, name in enumerate(SYNTHETIC_DOMAINS)
            ]
        return tuple(metrics)

    def settings(self) -> dict:
        return jsonable(
            {
                "study": "pose",
                "protocol": asdict(self.protocol),
                "model": asdict(self.model),
                "data": asdict(self.data),
                "training": asdict(self.training),
                "eglpp": asdict(self.eglpp),
            }
        )

    def trials(self, out: Path, progress: bool = False) -> Iterator[Trial]:
        return _trials(self, Path(out), progress)

    def write_extras(self, rows, out: Path, progress: bool) -> None:
        from egltheory.pose.figures import plot_eglpp_neighbours

        if self.data.source != "mpii":
            name = SYNTHETIC_DOMAINS[1] if self.data.source == "synthetic" else "LSPET"
            atomic_write_text(out / "domains.md", domain_table(rows, name))

        pool, test = load_study_data(self.data, self.model.input_size)
        atomic_write_text(out / "fit.md", self.fit_table(out, pool, test))
        strategy = next((s for s in self.protocol.strategies if s.startswith("egl++")), None)
        if strategy is None:
            return
        seed = self.protocol.seeds[0]
        run = out / "runs" / strategy / f"seed_{seed}"
        cycle, labelled, model = _final_checkpoint(run, model_loader(self.model_config(pool)))
        cand = np.setdiff1d(np.arange(len(pool)), labelled)[: self.protocol.n_candidates]
        plot_eglpp_neighbours(
            model, pool, labelled, cand, self.eglpp.replace(estimator="exact"),
            out / "eglpp_neighbours.png",
            caption=f"model after cycle {cycle} of the {strategy} run, seed {seed} "
            f"({labelled.size} labelled images); exact EGL++",
        )  # fmt: skip

    def fit_table(self, out: Path, pool: PoseDataset, test: PoseDataset) -> str:
        """Markdown: how well each strategy's final models fit the images they were trained on
        (the labelled set, unaugmented) against the test set; mean ± σ over seeds, in %."""
        load = model_loader(self.model_config(pool))
        lines = [
            "Final models: PCKh@0.5 (%) on their own labelled images (no augmentation) and on "
            "the test set, mean ± σ over seeds.",
            "",
            "| strategy | labelled | train | test |",
            "|---|---:|---:|---:|",
        ]
        for strategy in self.protocol.strategies:
            fit, held_out, sizes = [], [], set()
            for seed in self.protocol.seeds:
                run = out / "runs" / strategy / f"seed_{seed}"
                _, labelled, model = _final_checkpoint(run, load)
                sizes.add(int(labelled.size))
                fit.append(100 * evaluate(model, pool.subset(labelled))["mean"])
                held_out.append(100 * evaluate(model, test)["mean"])
            lines.append(f"| {strategy} | {'/'.join(map(str, sorted(sizes)))} | "
                         f"{_mean_sd(fit)} | {_mean_sd(held_out)} |")  # fmt: skip
        return "\n".join(lines) + "\n"

    def model_config(self, pool: PoseDataset) -> HourglassConfig:
        """The hourglass for ``pool``'s joints."""
        return replace(self.model, n_joints=pool.joints.shape[1])


def domain_table(rows, domain_name: str) -> str:
    """Markdown: per strategy and labelled-set size, the share (mean ± σ over seeds, %) of the
    images picked that cycle (cycle 0: the initial set) from domain 1 (``domain_name``)."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    cells, header = {}, None
    for s in strategies:
        _, n_lab, values = curves(rows, "picked_domain1", s)
        header = header if header is not None else n_lab
        cells[s] = [f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1) if len(v) > 1 else 0:.1f}"
                    for v in values.T]  # fmt: skip
    lines = [
        f"Share of the images labelled each cycle that are {domain_name} (%), mean ± σ over "
        "seeds (cycle 0: the initial random set).",
        "",
        "| strategy | " + " | ".join(str(n) for n in header) + " |",
        "|---|" + "---:|" * len(header),
        *(f"| {s} | " + " | ".join(c) + " |" for s, c in cells.items()),
    ]
    return "\n".join(lines) + "\n"


def load_study_data(data: PoseData, image_size: int) -> tuple[PoseDataset, PoseDataset]:
    """``(pool, test)`` of ``data`` at ``image_size`` pixels."""
    if data.source == "synthetic":
        pool = load_synthetic(data.n_pool, data.seed, image_size, data.pool_athletic,
                              data.cache_dir)  # fmt: skip
        test = load_synthetic(data.n_test, data.seed + 1, image_size, data.test_athletic,
                              data.cache_dir)  # fmt: skip
        return pool, test
    if data.source == "mpii":
        return load_mpii(data.data_dir, image_size)
    lspet = Path(data.data_dir) / "lspet"
    return load_lsp(data.data_dir, image_size, lspet if lspet.exists() else None)


def save_model(model: PoseNet, path: Path) -> None:
    """The model's state as a pickled pure dict of NumPy arrays, written atomically."""
    state = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    atomic_write_bytes(path, pickle.dumps(state))


def model_loader(cfg: HourglassConfig):
    """``load(path) -> PoseNet`` for models of ``cfg`` saved by :func:`save_model`."""

    def load(path: Path) -> PoseNet:
        model = init_model(cfg, 0, learning_loss=True)
        state = nnx.state(model)
        nnx.replace_by_pure_dict(state, read_pickle(path))
        nnx.update(model, state)
        model.eval()
        return model

    return load


def _final_checkpoint(run: Path, load) -> tuple[int, np.ndarray, PoseNet]:
    """``(cycle, labelled indices, model)`` of a finished run's last checkpoint."""
    cycles = finished_cycles(run) if run.is_dir() else []
    if not cycles:
        raise FileNotFoundError(f"no finished cycle in {run}: the run has not finished")
    checkpoint, model = load_checkpoint(run, cycles[-1], load)
    return cycles[-1], checkpoint["labelled"], model


def _mean_sd(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.2f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.2f}"


def _seed_from_key(key: jax.Array) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(jsonable(obj), sort_keys=True).encode()).hexdigest()[:10]


def _trials(study: PoseStudy, out: Path, progress: bool) -> Iterator[Trial]:
    protocol = study.protocol
    pool, test = load_study_data(study.data, study.model.input_size)
    cfg = study.model_config(pool)
    load = model_loader(cfg)
    base_spec = {"model": asdict(cfg), "data": study.data.identity(), "n_pool": len(pool),
                 "train": asdict(study.training.base), "n_initial": protocol.n_initial}  # fmt: skip
    # What a resume must match: everything that changes values (not how gradients are computed).
    eglpp = {k: v for k, v in asdict(study.eglpp).items() if k != "kernel_grad"}
    eglpp["eglpp"] = {k: v for k, v in eglpp["eglpp"].items() if k != "engine"}
    run_info = {"model": asdict(cfg), "data": study.data.identity(), "n_pool": len(pool),
                "training": asdict(study.training), "eglpp": eglpp}  # fmt: skip

    def evaluate_fn(model):
        return evaluate(model, test)

    remove_stale_temp_files(out / "base_models")
    for seed in protocol.seeds:
        rng = np.random.default_rng(seed)
        initial = np.sort(rng.choice(len(pool), protocol.n_initial, replace=False))
        base_path = out / "base_models" / f"seed_{seed}_{_digest(base_spec)}.model"

        def train_fn(prev, labelled, key, base_path=base_path):
            train = study.training.for_cycle(first=prev is None)
            if prev is None and base_path.exists():
                try:
                    return load(base_path)
                except DamagedFileError as err:  # recompute what was damaged
                    warnings.warn(f"{err}: retraining it.", RuntimeWarning, stacklevel=2)
            init = prev if (prev is not None and study.training.finetune) else None
            model, _ = train_pose_model(pool, labelled, cfg, train, _seed_from_key(key), init=init,
                                        learning_loss=True, progress=progress)  # fmt: skip
            if prev is None:
                save_model(model, base_path)
            return model

        yield Trial(
            group=(),
            seed=int(seed),
            pool_size=len(pool),
            initial=initial,
            make_strategy=lambda name: make_strategy(name, pool, study.eglpp),
            train_fn=train_fn,
            evaluate_fn=evaluate_fn,
            save_model=save_model,
            load_model=load,
            run_info=run_info,
            describe_selection=lambda idx: {
                "picked_domain1": float(np.mean(pool.domains[np.asarray(idx)] == 1))
            },
        )


# CPU presets (docs/pose.md, "Why the small model did not learn"): 96-px renders, heatmap σ of half
# a heatmap pixel (below the PCKh@0.5 tolerance, about 1 heatmap pixel at 96 px), Adam 3e-3, and
# most steps in the base model, which every strategy of a seed shares.
_CPU_MODEL = HourglassConfig(n_stacks=1, channels=32, depth=2, input_size=96)
_CPU_TRAIN = TrainConfig(epochs=70, batch_size=16, learning_rate=3e-3, heatmap_sigma=0.5)

PRESETS = {
    "tiny": PoseStudy(
        protocol=Protocol(strategies=PAPER_STRATEGIES, seeds=(0, 1), n_initial=24, budget=12,
                          n_cycles=2, reference="egl++", n_candidates=24),
        model=HourglassConfig(n_stacks=1, channels=16, depth=2, input_size=32),
        data=PoseData(n_pool=96, n_test=32),
        training=PoseTraining(base=TrainConfig(epochs=2, batch_size=8), cycle_epochs=1),
    ),
    "default": PoseStudy(
        protocol=Protocol(strategies=PAPER_STRATEGIES, seeds=(0, 1, 2, 3, 4), n_initial=100,
                          budget=60, n_cycles=3, reference="egl++", n_candidates=150),
        model=_CPU_MODEL,
        data=PoseData(n_pool=700, n_test=300),
        training=PoseTraining(base=_CPU_TRAIN, cycle_epochs=5),
        eglpp=PoseEGLPPOptions(eglpp=EGLPPOptions(engine=NormEngine(cotangents=5)),
                               heatmap_sigma=0.5),
    ),
    "cpu": PoseStudy(
        protocol=Protocol(strategies=PAPER_STRATEGIES, seeds=tuple(range(10)), n_initial=100,
                          budget=60, n_cycles=5, reference="egl++", n_candidates=150),
        model=_CPU_MODEL,
        data=PoseData(n_pool=700, n_test=300),
        training=PoseTraining(base=replace(_CPU_TRAIN, epochs=100), cycle_epochs=8),
        eglpp=PoseEGLPPOptions(eglpp=EGLPPOptions(engine=NormEngine(cotangents=5)),
                               heatmap_sigma=0.5),
    ),
    "paper": PoseStudy(
        protocol=Protocol(strategies=PAPER_STRATEGIES, seeds=(0, 1, 2, 3, 4), n_initial=1000,
                          budget=1000, n_cycles=5, reference="egl++"),
        model=HourglassConfig(n_stacks=2, channels=256, depth=4, input_size=256),
        data=PoseData(n_pool=10000, n_test=2000),
        training=PoseTraining(
            base=TrainConfig(epochs=100, batch_size=16, learning_rate=2.5e-4,
                             optimizer="rmsprop"),
            cycle_epochs=30,
        ),
        eglpp=PoseEGLPPOptions(eglpp=EGLPPOptions(engine=NormEngine(cotangents=3))),
    ),
}  # fmt: skip
