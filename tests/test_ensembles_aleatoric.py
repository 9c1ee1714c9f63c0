"""AleatoricEnsemble: noise-curve recovery, joint = one-at-a-time training, guards, Eq. 10 vs MC."""

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from egltheory import egl
from egltheory.datasets import TOY1D_GAPS, toy1d, toy1d_noise_std
from egltheory.ensembles import AleatoricEnsemble, FittedEnsemble


@pytest.fixture(scope="module")
def fitted_toy():
    X, y = toy1d(seed=1, n=400)
    model = AleatoricEnsemble(hidden=(32, 32), steps=1000, learning_rate=5e-3)
    return X, y, model.fit(jax.random.key(0), X, y)


def test_recovers_known_heteroscedastic_noise_curve(fitted_toy):
    _, _, fitted = fitted_toy
    grid = np.linspace(-3.8, 3.8, 200)
    inside = np.ones_like(grid, dtype=bool)
    for lo, hi in TOY1D_GAPS:  # judge only where there is training data
        inside &= ~((grid > lo - 0.2) & (grid < hi + 0.2))
    x = grid[inside][:, None]
    _, variances = fitted.predict(x)
    estimate = np.sqrt(np.asarray(variances).mean(axis=0))
    rel = np.abs(estimate / toy1d_noise_std(x[:, 0]) - 1.0)
    # A local std from the ~50 points of a neighbourhood has relative standard error
    # ≈ 1/sqrt(2·50) = 10%; averaged along the curve 20% leaves room for smoothing bias only.
    assert rel.mean() < 0.2, rel.mean()
    assert np.all(np.asarray(variances) > 0)


def test_joint_training_equals_one_at_a_time():
    X, y = toy1d(seed=2, n=40)
    key = jax.random.key(5)
    config = dict(n_members=3, hidden=(8,), steps=60, learning_rate=1e-2)
    joint = AleatoricEnsemble(**config).fit(key, X, y)
    single = AleatoricEnsemble(**config, train_mode="one_at_a_time").fit(key, X, y)
    m_joint, v_joint = joint.predict(X)
    m_single, v_single = single.predict(X)
    # Same keys, same replicas, Adam is element-wise: identical up to float64 reassociation.
    np.testing.assert_allclose(m_joint, m_single, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(v_joint, v_single, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(joint.f_z(X), single.f_z(X), rtol=1e-8, atol=1e-10)


def test_variance_guard_keeps_training_finite_on_wild_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y = np.where(rng.random(30) < 0.2, 1e4, 0.0) + rng.normal(size=30)  # outliers, tiny noise
    fitted = AleatoricEnsemble(hidden=(8,), steps=100, learning_rate=0.5).fit(
        jax.random.key(1), X, y
    )
    means, variances = fitted.predict(X)
    assert np.all(np.isfinite(np.asarray(fitted.history)))
    assert np.all(np.asarray(variances) >= 1e-6) and np.all(np.isfinite(np.asarray(means)))


def test_closed_form_matches_monte_carlo_on_fitted_model(fitted_toy):
    X, _, fitted = fitted_toy
    x = X[::40]
    means, variances = fitted.predict(x)
    closed = egl.egl_closed_form(means, variances, fitted.f_z(x), fitted.grad_sq_norm(x))
    mc = egl.egl_monte_carlo(
        jax.random.key(2), fitted.apply_fn, fitted.params, x, means, variances, 2000
    )
    z = np.abs(np.asarray(closed - mc.estimate) / np.asarray(mc.stderr))
    # 10 independent |N(0,1)|: max below 4 with probability > 0.999.
    assert z.max() < 4.0, z


def test_grad_sq_norm_matches_finite_differences(fitted_toy):
    X, _, fitted = fitted_toy
    x = X[:2]
    flat, unravel = ravel_pytree(fitted.params)
    eps = 1e-6
    steps = eps * np.eye(flat.shape[0])

    def f_at(delta):
        return jax.vmap(fitted.apply_fn, in_axes=(None, 0))(unravel(flat + delta), x)

    fd = (jax.vmap(f_at)(steps) - jax.vmap(f_at)(-steps)) / (2 * eps)  # [P, N]
    # Central differences in float64 have relative error ~1e-8 here; 1e-5 is slack.
    np.testing.assert_allclose(fitted.grad_sq_norm(x), np.sum(np.square(fd), axis=0), rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    X, y = toy1d(seed=3, n=10)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="same number of rows"):
        AleatoricEnsemble(steps=2).fit(key, X[:-1], y)
    y_nan = y.copy()
    y_nan[0] = np.nan
    with pytest.raises(ValueError, match="`y` must be finite"):
        AleatoricEnsemble(steps=2).fit(key, X, y_nan)
    with pytest.raises(ValueError, match="needs at least 3"):
        AleatoricEnsemble(steps=2).fit(key, X[:2], y[:2])
    with pytest.raises(ValueError, match="at least 2"):
        AleatoricEnsemble(n_members=1)
    with pytest.raises(ValueError, match="train_mode"):
        AleatoricEnsemble(train_mode="sometimes")


def test_satisfies_the_shared_interface(fitted_toy):
    _, _, fitted = fitted_toy
    assert isinstance(fitted, FittedEnsemble)
    x = np.linspace(-1, 1, 10)[:, None].repeat(fitted.n_features, axis=1)
    means, variances = fitted.predict(x)
    assert means.shape == variances.shape == (fitted.n_members, 10)
    assert fitted.f_z(x).shape == fitted.grad_sq_norm(x).shape == (10,)
