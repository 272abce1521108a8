"""Decoder reward models (Llama, Qwen2, Mistral, GPT-2), built offline: padding, LoRA, gradient checkpointing, API."""

import contextlib
import copy
import json
import re
import shutil

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rewardcollapse.cli import main
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data import load_rankings
from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer
from rewardcollapse.training.collator import RankingCollator
from rewardcollapse.training.scoring import score_batch

DECODERS = ("llama", "qwen2", "mistral", "gpt2")

pytestmark = pytest.mark.filterwarnings("ignore")


def rows(n=6):
    return [
        {
            "prompt": f"Question {p}: explain topic {p}.",
            "responses": [" a long and careful one", " The answer is yes because", " maybe", " no"][: 2 + p % 3],
        }
        for p in range(n)
    ]


def config(tmp_path, **settings):
    base = {
        "output_dir": str(tmp_path / "out"),
        "report_to": "none",
        "use_cpu": True,
        "utility": "log",
        "precision": "fp32",
    }
    return RankingRewardConfig(**{**base, **settings})


@pytest.mark.parametrize("arch", DECODERS)
def test_padded_scores_equal_unpadded_whatever_the_tokenizer_side(arch, decoder_tokenizer, tiny_decoder):
    from rewardcollapse.training.models import set_padding_token

    model = tiny_decoder(arch).eval()
    set_padding_token(decoder_tokenizer, model)
    data = rows(4)
    alone = []
    for side in ("right", "left"):
        decoder_tokenizer.padding_side = side
        collator = RankingCollator(decoder_tokenizer, max_length=64, sequence_format="trl")
        with torch.no_grad():
            batch = score_batch(model, collator(data))
            alone = [score_batch(model, collator([row]))[0, : len(row["responses"])] for row in data]
        for b, row in enumerate(data):
            torch.testing.assert_close(batch[b, : len(row["responses"])], alone[b], atol=1e-5, rtol=0)
    decoder_tokenizer.padding_side = "right"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_trains_only_adapters_and_head_and_survives_save_reload_resume(
    arch, tmp_path, decoder_tokenizer, tiny_decoder
):
    from peft import LoraConfig

    data = load_rankings(datasets.Dataset.from_list(rows()))
    targets = ["q_proj", "v_proj"] if arch == "llama" else ["c_attn"]
    args = config(tmp_path, max_steps=4, save_steps=2, learning_rate=1e-2, per_device_train_batch_size=3)
    base = tmp_path / "base"  # adapters name their base model: a folder here, a Hub name usually
    tiny_decoder(arch).save_pretrained(base)
    decoder_tokenizer.save_pretrained(base)
    trainer = RankingRewardTrainer(
        model=str(base),
        args=args,
        train_dataset=data,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=targets),
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [name for name, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert all("lora_" in name or ".score." in name for name in changed), changed
    assert any("lora_B" in name for name in changed) and any(".score.modules_to_save" in name for name in changed)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "adapter" / "rewardcollapse.json").read_text())["sequence_format"] == "trl"

    from rewardcollapse.training import load_reward_model

    reloaded, tokenizer = load_reward_model(str(tmp_path / "adapter"))
    collator = RankingCollator(tokenizer, max_length=64, sequence_format="trl")
    batch = collator(data.to_list()[:3])
    trainer.model.eval()
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(score_batch(reloaded, batch), score_batch(trainer.model, batch), atol=1e-5, rtol=0)

    resumed = RankingRewardTrainer(
        model=str(base),
        args=config(tmp_path, max_steps=4, save_steps=2, learning_rate=1e-2, per_device_train_batch_size=3),
        train_dataset=data,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=targets),
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    with torch.no_grad():
        torch.testing.assert_close(
            score_batch(resumed.model.eval(), batch), score_batch(trainer.model, batch), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(arch, tmp_path, decoder_tokenizer, tiny_decoder):
    data = load_rankings(datasets.Dataset.from_list(rows(4)))
    results = []
    for checkpointing in (False, True):
        model = tiny_decoder(arch)
        args = config(tmp_path, gradient_checkpointing=checkpointing, max_steps=1)
        trainer = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=decoder_tokenizer)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        batch = trainer.data_collator(data.to_list())
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4)


