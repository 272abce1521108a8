"""The next step of the pipeline: a reward model saved by this trainer serves TRL's online trainers as TRL documents.

TRL's ``GRPOTrainer`` takes a reward model as ``reward_funcs`` (its path), loads it with
``AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`` and the tokenizer saved beside it, and
rewards each completion with the model's one output on prompt + completion. Tested offline with a tiny random
policy for one step.
"""

import datasets
import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")

from rewardcollapse.data import load_rankings  # noqa: E402
from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

RANKINGS = [
    {"prompt": f"Question {i}: explain topic {i}.", "responses": [" a long and careful one", " yes", " no"]}
    for i in range(4)
]


def test_a_saved_reward_model_is_the_reward_func_of_grpo(tmp_path, decoder_tokenizer, tiny_decoder):
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

    reward_dir = tmp_path / "reward-model"
    args = RankingRewardConfig(
        output_dir=str(reward_dir), max_steps=1, report_to="none", use_cpu=True, save_strategy="no", max_length=64
    )
    trainer = RankingRewardTrainer(
        model=tiny_decoder("llama"),
        args=args,
        train_dataset=load_rankings(datasets.Dataset.from_list(RANKINGS)),
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    trainer.save_model()

    torch.manual_seed(0)
    eos = decoder_tokenizer.eos_token_id
    policy = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(decoder_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    config = trl.GRPOConfig(
        output_dir=str(tmp_path / "policy"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
    )
    prompts = datasets.Dataset.from_list([{"prompt": row["prompt"]} for row in RANKINGS])
    grpo = trl.GRPOTrainer(
        model=policy,
        reward_funcs=str(reward_dir),  # as TRL documents a reward model: its path
        args=config,
        train_dataset=prompts,
        processing_class=decoder_tokenizer,
    )
    grpo.train()
    name = reward_dir.name
    logged = next(entry for entry in grpo.state.log_history if f"rewards/{name}/mean" in entry)
    assert np.isfinite(logged[f"rewards/{name}/mean"])

    # The rewards GRPO gave are our model's scores of prompt + completion (the completions it sampled).
    texts = [p + c for p, c in zip(grpo._logs["prompt"], grpo._logs["completion"], strict=True)]
    ours = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1).eval()
    with torch.no_grad():
        want = [ours(**decoder_tokenizer(text, return_tensors="pt")).logits.item() for text in texts]
    np.testing.assert_allclose(list(grpo._logs["rewards"][name]), want, atol=1e-5)
