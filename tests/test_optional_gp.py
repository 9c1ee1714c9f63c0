"""gpjax is optional (the `gp` extra): without it everything but the GP family imports and works.

The GPU image that `make test-compat` mirrors has no gpjax, and gpjax 1.0 requires jax < 0.11.
"""

import subprocess
import sys

CODE = """
import sys
sys.modules["gpjax"] = None  # as if the `gp` extra were not installed
import egltheory.active, egltheory.conv, egltheory.eglpp, egltheory.sharding, egltheory.tsne
import egltheory.pose.acquisition, egltheory.pose.study, egltheory.regression_al
from egltheory import ensembles, verification
ensembles.make_ensemble("linear", n_members=2)
for get in (lambda: ensembles.GPEnsemble, lambda: ensembles.make_ensemble("gp")):
    try:
        get()
    except ModuleNotFoundError as error:
        assert error.name == "gpjax" and "egltheory[gp]" in str(error), error
    else:
        raise AssertionError("the GP family imported without gpjax")
"""


def test_everything_but_the_gp_family_works_without_gpjax():
    subprocess.run([sys.executable, "-c", CODE], check=True)
