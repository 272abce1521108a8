"""Each prompt encoded once for its K answers: exact against separate sequences, chosen automatically, wired in."""

import json
import logging
import time

import datasets
import numpy as np
import pytest
import torch

from rewardcollapse.cli import main
from rewardcollapse.data import load_rankings
from rewardcollapse.loss import ranking_loss
from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer
from rewardcollapse.training.collator import RankingCollator
from rewardcollapse.training.models import disable_dropout, set_padding_token
from rewardcollapse.training.scoring import SharedLayout, score_batch
from rewardcollapse.training.shared_prompt import (
    LAYOUTS,
    LayoutTrial,
    resolve_shared_prompt,
    score_shared,
    shared_support,
)

pytestmark = pytest.mark.filterwarnings("ignore")

DECODERS = ("llama", "qwen2", "mistral", "gpt2")
LONG = " The answer is yes because of reason 3, and reason 4, explained in a long and careful way"


def ranking(k, prompt="Question 1: explain topic 1."):
    answers = [LONG, " no", " maybe", " a long and careful one", " short", " The answer is no", " yes", " 7"]
    return {"prompt": prompt, "responses": answers[:k]}


CASES = {
    "K=2": [ranking(2), ranking(2, "Q")],
    "K=8, lengths 2 to 20 tokens": [ranking(8), ranking(8, "Question 2: why?")],
    "one-token prompt": [ranking(4, "Q")],
    "chat prompt": [
        {"prompt": [{"role": "user", "content": "Question 3: explain."}], "responses": [" yes", LONG, " no"]}
    ],
    "merge across the prompt's end": [{"prompt": "Question 1", "responses": [": yes", ":", " 1: no"]}],
    "six prompts of 1 to 40 tokens, 2 to 5 answers": [
        ranking(2 + p % 4, "Q" if p == 0 else f"Question {p}:" + LONG[: 12 * p]) for p in range(6)
    ],
}


@pytest.fixture
def decoder(decoder_tokenizer, tiny_decoder):
    def build(arch, seed=0):
        model = tiny_decoder(arch, seed=seed)
        set_padding_token(decoder_tokenizer, model)
        return model

    return build


@pytest.mark.parametrize("method", ["rows", "cache"])
@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize("case", list(CASES))
def test_scores_equal_separate_sequences(arch, case, method, decoder, decoder_tokenizer):
    model = decoder(arch).eval()
    batch = RankingCollator(decoder_tokenizer, max_length=64, sequence_format="trl")(CASES[case])
    layout = SharedLayout(method=method)
    with torch.no_grad():
        separate = score_batch(model, batch)
        shared = score_batch(model, batch, shared=layout)
    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=0)
    assert layout.stats.tokens < layout.stats.separate_tokens or case == "merge across the prompt's end"


@pytest.mark.parametrize("method", ["rows", "cache"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_loss_gradients_equal_separate_sequences(arch, method, decoder, decoder_tokenizer):
    batch = RankingCollator(decoder_tokenizer, max_length=64, sequence_format="trl")(
        CASES["K=8, lengths 2 to 20 tokens"]
    )
    grads = []
    for shared in (None, SharedLayout(method=method)):
        model = decoder(arch).train()
        disable_dropout(model)  # GPT-2's dropout would draw differently in the two layouts
        rewards = score_batch(model, batch, shared=shared)
        loss = ranking_loss(rewards, utility="log", pairs=batch["pairs"], mask=batch["answer_mask"])
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, a), (loss_b, b) = grads
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=0)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_long_rows_are_split_and_each_carries_the_prompt(decoder, decoder_tokenizer):
    model = decoder("qwen2").eval()
    batch = RankingCollator(decoder_tokenizer, max_length=64, sequence_format="trl")([ranking(8)])
    layout = SharedLayout(row_tokens=24)
    with torch.no_grad():
        separate = score_batch(model, batch)
        torch.testing.assert_close(
            score_shared(model, batch, row_tokens=24, stats=layout.stats, method="rows"), separate, atol=1e-5, rtol=0
        )
        one_row = SharedLayout(method="rows")
        score_batch(model, batch, shared=one_row)
    assert one_row.stats.tokens < layout.stats.tokens < layout.stats.separate_tokens


