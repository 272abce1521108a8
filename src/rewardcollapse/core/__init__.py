"""The maths of reward collapse, in numpy and scipy only (no torch).

Utilities :math:`U`, the exact per-prompt optimal rewards for any ranking, and their limit laws as the number of
answers grows (Song et al., 2023, "Reward Collapse in Aligning Large Language Models", arXiv:2305.17608).
"""

from rewardcollapse.core.inverse import UtilityDesign, utility_for
from rewardcollapse.core.limits import closed_form_limit, describe_law, ks_distance, limit_distribution, numerical_limit
from rewardcollapse.core.openness import (
    fit_beta_shape,
    openness_exponent,
    openness_family,
    openness_from_rankings,
    openness_from_scores,
    openness_law,
    openness_utility,
)
from rewardcollapse.core.ranking import Ranking, parse_ranking
from rewardcollapse.core.solver import OptimalRewards, optimal_rewards
from rewardcollapse.core.utilities import UTILITY_SPECS, Utility, utility

__all__ = [
    "UTILITY_SPECS",
    "OptimalRewards",
    "Ranking",
    "Utility",
    "UtilityDesign",
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
    "utility",
    "utility_for",
]
