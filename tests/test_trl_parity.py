"""A drop-in for TRL users: TRL's own RewardTrainer (trl, installed by the test extra) is the reference.

Token ids of the ``"trl"`` sequence format equal TRL's tokenisation; on the same pairwise rows and token ids the loss
with TRL's settings (pair weighting, margin, centring) equals ``RewardTrainer.compute_loss``; a model trained by TRL
and scored here gives TRL's scores.
"""

import json

import datasets
import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")

from rewardcollapse.data import load_rankings  # noqa: E402
from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer  # noqa: E402
from rewardcollapse.training.collator import RankingCollator, encode_rows  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

PAIRS = [
    {"prompt": "Question 1: explain topic 1.", "chosen": " The answer is yes because", "rejected": " The answer is no"},
    {"prompt": "Question 1: explain topic 1.", "chosen": " The answer is yes because", "rejected": " maybe"},
    {"prompt": "Question 2: explain topic 2.", "chosen": " a long and careful one", "rejected": " short"},
    {"prompt": "Question 3: explain topic 3.", "chosen": " The answer is maybe", "rejected": " no"},
]


def trl_trainer(model, tokenizer, rows, tmp_path, **settings):
    config = trl.RewardConfig(
        output_dir=str(tmp_path / "trl"),
        report_to="none",
        per_device_train_batch_size=len(rows),
        bf16=False,
        use_cpu=True,
        **settings,
    )
    return trl.RewardTrainer(
        model=model, args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer
    )


def test_trl_format_token_ids_equal_trls(tmp_path, decoder_tokenizer, tiny_decoder):
    trainer = trl_trainer(tiny_decoder("llama"), decoder_tokenizer, PAIRS, tmp_path)
    theirs = trainer.train_dataset
    rows = [{"prompt": row["prompt"], "responses": [row["chosen"], row["rejected"]]} for row in PAIRS]
    ours = encode_rows(rows, decoder_tokenizer, max_length=1024, sequence_format="trl")["input_ids"]
    assert [ids[0] for ids in ours] == theirs["chosen_ids"]
    assert [ids[1] for ids in ours] == theirs["rejected_ids"]
    assert ours[0][0][-1] == decoder_tokenizer.eos_token_id


def test_trl_format_implicit_prompt_token_ids_equal_trls(tmp_path, decoder_tokenizer, tiny_decoder):
    # No `prompt` column: TRL tokenises each whole text; the loader splits it and groups the pairs per prompt.
    implicit = [
        {"chosen": "Beautiful is better than ugly.", "rejected": "Beautiful is better than beautiful."},
        {"chosen": "Question 1: explain topic 1. The answer is yes", "rejected": "Question 1: explain topic 1.  no"},
        {"chosen": "Question 1: explain topic 1.  no", "rejected": "Question 1: explain topic 1.\nmaybe"},
        {"chosen": "Question 2:\n\nThe answer is short.", "rejected": "Question 2:\n\n\tshort"},
    ]
    theirs = trl_trainer(tiny_decoder("llama"), decoder_tokenizer, implicit, tmp_path).train_dataset
    data = load_rankings(datasets.Dataset.from_list(implicit), transitive_closure=False)
    assert len(data) == 3  # the two pairs of question 1 are one prompt with 3 answers
    encoded = encode_rows(data.to_list(), decoder_tokenizer, max_length=1024, sequence_format="trl")["input_ids"]
    ours = {
        row["prompt"] + answer: ids
        for row, row_ids in zip(data, encoded, strict=True)
        for answer, ids in zip(row["responses"], row_ids, strict=True)
    }
    assert [ours.get(row["chosen"]) for row in implicit] == theirs["chosen_ids"]
    assert [ours.get(row["rejected"]) for row in implicit] == theirs["rejected_ids"]


