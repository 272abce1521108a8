import json
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardcollapse import OutputLockedError
from rewardcollapse._files import LOCK_FILE, locked_output_folder
from rewardcollapse.cli import main
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data import load_rankings
from rewardcollapse.loss import ranking_loss
from rewardcollapse.training import (
    RankingCollator,
    RankingRewardConfig,
    RankingRewardTrainer,
    default_backbone,
    score_batch,
    score_file,
    train_reward_model,
)
from rewardcollapse.training.models import freeze_bottom_layers, resolve_sequence_format

from .conftest import kill, run_until_ready, write_jsonl

BACKBONE = default_backbone()


@pytest.fixture(autouse=True)
def quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


WORDS = "the model reads every answer once and scores it so that longer answers rank higher here".split()


def ranking_rows(n_prompts=8, k=4, openness=True):
    rows = []
    for p in range(n_prompts):
        answers = [" ".join(WORDS[(p + w) % len(WORDS)] for w in range(3 * (k - i))) for i in range(k)]
        row = {"prompt": f"Prompt number {p}: say something.", "responses": answers}
        if openness:
            row["openness"] = float(p % 2)
        rows.append(row)
    return rows


def config(tmp_path, **overrides):
    settings = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-3,
        "max_steps": 4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "max_length": 64,
        "seed": 0,
        "dataloader_pin_memory": False,
        "precision": "fp32",
    }
    return RankingRewardConfig(**{**settings, **overrides})


def test_tiny_model_loss_falls_and_every_parameter_changes(tmp_path, tokenizer, tiny_model):
    model = tiny_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    args = config(tmp_path, max_steps=30, utility="-1/x", train_sampling_strategy="sequential")
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert np.mean(losses[-5:]) < losses[0] - 0.05
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p.detach().cpu(), before[name])]
    assert unchanged == []
    metrics = trainer.evaluate(data)
    assert metrics["eval_ranking_pairwise_accuracy"] > 0.9
    assert set(metrics) >= {
        "eval_ranking_kendall_tau",
        "eval_ranking_reward_mean",
        "eval_ranking_reward_std",
        "eval_ranking_reward_spread",
    }


def test_minilm_backbone_trains_saves_and_reloads(tmp_path):
    from rewardcollapse.training import load_reward_model

    model, tok = load_reward_model(BACKBONE)
    data = load_rankings(datasets.Dataset.from_list(ranking_rows(4)))
    args = config(tmp_path, max_steps=2, learning_rate=5e-5, utility="prompt-aware")
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", num_labels=1)
    batch = RankingCollator(tok, max_length=64)(data.to_list())
    model.cpu().eval()
    with torch.no_grad():
        want = score_batch(model, batch)
        got = score_batch(reloaded.eval(), batch)
    assert torch.allclose(got, want, atol=1e-5)


def test_collator_one_sequence_per_answer(tokenizer):
    rows = [
        {"prompt": "p", "responses": ["a b", "c", "d e f"], "ranks": [0, 1, 1], "pairs": None},
        {"prompt": "q", "responses": ["x", "y"], "ranks": None, "pairs": None},
        {"prompt": "r", "responses": ["1", "2", "3", "4"], "ranks": None, "pairs": [[0, 1], [2, 3]]},
    ]
    batch = RankingCollator(tokenizer, max_length=64, max_answers=5)(rows)
    assert batch["input_ids"].shape[0] == 9  # 3 + 2 + 4 answers, each once
    assert batch["answer_slot"].tolist() == [0, 1, 2, 5, 6, 10, 11, 12, 13]
    assert batch["answer_mask"].sum(dim=1).tolist() == [3, 2, 4]
    pairs = batch["pairs"]
    assert pairs.shape == (3, 5, 5)
    assert pairs[0].nonzero().tolist() == [[0, 1], [0, 2]]  # answers 1 and 2 tied
    assert pairs[1].nonzero().tolist() == [[0, 1]]  # list order
    assert pairs[2].nonzero().tolist() == [[0, 1], [2, 3]]
    assert batch["utilities"] == ["log"] * len(rows) and batch["num_truncated"].item() == 0
    # The sequence is the (prompt, answer) pair: [CLS] p [SEP] a b [SEP].
    assert tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()]) == "[CLS] p [SEP] a b [SEP]"


def test_collator_counts_truncation(tokenizer):
    rows = [{"prompt": "p", "responses": ["word " * 50, "short"]}]
    batch = RankingCollator(tokenizer, max_length=16)(rows)
    assert batch["num_truncated"].item() == 1
    assert batch["attention_mask"].sum(dim=1).tolist() == [16, 5]


def test_collator_chat_template(tokenizer):
    tok = AutoTokenizer.from_pretrained(BACKBONE)
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "responses": ["hello", "bye"]}]
    with pytest.raises(ValueError, match="need a tokenizer with a chat template"):
        RankingCollator(tok)(rows)
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    batch = RankingCollator(tok)(rows)
    text = tok.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert text == "[ user ] hi [ assistant ] hello"


def test_collator_prompt_aware_specs(tokenizer):
    rows = [
        {"prompt": "a", "responses": ["1", "2"], "openness": 0.0},
        {"prompt": "b", "responses": ["1", "2"], "openness": 1.0},
        {"prompt": "c", "responses": ["1", "2"], "openness": 0.2, "utility": "log"},
    ]
    batch = RankingCollator(tokenizer, utility="prompt-aware")(rows)
    assert batch["utilities"] == ["x", "-1/x", "log"]
    with pytest.raises(ValueError, match="needs `utility` or `openness` on every row"):
        RankingCollator(tokenizer, utility="prompt-aware")([{"prompt": "d", "responses": ["1", "2"]}])
    with pytest.raises(ValueError, match="raise `max_answers`"):
        RankingCollator(tokenizer, max_answers=2)([{"prompt": "d", "responses": ["1", "2", "3"]}])


def test_compute_loss_is_the_ranking_loss_of_one_pass(tmp_path, tokenizer, tiny_model):
    model = tiny_model().eval()
    data = load_rankings(datasets.Dataset.from_list(ranking_rows(4)))
    trainer = RankingRewardTrainer(
        model=model, args=config(tmp_path, utility="prompt-aware"), train_dataset=data, processing_class=tokenizer
    )
    batch = trainer._prepare_inputs(trainer.data_collator(data.to_list()))  # on the trainer's device
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(1))
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        rewards = score_batch(model, batch)
    assert len(calls) == 2  # one forward pass each, over all 16 answers
    want = ranking_loss(rewards, utilities=["x", "-1/x"] * 2, pairs=batch["pairs"], mask=batch["answer_mask"], eps=0.1)
    assert loss.item() == pytest.approx(want.item(), abs=1e-7)


def test_chunked_scoring_matches_one_pass(tokenizer, tiny_model):
    model = tiny_model().eval()
    batch = RankingCollator(tokenizer)(ranking_rows(3, k=5))
    with torch.no_grad():
        whole = score_batch(model, batch)
        chunked = score_batch(model, batch, forward_batch_size=4)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert (whole[~batch["answer_mask"]] == 0).all()


