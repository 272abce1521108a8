"""Reward-model training with ``transformers``: config, collator, trainer, and batched scoring."""

from rewardcollapse.settings import TrainJob
from rewardcollapse.training.callbacks import CollapseCallback
from rewardcollapse.training.collator import RankingCollator, prompt_utility, tokenize_rankings
from rewardcollapse.training.config import PROMPT_AWARE, RankingRewardConfig
from rewardcollapse.training.models import default_backbone, load_reward_model
from rewardcollapse.training.precision import choose_precision
from rewardcollapse.training.run import LoraSummary, ScoreResult, TrainResult, score_file, train_reward_model
from rewardcollapse.training.scoring import score_batch, score_rankings
from rewardcollapse.training.trainer import RankingRewardTrainer

__all__ = [
    "PROMPT_AWARE",
    "CollapseCallback",
    "LoraSummary",
    "RankingCollator",
    "RankingRewardConfig",
    "RankingRewardTrainer",
    "ScoreResult",
    "TrainJob",
    "TrainResult",
    "choose_precision",
    "default_backbone",
    "load_reward_model",
    "prompt_utility",
    "score_batch",
    "score_file",
    "score_rankings",
    "tokenize_rankings",
    "train_reward_model",
]
