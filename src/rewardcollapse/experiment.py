"""Deprecated alias of :mod:`rewardcollapse.experiments` (the experiment moved into its own package).

Importing it warns once; the alias goes in the next release.
"""

import warnings

from rewardcollapse.experiments import *  # noqa: F403
from rewardcollapse.experiments import __all__  # noqa: F401

warnings.warn(
    "rewardcollapse.experiment moved to rewardcollapse.experiments; import from there",
    FutureWarning,
    stacklevel=2,
)
