"""The files of one active-learning run: settings, per-cycle records, the last cycle's checkpoint.

Per finished cycle ``c`` (in this order): ``checkpoint_{c:04d}.model`` (``save_model(model,
path)``; default: a pickle of the model with its JAX arrays moved to host NumPy, exact bits, no
target structure needed), ``checkpoint_{c:04d}.pkl`` (labelled/unlabelled indices and the cycle's
keys), ``cycle_{c:04d}.json`` (the record: its presence marks the cycle as finished) and
``results.json`` (all records so far); then cycle ``c − 1``'s checkpoint is deleted. Every file is
written atomically (:mod:`egltheory.files`). ``run.json`` holds the settings a resume must match.
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from egltheory.files import (
    atomic_write_bytes,
    atomic_write_json,
    jsonable,
    read_json,
    read_pickle,
)

__all__ = [
    "clear_run",
    "describe_settings_change",
    "finished_cycles",
    "key_data",
    "load_checkpoint",
    "load_records",
    "pickle_model",
    "remove_checkpoint",
    "unpickle_model",
    "write_cycle",
]

_CYCLE_RE = re.compile(r"^cycle_(\d{4})\.json$")
_CHECKPOINT_RE = re.compile(r"^checkpoint_\d{4}")


def key_data(key: jax.Array) -> np.ndarray:
    """Raw bits of a typed (``jax.random.key``) or legacy (``PRNGKey``) key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _to_host(tree):
    return jax.tree_util.tree_map(lambda v: np.asarray(v) if isinstance(v, jax.Array) else v, tree)


def pickle_model(model: Any, path: Path) -> None:
    """Default ``save_model``: the model's pytree with JAX arrays as NumPy, pickled atomically."""
    try:
        data = pickle.dumps(_to_host(model), protocol=pickle.HIGHEST_PROTOCOL)
    except (AttributeError, TypeError, pickle.PicklingError) as err:
        raise ValueError(
            f"the model cannot be pickled ({err}); pass `save_model`/`load_model` to "
            "run_active_learning (e.g. orbax, or refit from the checkpointed labelled set)."
        ) from err
    atomic_write_bytes(path, data)


def unpickle_model(path: Path) -> Any:
    """Default ``load_model``: the inverse of :func:`pickle_model`."""
    return read_pickle(path, remedy=f"delete {path.parent} to rerun this run from cycle 0")


def finished_cycles(out_dir: Path) -> list[int]:
    """Cycles whose record file exists in ``out_dir``, sorted."""
    return sorted(int(m.group(1)) for p in out_dir.iterdir() if (m := _CYCLE_RE.match(p.name)))


def clear_run(out_dir: Path) -> None:
    """Delete a previous run's files (records, checkpoints, results, settings) in ``out_dir``."""
    for p in out_dir.iterdir():
        if (
            _CYCLE_RE.match(p.name)
            or _CHECKPOINT_RE.match(p.name)
            or p.name in ("results.json", "run.json")
        ):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def describe_settings_change(stored: dict, current: dict) -> str:
    """``"a.b: 5 → 7; c: … "``: every leaf setting that differs between two ``run.json`` dicts."""
    old, new = _flatten(stored), _flatten(current)
    parts = []
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<absent>") != new.get(k, "<absent>"):
            a, b = (repr(d.get(k, "<absent>")) for d in (old, new))
            parts.append(f"{k}: {a[:60]} → {b[:60]}")
    return "; ".join(parts)


def load_records(out_dir: Path, cycles: list[int]) -> list[dict]:
    """The records of ``cycles`` (damaged files raise naming the file)."""
    remedy = f"delete {out_dir} to rerun this run"
    return [read_json(out_dir / f"cycle_{c:04d}.json", remedy) for c in cycles]


def load_checkpoint(out_dir: Path, cycle: int, load_model) -> tuple[dict, Any]:
    """``(indices and keys, model)`` of ``cycle``'s checkpoint."""
    ckpt = read_pickle(out_dir / f"checkpoint_{cycle:04d}.pkl", f"delete {out_dir} to rerun it")
    return ckpt, load_model(out_dir / f"checkpoint_{cycle:04d}.model")


def write_cycle(
    out_dir: Path, cycle: int, record: dict, checkpoint: dict, model: Any, save_model, records
) -> None:
    """Persist a finished cycle in the order of the module docstring."""
    save_model(model, out_dir / f"checkpoint_{cycle:04d}.model")
    atomic_write_bytes(out_dir / f"checkpoint_{cycle:04d}.pkl", pickle.dumps(checkpoint))
    atomic_write_json(out_dir / f"cycle_{cycle:04d}.json", record)
    atomic_write_json(out_dir / "results.json", jsonable(records))


def remove_checkpoint(out_dir: Path, cycle: int) -> None:
    """Delete ``cycle``'s checkpoint files (a later cycle's supersede them)."""
    if cycle < 0:
        return
    for suffix in (".pkl", ".model"):
        p = out_dir / f"checkpoint_{cycle:04d}{suffix}"
        if p.is_dir():
            shutil.rmtree(p)
        elif p.is_file():
            p.unlink()