def final_weights(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def test_gradient_accumulation_matches_the_full_batch(tmp_path, tokenizer, tiny_model):
    data = load_rankings(datasets.Dataset.from_list(ranking_rows(8)))
    common = {"max_steps": 2, "optim": "sgd", "learning_rate": 0.5, "train_sampling_strategy": "sequential"}
    full = RankingRewardTrainer(
        model=tiny_model(),
        args=config(tmp_path, per_device_train_batch_size=4, **common),
        train_dataset=data,
        processing_class=tokenizer,
    )
    full.train()
    accumulated = RankingRewardTrainer(
        model=tiny_model(),
        args=config(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, **common),
        train_dataset=data,
        processing_class=tokenizer,
    )
    accumulated.train()
    a, b = final_weights(full), final_weights(accumulated)
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-6


def uneven_rankings(n_prompts):
    """Rankings of 2 to 5 answers, so batches hold unequal numbers of ranked pairs (1 to 10 per prompt), each pair
    with a margin from -2 to 2: the pairs' and prompts' losses differ even under a random model, which scores every
    answer about the same, so weighting them differently shows."""
    rows = []
    for p in range(n_prompts):
        k = 2 + (p * 3) % 4
        answers = [" ".join(WORDS[(p + w) % len(WORDS)] for w in range(2 * (k - i))) for i in range(k)]
        pairs = [[i, j] for i in range(k) for j in range(i + 1, k)]
        margins = [float((p + i + 2 * j) % 5 - 2) for i, j in pairs]
        rows.append({"prompt": f"Prompt {p}: say something.", "responses": answers, "pairs": pairs, "margins": margins})
    return rows


@pytest.mark.parametrize("pair_weighting", ["pair", "prompt"])
def test_gradient_accumulation_with_unequal_batches_matches_the_full_batch(
    tmp_path, tokenizer, tiny_model, pair_weighting
):
    # 7 prompts: the accumulated run's micro-batches hold 2, 2 | 2, 1 prompts and unequal numbers of pairs; its two
    # steps must be the full run's two batches of 4 and 3 prompts, with the centring term weighted the same way.
    data = load_rankings(datasets.Dataset.from_list(uneven_rankings(7)))
    common = {"max_steps": 2, "optim": "sgd", "learning_rate": 0.5, "train_sampling_strategy": "sequential"}
    common |= {"pair_weighting": pair_weighting, "center_rewards_coefficient": 0.1, "utility": "logsigmoid"}
    runs = []
    for batch, accumulation in ((4, 1), (2, 2)):
        args = config(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, **common)
        trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
        outcome = trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs.append((final_weights(trainer), losses, outcome.training_loss))
    (a, losses_full, train_loss_full), (b, losses_accumulated, train_loss_accumulated) = runs
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-6
    assert losses_accumulated == pytest.approx(losses_full, abs=1e-6) and len(losses_full) == 2
    assert train_loss_accumulated == pytest.approx(train_loss_full, abs=1e-6)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, tokenizer, tiny_model):
    data = load_rankings(datasets.Dataset.from_list(ranking_rows(8)))

    def run(output, max_steps, resume=None):
        args = config(tmp_path, output_dir=str(output), max_steps=max_steps, save_strategy="steps", save_steps=2)
        trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(tmp_path / "straight", 4)
    # "Interrupted" after step 2: a run whose schedule is the same 4 steps, stopped once checkpoint-2 is written.
    interrupted = tmp_path / "interrupted"
    args = config(tmp_path, output_dir=str(interrupted), max_steps=4, save_strategy="steps", save_steps=2)
    first = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)

    class StopAtTwo(__import__("transformers").TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    first.add_callback(StopAtTwo())
    first.train()
    assert first.state.global_step == 2
    resumed = run(interrupted, 4, resume=str(interrupted / "checkpoint-2"))
    a, b = final_weights(straight), final_weights(resumed)
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-6


@pytest.mark.slow
def test_two_process_gloo_data_parallel_matches_one_process(tmp_path, tiny_dir, one_and_two_processes):
    rows = ranking_rows(8)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one_and_two_processes(tiny_dir, tmp_path / "data.jsonl", tmp_path)
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert abs(one["loss"] - two["loss"]) < 1e-5
    # One SGD step with learning rate 1 moves each weight by minus its gradient.
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5


@pytest.mark.slow
def test_two_processes_with_unequal_pairs_and_accumulation_match_one_process(
    tmp_path, tokenizer, tiny_model, one_and_two_processes
):
    # Per step, process 0 takes prompts with 1 + 6 ranked pairs and process 1 prompts with 10 + 3, one prompt per
    # micro-batch (2 accumulation steps); one process takes the 4 prompts at once. "pair" weighs each of the 20 pairs
    # the same, "prompt" each prompt, and the centring term follows; either way the steps must be one process's.
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_jsonl(tmp_path / "data.jsonl", uneven_rankings(8))
    common = {"max_steps": 2, "learning_rate": 0.5, "utility": "logsigmoid", "center_rewards_coefficient": 0.1}
    # "prompt" logs no step: its train_loss is all from the steps after the last log, which the Trainer does not gather.
    cases = {"pair": {**common, "pair_weighting": "pair"}, "prompt": {**common, "logging_steps": 5}}
    one_and_two_processes(model_dir, tmp_path / "data.jsonl", tmp_path, cases, accumulation=2)
    for name in cases:
        one = json.loads((tmp_path / "one" / name / "result.json").read_text())
        two = json.loads((tmp_path / "two" / name / "result.json").read_text())
        assert two["world_size"] == 2 and one["world_size"] == 1
        assert two["losses"] == pytest.approx(one["losses"], abs=1e-6) and len(one["losses"]) == (name == "pair") * 2
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-6)
        a = load_file(tmp_path / "one" / name / "model.safetensors")
        b = load_file(tmp_path / "two" / name / "model.safetensors")
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-6, name


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="`utility` must be a utility spec, 'prompt-aware' or 'openness'"):
        config(tmp_path, utility="cubic")
    with pytest.raises(ValueError, match="`open_utility` must be a utility spec"):
        config(tmp_path, open_utility="prompt-aware")
    with pytest.raises(ValueError, match="`normalize` must be 'sigmoid' or 'none'"):
        config(tmp_path, normalize="tanh")
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        config(tmp_path, eps=0.0)
    with pytest.raises(ValueError, match="`max_length` must be at least 2"):
        config(tmp_path, max_length=1)
    with pytest.raises(ValueError, match="`forward_batch_size` must be a positive integer"):
        config(tmp_path, forward_batch_size=0)
    with pytest.raises(ValueError, match="`remove_unused_columns` must be False"):
        config(tmp_path, remove_unused_columns=True)
    assert config(tmp_path, normalize="none").normalize == "none"
    with pytest.raises(ValueError, match="`normalize` must be 'sigmoid' or 'none', got None; write 'none' for off"):
        config(tmp_path, normalize=None)


def test_config_gains_the_torch_free_options_by_inheritance_and_keeps_its_signature(tmp_path):
    import dataclasses
    import inspect

    from transformers import TrainingArguments

    from rewardcollapse.settings import ModelInput, ModelLoading, RankingRewardOptions

    theirs = {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.init}
    ours = {f.name: f.default for f in dataclasses.fields(RankingRewardConfig) if f.init}
    project = [f.name for cls in (RankingRewardOptions, ModelInput, ModelLoading) for f in dataclasses.fields(cls)]
    parameters = list(inspect.signature(RankingRewardConfig).parameters)
    assert parameters[0] == "output_dir" and set(theirs) | set(project) == set(parameters) == set(ours)
    # The fields redefined with this project's help keep TrainingArguments' defaults, but for TRL's two.
    redefined = sorted(set(project) & set(theirs))
    assert {"output_dir", "max_steps", "per_device_train_batch_size", "learning_rate", "seed"} <= set(redefined)
    changed = {name: ours[name] for name in redefined if ours[name] != theirs[name]}
    assert changed == {"learning_rate": 1e-4, "logging_steps": 10}
    assert ours["remove_unused_columns"] is False and theirs["remove_unused_columns"] is True
    made = RankingRewardConfig(str(tmp_path), report_to="none")  # output_dir stays the one positional argument
    assert (made.output_dir, made.max_length, made.utility, made.normalize) == (str(tmp_path), 512, "log", "sigmoid")
    assert made.precision in ("fp32", "bf16") and made.precision_reason


