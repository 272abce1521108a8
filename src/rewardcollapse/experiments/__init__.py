"""The paper's experiment and beyond: data construction, one reward model per utility, diagnosis and report.

* :mod:`~rewardcollapse.experiments.longform`: the LongForm ranking data (8 cuts per answer, open and closed prompts,
  or openness levels) and the built-in corpus;
* :mod:`~rewardcollapse.experiments.run`: :class:`ExperimentConfig`, :func:`run_experiment` and its
  :class:`ExperimentResult`;
* :mod:`~rewardcollapse.experiments.diagnosis`: groups, targets, collapse index (a :class:`Diagnosis`) and the
  optimum's accuracy of a scored file;
* :mod:`~rewardcollapse.experiments.report`: the markdown report, the figure and the plain-words summary.
"""

from rewardcollapse.experiments.diagnosis import (
    Diagnosis,
    GroupDiagnostics,
    diagnose_file,
    optimum_accuracy,
    read_scored,
)
from rewardcollapse.experiments.longform import (
    LongFormData,
    LongformDesign,
    build_longform,
    builtin_corpus,
    level_lengths,
    write_longform,
)
from rewardcollapse.experiments.report import markdown_report, plot_experiment, summary_text
from rewardcollapse.experiments.run import (
    PAPER_TRAINING,
    ExperimentConfig,
    ExperimentResult,
    ReproduceOptions,
    UtilityResult,
    run_experiment,
    utility_slug,
)

__all__ = [
    "PAPER_TRAINING",
    "Diagnosis",
    "ExperimentConfig",
    "ExperimentResult",
    "GroupDiagnostics",
    "LongFormData",
    "LongformDesign",
    "ReproduceOptions",
    "UtilityResult",
    "build_longform",
    "builtin_corpus",
    "diagnose_file",
    "level_lengths",
    "markdown_report",
    "optimum_accuracy",
    "plot_experiment",
    "read_scored",
    "run_experiment",
    "summary_text",
    "utility_slug",
    "write_longform",
]
