"""Deprecated alias of :mod:`rewardcollapse.estimators.text_classifier` (openness from a prompt's text).

Importing it warns once; the alias goes in the next release.
"""

import warnings

from rewardcollapse.estimators.text_classifier import *  # noqa: F403
from rewardcollapse.estimators.text_classifier import __all__  # noqa: F401

warnings.warn(
    "rewardcollapse.prompt_openness moved to rewardcollapse.estimators.text_classifier; import from "
    "rewardcollapse.estimators",
    FutureWarning,
    stacklevel=2,
)