def test_config_pins_no_memory_on_a_cpu_in_any_precision(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for precision in ("fp32", "auto"):
        made = RankingRewardConfig(str(tmp_path), report_to="none", precision=precision)
        assert made.dataloader_pin_memory is False, precision


def test_trainer_input_errors(tmp_path, tokenizer, tiny_model):
    from transformers import TrainingArguments

    data = load_rankings(datasets.Dataset.from_list(ranking_rows(2, openness=False)))
    with pytest.raises(TypeError, match="`args` must be a RankingRewardConfig"):
        RankingRewardTrainer(model=tiny_model(), args=TrainingArguments(str(tmp_path)), processing_class=tokenizer)
    with pytest.raises(ValueError, match="`processing_class`"):
        RankingRewardTrainer(model=tiny_model(), args=config(tmp_path), train_dataset=data)
    with pytest.raises(ValueError, match=r"`train_dataset` lacks the ranking columns \['responses'\]"):
        RankingRewardTrainer(
            model=tiny_model(),
            args=config(tmp_path),
            train_dataset=datasets.Dataset.from_list([{"prompt": "p"}]),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="`train_dataset` row 0: prompt-aware training needs `utility` or `openness`"):
        RankingRewardTrainer(
            model=tiny_model(),
            args=config(tmp_path, utility="prompt-aware"),
            train_dataset=data,
            processing_class=tokenizer,
        )


def test_train_and_score_commands(tmp_path, tiny_dir, capsys):
    rows = ranking_rows(6)
    rows[0]["responses"] = ["word " * 80, "short answer", "tiny", "x"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "model"
    args = ["train", "--model", str(tiny_dir), "--data", str(tmp_path / "train.jsonl"), "--output", str(out)]
    args += ["--steps", "2", "--batch-size", "3", "--max-length", "48", "--utility", "prompt-aware"]
    args += ["--eval-data", str(tmp_path / "train.jsonl"), "--learning-rate", "1e-3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "model saved to" in printed and "ranking_pairwise_accuracy" in printed
    # The names are aligned to the longest, ranking_pairwise_accuracy (25 characters).
    assert f"{'truncated':<25}  1 of 24 sequences (max_length 48)" in printed  # the one long answer
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["utility"] == "prompt-aware"
    assert AutoModelForSequenceClassification.from_pretrained(out, num_labels=1).num_labels == 1

    rewards = tmp_path / "rewards.jsonl"
    args = ["score", "--model", str(out), "--data", str(tmp_path / "train.jsonl"), "--output", str(rewards)]
    assert main([*args, "--max-length", "64"]) == 0
    printed = capsys.readouterr().out
    assert "pairwise accuracy" in printed and f"wrote {rewards}" in printed
    lines = [json.loads(line) for line in rewards.read_text().splitlines()]
    assert len(lines) == 6 and all(len(r["rewards"]) == len(r["responses"]) == 4 for r in lines)
    assert all(0 < v < 1 for r in lines for v in r["normalized_rewards"])
    assert lines[1]["prompt"] == rows[1]["prompt"] and lines[1]["openness"] == 1.0


def test_train_command_errors(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "p", "responses": ["one"]}) + "\n")
    code = main(["train", "--data", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "m")])
    assert code == 2
    assert "row 0: `responses` has 1 entry" in capsys.readouterr().err
    assert main(["train", "--data", "x.jsonl", "--output", "m", "--utility", "cubic"]) == 2
    assert "`utility` must be a utility spec" in capsys.readouterr().err


def test_train_and_score_help_exits_zero():
    for command in ("train", "score"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


def test_frozen_word_embeddings_stay_fixed_and_the_rest_trains(tmp_path, tokenizer, tiny_model):
    model = tiny_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    args = config(tmp_path, max_steps=3, utility="-1/x", freeze_word_embeddings=True)
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p.detach().cpu(), before[name])]
    assert unchanged == ["bert.embeddings.word_embeddings.weight"]
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(model.get_input_embeddings().weight) not in optimised


def test_loading_says_once_that_the_head_is_new_and_hides_the_load_report(caplog, capsys):
    import logging

    from rewardcollapse.training import load_reward_model
    from rewardcollapse.training.models import _announce_new_head

    _announce_new_head.cache_clear()
    with caplog.at_level(logging.INFO, logger="rewardcollapse"):
        load_reward_model(BACKBONE)
        load_reward_model(BACKBONE)
    said = [r.getMessage() for r in caplog.records if "new score head" in r.getMessage()]
    assert said == [
        "all-MiniLM-L6-v2 (shipped): new score head (classifier.bias, classifier.weight), initialised at random and "
        "trained by the ranking loss"
    ]
    captured = capsys.readouterr()
    assert "LOAD REPORT" not in captured.err + captured.out and "Loading weights" not in captured.err


def test_progress_bar_is_named_by_the_run_and_prints_no_log_lines(tmp_path, tokenizer, tiny_model, capsys):
    from transformers import ProgressCallback

    from rewardcollapse.training.trainer import RankingProgressCallback

    data = load_rankings(datasets.Dataset.from_list(ranking_rows(4)))
    args = config(tmp_path, max_steps=2, utility="log", disable_tqdm=False, run_name="[1/3] log training")
    trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    kinds = [type(callback) for callback in trainer.callback_handler.callbacks]
    assert RankingProgressCallback in kinds and ProgressCallback not in kinds
    trainer.train()
    err = capsys.readouterr().err
    assert "[1/3] log training" in err and "{'loss'" not in err and "train_runtime" not in err


