"""The model card (``README.md``) saved with every trained reward model, in the Hub's format.

The card's metadata (base model, data set, tags) is what the Hub indexes; its text says how the model was trained
(the utility and the loss), how it reads its input, how to use it, and which paper to cite. It is built with
``huggingface_hub``'s :class:`~huggingface_hub.ModelCard`, so ``ModelCard.load`` reads it back.
"""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from rewardcollapse.core.conventions import OPENNESS, PROMPT_AWARE

__all__ = ["CITATION", "MODEL_CARD_FILE", "MODEL_CARD_TAGS", "model_card"]

MODEL_CARD_FILE = "README.md"
"""The model card's file name in a model folder (the name the Hub shows)."""

MODEL_CARD_TAGS = ("rewardcollapse", "reward-model")
"""The tags every card carries, before the user's own."""

CITATION = """\
@article{song2023rewardcollapse,
  title   = {Reward Collapse in Aligning Large Language Models},
  author  = {Song, Ziang and Cai, Tianle and Lee, Jason D. and Su, Weijie J.},
  journal = {arXiv preprint arXiv:2305.17608},
  year    = {2023},
  url     = {https://arxiv.org/abs/2305.17608}
}"""
"""The paper's BibTeX entry (Song, Cai, Lee, Su, 2023), quoted in every card."""

_NORMALIZED = {
    "sigmoid": "the sigmoid of the reward r, s = sigmoid(r) in [0, 1] (the paper's setting)",
    "none": "the raw reward, s = r (as in TRL's Bradley-Terry loss)",
}
_WEIGHTED = {
    "prompt": "each prompt weighs the same (the mean over prompts of the mean over their ranked pairs)",
    "pair": "each ranked pair weighs the same (TRL's mean over its pairwise rows)",
}


def _utility(args: Any) -> str:
    """The utility in words: one for every prompt, or how it is chosen per prompt."""
    if args.utility == PROMPT_AWARE:
        return (
            f"prompt-aware: each row's own `utility`, else `{args.closed_utility}` for closed prompts and "
            f"`{args.open_utility}` for open ones"
        )
    if args.utility == OPENNESS:
        return "the openness family U_o(x) = (x^(1-2o) - 1)/(1-2o), with each row's openness o"
    return f"`{args.utility}` for every prompt"


def _tags(tags: str | list[str] | None, extra: list[str]) -> list[str]:
    """The card's tags: this project's, the user's, then ``extra`` (the model's own), each once, in that order."""
    given = [tags] if isinstance(tags, str) else list(tags or [])
    return list(dict.fromkeys([*MODEL_CARD_TAGS, *given, *extra]))


def _usage(repo: str, adapters: bool) -> str:
    """The lines that load the model: the adapters on their base with peft, or the whole model."""
    loader = "AutoPeftModelForSequenceClassification" if adapters else "AutoModelForSequenceClassification"
    imports = (
        f"from peft import {loader}\nfrom transformers import AutoTokenizer"
        if adapters
        else f"from transformers import {loader}, AutoTokenizer"
    )
    return (
        f"{imports}\n\n"
        f'model = {loader}.from_pretrained("{repo}", num_labels=1)\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")'
    )


def model_card(
    *,
    args: Any,
    model_name: str,
    base_model: str | None,
    dataset_name: str | None = None,
    tags: str | list[str] | None = None,
    model_tags: list[str] | None = None,
    sequence_format: str,
    train_prompts: int | None = None,
    adapters: bool = False,
    repo_id: str | None = None,
) -> ModelCard:
    """The model card of a reward model trained with ``args``.

    Parameters
    ----------
    args : RankingRewardConfig
        The training arguments: the utility, ``normalize``, ``eps``, ``pair_weighting``, the centring coefficient
        and ``max_length`` are written out.
    model_name : str
        The card's title.
    base_model : str or None
        The model training started from (its Hub name or path); only a Hub name goes into the metadata, as TRL
        does, since a local path means nothing on the Hub.
    dataset_name : str, optional
        The training data's name (a Hub data set id goes into the metadata).
    tags : str or list of str, optional
        Tags after ``rewardcollapse`` and ``reward-model``.
    model_tags : list of str, optional
        The model's own tags (``model.model_tags``), added last.
    sequence_format : str
        How the model reads a (prompt, answer) pair.
    train_prompts : int, optional
        How many rankings (prompts) the training data held.
    adapters : bool, default False
        The folder holds LoRA adapters (peft) on ``base_model``, not a whole model.
    repo_id : str, optional
        The Hub repository the usage example loads from; default ``model_name``.

    Returns
    -------
    huggingface_hub.ModelCard
        The card; ``card.save(folder / MODEL_CARD_FILE)`` writes it.
    """
    hub_base = base_model if base_model and not os.path.isdir(base_model) else None
    metadata = ModelCardData(
        base_model=hub_base,
        datasets=[dataset_name] if dataset_name else None,
        library_name="peft" if adapters else "transformers",
        model_name=model_name,
        pipeline_tag="text-classification",
        tags=_tags(tags, list(model_tags or [])),
    )
    data = f"`{dataset_name}`" if dataset_name else "not named"
    if train_prompts is not None:
        data += f", {train_prompts} rankings (prompts with their ranked answers)"
    centring = (
        f"\n- **Centring:** plus {args.center_rewards_coefficient} times the mean over ranked pairs of (r_i + r_j)^2."
        if args.center_rewards_coefficient is not None
        else ""
    )
    length = "no limit" if args.max_length is None else f"at most {args.max_length} tokens"
    body = f"""
# {model_name}

A reward model: a sequence classifier with one output, the reward of an answer to a prompt. It was trained with
the `RankingRewardTrainer` of `rewardcollapse` on ranked answers.

- **Base model:** {f"`{base_model}`" if base_model else "not known"}
- **Training data:** {data}
- **Utility:** {_utility(args)}
- **Loss:** -U(s_i - s_j) for each ranked pair (answer i ranked above answer j), where s is
  {_NORMALIZED[args.normalize]}, averaged so that {_WEIGHTED[args.pair_weighting]}; a utility singular at 0 is
  shifted by eps = {args.eps}: U(x + eps) - U(eps) (Song et al., 2023, Section 3).{centring}
- **Input:** sequence format `{sequence_format}`, {length} per (prompt, answer).

The utility decides the shape of the rewards a prompt's answers converge to: a utility that does not depend on the
prompt makes them collapse to one distribution for every prompt (Song et al., 2023).

## Usage

```python
{_usage(repo_id or model_name, adapters)}
```

or score a file of rankings or of TRL's pairwise rows: `rewardcollapse score --model <this folder> --data <file>`.
The model also serves as `reward_funcs` of TRL's online trainers (for example `trl.GRPOTrainer`).

## Citation

```bibtex
{CITATION}
```
"""
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
