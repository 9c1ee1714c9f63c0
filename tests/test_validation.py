"""The reusable checks of egltheory.validation: the PSD round-off allowance on both sides of its
boundary, and integer counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egltheory.validation import check_count, check_symmetric_psd, psd_tolerance


def _rank_deficient_gram(seed, dim, rank, dtype):
    """G = J Jᵀ formed in ``dtype`` by XLA, J ``[dim, rank]``, and a unit u ⊥ range(J) (float64)."""
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(dim, rank)) * rng.uniform(0.1, 10.0)
    gram = np.asarray(jnp.asarray(jac, dtype) @ jnp.asarray(jac, dtype).T)
    q, _ = np.linalg.qr(np.concatenate([jac, rng.normal(size=(dim, 1))], axis=1))
    return gram, q[:, rank]  # the last orthonormal column is orthogonal to range(J)


@given(
    seed=st.integers(0, 2**16),
    dim=st.integers(2, 8),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_psd_check_accepts_round_off_and_rejects_twice_the_allowance(seed, dim, dtype, data):
    rank = data.draw(st.integers(1, dim - 1))
    gram, u = _rank_deficient_gram(seed, dim, rank, dtype)
    check_symmetric_psd("gram", gram, "[D, D]")  # singular PSD at round-off: accepted
    tol = float(psd_tolerance(gram))
    # Push the zero eigenvalue along u to −δ: rejected at δ = 2 tol, accepted at δ = tol / 4.
    # (The float rounding of the perturbed matrix moves λ_min by ~D·eps·‖G‖ = tol / 256.)
    for factor, rejected in ((2.0, True), (0.25, False)):
        perturbed = (gram - factor * tol * np.outer(u, u)).astype(dtype)
        perturbed = (perturbed + perturbed.T) / 2  # exactly symmetric
        if rejected:
            with pytest.raises(ValueError, match=r"`gram` must be symmetric positive semi-def"):
                check_symmetric_psd("gram", perturbed, "[D, D]")
        else:
            check_symmetric_psd("gram", perturbed, "[D, D]")
    # Asymmetry of 2 tol in one pair of entries is rejected; tol / 4 is accepted.
    for factor, rejected in ((2.0, True), (0.25, False)):
        skewed = gram.astype(np.float64)
        skewed[0, 1] += factor * tol
        skewed = skewed.astype(dtype)
        if rejected:
            with pytest.raises(ValueError, match=r"`gram` must be symmetric: max"):
                check_symmetric_psd("gram", skewed, "[D, D]")
        else:
            check_symmetric_psd("gram", skewed, "[D, D]")


def test_psd_tolerance_follows_the_documented_rule_and_does_not_overflow():
    a = np.array([[3.0, 0.0], [0.0, 4.0]])
    assert psd_tolerance(a) == pytest.approx(256 * 2 * np.finfo(np.float64).eps * 5.0)
    assert psd_tolerance(a.astype(np.float32)) == pytest.approx(
        256 * 2 * np.finfo(np.float32).eps * 5.0
    )
    huge = a * 1e300  # ‖A‖_F² would overflow float64
    assert psd_tolerance(huge) == pytest.approx(256 * 2 * np.finfo(np.float64).eps * 5e300)
    check_symmetric_psd("a", huge, "[D, D]")
    with pytest.raises(ValueError, match=r"a\[1\] \(1 of 2 matrices of \[N, D, D\]"):
        check_symmetric_psd("a", np.stack([huge, -huge]), "[N, D, D]")


def test_psd_check_is_skipped_for_tracers():
    @jax.jit
    def f(a):
        check_symmetric_psd("a", a, "[D, D]")
        return a.sum()

    assert float(f(-np.eye(2))) == -2.0


@pytest.mark.parametrize("value", [0, -3, 1.5, 2.0, True, None, "4"])
def test_check_count_refuses_non_counts(value):
    with pytest.raises(ValueError, match=r"`max_iter` must be an integer ≥ 1, got"):
        check_count("max_iter", value)


def test_check_count_accepts_counts():
    check_count("n", 1)
    check_count("n", np.int64(7))
    check_count("n", None, allow_none=True)
    check_count("n", 2, minimum=2)
    with pytest.raises(ValueError, match=r"`n` must be an integer ≥ 2 or None, got 1"):
        check_count("n", 1, minimum=2, allow_none=True)