def test_datasets_are_tokenised_once_and_the_collator_only_pads(tmp_path, tokenizer, tiny_model, monkeypatch):
    import rewardcollapse.training.collator as collator_module
    from rewardcollapse.training.collator import tokenize_rankings

    rows = ranking_rows(6)
    rows[0]["responses"] = ["word " * 80, "short answer", "tiny", "x"]
    data = load_rankings(datasets.Dataset.from_list(rows))
    tokenized = tokenize_rankings(data, tokenizer, max_length=48, utility="prompt-aware", name="train")
    assert {"input_ids", "attention_mask", "token_type_ids", "num_truncated", "loss_utility"} <= set(
        tokenized.column_names
    )
    assert tokenized[0]["num_truncated"] == 1 and tokenized[1]["loss_utility"] == "-1/x"
    collate = RankingCollator(tokenizer, max_length=48, utility="prompt-aware")
    from_raw, from_tokens = collate(data.to_list()), collate(tokenized.to_list())
    for key in ("input_ids", "attention_mask", "token_type_ids", "answer_slot", "answer_mask", "pairs"):
        assert torch.equal(from_raw[key], from_tokens[key]), key
    assert from_raw["utilities"] == from_tokens["utilities"] and int(from_tokens["num_truncated"]) == 1

    trainer = RankingRewardTrainer(
        model=tiny_model(),
        args=config(tmp_path, max_steps=3, utility="prompt-aware"),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    assert "input_ids" in trainer.train_dataset.column_names and "input_ids" in trainer.eval_dataset.column_names

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised during training")

    monkeypatch.setattr(collator_module, "encode_rows", no_tokenising)
    trainer.train()
    assert trainer.evaluate()["eval_ranking_pairwise_accuracy"] >= 0
    truncated, total = trainer.truncation_counts()  # from the map's column: batches of 4, 2 (end of pass), 4 prompts
    assert total == (4 + 2 + 4) * 4 and truncated <= 2


def rows(n=6, k=3):
    return [
        {"prompt": f"prompt {p}", "responses": [f"answer {p}-{a} " + "word " * a for a in range(k)], "openness": p % 2}
        for p in range(n)
    ]


def train_args(tiny_dir, data, output, *extra):
    args = ["train", "--model", str(tiny_dir), "--data", str(data), "--output", str(output), "--batch-size", "2"]
    return [*args, "--utility", "log", "--report_to", "none", "--max-length", "32", *extra]


def test_a_bfloat16_checkpoint_trains_in_float32(tmp_path, tokenizer, tiny_model):
    # Adam's first step moves a weight by about the learning rate: 1e-4 is lost to bfloat16's rounding near 1.0
    # (spacing 2^-8 below it), where the layer norms start.
    stored = tmp_path / "bf16"
    tiny_model().to(torch.bfloat16).save_pretrained(stored)
    tokenizer.save_pretrained(stored)
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    trainer = RankingRewardTrainer(model=str(stored), args=config(tmp_path), train_dataset=load_rankings(data))
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    settings = {"max_steps": 1, "learning_rate": 1e-4, "precision": "fp32", "max_length": 32, "report_to": "none"}
    train_reward_model(model=str(stored), data=data, output_dir=tmp_path / "model", save_strategy="no", **settings)
    norm = load_file(tmp_path / "model" / "model.safetensors")["bert.encoder.layer.0.output.LayerNorm.weight"]
    assert norm.dtype == torch.float32
    assert 0 < (norm - 1).abs().max() < 1e-3


def test_pairs_reach_the_loss(tmp_path, tokenizer):
    from rewardcollapse.training.collator import RankingCollator

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "responses": list("abc"), "pairs": [[2, 0], [2, 1]]}])
    batch = RankingCollator(tokenizer, max_length=16)(load_rankings(path).to_list())
    assert batch["pairs"][0].tolist() == [[False] * 3, [False] * 3, [True, True, False]]


def test_config_refuses_text_where_a_number_belongs(tmp_path):
    from rewardcollapse.training import RankingRewardConfig

    with pytest.raises(TypeError, match="`learning_rate` must be a number, got the text '1e-4' \\(YAML reads"):
        RankingRewardConfig(output_dir=str(tmp_path), learning_rate="1e-4")
    with pytest.raises(TypeError, match="`max_steps` must be a number, got the text 'abc'"):
        RankingRewardConfig(output_dir=str(tmp_path), max_steps="abc")


def test_checkpoint_completeness(tmp_path):
    from rewardcollapse.training.checkpoints import checkpoint_problem, last_complete_checkpoint, resume_checkpoint

    def checkpoint(step, files):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        return folder

    whole = {"trainer_state.json": "{}", "model.safetensors": "w", "optimizer.pt": "o", "scheduler.pt": "s"}
    checkpoint(2, whole)
    checkpoint(4, {**whole, "trainer_state.json": '{"global_st'})
    checkpoint(6, {k: v for k, v in whole.items() if k != "optimizer.pt"})
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    checkpoint(8, {"trainer_state.json": "{}", "model.safetensors.index.json": index, "model-1.safetensors": "w"})
    assert (
        checkpoint_problem(tmp_path / "checkpoint-4")
        == "trainer_state.json is cut short (the checkpoint was interrupted)"
    )
    assert checkpoint_problem(tmp_path / "checkpoint-6") == "no optimizer.pt"
    assert checkpoint_problem(tmp_path / "checkpoint-6", needs_optimizer=False) is None
    assert checkpoint_problem(tmp_path / "checkpoint-8") == "weight shards missing: model-2.safetensors"
    with pytest.warns(UserWarning) as caught:
        assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert [str(w.message).split(":")[0].rsplit("-", 1)[1] for w in caught] == ["8", "6", "4"]
    with pytest.raises(ValueError, match=r"is not a complete checkpoint \(no optimizer.pt\)"):
        resume_checkpoint(str(tmp_path / "checkpoint-6"), tmp_path)
    with pytest.raises(ValueError, match=r"no complete checkpoint-\* folder"):
        resume_checkpoint(True, tmp_path / "nothing")


@pytest.mark.slow
def test_training_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(8))
    output = tmp_path / "model"
    args = train_args(tiny_dir, data, output, "--steps", "6", "--save_steps", "2")
    script = f"""
        import time
        from transformers import Trainer
        original = Trainer._save_rng_state
        def stop_at_step_4(self, output_dir):
            if output_dir.endswith("checkpoint-4"):  # weights and optimizer written, trainer_state.json not yet
                print("ready", flush=True)
                time.sleep(60)
            return original(self, output_dir)
        Trainer._save_rng_state = stop_at_step_4
        from rewardcollapse.cli import main
        main({args!r})
    """
    kill(run_until_ready(script, tmp_path))
    assert (output / "checkpoint-4" / "model.safetensors").exists()
    assert not (output / "checkpoint-4" / "trainer_state.json").exists()
    assert not (output / "training_summary.json").exists()
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint .*checkpoint-4: no trainer_state.json"):
        assert main([*args, "--resume"]) == 0
    state = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and json.loads((output / "training_summary.json").read_text())["steps"] == 6
    assert "model saved to" in capsys.readouterr().out


def test_an_interrupted_final_save_leaves_no_summary(tmp_path, tiny_dir, monkeypatch):
    from transformers import Trainer

    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    output = tmp_path / "model"

    def broken_save(self, output_dir=None, _internal_call=False):
        Path(output_dir, "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_model", broken_save)
    assert main(train_args(tiny_dir, data, output, "--steps", "1", "--save_strategy", "no")) == 130
    assert not output.exists()  # nothing half-written: the model folder the interrupted run made is removed whole


