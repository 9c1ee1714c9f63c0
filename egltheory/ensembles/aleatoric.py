"""Bootstrap ensemble of heteroscedastic (aleatoric) neural networks trained on Eq. 8.

Each member is a ``MeanVarianceMLP`` (mean head + guarded variance head) trained with the Gaussian
NLL of Eq. 8 on a bootstrap replica; its predictive is ``N(μ_k(x), σ_k²(x))`` with ``σ_k²`` the
learned aleatoric variance. ``f_z`` is the mean head of one more network of the same architecture,
trained with Eq. 8 on all labelled data; ``params`` are all its parameters (the variance head's get
zero gradient from the mean, so ``‖∇_θ f_z‖²`` is the mean head's and trunk's).

All K members AND f_z are trained together in ONE compiled program (``networks.train_stacked``:
parameters stacked on a leading axis, loss vmapped, ``lax.scan`` over steps). Bootstrap replicas
enter as per-example count weights, which equals training on the resampled set. The option
``train_mode="one_at_a_time"`` trains the same K + 1 networks sequentially (for the benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from egltheory.ensembles.base import (
    ParametricFullDataModel,
    bootstrap_counts,
    bootstrap_indices,
    check_member_count,
    validate_inputs,
    validate_training_data,
)
from egltheory.ensembles.networks import (
    build_stacked,
    mean_apply,
    member_params,
    predict_stacked,
    train_stacked,
)


@dataclass(frozen=True, eq=False)
class FittedAleatoricEnsemble(ParametricFullDataModel):
    """K trained heteroscedastic networks plus f_z.

    graphdef: the network graph; member_state: parameters stacked [K, ...]; params: f_z's
    parameters; indices: [K, n] bootstrap replicas; history: training loss [steps, K + 1]
    (last column is f_z).
    """

    graphdef: nnx.GraphDef
    member_state: Any
    params: Any
    indices: jax.Array
    history: jax.Array
    n_features: int
    apply_fn: Callable[[Any, jax.Array], jax.Array]
    n_members: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "n_members", int(self.indices.shape[0]))

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """Member means and aleatoric predictive variances of y, ``[K, N]`` each."""
        X = validate_inputs("X", X, self.n_features)
        return predict_stacked(self.graphdef, self.member_state, X)

    def f_z_variance(self, X) -> jax.Array:
        """Aleatoric variance head of the full-data network, ``[N]``."""
        X = validate_inputs("X", X, self.n_features)
        _, variance = nnx.merge(self.graphdef, self.params)(X)
        return variance


@dataclass(frozen=True)
class AleatoricEnsemble:
    """Heteroscedastic MLP ensemble (Eq. 8), members on bootstrap replicas, trained jointly.

    n_members: K >= 2; hidden: trunk widths; steps / learning_rate: full-batch Adam with cosine
    decay; train_mode: "together" (one compiled step for all K + 1 nets) or "one_at_a_time".
    """

    n_members: int = 4
    hidden: Sequence[int] = (64, 64)
    steps: int = 2000
    learning_rate: float = 5e-3
    train_mode: Literal["together", "one_at_a_time"] = "together"

    def __post_init__(self):
        check_member_count(self.n_members)
        if self.steps < 1:
            raise ValueError(f"`steps` must be >= 1, got {self.steps}.")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if self.train_mode not in ("together", "one_at_a_time"):
            raise ValueError(
                f"`train_mode` must be 'together' or 'one_at_a_time', got {self.train_mode!r}."
            )

    def fit(self, key: jax.Array, X, y) -> FittedAleatoricEnsemble:
        """Fit on ``X [n, d]``, ``y [n]``; needs n >= 3 (a variance needs >= 2 distinct points)."""
        X, y = validate_training_data(X, y, self.n_members, min_points=3)
        n, d = X.shape
        key_boot, key_init = jax.random.split(key)
        indices = bootstrap_indices(key_boot, n, self.n_members)
        # Copies 0..K-1: members (bootstrap count weights); copy K: f_z on all data.
        weights = jnp.concatenate([bootstrap_counts(indices, n), jnp.ones((1, n))], axis=0)
        init_keys = jax.random.split(key_init, self.n_members + 1)
        graphdef, stacked = build_stacked(
            init_keys, d, tuple(self.hidden), init_variance=float(jnp.var(y))
        )
        losses = ["nll"] * (self.n_members + 1)
        if self.train_mode == "together":
            trained, history = train_stacked(
                graphdef,
                stacked,
                X,
                y,
                weights,
                losses,
                steps=self.steps,
                learning_rate=self.learning_rate,
            )
        else:
            parts = [
                train_stacked(
                    graphdef,
                    jax.tree.map(lambda leaf, m=m: leaf[m : m + 1], stacked),
                    X,
                    y,
                    weights[m : m + 1],
                    losses[:1],
                    steps=self.steps,
                    learning_rate=self.learning_rate,
                )
                for m in range(self.n_members + 1)
            ]
            trained = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *[p[0] for p in parts])
            history = jnp.concatenate([p[1] for p in parts], axis=1)
        if not bool(jnp.all(jnp.isfinite(history[-1]))):
            raise FloatingPointError(
                "Aleatoric training produced a non-finite loss; lower `learning_rate`."
            )
        member_state = jax.tree.map(lambda leaf: leaf[: self.n_members], trained)
        return FittedAleatoricEnsemble(
            graphdef=graphdef,
            member_state=member_state,
            params=member_params(trained, self.n_members),
            indices=indices,
            history=history,
            n_features=d,
            apply_fn=mean_apply(graphdef),
        )
