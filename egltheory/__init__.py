"""egltheory: Expected Gradient Length for regression as Bayesian predictive uncertainty.

Modules
-------
egl           closed-form, Monte-Carlo, vector-output and classification EGL; EMCM;
              Kendall–Gal variance; the bias–variance split (Eqs. 1, 2, 5, 7, 10, 11).
ensembles     linear, heteroscedastic (aleatoric) and Gaussian-process bootstrap ensembles
              with a parametric full-data model f_z.
verification  the theory checks on fitted ensembles (report of experiments/verify_theory.py).
datasets      offline regression data (diabetes, auto-mpg; concrete/cpus with the GPL extra).
tsne          t-SNE conditional probabilities (Eq. 13), vectorised bisection/Newton, top-K.
eglpp         EGL++ (Eq. 12): exact per-example gradient norms, one forward per input.
active        pool-based active learning: strategies, atomic per-cycle results, resume.
sharding      pool scoring sharded over all JAX devices (Mesh + NamedSharding).
regression_al Cai et al.-style regression active-learning benchmark.
pose          stacked hourglass, pose data, PCK metrics and acquisition for EGL++ pose AL.
validation    argument checks that name the offending argument.
"""

__version__ = "0.1.0"
