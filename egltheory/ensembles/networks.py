"""Small Flax NNX regression networks and a trainer that fits many of them in ONE compiled step.

``MeanVarianceMLP`` has a shared trunk, a mean head and a variance head; the variance is guarded as
``σ² = softplus(raw) + min_variance`` so it is always positive and the Gaussian NLL (Eq. 8) can not
divide by zero or take the log of zero.

``train_stacked`` trains M copies (different initialisations, different per-example weights) of
the same architecture at once: the copies' parameters are stacked on a leading axis, the loss is
``jax.vmap``-ed over that axis and the whole optimisation runs inside a single ``jax.lax.scan`` in
one ``jax.jit`` program (no Python loop over models). Bootstrap replicas enter as integer weights
(how often each labelled point appears in the replica), so every copy sees arrays of one shape.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from egltheory.ensembles.base import real_dtype

LossName = Literal["nll", "mse"]


class MeanVarianceMLP(nnx.Module):
    """MLP ``x [B, d]`` -> ``(mean [B], variance [B])`` with a guarded variance head."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        *,
        rngs: nnx.Rngs,
        min_variance: float = 1e-6,
        init_variance: float = 1.0,
    ):
        widths = [in_features, *hidden]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, rngs=rngs, param_dtype=real_dtype())
                for a, b in itertools.pairwise(widths)
            ]
        )
        self.mean_head = nnx.Linear(widths[-1], 1, rngs=rngs, param_dtype=real_dtype())
        self.variance_head = nnx.Linear(
            widths[-1],
            1,
            rngs=rngs,
            param_dtype=real_dtype(),
            kernel_init=nnx.initializers.zeros,
            bias_init=nnx.initializers.constant(_softplus_inverse(init_variance - min_variance)),
        )
        self.min_variance = min_variance

    def features(self, x: jax.Array) -> jax.Array:
        """Trunk activations ``[B, hidden[-1]]``."""
        for layer in self.layers:
            x = jax.nn.silu(layer(x))
        return x

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.features(x)
        mean = self.mean_head(h)[:, 0]
        variance = jax.nn.softplus(self.variance_head(h)[:, 0]) + self.min_variance
        return mean, variance


def _softplus_inverse(value: float) -> float:
    """Stable softplus⁻¹(v) = v + log(1 − e^{−v}) (no overflow for large variances)."""
    value = max(float(value), 1e-6)
    return value + math.log(-math.expm1(-value))


def gaussian_nll(mean: jax.Array, variance: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example heteroscedastic Gaussian NLL (Eq. 8) without the constant: ``[B]``."""
    return 0.5 * (y - mean) ** 2 / variance + 0.5 * jnp.log(variance)


def build_stacked(
    keys: jax.Array, in_features: int, hidden: Sequence[int], init_variance: float
) -> tuple[nnx.GraphDef, Any]:
    """Initialise ``M = len(keys)`` networks; return the graph and parameters stacked [M, ...]."""
    states = []
    graphdef = None
    for key in keys:
        model = MeanVarianceMLP(
            in_features, hidden, rngs=nnx.Rngs(params=key), init_variance=init_variance
        )
        graphdef, state = nnx.split(model)
        states.append(state)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    return graphdef, stacked


def member_params(stacked: Any, index: int) -> Any:
    """Parameters of copy ``index`` from a stacked state."""
    return jax.tree.map(lambda leaf: leaf[index], stacked)


def _weighted_loss(graphdef, state, X, y, weights, loss: LossName) -> jax.Array:
    mean, variance = nnx.merge(graphdef, state)(X)
    per_example = gaussian_nll(mean, variance, y) if loss == "nll" else 0.5 * (y - mean) ** 2
    return jnp.sum(weights * per_example) / jnp.sum(weights)


def train_stacked(
    graphdef: nnx.GraphDef,
    stacked: Any,
    X: jax.Array,
    y: jax.Array,
    weights: jax.Array,
    losses: Sequence[LossName],
    *,
    steps: int,
    learning_rate: float,
) -> tuple[Any, jax.Array]:
    """Train M stacked networks together, full batch, Adam with cosine decay.

    stacked: parameters with leading axis M; X: [n, d]; y: [n]; weights: [M, n] per-example
    weights (bootstrap counts); losses: one of "nll" (Eq. 8) or "mse" per copy.
    Returns (trained stacked parameters, loss history [steps, M]).
    """
    loss_is_nll = jnp.asarray([name == "nll" for name in losses])
    return _train_stacked_jit(
        graphdef, stacked, X, y, weights, loss_is_nll, steps=steps, learning_rate=learning_rate
    )


@jax.jit(static_argnames=("graphdef", "steps", "learning_rate"))
def _train_stacked_jit(graphdef, stacked, X, y, weights, loss_is_nll, *, steps, learning_rate):
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)
    optimiser = optax.adam(schedule)

    def one_loss(state, w, is_nll):
        return jax.lax.cond(
            is_nll,
            lambda s: _weighted_loss(graphdef, s, X, y, w, "nll"),
            lambda s: _weighted_loss(graphdef, s, X, y, w, "mse"),
            state,
        )

    value_and_grad = jax.vmap(jax.value_and_grad(one_loss))

    def step(carry, _):
        state, opt_state = carry
        values, grads = value_and_grad(state, weights, loss_is_nll)
        # Adam is element-wise, so one optimiser over the stacked tree equals M independent ones.
        updates, opt_state = optimiser.update(grads, opt_state, state)
        state = optax.apply_updates(state, updates)
        return (state, opt_state), values

    (trained, _), history = jax.lax.scan(
        step, (stacked, optimiser.init(stacked)), None, length=steps
    )
    return trained, history


@jax.jit(static_argnames=("graphdef",))
def predict_stacked(
    graphdef: nnx.GraphDef, stacked: Any, X: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Means and variances ``[M, N]`` of M stacked networks at ``X [N, d]``."""
    return jax.vmap(lambda state: nnx.merge(graphdef, state)(X))(stacked)


@dataclass(frozen=True)
class mean_apply:
    """``apply_fn(params, x [d]) -> scalar``: the mean head of the network ``graphdef`` with
    these parameters. Equal (and equally hashed) for equal graph definitions, so jitted
    functions that take it as a static argument compile once per architecture."""

    graphdef: nnx.GraphDef

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        mean, _ = nnx.merge(self.graphdef, params)(x[None, :])
        return mean[0]
