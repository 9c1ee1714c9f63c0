"""LinearEnsemble against statsmodels / scikit-learn / NumPy, closed form vs Monte-Carlo, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from egltheory import egl
from egltheory.ensembles import LinearEnsemble


def _data(seed, n=40, d=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.7 + 0.3 * rng.normal(size=n)
    return X, y


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 4))
def test_members_match_statsmodels_prediction_interval(seed, d):
    X, y = _data(seed, n=30, d=d)
    fitted = LinearEnsemble(n_members=3).fit(jax.random.key(seed), X, y)
    X_new = np.random.default_rng(seed + 1).normal(size=(7, d))
    means, variances = fitted.predict(X_new)
    for k, idx in enumerate(np.asarray(fitted.indices)):
        ols = sm.OLS(y[idx], sm.add_constant(X[idx], has_constant="add")).fit()
        pred = ols.get_prediction(sm.add_constant(X_new, has_constant="add"))
        # float64 solves of a well-conditioned p x p system: agreement to ~1e-12, 1e-9 is slack.
        np.testing.assert_allclose(means[k], pred.predicted_mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(variances[k], pred.se_obs**2, rtol=1e-9)


def test_f_z_is_full_data_ols_and_grad_is_feature_norm():
    X, y = _data(3)
    fitted = LinearEnsemble().fit(jax.random.key(0), X, y)
    design = np.column_stack([np.ones(len(X)), X])
    theta, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(fitted.params, theta, rtol=1e-10)
    np.testing.assert_allclose(fitted.f_z(X), design @ theta, rtol=1e-10, atol=1e-12)
    # Eq. 7: ||∇θ f_z||² = ||x||² + 1 with an intercept (autodiff vs formula).
    np.testing.assert_allclose(fitted.grad_sq_norm(X), np.sum(X**2, 1) + 1.0, rtol=1e-12)


def test_no_intercept_grad_and_ridge_matches_sklearn():
    X, y = _data(4)
    no_icpt = LinearEnsemble(intercept=False).fit(jax.random.key(1), X, y)
    np.testing.assert_allclose(no_icpt.grad_sq_norm(X), np.sum(X**2, 1), rtol=1e-12)
    fitted = LinearEnsemble(ridge=2.5).fit(jax.random.key(1), X, y)
    ref = Ridge(alpha=2.5, fit_intercept=True).fit(X, y)  # intercept unpenalised, as ours
    np.testing.assert_allclose(fitted.params[1:], ref.coef_, rtol=1e-9)
    np.testing.assert_allclose(fitted.params[0], ref.intercept_, rtol=1e-9)


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50))
def test_target_shift_moves_means_not_variances(seed, shift):
    X, y = _data(seed, n=25, d=2)
    key = jax.random.key(seed)
    a = LinearEnsemble().fit(key, X, y)
    b = LinearEnsemble().fit(key, X, y + shift)
    ma, va = a.predict(X)
    mb, vb = b.predict(X)
    np.testing.assert_allclose(mb, ma + shift, atol=1e-8 * (1 + abs(shift)))
    np.testing.assert_allclose(vb, va, rtol=1e-8)
    assert np.all(np.asarray(va) > 0)


def test_closed_form_matches_monte_carlo_on_fitted_model():
    X, y = _data(5)
    fitted = LinearEnsemble().fit(jax.random.key(2), X, y)
    x = X[:15]
    means, variances = fitted.predict(x)
    closed = egl.egl_closed_form(means, variances, fitted.f_z(x), fitted.grad_sq_norm(x), c=4.0)
    mc = egl.egl_monte_carlo(
        jax.random.key(3), fitted.apply_fn, fitted.params, x, means, variances, 4000, c=4.0
    )
    z = np.abs(np.asarray(closed - mc.estimate) / np.asarray(mc.stderr))
    # 15 independent |N(0,1)| stay below 4 with prob. 1 - 15 * 6.3e-5 > 0.999.
    assert z.max() < 4.0, z


def test_bad_inputs_raise_clear_errors():
    X, y = _data(6, n=12, d=2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="same number of rows"):
        LinearEnsemble().fit(key, X, y[:-1])
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="`y` must be finite"):
        LinearEnsemble().fit(key, X, y_nan)
    with pytest.raises(ValueError, match="needs at least 4"):
        LinearEnsemble().fit(key, X[:3], y[:3])
    with pytest.raises(ValueError, match="at least 2"):
        LinearEnsemble(n_members=1)
    with pytest.raises(ValueError, match="ridge"):
        LinearEnsemble(ridge=-1.0)
    with pytest.raises(ValueError, match="shape"):
        LinearEnsemble().fit(key, X[:, 0], y)
    with pytest.raises(ValueError, match="rank"):
        # 4 labelled points, p = 3: some bootstrap replica repeats points and loses rank.
        LinearEnsemble(n_members=8).fit(key, X[:4], y[:4])
    fitted = LinearEnsemble().fit(key, X, y)
    with pytest.raises(ValueError, match="2 feature columns"):
        fitted.predict(jnp.ones((3, 5)))


def test_x64_off_gives_one_clear_warning_not_a_wall():
    """With JAX's default float32, fitting and scoring warn once, saying how to enable x64."""
    import subprocess
    import sys

    code = """
import warnings, jax, numpy as np
warnings.simplefilter("always")
from egltheory.ensembles import AleatoricEnsemble, LinearEnsemble
X = np.random.default_rng(0).normal(size=(30, 3)); y = X.sum(1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for spec in (LinearEnsemble(4), AleatoricEnsemble(4, steps=5)):
        m = spec.fit(jax.random.key(0), X, y); m.predict(X); m.grad_sq_norm(X)
texts = [str(w.message) for w in caught]
assert len(texts) == 1 and "jax_enable_x64" in texts[0], texts
print("ONE-WARNING")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ONE-WARNING" in out.stdout
