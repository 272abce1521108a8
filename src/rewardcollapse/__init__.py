"""rewardcollapse: study and prevent reward collapse in reward models trained on rankings.

The public API; heavy dependencies (matplotlib, torch) load only when a function that needs them is called.
"""

from rewardcollapse.core import (
    UTILITY_SPECS,
    OptimalRewards,
    Ranking,
    Utility,
    UtilityDesign,
    closed_form_limit,
    describe_law,
    fit_beta_shape,
    ks_distance,
    limit_distribution,
    numerical_limit,
    openness_exponent,
    openness_family,
    openness_from_rankings,
    openness_from_scores,
    openness_law,
    openness_utility,
    optimal_rewards,
    parse_ranking,
    utility,
    utility_for,
)
from rewardcollapse.core.errors import InputError, InputTypeError, InputValueError, OutputLockedError
from rewardcollapse.plots import plot_limit_laws, plot_optimal_rewards

__version__ = "0.1.0"

__all__ = [
    "UTILITY_SPECS",
    "InputError",
    "InputTypeError",
    "InputValueError",
    "OptimalRewards",
    "OutputLockedError",
    "Ranking",
    "Utility",
    "UtilityDesign",
    "__version__",
    "closed_form_limit",
    "describe_law",
    "fit_beta_shape",
    "ks_distance",
    "limit_distribution",
    "numerical_limit",
    "openness_exponent",
    "openness_family",
    "openness_from_rankings",
    "openness_from_scores",
    "openness_law",
    "openness_utility",
    "optimal_rewards",
    "parse_ranking",
    "plot_limit_laws",
    "plot_optimal_rewards",
    "utility",
    "utility_for",
]