def test_trl_format_conversational_token_ids_equal_trls(tmp_path, decoder_tokenizer, tiny_decoder):
    chats = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}: explain topic {i}."}],
            "chosen": [{"role": "assistant", "content": "The answer is yes because"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(3)
    ]
    theirs = trl_trainer(tiny_decoder("qwen2"), decoder_tokenizer, chats, tmp_path).train_dataset
    rows = [{"prompt": row["prompt"], "responses": [row["chosen"], row["rejected"]]} for row in chats]
    ours = encode_rows(rows, decoder_tokenizer, max_length=1024, sequence_format="trl")["input_ids"]
    assert [ids[0] for ids in ours] == theirs["chosen_ids"]
    assert [ids[1] for ids in ours] == theirs["rejected_ids"]


@pytest.mark.parametrize(
    ("margin", "center"),
    [(False, None), (True, None), (True, 0.01)],
    ids=["bradley-terry", "margin", "margin-and-centring"],
)
def test_loss_equals_trls_compute_loss(tmp_path, decoder_tokenizer, tiny_decoder, margin, center):
    rows = [{**row, "margin": 0.25 * k} if margin else dict(row) for k, row in enumerate(PAIRS)]
    model = tiny_decoder("llama", seed=1)
    theirs = trl_trainer(model, decoder_tokenizer, rows, tmp_path, center_rewards_coefficient=center)
    batch = next(iter(theirs.get_train_dataloader()))
    model.train()
    expected = theirs.compute_loss(model, dict(batch)).item()

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_rankings(path, transitive_closure=False)
    assert len(data) == 3  # the two pairs of question 1 are one prompt with 3 answers
    args = RankingRewardConfig(
        output_dir=str(tmp_path / "ours"),
        report_to="none",
        utility="logsigmoid",
        normalize="none",
        pair_weighting="pair",
        center_rewards_coefficient=center,
        use_cpu=True,
    )
    ours = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=decoder_tokenizer)
    assert ours.sequence_format == "trl"  # a decoder: TRL's input by default
    collated = ours.data_collator([data[i] for i in range(len(data))])
    model.train()
    loss = ours.compute_loss(model, collated).item()
    assert loss == pytest.approx(expected, abs=1e-6)


def test_a_model_trained_by_trl_scores_the_same_here(tmp_path, decoder_tokenizer, tiny_decoder):
    from rewardcollapse.training.run import score_file

    model = tiny_decoder("mistral", seed=2)
    theirs = trl_trainer(model, decoder_tokenizer, PAIRS, tmp_path, max_steps=2, learning_rate=1e-2)
    theirs.train()
    theirs.save_model(str(tmp_path / "trl-model"))
    model.eval()
    with torch.no_grad():
        expected = [
            [model(input_ids=torch.tensor([row[key]])).logits.item() for key in ("chosen_ids", "rejected_ids")]
            for row in theirs.train_dataset
        ]
    data = tmp_path / "score.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n" for r in PAIRS)
    )
    score_file(
        model=tmp_path / "trl-model", data=data, output=tmp_path / "scores.jsonl", progress=False, precision="fp32"
    )
    scored = [json.loads(line)["rewards"] for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(scored, expected, atol=1e-5)


def test_pair_format_stays_the_default_for_encoders(tmp_path, tokenizer, tiny_model):
    args = RankingRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    data = load_rankings(datasets.Dataset.from_list([{"prompt": "p", "responses": ["a b", "c"]}]))
    trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    assert trainer.sequence_format == "pair"
    batch = RankingCollator(tokenizer, max_length=16)([data[0]])
    assert "token_type_ids" in batch and batch["token_type_ids"].sum() > 0  # the answer is the pair's second text


def test_rewardcollapse_trl_config_has_trls_defaults_and_what_the_user_gives_wins(tmp_path):
    import dataclasses

    from rewardcollapse.trl import RewardConfig, RewardTrainer

    settings = {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True}
    ours, theirs = RewardConfig(**settings), trl.RewardConfig(**settings)
    differ = {
        spec.name: (getattr(ours, spec.name), getattr(theirs, spec.name))
        for spec in dataclasses.fields(trl.RewardConfig)
        if repr(getattr(ours, spec.name)) != repr(getattr(theirs, spec.name))
    }
    assert differ == {"remove_unused_columns": (False, True)}  # the collator reads the ranking columns
    semantics = ("utility", "normalize", "pair_weighting", "group_pairs", "over_long", "sequence_format")
    assert tuple(getattr(ours, name) for name in semantics) == ("logsigmoid", "none", "pair", False, "drop", "trl")
    assert (ours.precision, ours.shared_prompt) == ("bf16", "off")
    assert RewardConfig(**settings, bf16=False).precision == "fp32"  # TRL's float32, whatever the CPU offers
    given = RewardConfig(**settings, utility="log", max_length=None, over_long="truncate", gradient_checkpointing=False)
    assert (given.utility, given.max_length, given.over_long, given.gradient_checkpointing) == (
        "log",
        None,
        "truncate",
        False,
    )
    assert RankingRewardConfig(**settings).max_length == 512  # this project's defaults stay its own
    assert issubclass(RewardTrainer, RankingRewardTrainer) and RewardTrainer.config_class is RewardConfig
    from transformers import HfArgumentParser  # TRL's scripts parse their config from the command line

    argv = ["--output_dir", str(tmp_path), "--report_to", "none", "--pad_to_multiple_of", "16", "--bf16", "False"]
    (parsed,) = HfArgumentParser(RewardConfig).parse_args_into_dataclasses([*argv, "--model_init_kwargs", '{"a": 1}'])
    assert (parsed.pad_to_multiple_of, parsed.model_init_kwargs, parsed.precision) == (16, {"a": 1}, "fp32")
