"""TRL's reward modelling in one changed import: ``from rewardcollapse.trl import RewardConfig, RewardTrainer``.

:class:`RewardConfig` is :class:`~rewardcollapse.training.RankingRewardConfig` with TRL's defaults (the
Bradley-Terry loss on raw scores, each pair weighing the same, TRL's input format, pairwise rows kept apart,
over-long pairs dropped, ``max_length=1024``, gradient checkpointing and TRL's bf16 rule), and
:class:`RewardTrainer` is :class:`~rewardcollapse.training.RankingRewardTrainer` building its default ``args`` from
it. Every argument a user gives still wins. docs/training.md ("Coming from TRL") lists what still differs, and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rewardcollapse.core.conventions import Normalization, PairWeighting, SequenceFormat, SharedPromptSetting
from rewardcollapse.settings import OverLong
from rewardcollapse.training.config import RankingRewardConfig
from rewardcollapse.training.trainer import RankingRewardTrainer

__all__ = ["RewardConfig", "RewardTrainer"]


@dataclass
class RewardConfig(RankingRewardConfig):
    """:class:`~rewardcollapse.training.RankingRewardConfig` with the defaults of ``trl.RewardConfig``.

    The loss is TRL's ``-log(sigmoid(r_chosen - r_rejected))`` on raw scores (``utility="logsigmoid"``,
    ``normalize="none"``), averaged over pairs (``pair_weighting="pair"``); each pairwise row stays its own
    two-answer ranking (``group_pairs=False``), so a batch holds ``per_device_train_batch_size`` pair rows;
    sequences are prompt + answer + end-of-sequence token (``sequence_format="trl"``), each encoded alone
    (``shared_prompt="off"``); pairs with a sequence over ``max_length=1024`` tokens are dropped (``over_long``);
    gradient checkpointing is on, and ``bf16`` is on unless ``fp16`` or a ``precision`` is given (TRL's rule) where
    the device runs bf16 natively (float32 where it would be emulated, about 25x slower);
    ``pad_to_multiple_of="auto"`` pads to 128 tokens on Neuron only.
    """

    _argument_group_name = "training: TRL's RewardConfig defaults"

    utility: str = field(default="logsigmoid", metadata={"help": "Utility of the ranking loss; TRL's: logsigmoid."})
    normalize: Normalization = field(default="none", metadata={"help": "Raw scores in the loss, as TRL."})
    pair_weighting: PairWeighting = field(default="pair", metadata={"help": "Each pair weighs the same, as TRL."})
    disable_dropout: bool = field(default=True, metadata={"help": "Switch the model's dropout off, as TRL."})
    group_pairs: bool = field(
        default=False, metadata={"help": "Keep each pairwise row its own two-answer ranking, as TRL's batches."}
    )
    over_long: OverLong = field(
        default="drop", metadata={"help": "Drop a pair with a sequence longer than max_length, as TRL."}
    )
    sequence_format: Literal["auto", SequenceFormat] = field(
        default="trl", metadata={"help": "Prompt + answer + end-of-sequence token, as TRL."}
    )
    shared_prompt: SharedPromptSetting = field(
        default="off", metadata={"help": "Each sequence encoded alone, as TRL (auto: share each prompt's encoding)."}
    )
    max_length: int | None = field(
        default=1024, metadata={"help": "Longest sequence in tokens (TRL's 1024); None: no limit."}
    )
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations in the backward pass to save memory, as TRL."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision; None: as TRL, on unless fp16 is set, where the device runs bf16 natively "
            "(float32 where it would be emulated, about 25x slower)."
        },
    )
    pad_to_multiple_of: int | str | None = field(
        default="auto", metadata={"help": "Pad to a multiple of this many tokens; auto: 128 on Neuron, else none."}
    )

    def __post_init__(self) -> None:
        # TRL's rule: bf16 unless fp16 is set (or this project's `precision` names another choice); bf16=False
        # means float32, where this project's precision="auto" would choose by the hardware.
        if self.bf16 is None:
            # Unset: bf16 wherever the device runs it natively, as precision "auto" picks it (CUDA, CPUs with AMX or
            # AVX512-BF16), float32 where it would be emulated (about 25x slower), where TRL would still use it.
            self.bf16 = self.precision == "bf16"
        elif not self.bf16 and not self.fp16 and self.precision == "auto":
            self.precision = "fp32"
        super().__post_init__()


class RewardTrainer(RankingRewardTrainer):
    """:class:`~rewardcollapse.training.RankingRewardTrainer` whose default ``args`` is a :class:`RewardConfig`."""

    config_class = RewardConfig
