"""Regression data loaders and the 1-D toy."""

import numpy as np
import pytest

from egltheory.datasets import (
    TOY1D_GAPS,
    available_regression_datasets,
    load_regression_dataset,
    standardise,
    toy1d,
    toy1d_mean,
    toy1d_noise_std,
)


def test_toy1d_has_gaps_and_the_stated_noise():
    X, y = toy1d(seed=0, n=4000)
    x = X[:, 0]
    assert X.shape == (4000, 1) and y.shape == (4000,)
    for lo, hi in TOY1D_GAPS:
        assert not np.any((x > lo) & (x < hi))
    z = (y - toy1d_mean(x)) / toy1d_noise_std(x)
    # 4000 standardised residuals: mean within 4 SE (4/sqrt(4000) ≈ 0.063) of 0, std within ~5%.
    assert abs(z.mean()) < 0.065 and abs(z.std() - 1) < 0.05
    np.testing.assert_array_equal(toy1d(seed=0, n=50)[1], toy1d(seed=0, n=50)[1])


@pytest.mark.parametrize("name", ["diabetes", "autompg"])
def test_real_datasets_are_standardised_and_finite(name):
    if name not in available_regression_datasets():
        pytest.skip(f"{name} not installed")
    X, y = load_regression_dataset(name)
    assert X.ndim == 2 and y.shape == (X.shape[0],) and X.shape[0] > 300
    assert np.all(np.isfinite(X)) and np.all(np.isfinite(y))
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-10)
    np.testing.assert_allclose([y.mean(), y.std()], [0, 1], atol=1e-10)


def test_autompg_keeps_the_raw_values_when_asked():
    if "autompg" not in available_regression_datasets():
        pytest.skip("vega_datasets not installed")
    X, y = load_regression_dataset("autompg", standardise_data=False)
    assert X.shape[1] == 8 and y.min() >= 9 and y.max() < 47  # miles per gallon (9 to 46.6)
    assert set(np.unique(X[:, -3])) <= set(range(1970, 1983))  # model year


def test_standardise_leaves_constant_columns_at_zero():
    X = np.column_stack([np.arange(5.0), np.full(5, 3.0)])
    Xs, ys = standardise(X, np.arange(5.0))
    np.testing.assert_array_equal(Xs[:, 1], 0.0)
    np.testing.assert_allclose(ys.std(), 1.0)


def test_unknown_dataset_and_bad_size_raise():
    with pytest.raises(ValueError, match="must be one of"):
        load_regression_dataset("mnist")
    with pytest.raises(ValueError, match="positive"):
        toy1d(n=0)
    assert {"toy1d", "diabetes"} <= set(available_regression_datasets())
