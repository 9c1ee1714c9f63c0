"""GPEnsemble vs scikit-learn's GaussianProcessRegressor with the same fixed hyper-parameters."""

import pytest

pytest.importorskip("gpjax", reason="GP ensemble: the `gp` extra (gpjax 1.0 needs jax < 0.11)")

import jax
import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel

from egltheory import egl
from egltheory.ensembles import FittedEnsemble, GPEnsemble

JITTER = 1e-6  # gpjax adds this to the training Gram diagonal and to predictive variances


def _data(seed, n=20, d=2):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, d))
    y = np.sin(X).sum(axis=1) + 0.1 * rng.normal(size=n)
    return X, y


@pytest.fixture(scope="module")
def fitted_2d():
    X, y = _data(0)
    model = GPEnsemble(n_members=2, steps=40, mlp_hidden=(8,), mlp_steps=200, chunk_size=5)
    return X, y, model.fit(jax.random.key(0), X, y)


def test_members_match_sklearn_with_fixed_hyperparameters(fitted_2d):
    X, _, fitted = fitted_2d
    X_test = np.random.default_rng(1).uniform(-3, 3, size=(13, 2))
    means, variances = fitted.predict(X_test)
    hyper = fitted.hyperparameters()
    for k in range(fitted.n_members):
        kernel = ConstantKernel(hyper["variance"][k], "fixed") * RBF(
            hyper["lengthscale"][k], "fixed"
        )
        noise = hyper["noise_variance"][k]
        ref = GaussianProcessRegressor(kernel, alpha=noise + JITTER, optimizer=None)
        X_k = np.asarray(fitted.X_replicas[k])
        ref.fit(X_k, np.asarray(fitted.y_replicas[k]) - hyper["mean"][k])
        mean_ref, std_ref = ref.predict(X_test, return_std=True)
        np.testing.assert_allclose(means[k], mean_ref + hyper["mean"][k], atol=1e-6)
        # Eq. 9: variance of y = latent variance + noise (+ gpjax's predictive jitter).
        np.testing.assert_allclose(variances[k], std_ref**2 + noise + JITTER, atol=1e-6)
    # The replicas really are bootstrap resamples of the labelled set.
    np.testing.assert_array_equal(fitted.X_replicas[0], X[np.asarray(fitted.indices[0])])


def test_hyperparameters_improve_marginal_likelihood(fitted_2d):
    _, _, fitted = fitted_2d
    history = np.asarray(fitted.history)
    assert np.all(history[-1] < history[0])  # mean negative log marginal likelihood went down


def test_chunked_prediction_equals_single_chunk(fitted_2d):
    _, _, fitted = fitted_2d
    X_test = np.random.default_rng(2).normal(size=(12, 2))  # 12 = 2 full chunks of 5 + pad
    small = fitted.predict(X_test)
    one_by_one = [fitted.predict(X_test[i : i + 1]) for i in range(3)]
    for i, (m, v) in enumerate(one_by_one):
        np.testing.assert_allclose(small[0][:, i], m[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(small[1][:, i], v[:, 0], rtol=1e-12, atol=1e-12)


def test_closed_form_matches_monte_carlo(fitted_2d):
    X, _, fitted = fitted_2d
    x = X[:10]
    means, variances = fitted.predict(x)
    closed = egl.egl_closed_form(means, variances, fitted.f_z(x), fitted.grad_sq_norm(x), c=4.0)
    mc = egl.egl_monte_carlo(
        jax.random.key(4), fitted.apply_fn, fitted.params, x, means, variances, 2000, c=4.0
    )
    z = np.abs(np.asarray(closed - mc.estimate) / np.asarray(mc.stderr))
    # 10 independent |N(0,1)|: max below 4 with probability > 0.999.
    assert z.max() < 4.0, z


def test_gp_mean_f_z_is_weight_space_posterior_mean():
    X, y = _data(3, n=15, d=1)
    fitted = GPEnsemble(n_members=2, steps=10, f_z="gp_mean").fit(jax.random.key(1), X, y)
    alpha = np.asarray(fitted.params)
    assert alpha.shape == (15,)
    X_test = np.linspace(-2, 2, 7)[:, None]
    # ‖∇_α (m + k(x, X)·α)‖² = ‖k(x, X)‖²; recover k from the weight-space form by linearity.
    f_batch = jax.vmap(fitted.apply_fn, in_axes=(None, 0))
    f0 = f_batch(np.zeros(15), X_test[:3])
    k_rows = np.asarray(jax.vmap(lambda a: f_batch(a, X_test[:3]) - f0)(np.eye(15))).T
    np.testing.assert_allclose(fitted.grad_sq_norm(X_test[:3]), np.sum(k_rows**2, 1), rtol=1e-10)
    # f_z interpolates the data like a GP mean with small noise: residuals far below std(y).
    assert np.sqrt(np.mean((np.asarray(fitted.f_z(X)) - y) ** 2)) < 0.5 * np.std(y)


def test_bad_inputs_raise_clear_errors():
    X, y = _data(4, n=6)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="same number of rows"):
        GPEnsemble(steps=1).fit(key, X, y[:-1])
    y_nan = y.copy()
    y_nan[1] = np.nan
    with pytest.raises(ValueError, match="`y` must be finite"):
        GPEnsemble(steps=1).fit(key, X, y_nan)
    with pytest.raises(ValueError, match="needs at least 3"):
        GPEnsemble(steps=1).fit(key, X[:2], y[:2])
    with pytest.raises(ValueError, match="at least 2"):
        GPEnsemble(n_members=1)
    with pytest.raises(ValueError, match="kernel"):
        GPEnsemble(kernel="spline")
    with pytest.raises(ValueError, match="f_z"):
        GPEnsemble(f_z="tree")


def test_satisfies_the_shared_interface(fitted_2d):
    _, _, fitted = fitted_2d
    assert isinstance(fitted, FittedEnsemble)
    x = np.linspace(-1, 1, 10)[:, None].repeat(fitted.n_features, axis=1)
    means, variances = fitted.predict(x)
    assert means.shape == variances.shape == (fitted.n_members, 10)
    assert fitted.f_z(x).shape == fitted.grad_sq_norm(x).shape == (10,)
