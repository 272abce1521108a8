"""A drop-in for TRL users: TRL's own RewardTrainer (trl, installed by the test extra) is the reference.

Token ids of the ``"trl"`` sequence format equal TRL's tokenisation; on the same pairwise rows and token ids the loss
with TRL's settings (pair weighting, margin, centring) equals ``RewardTrainer.compute_loss``; a model trained by TRL
and scored here gives TRL's scores.
"""

import functools
import json

import datasets
import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")

from transformers import AutoTokenizer  # noqa: E402

import rewardcollapse.trl  # noqa: E402
from rewardcollapse.core.errors import InputTypeError, InputValueError  # noqa: E402
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

    from rewardcollapse.training.precision import native_cpu_bf16
    from rewardcollapse.trl import RewardConfig, RewardTrainer

    settings = {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True}
    ours, theirs = RewardConfig(**settings), trl.RewardConfig(**settings)
    differ = {
        spec.name: (getattr(ours, spec.name), getattr(theirs, spec.name))
        for spec in dataclasses.fields(trl.RewardConfig)
        if repr(getattr(ours, spec.name)) != repr(getattr(theirs, spec.name))
    }
    # The collator reads the ranking columns; bf16 only where the CPU runs it natively (TRL: also where emulated).
    native = native_cpu_bf16() is not None
    assert differ == {"remove_unused_columns": (False, True), **({} if native else {"bf16": (False, True)})}
    semantics = ("utility", "normalize", "pair_weighting", "group_pairs", "over_long", "sequence_format")
    assert tuple(getattr(ours, name) for name in semantics) == ("logsigmoid", "none", "pair", False, "drop", "trl")
    assert (ours.precision, ours.shared_prompt) == ("bf16" if native else "fp32", "off")
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


# Measured goal of issue 20: TRL's documented reward-modelling usage (`RewardConfig(...)`, `RewardTrainer(model=name,
# args=..., train_dataset=dataset)`, `trainer.train()`, `trainer.evaluate(...)`) runs here with only the classes
# swapped, and trains the same model: loss per step, final weights and held-out scores equal TRL's to 1e-6.

# TRL's semantics spelled out (rewardcollapse.trl.RewardConfig has them as defaults).
TRL_SETTINGS = {
    "utility": "logsigmoid",
    "normalize": "none",
    "pair_weighting": "pair",
    "disable_dropout": True,
    "group_pairs": False,
    "sequence_format": "trl",
    "max_length": 1024,
    "shared_prompt": "off",  # each pair's two sequences forwarded whole, as TRL forwards them
    "precision": "fp32",  # `bf16=False` alone is overridden by precision "auto" (bf16 on an AVX512-BF16 CPU)
}
WORDS = ("yes", "no", "maybe", "short", "a long and careful one")


