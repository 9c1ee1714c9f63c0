"""Ensembles that give the Gaussian member predictives and the parametric f_z EGL needs.

Every family follows one interface (see :mod:`egltheory.ensembles.base`)::

    fitted = LinearEnsemble(n_members=4).fit(key, X, y)      # Eqs. 6-7
    fitted = AleatoricEnsemble(n_members=4).fit(key, X, y)   # Eq. 8
    fitted = GPEnsemble(n_members=4).fit(key, X, y)          # Eq. 9
    means, variances = fitted.predict(X)                     # [K, N] each, variance of y
    fitted.f_z(X), fitted.grad_sq_norm(X)                    # [N] each

The GP family needs gpjax, the optional ``gp`` extra (gpjax 1.0 requires jax < 0.11): it is
imported on first use, so the other families work without it.
"""

from typing import Any

from egltheory.ensembles.aleatoric import AleatoricEnsemble, FittedAleatoricEnsemble
from egltheory.ensembles.base import FittedEnsemble, bootstrap_counts, bootstrap_indices
from egltheory.ensembles.linear import FittedLinearEnsemble, LinearEnsemble

_GP_NAMES = ("KERNELS", "FittedGPEnsemble", "GPEnsemble")


def _gp_module():
    try:
        from egltheory.ensembles import gp
    except ModuleNotFoundError as error:
        if error.name != "gpjax":
            raise
        raise ModuleNotFoundError(
            "The GP ensemble needs gpjax: pip install 'egltheory[gp]' "
            "(gpjax 1.0 requires jax < 0.11).",
            name="gpjax",
        ) from error
    return gp


def __getattr__(name: str) -> Any:
    if name in _GP_NAMES:
        return getattr(_gp_module(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _gp_ensemble(**options):
    return _gp_module().GPEnsemble(**options)


FAMILIES = {"linear": LinearEnsemble, "aleatoric": AleatoricEnsemble, "gp": _gp_ensemble}


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
