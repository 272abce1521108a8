"""Estimating a prompt's openness, the input of prompt-aware training: three estimators, one entry point.

* from quality scores of its answers: :func:`openness_from_scores` (nearest optimum of the openness family);
* from several raters' rankings: :func:`openness_from_rankings` (1 - Kendall's W, a heuristic);
* from the prompt's text: :func:`fit_openness_classifier` and :class:`OpennessClassifier` (sentence embeddings and
  a logistic regression, :mod:`~rewardcollapse.estimators.text_classifier`).

The first two are numpy-only and live in :mod:`rewardcollapse.core.openness`, beside the family they invert; the
classifier loads torch and transformers when it embeds prompts.
"""

from rewardcollapse.core.openness import openness_from_rankings, openness_from_scores
from rewardcollapse.estimators.text_classifier import (
    OpennessClassifier,
    embed_prompts,
    fit_openness_classifier,
    prompt_text,
    prompts_and_openness,
)

__all__ = [
    "OpennessClassifier",
    "embed_prompts",
    "fit_openness_classifier",
    "openness_from_rankings",
    "openness_from_scores",
    "prompt_text",
    "prompts_and_openness",
]