def test_chosen_automatically_and_refused_where_it_cannot_be_exact(decoder, tiny_model, caplog):
    assert resolve_shared_prompt("auto", decoder("llama"))[0] is True
    assert resolve_shared_prompt("off", decoder("llama"))[0] is False
    use, why = resolve_shared_prompt("auto", tiny_model())
    assert use is False and "bert is not a causal model" in why
    with pytest.raises(ValueError, match=r"`shared_prompt` 'on': bert is not a causal model.*'auto' or 'off'"):
        resolve_shared_prompt("on", tiny_model())
    model = decoder("mistral")
    model.config._attn_implementation = "flash_attention_2"
    assert "takes no custom mask" in shared_support(model)
    with pytest.raises(ValueError, match="mistral runs attention implementation 'flash_attention_2'"):
        resolve_shared_prompt("on", model)


def config(tmp_path, **settings):
    base = {"output_dir": str(tmp_path / "out"), "report_to": "none", "use_cpu": True, "precision": "fp32"}
    return RankingRewardConfig(**{**base, **settings})


@pytest.mark.parametrize("checkpointing", [True, False], ids=["rows (checkpointing)", "cached"])
def test_trainer_uses_it_with_lora_checkpointing_and_accumulation(
    tmp_path, decoder_tokenizer, tiny_decoder, checkpointing
):
    from peft import LoraConfig

    data = load_rankings(datasets.Dataset.from_list([ranking(4), ranking(3, "Q"), ranking(5, "Question 2: why?")] * 2))
    losses = {}
    for shared in ("off", "on"):
        args = config(
            tmp_path,
            shared_prompt=shared,
            max_steps=2,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=3,
            gradient_checkpointing=checkpointing,
            learning_rate=1e-2,
        )
        trainer = RankingRewardTrainer(
            model=tiny_decoder("llama"),
            args=args,
            train_dataset=data,
            processing_class=decoder_tokenizer,
            peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
        )
        assert (trainer.shared is not None) == (shared == "on")
        if shared == "on":
            assert trainer.layout.endswith("block mask" if checkpointing else "their answers on them")
        losses[shared] = trainer.train().training_loss
    assert losses["on"] == pytest.approx(losses["off"], abs=1e-5)
    assert trainer.shared.stats.saved > 0.2


def test_an_unsupported_causal_model_falls_back_once_with_a_message(tmp_path, decoder_tokenizer, tiny_decoder, caplog):
    model = tiny_decoder("gpt2")
    model.config._attn_implementation = "flex_attention"
    data = load_rankings(datasets.Dataset.from_list([ranking(3)]))
    with caplog.at_level(logging.INFO, logger="rewardcollapse"):
        trainer = RankingRewardTrainer(
            model=model, args=config(tmp_path), train_dataset=data, processing_class=decoder_tokenizer
        )
    assert trainer.shared is None
    assert "shared prompt: separate sequences: gpt2 runs attention implementation 'flex_attention'" in caplog.text