def test_trainer_takes_a_model_path_and_fixes_the_padding_token(tmp_path, decoder_tokenizer, tiny_decoder):
    folder = tmp_path / "base"
    tiny_decoder("llama").save_pretrained(folder)
    fresh = type(decoder_tokenizer)(tokenizer_object=decoder_tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    fresh.save_pretrained(folder)
    data = load_rankings(datasets.Dataset.from_list(rows(4)))
    trainer = RankingRewardTrainer(model=str(folder), args=config(tmp_path, max_steps=1), train_dataset=data)
    assert trainer.processing_class.pad_token == "<|endoftext|>"
    trainer.train()
    tokenizer = type(decoder_tokenizer).from_pretrained(folder)
    assert tokenizer.pad_token is None  # passed without one: the trainer sets it
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    model.config.pad_token_id = None
    trainer = RankingRewardTrainer(
        model=model, args=config(tmp_path, max_steps=1), train_dataset=data, processing_class=tokenizer
    )
    assert tokenizer.pad_token_id == model.config.pad_token_id == tokenizer.eos_token_id
    trainer.train()


def test_a_classifier_with_two_labels_is_refused(tmp_path, decoder_tokenizer, tiny_decoder):
    model = tiny_decoder("llama")
    model.config.num_labels = 2
    data = load_rankings(datasets.Dataset.from_list(rows(2)))
    with pytest.raises(
        ValueError, match="num_labels=2, but a reward model needs num_labels=1 to output a single scalar reward"
    ):
        RankingRewardTrainer(model=model, args=config(tmp_path), train_dataset=data, processing_class=decoder_tokenizer)


def test_bad_peft_config_is_named_before_training(tmp_path, decoder_tokenizer, tiny_decoder):
    from peft import LoraConfig

    data = load_rankings(datasets.Dataset.from_list(rows(2)))
    with pytest.raises(
        ValueError, match=r"`peft_config` does not fit the model \(target_modules .*no_such_module.*q_proj"
    ):
        RankingRewardTrainer(
            model=tiny_decoder("llama"),
            args=config(tmp_path),
            train_dataset=data,
            processing_class=decoder_tokenizer,
            peft_config=LoraConfig(r=2, target_modules=["no_such_module"]),
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("disable", [True, False], ids=["disabled", "kept"])
def test_lora_dropout_follows_disable_dropout(disable, tmp_path, decoder_tokenizer, tiny_decoder):
    from peft import LoraConfig

    model = tiny_decoder("gpt2")  # GPT-2 has dropout of its own (0.1) beside the adapters'
    trainer = RankingRewardTrainer(
        model=model,
        args=config(tmp_path, disable_dropout=disable),
        train_dataset=load_rankings(datasets.Dataset.from_list(rows(2))),
        processing_class=decoder_tokenizer,
        peft_config=LoraConfig(r=2, lora_alpha=4, lora_dropout=0.05, target_modules=["c_attn"]),
    )
    adapters = [
        dropout
        for name, module in trainer.model.named_modules()
        if name.endswith("lora_dropout")
        for dropout in module.values()
    ]
    assert adapters and all(isinstance(dropout, torch.nn.Dropout) for dropout in adapters)
    if disable:
        dropouts = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
        assert {dropout.p for dropout in dropouts} == {0.0}
    else:
        assert {dropout.p for dropout in adapters} == {0.05}


def test_trl_metric_names_are_logged(tmp_path, decoder_tokenizer, tiny_decoder):
    data = load_rankings(datasets.Dataset.from_list(rows(6)))
    args = config(tmp_path, max_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=2)
    trainer = RankingRewardTrainer(
        model=tiny_decoder("llama"),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=decoder_tokenizer,
    )
    trainer.train()
    logged = {key for entry in trainer.state.log_history for key in entry}
    for name in ("accuracy", "margin", "min_reward", "mean_reward", "max_reward"):
        assert name in logged and f"eval_{name}" in logged
    first = next(entry for entry in trainer.state.log_history if "accuracy" in entry)
    assert 0 <= first["accuracy"] <= 1 and first["min_reward"] <= first["mean_reward"] <= first["max_reward"]


def test_merged_lora_scores_equal_the_adapters(tmp_path, decoder_tokenizer, tiny_decoder):
    from peft import LoraConfig

    data = load_rankings(datasets.Dataset.from_list(rows(6)))
    args = config(tmp_path, max_steps=2, learning_rate=1e-2, per_device_train_batch_size=3)
    trainer = RankingRewardTrainer(
        model=tiny_decoder("mistral"),
        args=args,
        train_dataset=data,
        processing_class=decoder_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    batch = trainer.data_collator(data.to_list()[:3])
    with torch.no_grad():
        adapted = score_batch(trainer.model.eval(), batch)
        merged = score_batch(trainer.model.merge_and_unload().eval(), batch)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)


def test_lora_command_writes_adapters_or_a_merged_model(tmp_path, decoder_tokenizer, tiny_decoder, capsys):
    base = tmp_path / "base"
    tiny_decoder("qwen2").save_pretrained(base)
    decoder_tokenizer.save_pretrained(base)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows(6)))
    common = ["--data", str(data), "--model", str(base), "--steps", "2", "--batch-size", "3", "--report_to", "none"]
    common += ["--precision", "fp32", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
    assert main(["train", *common, "--output", str(tmp_path / "adapter")]) == 0
    assert main(["train", *common, "--merge_lora", "--output", str(tmp_path / "merged")]) == 0
    assert re.search(r"model input +trl", capsys.readouterr().out)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged", num_labels=1)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    scores = {}
    for output in ("adapter", "merged"):
        path = tmp_path / f"{output}.jsonl"
        score = ["score", "--model", str(tmp_path / output), "--data", str(data), "--precision", "fp32"]
        assert main([*score, "--output", str(path)]) == 0
        scores[output] = np.concatenate([json.loads(line)["rewards"] for line in path.read_text().splitlines()])
    np.testing.assert_allclose(scores["merged"], scores["adapter"], atol=1e-5)  # the same seeded run, two outputs
    assert main(["train", *common[:-5], "--merge_lora", "--output", str(tmp_path / "x")]) == 2
    assert "--merge_lora needs LoRA training" in capsys.readouterr().err


def test_lora_alpha_must_be_positive(tmp_path, decoder_tokenizer, tiny_decoder, capsys):
    from peft import LoraConfig

    base = tmp_path / "base"
    tiny_decoder("llama").save_pretrained(base)
    decoder_tokenizer.save_pretrained(base)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows(2)))
    train = ["train", "--data", str(data), "--model", str(base), "--steps", "1", "--report_to", "none", "--lora_r", "4"]
    assert main([*train, "--lora_alpha", "0", "--output", str(tmp_path / "out")]) == 2
    assert "`lora_alpha` must be a number > 0, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    dataset = load_rankings(datasets.Dataset.from_list(rows(2)))
    for lora, name in [
        (LoraConfig(r=2, lora_alpha=0, target_modules=["q_proj"]), r"`peft_config.lora_alpha`"),
        (
            LoraConfig(r=2, target_modules=["q_proj"], alpha_pattern={"q_proj": -8}),
            r"`peft_config.alpha_pattern\['q_proj'\]`",
        ),
    ]:
        with pytest.raises(ValueError, match=rf"{name} must be a number > 0, got -?\d+: LoRA scales"):
            RankingRewardTrainer(
                model=tiny_decoder("llama"),
                args=config(tmp_path),
                train_dataset=dataset,
                processing_class=decoder_tokenizer,
                peft_config=lora,
            )