def test_resume_past_the_last_step_and_training_into_the_backbone_are_refused(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    output = tmp_path / "m"
    assert main(train_args(tiny_dir, data, output, "--steps", "2", "--save_steps", "2")) == 0
    capsys.readouterr()
    assert main([*train_args(tiny_dir, data, output, "--steps", "1"), "--resume"]) == 2
    assert "is at step 2, at or past `max_steps` 1: nothing left to train" in capsys.readouterr().err
    assert main(train_args(tiny_dir, data, tiny_dir, "--steps", "1")) == 2
    assert "is the model folder itself" in capsys.readouterr().err


def test_a_fresh_run_into_a_folder_holding_another_runs_checkpoints_is_refused(tmp_path, capsys):
    output = tmp_path / "m"
    for step in (2, 10):
        (output / f"checkpoint-{step}").mkdir(parents=True)
    message = (
        f"`output_dir` {str(output)!r} already holds the checkpoints of an earlier run (checkpoint-2, checkpoint-10); "
        "add --resume to continue that run, give another --output, or remove them"
    )
    with pytest.raises(InputValueError) as refused:  # before the data (missing here) or a model is read
        train_reward_model(model=None, data=str(tmp_path / "missing.jsonl"), output_dir=str(output), max_steps=1)
    assert str(refused.value) == message
    assert main(["train", "--data", str(tmp_path / "missing.jsonl"), "--output", str(output), "--steps", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint-10", "checkpoint-2"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_steps", 2.0, "`max_steps` must be a whole number, got 2.0; write 2"),
        ("max_steps", True, "`max_steps` must be a whole number, got True; give one"),
        ("per_device_train_batch_size", 1.5, "`per_device_train_batch_size` must be a whole number, got 1.5"),
        ("max_length", False, "`max_length` must be a whole number, got False"),
        ("learning_rate", True, "`learning_rate` must be a number, got True; give one"),
    ],
)
def test_a_float_or_a_flag_for_a_whole_number_field_is_refused_by_name(tmp_path, field, value, message):
    with pytest.raises(TypeError) as refused:
        RankingRewardConfig(output_dir=str(tmp_path / "m"), **{field: value})
    assert str(refused.value).startswith(message)
    assert not (tmp_path / "m").exists()
    assert RankingRewardConfig(output_dir=str(tmp_path / "m"), max_steps=2, num_train_epochs=2).max_steps == 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"dataloader_num_workers": -1}, "`dataloader_num_workers` must be 0 (load in the training process) or more"),
        ({"neftune_noise_alpha": -1.0}, "`neftune_noise_alpha` must be > 0, got -1.0; leave it out for no noise"),
        ({"neftune_noise_alpha": 0.0}, "`neftune_noise_alpha` must be > 0, got 0.0"),
    ],
)
def test_trainer_settings_that_fail_in_the_loop_are_refused_first(tmp_path, setting, message):
    with pytest.raises(InputValueError) as refused:
        RankingRewardConfig(output_dir=str(tmp_path / "m"), **setting)
    assert str(refused.value).startswith(message)
    assert not (tmp_path / "m").exists()


def test_liger_kernel_without_its_package_is_refused(tmp_path, monkeypatch):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: False)
    with pytest.raises(InputValueError, match="`use_liger_kernel` needs the liger-kernel package"):
        RankingRewardConfig(output_dir=str(tmp_path / "m"), use_liger_kernel=True)


def test_deepspeed_fsdp_and_the_hub_are_refused_where_they_cannot_run(tmp_path, monkeypatch):
    import transformers.integrations

    def refused(message, **setting):
        with pytest.raises(InputValueError, match=message):
            RankingRewardConfig(output_dir=str(tmp_path / "m"), report_to="none", **setting)

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    refused(r"`fsdp` 'full_shard' shards the model over several processes, but this is one process", fsdp="full_shard")
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_available", lambda: False)
    refused("`deepspeed` needs the deepspeed package", deepspeed="ds.json")
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_available", lambda: True)
    refused(r"`deepspeed` 'ds.json' is not a file", deepspeed="ds.json")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    refused("`push_to_hub` needs the Hub, but HF_HUB_OFFLINE is set", push_to_hub=True)
    assert not (tmp_path / "m").exists()


def test_score_refuses_to_write_over_its_data(tmp_path, capsys):
    data = write_jsonl(tmp_path / "r.jsonl", rows(2))
    before = data.read_text()
    with pytest.raises(InputValueError, match=r"`output` '.*r.jsonl' is the data file itself: scoring would replace"):
        score_file(model="no-model-needed", data=str(data), output=tmp_path / "." / "r.jsonl")
    assert main(["score", "--model", "m", "--data", str(data), "--output", str(data)]) == 2
    assert "is the data file itself" in capsys.readouterr().err
    assert data.read_text() == before


def test_train_refuses_an_unusable_output_before_training(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(train_args(tiny_dir, data, a_file, "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert "`output_dir`" in err and "is an existing file, not a folder" in err and "it/s" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root: folder permissions are not enforced")
def test_train_refuses_an_unwritable_folder_before_training(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(train_args(tiny_dir, data, locked / "model", "--steps", "1")) == 2
    assert "cannot be written" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "`max_steps` (--steps) must be at least 1, or -1"),
        (["--steps", "-5"], "`max_steps` (--steps) must be at least 1, or -1"),
        (["--epochs", "0"], "`num_train_epochs` (--epochs) must be > 0"),
        (["--steps", "2", "--gradient-accumulation", "0"], "`gradient_accumulation_steps` must be a positive integer"),
        (["--steps", "2", "--batch-size", "0"], "`per_device_train_batch_size` must be a positive integer"),
    ],
)
def test_train_refuses_schedules_that_train_nothing(tmp_path, tiny_dir, capsys, extra, message):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    assert main([*train_args(tiny_dir, data, tmp_path / "m"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_model_paths_are_checked_before_any_work(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, message in [("/nonexistent/model", "does not exist"), (str(empty), "is a folder without config.json")]:
        assert main(["score", "--model", model, "--data", str(data), "--output", str(tmp_path / "o.jsonl")]) == 2
        assert f"`model` {model!r} {message}" in capsys.readouterr().err
        assert (
            main(["train", "--model", model, "--data", str(data), "--output", str(tmp_path / "m"), "--steps", "1"]) == 2
        )
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_nothing_left_after_skipping_is_an_error_not_an_empty_output(tmp_path, tiny_dir, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["only one"]}] * 3)
    output = tmp_path / "scores.jsonl"
    output.write_text("kept\n")
    with pytest.warns(UserWarning, match="dropped 3 of 3"):
        code = main(["score", "--model", str(tiny_dir), "--data", str(bad), "--output", str(output), "--skip-invalid"])
    assert code == 2 and "has no usable prompt left" in capsys.readouterr().err
    assert output.read_text() == "kept\n"
    with pytest.warns(UserWarning, match="dropped 3 of 3"):
        assert main([*train_args(tiny_dir, bad, tmp_path / "m", "--steps", "1"), "--skip_invalid"]) == 2
    assert "has no usable prompt left" in capsys.readouterr().err


def test_score_option_errors_leave_the_output_alone(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    output = tmp_path / "rewards.jsonl"
    output.write_text("kept\n")
    base = ["score", "--model", str(tiny_dir), "--data", str(data), "--output", str(output)]
    for option, value, message in [
        ("--batch-size", "0", "`batch_size` must be a positive integer, got 0"),
        ("--max-length", "0", "`max_length` must be at least 2 tokens, got 0"),
        ("--forward-batch-size", "-1", "`forward_batch_size` must be a positive integer or None, got -1"),
    ]:
        assert main([*base, option, value]) == 2
        assert message in capsys.readouterr().err
        assert output.read_text() == "kept\n"
    assert main([*base[:-1], str(tmp_path)]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err


@pytest.mark.slow
def test_score_killed_while_writing_leaves_the_old_output(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", rows(8))
    output = tmp_path / "rewards.jsonl"
    output.write_text("the previous scores\n")
    script = f"""
        import time
        from scipy import special
        import rewardcollapse.training.run as run
        calls = []
        def slow_expit(x):
            calls.append(1)
            if len(calls) == 3:  # two rows written, the third being written
                print("ready", flush=True)
                time.sleep(60)
            return special.expit(x)
        run.special = type("S", (), {{"expit": staticmethod(slow_expit)}})
        from rewardcollapse.cli import main
        main(["score", "--model", {str(tiny_dir)!r}, "--data", {str(data)!r}, "--output", {str(output)!r},
              "--max-length", "64"])
    """
    scorer = run_until_ready(script, tmp_path)
    kill(scorer)
    assert output.read_text() == "the previous scores\n"
    lock, partial = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))  # what the kill left
    assert lock == ".rewards.jsonl.lock" and partial.startswith(f".rewards.jsonl.partial-{scorer.pid}-")
    assert (
        main(["score", "--model", str(tiny_dir), "--data", str(data), "--output", str(output), "--max-length", "64"])
        == 0
    )
    assert len(output.read_text().splitlines()) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "rewards.jsonl"]  # the next run cleaned up


@pytest.mark.slow
def test_ctrl_c_during_score_is_one_line_and_status_130(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", rows(8))
    output = tmp_path / "rewards.jsonl"
    output.write_text("the previous scores\n")
    script = f"""
        import signal
        import time
        from scipy import special
        import rewardcollapse.training.run as run
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, also if pytest inherited SIG_IGN
        def slow_expit(x):
            print("ready", flush=True)
            time.sleep(60)
        run.special = type("S", (), {{"expit": staticmethod(slow_expit)}})
        from rewardcollapse.cli import main
        raise SystemExit(main(["score", "--model", {str(tiny_dir)!r}, "--data", {str(data)!r},
                               "--output", {str(output)!r}, "--max-length", "64"]))
    """
    process = run_until_ready(script, tmp_path)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)  # reads both pipes while waiting: a full pipe cannot stall the exit
    assert process.returncode == 130
    assert "interrupted: the outputs at their final paths" in err and "Traceback" not in err
    assert output.read_text() == "the previous scores\n"


def test_a_failing_train_or_score_leaves_no_folder_it_made(tmp_path, tiny_dir, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["only one"]}] * 2)
    with pytest.warns(UserWarning, match="dropped 2 of 2"):
        code = main([*train_args(tiny_dir, bad, tmp_path / "new" / "deep" / "dir", "--steps", "1"), "--skip_invalid"])
    assert code == 2 and "has no usable prompt left" in capsys.readouterr().err
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    with pytest.raises(ValueError, match="does not exist"):  # the model fails after the output was checked
        score_file(model=tmp_path / "gone", data=data, output=tmp_path / "a" / "b" / "c" / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "d.jsonl"]


