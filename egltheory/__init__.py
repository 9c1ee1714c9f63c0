"""egltheory: Expected Gradient Length for regression as Bayesian predictive uncertainty.

Modules (one job each; docs/architecture.md)
-------
egl           closed-form, Monte-Carlo, vector-output and classification EGL; EMCM;
              Kendall–Gal variance; the bias–variance split (Eqs. 1, 2, 5, 7, 10, 11).
ensembles     linear, heteroscedastic (aleatoric) and Gaussian-process bootstrap ensembles
              with a parametric full-data model f_z.
verification  the theory checks on fitted ensembles (report of experiments/verify_theory.py).
figures_theory  the theory figures (byte-stable).
datasets      offline regression data (diabetes, auto-mpg; concrete/cpus with the GPL extra).
tsne          t-SNE conditional probabilities (Eq. 13), vectorised Newton/bisection, top-K.
eglpp         EGL++ (Eq. 12) and its identity-6 split (bias + neighbour spread): options,
              neighbours, exact per-example gradient norms, low-rank and sketched estimators.
conv          convolution whose kernel gradients are GEMMs on im2col patches.
sharding      pool scoring sharded over all JAX devices (Mesh + NamedSharding).
active/       pool-based active learning: pool state, strategies, checkpoints, resumable loop.
studies/      one runner and one report for paired-seed studies; the regression and pose
              study definitions; the scripts' shared flags.
pose/         stacked hourglass, pose data (skeletons, synthetic, datasets, transforms),
              training, PCK metrics, acquisition, Fig. 3.
files         atomic writes, damaged-file errors, the output-directory lock.
validation    argument checks that name the offending argument.
"""

__version__ = "0.1.0"