def text_pairs(n, *, start=0, implicit=False, margin=False):
    rows = []
    for i in range(start, start + n):
        prompt = f"Question {i % 5}: explain topic {i % 5}."
        chosen, rejected = f" The answer is {WORDS[i % 5]} because of reason {i}.", f" The answer is {WORDS[i % 3]}"
        row = (
            {"chosen": prompt + chosen, "rejected": prompt + rejected}
            if implicit
            else {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        )
        rows.append({**row, "margin": 0.1 * (i % 4)} if margin else row)
    return rows


def chat_pairs(n, *, start=0):
    return [
        {
            "prompt": [{"role": "user", "content": f"Question {i % 5}: explain topic {i % 5}."}],
            "chosen": [{"role": "assistant", "content": f"The answer is {WORDS[i % 5]} because of reason {i}."}],
            "rejected": [{"role": "assistant", "content": f"The answer is {WORDS[i % 3]}"}],
        }
        for i in range(start, start + n)
    ]


def token_pairs(tokenizer, n, *, start=0):
    """Pre-tokenised rows (the column names TRL still reads), with margins."""
    rows = text_pairs(n, start=start, margin=True)
    return [
        dict(
            zip(("chosen_input_ids", "rejected_input_ids"), sequences(tokenizer, row), strict=True),
            margin=row["margin"],
        )
        for row in rows
    ]


def sequences(tokenizer, row):
    """TRL's two token sequences of a pair row: prompt + answer + EOS, or a conversation through the template."""
    if "chosen_input_ids" in row:
        return [row["chosen_input_ids"], row["rejected_input_ids"]]
    if isinstance(row["chosen"], list):
        return [
            tokenizer.apply_chat_template(row["prompt"] + row[key], return_dict=True)["input_ids"]
            for key in ("chosen", "rejected")
        ]
    prompt = row.get("prompt", "")
    return [tokenizer(prompt + row[key] + tokenizer.eos_token)["input_ids"] for key in ("chosen", "rejected")]


def held_out_scores(trainer, rows):
    model = trainer.model.eval()
    with torch.no_grad():
        return [
            [model(input_ids=torch.tensor([ids])).logits.item() for ids in sequences(trainer.processing_class, row)]
            for row in rows
        ]


def train_like_a_trl_user(config_class, trainer_class, folder, train, held_out, out, *, peft=False, **settings):
    """TRL's documented usage: a config, a trainer built from the model's name and the raw data set, train, evaluate."""
    common = {
        "output_dir": str(out),
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": 4,  # smaller than the data set: batches follow the sampler's order
        "max_steps": 10,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 3,
    }
    args = config_class(**common, **settings)
    lora = None
    if peft:
        from peft import LoraConfig

        lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    trainer = trainer_class(
        model=str(folder), args=args, train_dataset=datasets.Dataset.from_list(train), peft_config=lora
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    evaluation = trainer.evaluate(eval_dataset=datasets.Dataset.from_list(held_out))
    return losses, weights, held_out_scores(trainer, held_out), evaluation, trainer.state.log_history


@pytest.fixture(scope="module")
def decoder_folder(tmp_path_factory, tiny_decoder, decoder_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_decoder("qwen2", seed=4).save_pretrained(folder)
    decoder_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("data", "options"),
    [
        ("explicit", {}),
        ("implicit", {}),
        ("conversational", {"gradient_checkpointing": True}),
        ("explicit", {"peft": True, "gradient_checkpointing": True}),
        ("margin", {"center_rewards_coefficient": 0.01}),
        ("tokenised", {}),
    ],
    ids=["explicit", "implicit", "conversational-checkpointing", "lora-checkpointing", "margin-centring", "tokenised"],
)
def test_trl_usage_with_the_classes_swapped_trains_trls_model(tmp_path, decoder_folder, data, options):
    make = {
        "explicit": text_pairs,
        "implicit": functools.partial(text_pairs, implicit=True),
        "conversational": chat_pairs,
        "margin": functools.partial(text_pairs, margin=True),
        "tokenised": functools.partial(token_pairs, AutoTokenizer.from_pretrained(decoder_folder)),
    }[data]
    train, held_out = make(16), make(6, start=16)
    options = {"gradient_checkpointing": False, **options}
    theirs = train_like_a_trl_user(
        trl.RewardConfig, trl.RewardTrainer, decoder_folder, train, held_out, tmp_path / "trl", **options
    )
    # The same script with one import changed: `from rewardcollapse.trl import RewardConfig, RewardTrainer`.
    ours = train_like_a_trl_user(
        rewardcollapse.trl.RewardConfig,
        rewardcollapse.trl.RewardTrainer,
        decoder_folder,
        train,
        held_out,
        tmp_path / "ours",
        **options,
    )
    assert len(ours[0]) == len(theirs[0]) == 10
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-6, rtol=0)
    assert ours[1].keys() == theirs[1].keys()
    moved = [name for name in theirs[1] if not torch.equal(theirs[1][name], ours[1][name])]
    for name in theirs[1]:
        np.testing.assert_allclose(ours[1][name].numpy(), theirs[1][name].numpy(), atol=1e-6, rtol=0, err_msg=name)
    np.testing.assert_allclose(ours[2], theirs[2], atol=1e-6, rtol=0)
    for name in ("eval_loss", "eval_accuracy", "eval_margin", "eval_min_reward", "eval_mean_reward", "eval_max_reward"):
        assert ours[3][name] == pytest.approx(theirs[3][name], abs=1e-6), name
    for mine, trls in zip(ours[4], theirs[4], strict=True):  # TRL's logged training metrics, step by step
        for name in ("accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens"):
            if name in trls:
                assert mine[name] == pytest.approx(trls[name], abs=1e-6), (name, trls.get("step"))
    assert ours[3]["eval_num_tokens"] == theirs[3]["eval_num_tokens"]
    assert moved or options.get("peft")  # weights differ from the start, else the comparison says nothing


def quick(tmp_path, **settings):
    return RankingRewardConfig(
        output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, max_steps=1, **{**TRL_SETTINGS, **settings}
    )


def test_args_default_to_the_config_class_in_trls_output_folder(tmp_path, monkeypatch, decoder_folder):
    monkeypatch.chdir(tmp_path)
    data = datasets.Dataset.from_list(text_pairs(4))
    trainer = RankingRewardTrainer(model=str(decoder_folder), train_dataset=data)
    assert type(trainer.args) is RankingRewardConfig
    assert trainer.args.output_dir == f"{decoder_folder.name}-Reward"

    class TrlDefaults(RankingRewardConfig):
        pass

    class Swapped(RankingRewardTrainer):
        config_class = TrlDefaults

    assert type(Swapped(model=str(decoder_folder), train_dataset=data).args) is TrlDefaults


def test_a_model_object_gets_its_tokenizer_from_its_path_and_training_data_is_required(tmp_path, decoder_folder):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(decoder_folder)
    data = datasets.Dataset.from_list(text_pairs(4))
    trainer = RankingRewardTrainer(model=model, args=quick(tmp_path), train_dataset=data)
    assert trainer.processing_class.get_vocab() == AutoTokenizer.from_pretrained(decoder_folder).get_vocab()
    with pytest.raises(InputValueError, match="`train_dataset` is required"):
        RankingRewardTrainer(model=model, args=quick(tmp_path))
    with pytest.raises(InputTypeError, match=r"`train_dataset` must be one data set, got a DatasetDict of \['train'\]"):
        RankingRewardTrainer(model=model, args=quick(tmp_path), train_dataset=datasets.DatasetDict({"train": data}))


def test_trls_data_sets_as_they_are(tmp_path, decoder_folder):
    """A DatasetDict or dict of evaluation sets, a streamed training set, group_pairs both ways."""
    train = datasets.Dataset.from_list(text_pairs(8))
    evaluation = datasets.DatasetDict(
        {
            "texts": datasets.Dataset.from_list(text_pairs(3, start=8)),
            "chats": datasets.Dataset.from_list(chat_pairs(2)),
        }
    )
    trainer = RankingRewardTrainer(
        model=str(decoder_folder), args=quick(tmp_path), train_dataset=train, eval_dataset=evaluation
    )
    assert len(trainer.train_dataset) == 8  # group_pairs=False: one row per pair, as TRL
    metrics = trainer.evaluate()
    assert {"eval_texts_loss", "eval_chats_loss", "eval_texts_ranking_pairwise_accuracy", "eval_accuracy"} <= set(
        metrics
    )
    metrics = trainer.evaluate(eval_dataset=datasets.Dataset.from_list(text_pairs(2)))  # raw, as TRL takes it
    assert {"eval_loss", "eval_accuracy", "eval_mean_reward", "eval_num_tokens"} <= set(metrics)
    assert {"eval_ranking_pairwise_accuracy", "eval_ranking_reward_mean"} <= set(metrics)
    assert not {"eval_pairwise_accuracy", "eval_reward_mean"} & set(metrics)  # no name beside TRL's look-alike

    grouped = RankingRewardTrainer(
        model=str(decoder_folder), args=quick(tmp_path, group_pairs=True), train_dataset=train
    )
    assert len(grouped.train_dataset) == 5  # the pairs of each of the 5 prompts merged into one ranking

    streamed = train.to_iterable_dataset()
    trainer = RankingRewardTrainer(model=str(decoder_folder), args=quick(tmp_path), train_dataset=streamed)
    assert trainer.train().global_step == 1
    with pytest.raises(InputValueError, match=r"`train_dataset` is an IterableDataset of pair rows.*group_pairs=False"):
        RankingRewardTrainer(model=str(decoder_folder), args=quick(tmp_path, group_pairs=True), train_dataset=streamed)


def test_train_reward_model_keeps_pair_rows_apart_without_group_pairs(tmp_path, decoder_folder):
    from rewardcollapse.training.run import train_reward_model

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in text_pairs(8)))
    settings = {"max_steps": 1, "report_to": "none", "save_strategy": "no", "use_cpu": True}
    apart = train_reward_model(
        model=str(decoder_folder), data=data, output_dir=tmp_path / "apart", group_pairs=False, **settings
    )
    merged = train_reward_model(model=str(decoder_folder), data=data, output_dir=tmp_path / "merged", **settings)
    assert (apart.train_prompts, merged.train_prompts) == (8, 5)


