"""Ensembles that give the Gaussian member predictives and the parametric f_z EGL needs.

Every family follows one interface (see :mod:`egltheory.ensembles.base`)::

    fitted = LinearEnsemble(n_members=4).fit(key, X, y)      # Eqs. 6-7
    fitted = AleatoricEnsemble(n_members=4).fit(key, X, y)   # Eq. 8
    fitted = GPEnsemble(n_members=4).fit(key, X, y)          # Eq. 9
    means, variances = fitted.predict(X)                     # [K, N] each, variance of y
    fitted.f_z(X), fitted.grad_sq_norm(X)                    # [N] each

The GP family needs gpjax, the optional ``gp`` extra (gpjax 1.0 requires jax < 0.11): it is
imported when a GP ensemble is fitted, so everything else (and unfitted ``GPEnsemble`` specs)
works without it.
"""

from egltheory.ensembles.aleatoric import AleatoricEnsemble, FittedAleatoricEnsemble
from egltheory.ensembles.base import FittedEnsemble, bootstrap_counts, bootstrap_indices
from egltheory.ensembles.gp import KERNELS, FittedGPEnsemble, GPEnsemble
from egltheory.ensembles.linear import FittedLinearEnsemble, LinearEnsemble

FAMILIES = {"linear": LinearEnsemble, "aleatoric": AleatoricEnsemble, "gp": GPEnsemble}


def family_name(ensemble) -> str:
    """The family name ("linear", "aleatoric", "gp") of an unfitted ensemble object."""
    for name, cls in FAMILIES.items():
        if type(ensemble) is cls:
            return name
    raise ValueError(f"`ensemble` must be one of {list(FAMILIES.values())}, got {ensemble!r}.")


__all__ = [
    "FAMILIES",
    "KERNELS",
    "AleatoricEnsemble",
    "FittedAleatoricEnsemble",
    "FittedEnsemble",
    "FittedGPEnsemble",
    "FittedLinearEnsemble",
    "GPEnsemble",
    "LinearEnsemble",
    "bootstrap_counts",
    "bootstrap_indices",
    "family_name",
]