def test_a_second_train_into_a_held_folder_is_refused_before_work(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    output = tmp_path / "model"
    with locked_output_folder(output, "--output"):  # as a first `train` into the folder, still running
        with pytest.raises(OutputLockedError, match=rf"`output_dir` '.*model' is being written by .*pid {os.getpid()}"):
            train_reward_model(model=str(tiny_dir), data=data, output_dir=output, max_steps=1, report_to="none")
        assert list(output.iterdir()) == [output / LOCK_FILE]
    assert list(output.iterdir()) == []


def test_score_counts_cut_answers_and_flags_prompts_cut_to_the_same_tokens(tmp_path, tiny_dir, capsys):
    from rewardcollapse.diagnostics import ranking_metrics
    from rewardcollapse.training.run import score_file

    # Prompt 0's two answers differ only after 40 words: at 16 tokens both are "[CLS] p [SEP] word word ... [SEP]".
    cut_alike = {"prompt": "p", "responses": ["word " * 40 + "first", "word " * 40 + "second"], "openness": 0}
    data = write_jsonl(tmp_path / "d.jsonl", [cut_alike, *rows(2, k=3)])
    output = tmp_path / "rewards.jsonl"
    with pytest.warns(UserWarning, match=r"2 answers were cut at max_length 16; the answers of 1 of 3 prompts") as got:
        result = score_file(model=tiny_dir, data=data, output=output, max_length=16, progress=False)
    assert "left out of the ranking metrics; raise --max_length" in str(got[0].message)
    assert (result.max_length, result.truncated_answers, result.indistinguishable_prompts) == (16, 2, 1)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["truncated"], r["indistinguishable"]) for r in lines] == [(2, True), (0, False), (0, False)]
    assert lines[0]["rewards"][0] == lines[0]["rewards"][1]  # the same tokens, the same reward
    # The ranking metrics are those of the two prompts the model could tell apart, not averaged with 0.5.
    rewards = np.array([r["normalized_rewards"] for r in lines[1:]])
    want = ranking_metrics(rewards, np.triu(np.ones((2, 3, 3), dtype=bool), k=1))
    assert result.pairwise_accuracy == pytest.approx(want["pairwise_accuracy"])
    assert result.reward_spread == pytest.approx(want["reward_spread"])

    args = ["score", "--model", str(tiny_dir), "--data", str(data), "--output", str(output), "--max-length", "16"]
    with pytest.warns(UserWarning, match="2 answers were cut at max_length 16"):
        assert main(args) == 0
    printed = capsys.readouterr().out
    assert "truncated answers          2" in printed and "indistinguishable prompts  1" in printed
    # Every prompt cut to the same tokens: refused before the model runs, the previous output kept.
    only = write_jsonl(tmp_path / "only.jsonl", [cut_alike])
    assert main([*args[:4], str(only), *args[5:]]) == 2
    assert "`max_length` 16 cuts the answers of every prompt (1) to the same tokens" in capsys.readouterr().err
    assert len(output.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"sequence_format": "bogus"}', r"`sequence_format` must be one of 'pair', 'trl', got 'bogus'"),
        ('["pair"]', r"must hold a JSON object of settings, got list"),
        ("[" * 100_000 + "]" * 100_000, r"is larger than 65536 bytes"),
        ("[" * 30_000 + "]" * 30_000, r"is not valid JSON"),
    ],
    ids=["unknown-format", "not-an-object", "oversized", "deep"],
)
def test_saved_model_settings_are_refused_when_wrong(tmp_path, content, message):
    (tmp_path / "rewardcollapse.json").write_text(content)
    model = SimpleNamespace(config=SimpleNamespace(_name_or_path=str(tmp_path), model_type="bert"))
    with pytest.raises(InputValueError, match=re.escape(str(tmp_path / "rewardcollapse.json")) + ".*" + message):
        resolve_sequence_format("auto", model)
    (tmp_path / "rewardcollapse.json").write_text('{"sequence_format": "trl", "max_length": 64}')
    assert resolve_sequence_format("auto", model) == "trl" and resolve_sequence_format("pair", model) == "pair"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eval_strategy", "steps"], "`eval_strategy` 'steps' evaluates during training, but no evaluation data"),
        (["--eval_steps", "2"], "`eval_steps` needs evaluations during training, but `eval_strategy` is 'no'"),
        (["--save_strategy", "best"], "`save_strategy` 'best' saves when an evaluation improves"),
        (["--report_to", "wandb"], "`report_to` 'wandb': its package is not installed here"),
        (["--report_to", "bogus"], "`report_to`: bogus is not supported"),
        (["--seed", "-1"], "`seed` must be an integer from 0 to 4294967295 (numpy's seeds), got -1"),
        (["--seed", str(2**32)], "`seed` must be an integer from 0 to 4294967295 (numpy's seeds), got 4294967296"),
        (["--data_seed", "-1"], "`data_seed` must be an integer from 0 to 4294967295"),
    ],
    ids=[
        "eval-without-data",
        "eval-steps-alone",
        "save-best",
        "wandb",
        "unknown-logger",
        "seed",
        "big-seed",
        "data-seed",
    ],
)
def test_what_the_trainer_would_refuse_is_refused_before_any_folder(tmp_path, tiny_dir, capsys, extra, message):
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    output = tmp_path / "out"
    assert main(train_args(tiny_dir, data, output, "--steps", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_evaluation_settings_train_with_evaluation_data(tmp_path, tiny_dir):
    from rewardcollapse.training import RankingRewardConfig

    data = write_jsonl(tmp_path / "d.jsonl", rows())
    args = RankingRewardConfig(output_dir=str(tmp_path / "out"), eval_strategy="steps", eval_steps=1, max_steps=1)
    args.check_evaluation_data(True)
    with pytest.raises(InputValueError, match="pass --eval_data FILE, or --eval_strategy no"):
        args.check_evaluation_data(False)
    assert (
        main(
            train_args(
                tiny_dir, data, tmp_path / "out", "--steps", "1", "--eval_strategy", "steps", "--eval_data", str(data)
            )
        )
        == 0
    )


HUB_DATA = "trl-lib/ultrafeedback_binarized"


def test_a_saved_model_folder_holds_its_model_card(tmp_path, tokenizer, tiny_model):
    from huggingface_hub import ModelCard

    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    args = config(tmp_path, max_steps=1, utility="-1/x", pair_weighting="pair")
    trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.save_model(str(tmp_path / "saved"))
    card = ModelCard.load(tmp_path / "saved" / "README.md")
    assert card.data.tags[:2] == ["rewardcollapse", "reward-model"]
    assert card.data.model_name == "out" and card.data.library_name == "transformers"
    text = card.text
    assert "**Utility:** `-1/x` for every prompt" in text and "each ranked pair weighs the same" in text
    assert "s = sigmoid(r)" in text and "8 rankings" in text and "sequence format `pair`" in text
    assert "Reward Collapse in Aligning Large Language Models" in text and "arXiv:2305.17608" in text
    assert "@article{" in text and "Song, Ziang and Cai, Tianle and Lee, Jason D. and Su, Weijie J." in text
    # TRL's arguments; the data set and tags stay for later saves
    trainer.create_model_card(model_name="my-rm", dataset_name=HUB_DATA, tags=["mine"])
    named = ModelCard.load(tmp_path / "out" / "README.md")
    assert named.data.model_name == "my-rm" and named.data.datasets == [HUB_DATA]
    assert named.data.tags == ["rewardcollapse", "reward-model", "mine"]
    trainer.save_model(str(tmp_path / "again"))
    again = ModelCard.load(tmp_path / "again" / "README.md")
    assert again.data.datasets == [HUB_DATA] and again.data.tags == named.data.tags


def test_push_to_hub_takes_trls_arguments_and_uploads_the_card_with_the_model(tmp_path, tokenizer, tiny_model):
    from unittest import mock

    from huggingface_hub import HfApi, ModelCard

    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    args = config(tmp_path, max_steps=1, hub_model_id="someone/tiny-rm")
    trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    uploaded = {}

    def upload_folder(self, *, folder_path, repo_id, ignore_patterns, **kwargs):  # what the Hub would receive
        uploaded.update(repo_id=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()))
        uploaded.update(ignored=ignore_patterns, card=ModelCard.load(Path(folder_path) / "README.md"))
        return "commit"

    repo = SimpleNamespace(repo_id="someone/tiny-rm")
    with (
        mock.patch.object(HfApi, "create_repo", return_value=repo) as create_repo,
        mock.patch.object(HfApi, "upload_folder", upload_folder),
    ):
        # as TRL's reward.py calls it
        assert trainer.push_to_hub(dataset_name=HUB_DATA, tags="mine") == "commit"
    assert create_repo.call_args.args == ("someone/tiny-rm",)
    assert uploaded["repo_id"] == "someone/tiny-rm"
    assert {"README.md", "config.json", "model.safetensors", "rewardcollapse.json"} <= set(uploaded["files"])
    assert {"tokenizer_config.json", "training_args.bin"} <= set(uploaded["files"])
    card = uploaded["card"]
    assert card.data.datasets == [HUB_DATA] and card.data.model_name == "tiny-rm"
    assert card.data.tags[:3] == ["rewardcollapse", "reward-model", "mine"]
    assert "arXiv:2305.17608" in card.text and 'from_pretrained("someone/tiny-rm", num_labels=1)' in card.text


def test_train_reward_model_saves_the_model_card(tmp_path, tiny_dir):
    from huggingface_hub import ModelCard

    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    output = tmp_path / "model"
    assert main(train_args(tiny_dir, data, output, "--steps", "1", "--save_strategy", "no")) == 0
    card = ModelCard.load(output / "README.md")
    assert card.data.model_name == "model" and card.data.tags[:2] == ["rewardcollapse", "reward-model"]
    assert f"**Base model:** `{tiny_dir}`" in card.text and card.data.base_model is None  # a local folder


SCORED_PAIRS = [  # question 1 and 2 come back later; answers recur across rows
    ("Question 1: explain topic 1.", " The answer is yes because", " The answer is no"),
    ("Question 2: explain topic 2.", " a long and careful one", " short"),
    ("Question 1: explain topic 1.", " The answer is yes because", " maybe"),
    ("Question 3: explain topic 3.", " The answer is maybe", " no"),
    ("Question 2: explain topic 2.", " short", " no"),
]


def _pair_row(prompt, chosen, rejected, kind):
    if kind.startswith("conversational"):
        prompt = [{"role": "user", "content": prompt}]
        chosen, rejected = ([{"role": "assistant", "content": text.strip()}] for text in (chosen, rejected))
    if kind.endswith("implicit"):
        return {"chosen": prompt + chosen, "rejected": prompt + rejected}
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory, decoder_tokenizer, tiny_decoder):
    """A tiny decoder reward model and its tokenizer saved to a folder."""
    path = tmp_path_factory.mktemp("decoder")
    tiny_decoder("llama").save_pretrained(path)
    decoder_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["explicit", "implicit", "conversational", "conversational-implicit"])
