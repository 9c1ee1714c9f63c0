"""Bootstrap ensemble of exact Gaussian processes (gpjax 1.0), Eq. 9 with the noise term.

Member k is an exact GP (constant mean, RBF kernel by default, ARD lengthscales, Gaussian noise)
whose hyper-parameters maximise the marginal likelihood of bootstrap replica k. All K optimisations
run in one compiled program: the gpjax models' array leaves are stacked on a leading axis,
``lax.map`` runs over replicas and Adam inside ``lax.scan`` (under ``eqx.filter_jit``).
Each member's predictive for y at x* is (Eq. 9)

    μ_k(x*) = m + k(x*, X_k) (K_k + σ_k² I)⁻¹ (y_k − m),
    σ_k²(x*) = k(x*, x*) − k(x*, X_k)(K_k + σ_k² I)⁻¹ k(X_k, x*) + σ_k² (+ gpjax's jitter 1e-6),

computed with ``covariance="diagonal"`` (pools never build an N × N matrix) in chunks of the pool.

``f_z`` must have parameters (Eq. 10's gradient is taken w.r.t. them): ``f_z="mlp"`` (default)
trains a small Flax NNX MLP with squared error on all labelled data; ``f_z="gp_mean"`` uses the
full-data GP posterior mean in weight-space form ``f(x) = m + k(x, X)·α`` with the representer
weights ``α [n]`` as the parameters (so ``‖∇_α f‖² = ‖k(x, X)‖²``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from egltheory.ensembles.base import (
    ParametricFullDataModel,
    bootstrap_indices,
    check_member_count,
    real_dtype,
    validate_inputs,
    validate_training_data,
)
from egltheory.ensembles.networks import build_stacked, mean_apply, member_params, train_stacked

if TYPE_CHECKING:
    import gpjax as gpx

KERNELS = ("rbf", "matern12", "matern32", "matern52")


def _gpx():
    """gpjax, imported on first use: the ``gp`` extra (gpjax 1.0 requires jax < 0.11), so the
    unfitted :class:`GPEnsemble` and everything else import without it."""
    try:
        import gpjax
    except ModuleNotFoundError as error:
        if error.name != "gpjax":
            raise
        raise ModuleNotFoundError(
            "GP ensembles need gpjax: pip install 'egltheory[gp]' (gpjax 1.0 requires jax < 0.11).",
            name="gpjax",
        ) from error
    return gpjax


def _val(parameter):
    return _gpx().parameters.val(parameter)


def build_gp(
    kernel: str,
    n_dims: int,
    *,
    lengthscale,
    variance: float,
    noise_variance: float,
    mean: float,
    jitter: float = 1e-6,
) -> gpx.gps.ConjugateModel:
    """A gpjax conjugate model: constant mean, stationary ``kernel``, Gaussian likelihood."""
    if kernel not in KERNELS:
        raise ValueError(f"`kernel` must be one of {sorted(KERNELS)}, got {kernel!r}.")
    gpx = _gpx()
    kernel_class = {
        "rbf": gpx.kernels.RBF,
        "matern12": gpx.kernels.Matern12,
        "matern32": gpx.kernels.Matern32,
        "matern52": gpx.kernels.Matern52,
    }[kernel]
    prior = gpx.gps.Prior(
        mean_function=gpx.mean_functions.Constant(jnp.asarray(mean, dtype=real_dtype())),
        kernel=kernel_class(
            lengthscale=jnp.asarray(lengthscale, dtype=real_dtype()),
            variance=jnp.asarray(variance, dtype=real_dtype()),
            n_dims=n_dims,
        ),
        jitter=jitter,
    )
    likelihood = gpx.likelihoods.Gaussian(
        obs_stddev=jnp.sqrt(jnp.asarray(noise_variance, dtype=real_dtype()))
    )
    return prior * likelihood


def _negative_mll(params, static, X, y) -> jax.Array:
    model = eqx.combine(params, static)
    gpx = _gpx()
    data = gpx.Dataset(X=X, y=y[:, None])
    return -gpx.objectives.conjugate_mll(model, data) / X.shape[0]


@eqx.filter_jit
def _optimise_hyperparameters(params, static, Xs, ys, steps: int, learning_rate: float):
    """Adam on the mean NLML of each replica; params stacked [M, ...], Xs [M, n, d], ys [M, n].

    One compiled program: ``lax.map`` over the M replicas, ``lax.scan`` over steps. ``lax.map``,
    not ``vmap``: on XLA:CPU the batched Cholesky gradient of a vmapped fit is the bottleneck
    (docs/ensembles.md).
    """
    optimiser = optax.adam(learning_rate)
    value_and_grad = jax.value_and_grad(_negative_mll)

    def one_replica(args):
        p, X, y = args

        def step(carry, _):
            p, opt_state = carry
            value, grads = value_and_grad(p, static, X, y)
            updates, opt_state = optimiser.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), value

        (p, _), history = jax.lax.scan(step, (p, optimiser.init(p)), None, length=steps)
        return p, history

    params, history = jax.lax.map(one_replica, (params, Xs, ys))
    return params, history.T  # history [steps, M]


def _condition(params, static, X, y):
    return eqx.combine(params, static).condition(_gpx().Dataset(X=X, y=y[:, None]))


def _predict_y(posterior, X_test):
    latent = posterior(X_test, covariance="diagonal")
    predictive = posterior.likelihood.predict(latent)  # Eq. 9: adds the noise variance σ²
    return predictive.mean, predictive.variance


@eqx.filter_jit
def _predict_stacked(params, static, Xs, ys, X_chunks):
    """Means and predictive variances of y ``[M, C, chunk]`` at ``X_chunks [C, chunk, d]``.

    Each member is conditioned once (one Cholesky of its n × n Gram) and then evaluated on the
    chunks with ``lax.map``, so memory is bounded by ``M · n · chunk``.
    """

    def one_member(p, X, y):
        posterior = _condition(p, static, X, y)
        return jax.lax.map(lambda block: _predict_y(posterior, block), X_chunks)

    return jax.vmap(one_member)(params, Xs, ys)


def _gp_mean_apply(posterior) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """f(α, x) = m + k(x, X)·α: the full-data posterior mean with α as the parameters."""
    kernel = posterior.prior.kernel
    X_train = posterior.train_data.X
    constant = _val(posterior.prior.mean_function.constant)

    def apply_fn(alpha: jax.Array, x: jax.Array) -> jax.Array:
        k_x = jax.vmap(lambda x_j: kernel(x, x_j))(X_train)
        return jnp.squeeze(constant) + k_x @ alpha

    return apply_fn


@dataclass(frozen=True, eq=False)
class FittedGPEnsemble(ParametricFullDataModel):
    """K exact GP posteriors on bootstrap replicas, plus f_z.

    member_params: gpjax model array leaves (unconstrained hyper-parameters) stacked [K, ...];
    static: the rest of the gpjax model; X_replicas [K, n, d], y_replicas [K, n]; indices: [K, n];
    history: mean negative log marginal likelihood per step [steps, K]; params / apply_fn: f_z.
    """

    member_params: Any
    static: Any
    X_replicas: jax.Array
    y_replicas: jax.Array
    params: Any
    apply_fn: Callable[[Any, jax.Array], jax.Array]
    indices: jax.Array
    history: jax.Array
    n_features: int
    chunk_size: int
    n_members: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "n_members", int(self.indices.shape[0]))

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """Member means and predictive variances of y (Eq. 9 incl. noise), ``[K, N]`` each.

        The pool is processed in chunks of ``chunk_size`` (last chunk padded, so one compile).
        """
        X = validate_inputs("X", X, self.n_features)
        n = X.shape[0]
        chunk = min(self.chunk_size, n)
        n_chunks = -(-n // chunk)
        pad = n_chunks * chunk - n
        padded = jnp.concatenate([X, jnp.repeat(X[-1:], pad, axis=0)]) if pad else X
        means, variances = _predict_stacked(
            self.member_params,
            self.static,
            self.X_replicas,
            self.y_replicas,
            padded.reshape(n_chunks, chunk, X.shape[1]),
        )
        k = self.n_members
        return means.reshape(k, -1)[:, :n], variances.reshape(k, -1)[:, :n]

    def hyperparameters(self) -> dict[str, np.ndarray]:
        """Fitted hyper-parameters per member: lengthscale [K, d] (or [K]), variance [K],
        noise_variance [K], mean [K]."""
        post = eqx.combine(self.member_params, self.static)
        return {
            "lengthscale": np.asarray(_val(post.prior.kernel.lengthscale)),
            "variance": np.asarray(_val(post.prior.kernel.variance)),
            "noise_variance": np.asarray(_val(post.likelihood.obs_stddev)) ** 2,
            "mean": np.asarray(_val(post.prior.mean_function.constant)).reshape(-1),
        }


@dataclass(frozen=True)
class GPEnsemble:
    """Bootstrap ensemble of exact GPs with marginal-likelihood hyper-parameters (Eq. 9).

    kernel: one of ``KERNELS``; ard: one lengthscale per input dimension; steps / learning_rate:
    Adam on the negative log marginal likelihood (unconstrained gpjax parameters);
    f_z: "mlp" (default) or "gp_mean"; mlp_hidden / mlp_steps / mlp_learning_rate: the MLP f_z;
    chunk_size: pool inputs per prediction call.
    """

    n_members: int = 4
    kernel: str = "rbf"
    ard: bool = True
    steps: int = 100
    learning_rate: float = 0.1
    f_z: Literal["mlp", "gp_mean"] = "mlp"
    mlp_hidden: Sequence[int] = (32, 32)
    mlp_steps: int = 2000
    mlp_learning_rate: float = 5e-3
    jitter: float = 1e-6
    chunk_size: int = 4096

    def __post_init__(self):
        check_member_count(self.n_members)
        if self.kernel not in KERNELS:
            raise ValueError(f"`kernel` must be one of {sorted(KERNELS)}, got {self.kernel!r}.")
        if self.f_z not in ("mlp", "gp_mean"):
            raise ValueError(f"`f_z` must be 'mlp' or 'gp_mean', got {self.f_z!r}.")
        if self.steps < 0 or self.mlp_steps < 1 or self.chunk_size < 1:
            raise ValueError("`steps` must be >= 0, `mlp_steps` and `chunk_size` >= 1.")

    def initial_model(self, X: jax.Array, y: jax.Array) -> gpx.gps.ConjugateModel:
        """Starting hyper-parameters from data scales (median-free, deterministic)."""
        d = X.shape[1]
        scale = jnp.maximum(jnp.std(X, axis=0), 1e-3)
        y_var = jnp.maximum(jnp.var(y), 1e-6)
        return build_gp(
            self.kernel,
            d,
            lengthscale=scale if self.ard else jnp.mean(scale),
            variance=y_var,
            noise_variance=0.1 * y_var,
            mean=jnp.mean(y),
            jitter=self.jitter,
        )

    def fit(self, key: jax.Array, X, y) -> FittedGPEnsemble:
        """Fit K GPs on bootstrap replicas of ``X [n, d]``, ``y [n]`` and the parametric f_z."""
        X, y = validate_training_data(X, y, self.n_members, min_points=3)
        n, d = X.shape
        key_boot, key_mlp = jax.random.split(key)
        indices = bootstrap_indices(key_boot, n, self.n_members)
        # Replica K (identity) is the full data set, used for f_z = "gp_mean".
        all_indices = jnp.concatenate([indices, jnp.arange(n)[None, :]], axis=0)
        Xs, ys = X[all_indices], y[all_indices]
        template = self.initial_model(X, y)
        params, static = eqx.partition(template, eqx.is_array)
        n_replicas = all_indices.shape[0]
        stacked = jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf, (n_replicas, *leaf.shape)), params
        )
        if self.steps > 0:
            stacked, history = _optimise_hyperparameters(
                stacked, static, Xs, ys, self.steps, self.learning_rate
            )
        else:
            history = jnp.zeros((0, all_indices.shape[0]))
        if not bool(jnp.all(jnp.isfinite(ravel_pytree(stacked)[0]))):
            raise FloatingPointError(
                "GP hyper-parameter optimisation diverged; lower `learning_rate`."
            )
        if self.f_z == "gp_mean":
            full_params = jax.tree.map(lambda leaf: leaf[self.n_members], stacked)
            full = _condition(full_params, static, X, y)
            apply_fn = _gp_mean_apply(full)
            f_params = full.representer_weights[:, 0]
        else:
            graphdef, mlp_state = build_stacked(
                key_mlp[None], d, tuple(self.mlp_hidden), init_variance=1.0
            )
            trained, _ = train_stacked(
                graphdef,
                mlp_state,
                X,
                y,
                jnp.ones((1, n)),
                ["mse"],
                steps=self.mlp_steps,
                learning_rate=self.mlp_learning_rate,
            )
            apply_fn = mean_apply(graphdef)
            f_params = member_params(trained, 0)
        return FittedGPEnsemble(
            member_params=jax.tree.map(lambda leaf: leaf[: self.n_members], stacked),
            static=static,
            X_replicas=Xs[: self.n_members],
            y_replicas=ys[: self.n_members],
            params=f_params,
            apply_fn=apply_fn,
            indices=indices,
            history=history[:, : self.n_members],
            n_features=d,
            chunk_size=self.chunk_size,
        )
