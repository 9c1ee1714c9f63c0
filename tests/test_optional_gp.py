"""gpjax is optional (the `gp` extra): without it everything but the GP family imports and works.

The GPU image that `make test-compat` mirrors has no gpjax, and gpjax 1.0 requires jax < 0.11.
"""

import subprocess
import sys

CODE = """
import sys
sys.modules["gpjax"] = None  # as if the `gp` extra were not installed
import numpy as np
import jax
import egltheory.active, egltheory.conv, egltheory.eglpp, egltheory.sharding, egltheory.tsne
import egltheory.pose.acquisition, egltheory.studies.pose, egltheory.studies.regression
from egltheory import ensembles, verification
X, y = np.random.default_rng(0).normal(size=(12, 2)), np.arange(12.0)
ensembles.LinearEnsemble(n_members=2).fit(jax.random.key(0), X, y)
spec = ensembles.GPEnsemble(n_members=2)  # an unfitted spec needs no gpjax
assert ensembles.family_name(spec) == "gp"
try:
    spec.fit(jax.random.key(0), X, y)
except ModuleNotFoundError as error:
    assert error.name == "gpjax" and "egltheory[gp]" in str(error), error
else:
    raise AssertionError("a GP ensemble was fitted without gpjax")
"""


def test_everything_but_the_gp_family_works_without_gpjax():
    subprocess.run([sys.executable, "-c", CODE], check=True)
