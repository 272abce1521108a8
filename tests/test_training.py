import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardcollapse.cli import main
from rewardcollapse.data import load_rankings
from rewardcollapse.loss import ranking_loss
from rewardcollapse.training import (
    RankingCollator,
    RankingRewardConfig,
    RankingRewardTrainer,
    default_backbone,
    score_batch,
)

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
    assert metrics["eval_pairwise_accuracy"] > 0.9
    assert set(metrics) >= {"eval_kendall_tau", "eval_reward_mean", "eval_reward_std", "eval_reward_spread"}


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
    assert batch["utility"] == "log" and batch["num_truncated"].item() == 0
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
    assert batch["utility"] == ["x", "-1/x", "log"]
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
    want = ranking_loss(rewards, utility=["x", "-1/x"] * 2, pairs=batch["pairs"], mask=batch["answer_mask"], eps=0.1)
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
def test_two_process_gloo_data_parallel_matches_one_process(tmp_path, tiny_dir, ddp_worker, free_port):
    rows = ranking_rows(8)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # CPU processes with gloo, also on a machine with one GPU (two processes cannot share it with NCCL).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    common = [str(tiny_dir), str(tmp_path / "data.jsonl")]
    ddp_worker.run(*common, str(tmp_path / "one"), 4, use_cpu=True)  # the one-process reference, in this process
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port}"]
    double = subprocess.run(
        [*launcher, ddp_worker.__file__, *common, str(tmp_path / "two"), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert abs(one["loss"] - two["loss"]) < 1e-5
    # One SGD step with learning rate 1 moves each weight by minus its gradient.
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5


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
    assert config(tmp_path, normalize="none").loss_normalize is None


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
    assert "model saved to" in printed and "pairwise_accuracy" in printed
    assert "truncated          1 of 24 sequences (max_length 48)" in printed  # the one long answer
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


def test_help_of_new_commands():
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
    from rewardcollapse.training.trainer import _announce_new_head

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
    assert from_raw["utility"] == from_tokens["utility"] and int(from_tokens["num_truncated"]) == 1

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
    assert trainer.evaluate()["eval_pairwise_accuracy"] >= 0
    truncated, total = trainer.truncation_counts()  # from the map's column: batches of 4, 2 (end of pass), 4 prompts
    assert total == (4 + 2 + 4) * 4 and truncated <= 2