def test_every_named_target_module_must_exist(tmp_path, decoder_tokenizer, tiny_decoder):
    from peft import LoraConfig

    data = load_rankings(datasets.Dataset.from_list(rows(2)))
    with pytest.raises(
        ValueError, match=r"no module of the model is named \['nope_proj'\]\. .*'q_proj'.*--lora_target_modules"
    ):
        RankingRewardTrainer(
            model=tiny_decoder("llama"),
            args=config(tmp_path),
            train_dataset=data,
            processing_class=decoder_tokenizer,
            peft_config=LoraConfig(r=2, target_modules=["q_proj", "nope_proj"]),  # peft alone drops nope_proj
        )
    assert not (tmp_path / "out").exists()
    # A dotted name matches as in peft: a module whose full name ends with it.
    trainer = RankingRewardTrainer(
        model=tiny_decoder("llama"),
        args=config(tmp_path),
        train_dataset=data,
        processing_class=decoder_tokenizer,
        peft_config=LoraConfig(r=2, target_modules=["self_attn.q_proj"]),
    )
    assert any("q_proj.lora_A" in name for name, _ in trainer.model.named_parameters())


@pytest.fixture(scope="module")
def relative_lora_run(tmp_path_factory, decoder_tokenizer, tiny_decoder):
    """A folder where `train --model llama --lora_r 4 --output adapter` ran: the base given by a relative path."""
    root = tmp_path_factory.mktemp("relative")
    tiny_decoder("llama").save_pretrained(root / "llama")
    decoder_tokenizer.save_pretrained(root / "llama")
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows(3)))
    train = ["train", "--data", "train.jsonl", "--model", "llama", "--lora_r", "4", "--lora_target_modules", "q_proj"]
    train += ["--steps", "1", "--save_steps", "1", "--batch-size", "3", "--report_to", "none", "--precision", "fp32"]
    with contextlib.chdir(root):
        assert main([*train, "--output", "adapter"]) == 0
    return root