def test_score_writes_a_pairwise_file_back_row_by_row(tmp_path, decoder_dir, capsys, kind):
    from scipy import special

    model = decoder_dir
    rows = [{**_pair_row(*pair, kind), "id": i} for i, pair in enumerate(SCORED_PAIRS)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    output = tmp_path / "scores.jsonl"
    result = score_file(model=model, data=data, output=output, progress=False, precision="fp32", max_length=64)
    assert (result.pair_rows, result.prompts, result.answers) == (5, 3, 8)  # each distinct answer scored once
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [{key: line[key] for key in row} for line, row in zip(lines, rows, strict=True)] == rows  # in order
    # Each row alone, as a two-answer ranking, gives the same two rewards.
    alone = [
        _pair_row(*pair, "conversational" if kind.startswith("conversational") else "explicit") for pair in SCORED_PAIRS
    ]
    ranked = write_jsonl(
        tmp_path / "alone.jsonl", [{"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]} for r in alone]
    )
    settings = {"progress": False, "precision": "fp32", "max_length": 64}
    score_file(model=model, data=ranked, output=tmp_path / "alone-scores.jsonl", **settings)
    want = [json.loads(line)["rewards"] for line in (tmp_path / "alone-scores.jsonl").read_text().splitlines()]
    got = [[line["chosen_reward"], line["rejected_reward"]] for line in lines]
    np.testing.assert_allclose(got, want, atol=1e-5)
    normalized = [[line["normalized_chosen_reward"], line["normalized_rejected_reward"]] for line in lines]
    np.testing.assert_allclose(normalized, special.expit(got), atol=1e-12)
    if kind == "explicit":
        args = ["score", "--model", str(model), "--data", str(data), "--output", str(output), "--max-length", "64"]
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert "pair rows" in printed and f"wrote {output} (one line per input row, in its order)" in printed


def test_an_adapter_folders_model_card_says_peft(tmp_path, decoder_tokenizer, tiny_decoder):
    from huggingface_hub import ModelCard
    from peft import LoraConfig

    trainer = RankingRewardTrainer(
        model=tiny_decoder("llama"),
        args=config(tmp_path),
        train_dataset=load_rankings(datasets.Dataset.from_list(ranking_rows())),
        processing_class=decoder_tokenizer,
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]),
    )
    trainer.save_model(str(tmp_path / "adapters"))
    assert (tmp_path / "adapters" / "adapter_config.json").exists()
    card = ModelCard.load(tmp_path / "adapters" / "README.md")  # ours, in place of peft's
    assert card.data.library_name == "peft" and card.data.tags[:2] == ["rewardcollapse", "reward-model"]
    assert "AutoPeftModelForSequenceClassification.from_pretrained" in card.text


def test_config_has_every_field_of_trls_reward_config():
    import dataclasses

    import trl

    ours = {spec.name for spec in dataclasses.fields(RankingRewardConfig)}
    assert [spec.name for spec in dataclasses.fields(trl.RewardConfig) if spec.name not in ours] == []


def test_trl_loading_fields_reach_from_pretrained_and_the_tokenizer(tmp_path, tiny_dir, monkeypatch):
    from transformers import AutoModelForSequenceClassification as Auto

    calls = []
    load = Auto.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        calls.append(kwargs)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Auto, "from_pretrained", classmethod(recording))
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    data = load_rankings(datasets.Dataset.from_list([{"prompt": "p", "responses": ["a b", "c"]}]))
    settings = {"output_dir": str(tmp_path / "out"), "report_to": "none", "use_cpu": True, "precision": "fp32"}
    args = RankingRewardConfig(
        **settings,
        model_init_kwargs='{"dtype": "bfloat16", "revision": "main"}',  # JSON text, as the command line gives it
        eos_token="[SEP]",
        pad_token="[UNK]",
        chat_template_path=str(template),
    )
    trainer = RankingRewardTrainer(model=str(tiny_dir), args=args, train_dataset=data)
    assert calls[-1]["dtype"] == "bfloat16" and calls[-1]["revision"] == "main"
    assert "trust_remote_code" not in calls[-1]  # passed on only when set
    assert trainer.model.dtype == torch.bfloat16
    tokenizer = trainer.processing_class
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("[SEP]", "[UNK]")
    assert trainer.model.config.pad_token_id == tokenizer.convert_tokens_to_ids("[UNK]")
    assert trainer.model.config.eos_token_id == tokenizer.convert_tokens_to_ids("[SEP]")
    assert tokenizer.chat_template == template.read_text()
    trusting = RankingRewardConfig(**settings, trust_remote_code=True)
    RankingRewardTrainer(model=str(tiny_dir), args=trusting, train_dataset=data)
    assert calls[-1]["trust_remote_code"] is True and calls[-1]["dtype"] == "float32"
    with pytest.raises(InputValueError, match="`pad_token` '<nope>' is not in the tokenizer's vocabulary"):
        unknown = RankingRewardConfig(**settings, pad_token="<nope>")
        RankingRewardTrainer(model=str(tiny_dir), args=unknown, train_dataset=data)


