"""egltheory: Expected Gradient Length for regression as Bayesian predictive uncertainty.

Modules
-------
egl        closed-form, Monte-Carlo and vector-output EGL (Eqs. 1, 2, 5, 7, 10, 11).
"""

__version__ = "0.1.0"