def adapter_base(folder):
    return json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]


def scored(path):
    return np.concatenate([json.loads(line)["rewards"] for line in path.read_text().splitlines()])


def test_adapters_name_a_local_base_by_its_absolute_path_and_score_from_elsewhere(relative_lora_run, tmp_path):
    root = relative_lora_run
    assert adapter_base(root / "adapter") == adapter_base(root / "adapter" / "checkpoint-1") == str(root / "llama")
    with contextlib.chdir(tmp_path):  # no `llama` here: the stored "llama" of before went to the Hub
        score = ["score", "--model", str(root / "adapter"), "--data", str(root / "train.jsonl"), "--precision", "fp32"]
        assert main([*score, "--output", "rewards.jsonl"]) == 0
    assert len((tmp_path / "rewards.jsonl").read_text().splitlines()) == 3


def test_adapters_the_user_wrapped_are_saved_with_an_absolute_base(relative_lora_run, tmp_path):
    from peft import LoraConfig, get_peft_model

    from rewardcollapse.training import load_reward_model

    data = load_rankings(datasets.Dataset.from_list(rows(2)))
    with contextlib.chdir(relative_lora_run):
        model, tokenizer = load_reward_model("llama")
        wrapped = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj"]))
        trainer = RankingRewardTrainer(
            model=wrapped, args=config(tmp_path), train_dataset=data, processing_class=tokenizer
        )
        trainer.save_model(str(tmp_path / "saved"))
    assert adapter_base(tmp_path / "saved") == str(relative_lora_run / "llama")