def test_trl_fields_that_cannot_run_or_make_no_sense_are_one_line_errors(tmp_path):
    settings = {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True}
    with pytest.raises(InputValueError, match=r"`activation_offloading` .* CUDA .* this run is on cpu") as error:
        RankingRewardConfig(**settings, activation_offloading=True)
    assert "\n" not in str(error.value)
    with pytest.raises(InputValueError, match="`pad_to_multiple_of` must be a positive number"):
        RankingRewardConfig(**settings, pad_to_multiple_of="eight")
    with pytest.raises(InputValueError, match="`model_init_kwargs` sets num_labels"):
        RankingRewardConfig(**settings, model_init_kwargs={"num_labels": 2})
    assert RankingRewardConfig(**settings, pad_to_multiple_of="auto").pad_to_multiple_of is None  # not on Neuron
    assert RankingRewardConfig(**settings, pad_to_multiple_of="8").pad_to_multiple_of == 8


def test_max_length_none_cuts_nothing_and_pad_to_multiple_of_pads(tmp_path, tokenizer, tiny_model):
    rows = [{"prompt": "p " * 40, "responses": ["a b " * 30, "c"]}]
    batch = RankingCollator(tokenizer, max_length=None, pad_to_multiple_of=8)(rows)
    assert int(batch["num_truncated"]) == 0 and batch["input_ids"].shape[1] % 8 == 0
    assert batch["input_ids"].shape[1] >= len(tokenizer("p " * 40, "a b " * 30)["input_ids"])
    args = RankingRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=None, max_steps=1)
    data = load_rankings(datasets.Dataset.from_list(rows))
    trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    assert trainer.truncation_counts() == (0, 2)


def test_train_command_passes_model_init_kwargs_and_trl_token_fields(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "responses": ["a b", "c"]}] * 2)
    out = tmp_path / "out"
    common = ["train", "--data", str(data), "--model", str(tiny_dir), "--output", str(out), "--steps", "1"]
    extra = ["--report_to", "none", "--precision", "fp32", "--use_cpu", "--max_length", "32"]
    assert main([*common, *extra, "--model_init_kwargs", '{"dtype": "bfloat16"}']) == 0
    assert {tensor.dtype for tensor in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    assert main([*common[:-3], str(tmp_path / "out2"), "--steps", "1", *extra, "--pad_token", "<nope>"]) == 2
    assert "`pad_token` '<nope>' is not in the tokenizer's vocabulary" in capsys.readouterr().err


def test_model_init_kwargs_with_a_model_object_is_said_to_be_ignored(tmp_path, tokenizer, tiny_model, caplog):
    args = RankingRewardConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, model_init_kwargs={"dtype": "bfloat16"}
    )
    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    with caplog.at_level("WARNING", logger="rewardcollapse"):
        trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    assert "`model_init_kwargs` and `trust_remote_code` are for a model given by name; ignored" in caplog.text
    assert trainer.model.dtype == torch.float32


def test_activation_offloading_wraps_each_loss_in_trls_context_made_once(tmp_path, tokenizer, tiny_model, monkeypatch):
    import trl.models

    made, entered = [], []

    class Offloading:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(trl.models, "get_act_offloading_ctx_manager", lambda model: made.append(model) or Offloading())
    args = RankingRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2, precision="fp32")
    args.activation_offloading = True  # the config refuses it on a CPU; the wiring is what this checks
    data = load_rankings(datasets.Dataset.from_list([{"prompt": "p", "responses": ["a b", "c"]}]))
    trainer = RankingRewardTrainer(model=tiny_model(), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    assert len(made) == 1 and made[0] is trainer.model and len(entered) == 2


def test_frozen_bottom_layers_stay_fixed_and_the_top_trains(tmp_path, tokenizer, tiny_model):
    model = tiny_model()
    layers = model.config.num_hidden_layers
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    args = config(tmp_path, max_steps=3, utility="-1/x", freeze_layers=1)
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach().cpu(), before[name])}
    frozen = {name for name in before if name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))}
    assert frozen and not changed & frozen  # the embeddings and layer 0 stay
    assert changed == set(before) - frozen  # every other weight (upper layers, pooler, head) trains
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for name, p in model.named_parameters() if name in frozen}
    assert freeze_bottom_layers(tiny_model(), layers) > 0  # every layer: only what follows the stack trains
    with pytest.raises(ValueError, match=f"`freeze_layers` {layers + 1} exceeds the model's {layers} layers"):
        freeze_bottom_layers(tiny_model(), layers + 1)
    with pytest.raises(ValueError, match="`freeze_layers` must be a whole number >= 0"):
        config(tmp_path, freeze_layers=-1)