def test_score_and_train_commands(tmp_path, decoder_tokenizer, tiny_decoder, capsys):
    base = tmp_path / "base"
    tiny_decoder("llama").save_pretrained(base)
    decoder_tokenizer.save_pretrained(base)
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps(row) + "\n" for row in [ranking(8), ranking(4, "Q"), ranking(6, "Question 5: how?")])
    )
    scores = {}
    for setting in ("on", "off"):
        output = tmp_path / f"{setting}.jsonl"
        args = ["score", "--model", str(base), "--data", str(data), "--output", str(output), "--shared-prompt", setting]
        assert main([*args, "--precision", "fp32"]) == 0
        scores[setting] = np.concatenate([json.loads(line)["rewards"] for line in output.read_text().splitlines()])
        printed = capsys.readouterr().out
        assert ("tokens saved" in printed) == (setting == "on")
    np.testing.assert_allclose(scores["on"], scores["off"], atol=1e-5)
    train = ["train", "--model", str(base), "--data", str(data), "--output", str(tmp_path / "m"), "--steps", "1"]
    assert main([*train, "--report_to", "none", "--shared_prompt", "on"]) == 0
    printed = capsys.readouterr().out
    assert "each prompt encoded once" in printed and "tokens saved" in printed
    assert json.loads((tmp_path / "m" / "training_summary.json").read_text())["tokens_saved"] > 0.2
    for steps in (2, 10):  # the trial unfinished (milliseconds batches are timed up to 8 times), then finished
        output = tmp_path / f"auto{steps}"
        auto = ["train", "--model", str(base), "--data", str(data), "--output", str(output), "--steps", str(steps)]
        assert main([*auto, "--report_to", "none", "--batch-size", "1"]) == 0
        assert "shared prompt auto: " in capsys.readouterr().out
        summary = json.loads((output / "training_summary.json").read_text())
        trial = summary["layout_trial"]
        assert set(trial["seconds_per_batch"]) == set(LAYOUTS) and trial["timed_batches"] == min(steps - 1, 8)
        if steps == 2:
            assert (
                trial["chosen"] is None and trial["reason"] == "not decided: 2 batches run every way, 1 of them timed"
            )
        else:
            assert trial["chosen"] in LAYOUTS and (summary["tokens_saved"] is None) == (trial["chosen"] == "off")