def test_a_moved_base_names_adapter_config_and_base_model_points_to_it(relative_lora_run, tmp_path, capsys):
    from rewardcollapse.training import load_reward_model, score_file

    root = relative_lora_run
    adapter = tmp_path / "adapter"
    shutil.copytree(root / "adapter", adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copytree(root / "llama", tmp_path / "moved")
    settings = json.loads((adapter / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = str(tmp_path / "base")  # where it was trained from, moved since
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    score = ["score", "--model", str(adapter), "--data", str(root / "train.jsonl"), "--precision", "fp32"]
    assert main([*score, "--output", str(tmp_path / "rewards.jsonl")]) == 2
    error = capsys.readouterr().err
    assert f"{adapter / 'adapter_config.json'} names the base model '{tmp_path / 'base'}'" in error
    assert "no such folder. If it was moved or deleted, point to it with --base_model" in error
    assert main([*score, "--output", str(tmp_path / "rewards.jsonl"), "--base_model", str(tmp_path / "moved")]) == 0
    original = tmp_path / "original.jsonl"
    score_file(model=root / "adapter", data=root / "train.jsonl", output=original, precision="fp32", progress=False)
    np.testing.assert_allclose(scored(tmp_path / "rewards.jsonl"), scored(original), atol=1e-6)
    with pytest.raises(ValueError, match=r"`base_model` \('x'\) is for a folder of adapters, but .* holds no adapter"):
        load_reward_model(str(tmp_path / "moved"), base_model="x")


def test_an_old_relative_base_is_looked_for_in_the_adapter_folder_first(relative_lora_run, tmp_path):
    from rewardcollapse.training import load_reward_model

    root = relative_lora_run
    shutil.copytree(root / "adapter", tmp_path / "adapter", ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copytree(root / "llama", tmp_path / "adapter" / "llama")
    settings = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = "llama"  # as peft saved it before
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(settings))
    with contextlib.chdir(root):  # a `llama` here too: the one beside the adapters wins
        model, _ = load_reward_model(str(tmp_path / "adapter"))
    assert model.get_base_model().name_or_path == str(tmp_path / "adapter" / "llama")


def test_adapters_are_read_with_the_settings_saved_beside_them(relative_lora_run, tmp_path):
    from rewardcollapse.training import load_reward_model
    from rewardcollapse.training.models import resolve_sequence_format

    adapter = tmp_path / "adapter"
    shutil.copytree(relative_lora_run / "adapter", adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    (adapter / "rewardcollapse.json").write_text(json.dumps({"sequence_format": "pair", "max_length": 64}))
    model, _ = load_reward_model(str(adapter))
    assert resolve_sequence_format("auto", model) == "pair"  # not the decoder's default, "trl"


def padded(tokenizer):
    """A copy of the session's tokenizer that pads with its end-of-sequence token, as the trainer sets it."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def test_truncation_keeps_the_end_of_sequence_token_in_the_trl_format(decoder_tokenizer):
    decoder_tokenizer = padded(decoder_tokenizer)
    eos = decoder_tokenizer.eos_token_id
    long = {"prompt": "Question 1: explain topic 1.", "responses": [" a long and careful one" * 6, " no"]}
    batch = RankingCollator(decoder_tokenizer, max_length=12, sequence_format="trl")([long])
    assert int(batch["num_truncated"]) == 1
    assert batch["input_ids"][0].tolist()[-1] == eos and batch["input_ids"].shape[1] == 12


def test_over_long_drop_leaves_out_answers_and_their_pairs_as_trl_drops_pairs(decoder_tokenizer, caplog):
    import logging

    from rewardcollapse.training.collator import tokenize_rankings

    decoder_tokenizer = padded(decoder_tokenizer)
    long = " a long and careful one" * 6
    data = datasets.Dataset.from_list(
        [
            {"prompt": "Question 1:", "responses": [" yes", long], "pairs": [[0, 1]], "margins": [1.0]},  # dropped
            {
                "prompt": "Question 2:",
                "responses": [" yes", long, " no"],
                "pairs": [[0, 1], [1, 2], [0, 2]],
                "margins": [1.0, 2.0, 3.0],
            },
            {"prompt": "Question 3:", "responses": [" yes", " no"], "pairs": [[1, 0]], "margins": [0.5]},
        ]
    )
    with caplog.at_level(logging.INFO, logger="rewardcollapse"):
        kept = tokenize_rankings(
            data, decoder_tokenizer, max_length=12, name="train", sequence_format="trl", over_long="drop"
        )
    assert kept["prompt"] == ["Question 2:", "Question 3:"]
    assert kept[0]["responses"] == [" yes", " no"] and kept[0]["pairs"] == [[0, 1]] and kept[0]["margins"] == [3.0]
    assert kept["num_dropped"] == [1, 0] and kept["num_truncated"] == [0, 0]
    assert all(len(ids) <= 12 for row in kept["input_ids"] for ids in row)
    assert "train: dropped 2 of 7 sequences longer than max_length=12" in caplog.text
    assert "1 of 3 rankings were left without a pair and dropped" in caplog.text
    collate = RankingCollator(decoder_tokenizer, max_length=12, sequence_format="trl", over_long="drop")
    batch = collate(data.to_list())
    assert batch["answer_mask"].sum(1).tolist() == [2, 2] and batch["pairs"].sum().item() == 2
    with pytest.raises(InputValueError, match=r"max_length=12 tokens \(over_long='drop'\)"):
        collate(data.to_list()[:1])
