"""Deprecated alias of :mod:`rewardcollapse.experiments.longform` (experiment design, not a data loader).

Importing it warns once; the alias goes in the next release.
"""

import warnings

from rewardcollapse.experiments.longform import *  # noqa: F403
from rewardcollapse.experiments.longform import __all__  # noqa: F401

warnings.warn(
    "rewardcollapse.data.longform moved to rewardcollapse.experiments.longform; import from there",
    FutureWarning,
    stacklevel=2,
)