@pytest.mark.slow
def test_two_process_data_parallel_with_the_layout_matches_one_process(
    tmp_path, decoder_tokenizer, tiny_decoder, one_and_two_processes
):
    from safetensors.torch import load_file

    model_dir = tmp_path / "base"
    tiny_decoder("llama").save_pretrained(model_dir)
    decoder_tokenizer.save_pretrained(model_dir)
    rows = [{**ranking(2 + p % 5, f"Question {p}: explain."), "openness": p % 2} for p in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # "on": the rows way in both; "auto": 4 steps, the trial's 3 batches timed by both processes, which agree.
    cases = {"on": {"shared_prompt": "on"}, "auto": {"max_steps": 4, "learning_rate": 0.1, "trial_max_rounds": 2}}
    one_and_two_processes(model_dir, tmp_path / "data.jsonl", tmp_path, cases)
    for case in cases:
        one = json.loads((tmp_path / "one" / case / "result.json").read_text())
        two = json.loads((tmp_path / "two" / case / "result.json").read_text())
        assert two["world_size"] == 2 and abs(one["train_loss"] - two["train_loss"]) < 1e-5
        a, b = (load_file(tmp_path / name / case / "model.safetensors") for name in ("one", "two"))
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5
    assert one["trial"] is None or one["trial"]["chosen"] in ("off", "cache", "rows")  # one process: any way
    assert two["trial"]["chosen"] in ("off", "rows") and two["trial"]["agreed"]


@pytest.mark.parametrize(("method", "short_prompt_shared"), [("rows", False), ("cache", True)])
def test_auto_uses_the_layout_only_where_it_costs_less(decoder_tokenizer, method, short_prompt_shared):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(decoder_tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_labels=1,
        pad_token_id=0,
    )
    model = LlamaForSequenceClassification(config).eval()
    # One row per prompt computes every masked attention block, so short prompts stay separate; the cached path
    # computes none, so it is cheaper wherever anything is shared.
    for prompt_tokens, expect_shared in ((512, True), (16, short_prompt_shared)):
        prompt = [1 + i % 200 for i in range(prompt_tokens)]
        answers = [[300 + a] * 128 for a in range(8)]
        sequences = [prompt + a for a in answers]
        batch = {
            "input_ids": torch.tensor(sequences),
            "attention_mask": torch.ones(8, prompt_tokens + 128, dtype=torch.long),
            "answer_slot": torch.arange(8),
            "answer_mask": torch.ones(1, 8, dtype=torch.bool),
        }
        layout = SharedLayout(when_cheaper=True, method=method)
        with torch.no_grad():
            rewards = score_batch(model, batch, shared=layout)
            torch.testing.assert_close(rewards, score_batch(model, batch), atol=1e-5, rtol=0)
        assert (layout.stats.saved > 0) == expect_shared


def test_sliding_windows_and_caches_that_cannot_be_repeated_fall_back_exactly(decoder, decoder_tokenizer, monkeypatch):
    model = decoder("mistral").eval()
    batch = RankingCollator(decoder_tokenizer, max_length=64, sequence_format="trl")(
        CASES["K=8, lengths 2 to 20 tokens"]
    )
    with torch.no_grad():
        separate = score_batch(model, batch)
        model.config.sliding_window = 8  # shorter than the sequences: only the separate sequences are windowed
        layout = SharedLayout()
        torch.testing.assert_close(
            score_batch(model, batch, shared=layout), score_batch(model, batch), atol=1e-5, rtol=0
        )
        assert layout.stats.saved == 0
        model.config.sliding_window = None
        from transformers.cache_utils import Cache

        monkeypatch.delattr(Cache, "batch_select_indices")
        layout = SharedLayout(method="auto")
        torch.testing.assert_close(score_batch(model, batch, shared=layout), separate, atol=1e-5, rtol=0)
        assert layout.stats.saved > 0  # the rows served


def test_score_flags_prompts_cut_to_the_same_tokens_in_the_layout(tmp_path, decoder_tokenizer, tiny_decoder, capsys):
    base = tmp_path / "base"
    tiny_decoder("llama").save_pretrained(base)
    decoder_tokenizer.save_pretrained(base)
    long_prompt = ranking(4, "Question 1: explain topic 1." + LONG * 3)  # about 60 tokens before any answer
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in [long_prompt, ranking(3, "Q")]))
    output = tmp_path / "rewards.jsonl"
    args = ["score", "--model", str(base), "--data", str(data), "--output", str(output), "--max-length", "24"]
    with pytest.warns(UserWarning, match="answers were cut at max_length 24; the answers of 1 of 2 prompts"):
        assert main([*args, "--shared-prompt", "on", "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "tokens saved" in printed and "indistinguishable prompts  1" in printed
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert lines[0]["indistinguishable"] and lines[0]["truncated"] == 4 and not lines[1]["indistinguishable"]
    assert len(set(lines[0]["rewards"])) == 1
    # The try-out's case: every prompt longer than max_length, so every answer reads as its prompt's first tokens.
    data.write_text(json.dumps(long_prompt) + "\n")
    assert main(args) == 2
    assert "cuts the answers of every prompt (1) to the same tokens" in capsys.readouterr().err


def test_the_trial_times_every_way_on_the_same_batches_and_keeps_the_fastest():
    trial = LayoutTrial(("off", "cache", "rows"), warmup=1, rounds=2, enough_seconds=0.15)
    pause = {"off": 0.06, "cache": 0.0, "rows": 0.03}
    order = []

    def run(way):
        order.append(way)
        time.sleep(pause[way])

    for _ in range(3):
        assert not trial.timed_enough()
        trial.time(run)
    assert trial.timed_enough()  # 2 timed batches, 0.18 s in all: over enough_seconds
    assert order == ["off", "cache", "rows", "cache", "rows", "off", "rows", "off", "cache"]  # rotated per batch
    assert trial.seconds["off"] >= 0.12 and trial.seconds["rows"] >= 0.06  # two timed batches, not the first
    assert trial.decide() == "cache" and trial.chosen == "cache"
    record = trial.record()
    assert record["chosen"] == "cache" and record["timed_batches"] == 2 and record["reason"].startswith("timed on 2")
    assert record["seconds_per_batch"]["off"] >= 0.06
    assert trial.decide({"off": 1.0, "cache": 2.0, "rows": 1.0}) == "off"  # ties: the earlier candidate
    assert trial.summary() == "off, timed on 2 batches after 1 untimed (off 0.5 s, rows 0.5 s, cache 1 s per batch)"
    quick = LayoutTrial(("off", "rows"), max_rounds=5)  # batches of microseconds: timed up to max_rounds
    while not quick.timed_enough():
        quick.time(lambda way: None)
    assert quick.batches == 1 + 5
    assert LayoutTrial(("off", "rows"), batches=3).timed_enough({"off": 0.3, "rows": 0.3})  # 2 timed, 0.6 s
    for bad in (("off",), ("off", "flash")):
        with pytest.raises(ValueError, match=r"`candidates` must be at least two of \('off', 'cache', 'rows'\)"):
            LayoutTrial(bad)


@pytest.mark.parametrize("fastest", ["off", "cache"])
def test_auto_keeps_the_way_measured_fastest_and_trains_as_separate_sequences(
    tmp_path, decoder_tokenizer, tiny_decoder, monkeypatch, caplog, fastest
):
    import rewardcollapse.training.trainer as trainer_module

    data = load_rankings(datasets.Dataset.from_list([ranking(4), ranking(3, "Q"), ranking(5, "Question 2: why?")] * 2))
    runs = {}
    for shared in ("off", "auto"):
        slowed = []

        def score(model, batch, *, shared=None, slowed=slowed, **kwargs):
            way = "off" if shared is None else shared.method
            slowed.append(way)
            time.sleep(0.0 if way == fastest else 0.15)  # the other ways made slow, so the choice is known
            return score_batch(model, batch, shared=shared, **kwargs)

        monkeypatch.setattr(trainer_module, "score_batch", score)
        args = config(tmp_path, shared_prompt=shared, max_steps=4, per_device_train_batch_size=2, learning_rate=1e-2)
        trainer = RankingRewardTrainer(
            model=tiny_decoder("llama"), args=args, train_dataset=data, processing_class=decoder_tokenizer
        )
        with caplog.at_level(logging.INFO, logger="rewardcollapse"):
            runs[shared] = trainer.train().training_loss
        if shared == "auto":
            trial = trainer.layout_trial
            assert trial.chosen == fastest and trial.batches == 3 and set(trial.seconds) == set(LAYOUTS)  # 0.6 s
            assert (trainer.shared is None) == (fastest == "off")
            assert trainer.layout.startswith(f"shared prompt auto: {fastest}, timed on 2 batches after 1 untimed")
            assert trainer.layout in caplog.text
            assert slowed[-1] == fastest  # the step after the trial ran the way kept
            assert slowed.count("rows") == 3  # rows only ever ran in the trial
    assert runs["auto"] == pytest.approx(runs["off"], abs=1e-6)  # the trial changed nothing the training saw


def test_auto_under_gradient_checkpointing_times_rows_against_separate(tmp_path, decoder_tokenizer, tiny_decoder):
    data = load_rankings(datasets.Dataset.from_list([ranking(4), ranking(3, "Q")]))
    args = config(tmp_path, max_steps=3, per_device_train_batch_size=2, gradient_checkpointing=True)
    trainer = RankingRewardTrainer(
        model=tiny_decoder("qwen2"), args=args, train_dataset=data, processing_class=decoder_tokenizer
    )
    assert tuple(trainer.layout_trial.candidates) == ("off", "rows")
    trainer.layout_trial.max_rounds = 2  # batches of milliseconds would be timed up to 8 times
    trainer.train()
    assert trainer.layout_trial.chosen in ("off", "rows")


def test_auto_keeps_separate_sequences_untimed_where_the_estimate_says_sharing_cannot_pay(
    tmp_path, decoder_tokenizer, tiny_decoder, monkeypatch
):
    import rewardcollapse.training.trainer as trainer_module

    # A one-token prompt, answers of 20 tokens each (no padding either way): nothing worth the layout's extra calls.
    answers = [" " + " ".join([word] * 20) for word in ("yes", "no", "short", "maybe")]
    data = load_rankings(datasets.Dataset.from_list([{"prompt": "Q", "responses": answers}] * 4))
    ways = []
    monkeypatch.setattr(
        trainer_module, "score_batch", lambda *a, shared=None, **k: ways.append(shared) or score_batch(*a, **k)
    )
    args = config(tmp_path, max_steps=2, per_device_train_batch_size=2, sequence_format="trl")
    trainer = RankingRewardTrainer(
        model=tiny_decoder("llama"), args=args, train_dataset=data, processing_class=decoder_tokenizer
    )
    trainer.train()
    record = trainer.layout_trial.record()
    assert record["chosen"] == "off" and record["timed_batches"] == 0 and record["seconds_per_batch"] is None
    assert record["reason"].startswith("by the estimate on the first batch: the layout saves")
    assert ways == [None, None] and trainer.shared is None  # nothing but the two training steps ran