def test_trls_positional_order_and_trainer_arguments_pass_through(tmp_path, decoder_folder):
    from transformers import TrainerCallback

    class Seen(TrainerCallback):
        pass

    data = datasets.Dataset.from_list(text_pairs(4))
    # TRL's order: model, args, data_collator, train_dataset, eval_dataset, processing_class, compute_metrics, ...
    trainer = RankingRewardTrainer(
        str(decoder_folder),
        quick(tmp_path),
        None,
        data,
        None,
        None,
        None,
        [Seen()],
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.5}),
    )
    assert len(trainer.train_dataset) == 4
    assert any(isinstance(callback, Seen) for callback in trainer.callback_handler.callbacks)
    assert isinstance(trainer.create_optimizer(), torch.optim.SGD) and trainer.optimizer.defaults["lr"] == 0.5


def test_pre_tokenised_rows_over_max_length_are_dropped_as_trl_drops_them(tmp_path, decoder_folder):
    rows = token_pairs(AutoTokenizer.from_pretrained(decoder_folder), 8)
    lengths = sorted(len(ids) for row in rows for ids in (row["chosen_input_ids"], row["rejected_input_ids"]))
    limit = lengths[len(lengths) // 2]  # some rows hold a longer sequence
    data = datasets.Dataset.from_list(rows)
    common = {"report_to": "none", "use_cpu": True, "bf16": False, "max_length": limit}

    def kept(config_class, trainer_class, **settings):
        args = config_class(output_dir=str(tmp_path / config_class.__module__), **common, **settings)
        return trainer_class(model=str(decoder_folder), args=args, train_dataset=data).train_dataset

    theirs = kept(trl.RewardConfig, trl.RewardTrainer)
    ours = kept(rewardcollapse.trl.RewardConfig, rewardcollapse.trl.RewardTrainer)
    assert 0 < len(ours) == len(theirs) < len(rows)
    assert [row["input_ids"] for row in ours] == [[row["chosen_ids"], row["rejected_ids"]] for row in theirs]
    cut = kept(rewardcollapse.trl.RewardConfig, rewardcollapse.trl.RewardTrainer, over_long="truncate")
    assert len(cut) == len(rows) and max(len(ids) for row in cut for ids in row["input_ids"]) == limit
    assert sum(cut["num_truncated"]) > 0
    common["max_length"] = None  # no limit: every row whole
    whole = kept(rewardcollapse.trl.RewardConfig, rewardcollapse.trl.RewardTrainer)
    assert [row["input_ids"] for row in whole] == [[r["chosen_input_ids"], r["rejected_input_ids"]] for r in rows]
