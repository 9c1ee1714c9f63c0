"""Paired-seed active-learning studies: one runner, one report, and the study definitions.

=================  ==========================================================================
``runner``         :class:`Protocol`, :class:`Trial`, :func:`run_study` (trials × strategies)
``report``         paired one-tailed t-tests, Table-1 markdown/CSV, learning curves
``cli``            the flag vocabulary every experiment script shares
``regression``     Cai et al.-style regression study (data sets × ensemble families)
``pose``           the paper's pose study (stacked hourglass, EGL++ vs four baselines)
=================  ==========================================================================
"""

from egltheory.studies.report import MetricSpec, paired_p_value, paired_table
from egltheory.studies.runner import Protocol, StudyDefinition, Trial, run_study

__all__ = [
    "MetricSpec",
    "Protocol",
    "StudyDefinition",
    "Trial",
    "paired_p_value",
    "paired_table",
    "run_study",
]
