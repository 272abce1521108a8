"""CollapseCallback: collapse measures in the Trainer's log at step 0, every N steps and the end, or each evaluation."""

import json

import datasets
import numpy as np
import pytest
import torch

from rewardcollapse.cli import main
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data import load_rankings
from rewardcollapse.diagnostics import measure_ranked
from rewardcollapse.training import CollapseCallback, RankingRewardConfig, RankingRewardTrainer, train_reward_model

from .conftest import write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WORDS = "the model reads every answer once and scores it so that longer answers rank higher here".split()
LABEL_FREE = {
    "collapse/shape_index",
    "collapse/shape_spread",
    "collapse/optimum_distance",
    "collapse/pairwise_accuracy",
}


@pytest.fixture(autouse=True)
def quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def ranking_rows(n_prompts=8, k=4, openness=True, offset=0):
    rows = []
    for p in range(offset, offset + n_prompts):
        answers = [" ".join(WORDS[(p + w) % len(WORDS)] for w in range(2 * (k - i) + 1)) for i in range(k)]
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
        "max_steps": 5,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "max_length": 64,
        "seed": 0,
        "dataloader_pin_memory": False,
        "precision": "fp32",
        "utility": "-1/x",
    }
    return RankingRewardConfig(**{**settings, **overrides})


def trainer_with(tmp_path, tokenizer, tiny_model, callback, eval_dataset=None, **overrides):
    data = load_rankings(datasets.Dataset.from_list(ranking_rows()))
    args = config(tmp_path, **overrides)
    return RankingRewardTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=data,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[callback],
    )


def measure_now(watch, trainer):
    """Measure as at the start of training (the public hook, with ``every`` set)."""
    watch.on_train_begin(trainer.args, trainer.state, trainer.control)


def rewards_of(model, tokenizer, rows):
    """Each row's rewards, scored one prompt at a time as text pairs (an independent path to the callback's)."""
    model.eval()
    with torch.no_grad():
        return [
            model(
                **tokenizer(
                    [row["prompt"]] * len(row["responses"]), row["responses"], return_tensors="pt", padding=True
                )
            )
            .logits[:, 0]
            .tolist()
            for row in rows
        ]


def logged(trainer):
    return [entry for entry in trainer.state.log_history if any(key.startswith("collapse/") for key in entry)]


def test_every_n_steps_logs_at_step_zero_every_n_and_the_end_without_an_eval_set(tmp_path, tokenizer, tiny_model):
    watch = CollapseCallback(ranking_rows(6, offset=20), every=2, draws=10)
    trainer = trainer_with(tmp_path, tokenizer, tiny_model, watch)
    assert watch.trainer is trainer  # bound by the trainer itself
    trainer.train()
    entries = logged(trainer)
    assert [entry["step"] for entry in entries] == [0, 2, 4, 5]
    assert [point["step"] for point in watch.history] == [0, 2, 4, 5]
    for entry, point in zip(entries, watch.history, strict=True):
        assert set(entry) >= LABEL_FREE | {"collapse/index", "collapse/wasserstein_open", "collapse/wasserstein_closed"}
        assert all(point[name] == entry[name] for name in entry if name.startswith("collapse/"))
        assert point["seconds"] > 0
        assert "loss" not in entry  # its own log line: the training metrics stay in theirs
    assert watch.seconds == pytest.approx(sum(point["seconds"] for point in watch.history))
    # The training logs still carry TRL's running metrics (the callback's log did not take them).
    training_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(training_logs) == 5 and all("accuracy" in entry for entry in training_logs)


def test_the_logged_measures_are_those_of_the_models_rewards(tmp_path, tokenizer, tiny_model):
    rows = ranking_rows(6, offset=20)
    watch = CollapseCallback(rows, every=100, draws=20)
    trainer = trainer_with(tmp_path, tokenizer, tiny_model, watch, max_steps=1)
    measure_now(watch, trainer)  # step 0, before training
    rewards = rewards_of(trainer.model, tokenizer, rows)
    expected = measure_ranked(
        load_rankings(datasets.Dataset.from_list(rows)).to_list(), rewards, utility="-1/x", draws=20
    )
    for name, value in expected.metrics().items():
        assert watch.history[0][name] == pytest.approx(value, abs=1e-5)


def test_scoring_restores_train_mode_and_leaves_the_model_unchanged(tmp_path, tokenizer, tiny_model):
    watch = CollapseCallback(ranking_rows(4, offset=20), every=100, draws=10)
    trainer = trainer_with(tmp_path, tokenizer, tiny_model, watch)
    model = trainer.model
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    measure_now(watch, trainer)
    assert model.training
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    watch.history.clear()
    measure_now(watch, trainer)
    assert not model.training  # the mode it had is the mode it keeps


def test_on_evaluate_mode_logs_at_each_evaluation(tmp_path, tokenizer, tiny_model):
    watch = CollapseCallback(ranking_rows(6, offset=20), draws=10)
    evaluation = load_rankings(datasets.Dataset.from_list(ranking_rows(4, offset=40)))
    trainer = trainer_with(
        tmp_path,
        tokenizer,
        tiny_model,
        watch,
        eval_dataset=evaluation,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        logging_steps=10,
    )
    trainer.train()
    assert [point["step"] for point in watch.history] == [2, 4]
    trainer.evaluate()  # at the step measured last: not measured twice
    assert [entry["step"] for entry in logged(trainer)] == [2, 4]


def test_unlabelled_rows_give_the_label_free_measures_only(tmp_path, tokenizer, tiny_model):
    watch = CollapseCallback(ranking_rows(6, openness=False, offset=20), every=100, draws=10)
    trainer = trainer_with(tmp_path, tokenizer, tiny_model, watch)
    measure_now(watch, trainer)
    names = {name for name in watch.history[0] if name.startswith("collapse/")}
    assert names >= LABEL_FREE
    assert "collapse/index" not in names
    assert not any(name.startswith("collapse/wasserstein") for name in names)


def test_a_prompt_aware_run_measures_against_its_own_closed_and_open_utilities(tmp_path, tokenizer, tiny_model):
    rows = ranking_rows(6, offset=20)
    watch = CollapseCallback(rows, every=100, draws=10)
    trainer = trainer_with(
        tmp_path, tokenizer, tiny_model, watch, utility="prompt-aware", closed_utility="x^0.5", open_utility="log"
    )
    measure_now(watch, trainer)
    rewards = rewards_of(trainer.model, tokenizer, rows)
    canonical = load_rankings(datasets.Dataset.from_list(rows)).to_list()
    own = [{**row, "utility": "x^0.5" if row["openness"] < 0.5 else "log"} for row in canonical]
    distance = watch.history[0]["collapse/optimum_distance"]
    assert distance == pytest.approx(
        measure_ranked(own, rewards, utility="prompt-aware", draws=10).label_free.optimum_distance
    )
    default = measure_ranked(canonical, rewards, utility="prompt-aware", draws=10).label_free.optimum_distance
    assert abs(distance - default) > 1e-3  # x and -1/x, the defaults, would give another distance


def test_a_callback_without_a_trainer_says_how_to_give_one(tmp_path, tokenizer, tiny_model):
    from types import SimpleNamespace

    watch = CollapseCallback(ranking_rows(4), every=1)
    with pytest.raises(InputValueError, match="trainer="):
        watch.on_train_begin(None, SimpleNamespace(global_step=0), None)
    with pytest.raises(InputValueError, match="`every` must be"):
        CollapseCallback(ranking_rows(4), every=0)
    with pytest.raises(InputValueError, match="`forward_batch_size` must be"):
        CollapseCallback(ranking_rows(4), forward_batch_size=0)
    sharded = SimpleNamespace(is_fsdp_enabled=True, accelerator=SimpleNamespace(state=None))
    with pytest.raises(InputValueError, match="FSDP"):
        CollapseCallback(ranking_rows(4), trainer=sharded)


def test_trls_reward_trainer_with_trainer_given(tmp_path, decoder_tokenizer, tiny_decoder):
    trl = pytest.importorskip("trl")
    pairs = [
        {"prompt": f"Question {i}: explain topic {i}.", "chosen": " a long and careful one", "rejected": " no"}
        for i in range(4)
    ]
    args = trl.RewardConfig(
        output_dir=str(tmp_path / "trl"),
        report_to="none",
        per_device_train_batch_size=4,
        max_steps=2,
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = trl.RewardTrainer(
        model=tiny_decoder("llama"),
        args=args,
        train_dataset=datasets.Dataset.from_list(pairs),
        processing_class=decoder_tokenizer,
    )
    rows = [
        {"prompt": f"Question {i}: explain topic {i}.", "responses": ["yes", "a long and careful one", "no", "maybe"]}
        for i in range(4, 10)
    ]
    watch = CollapseCallback(rows, utility="logsigmoid", every=1, draws=10, trainer=trainer)
    trainer.add_callback(watch)
    trainer.train()
    assert [entry["step"] for entry in logged(trainer)] == [0, 1, 2]
    assert all(set(entry) >= LABEL_FREE for entry in logged(trainer))
    # TRL's running metrics stay in its own training logs.
    training_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(training_logs) == 2 and all("accuracy" in entry for entry in training_logs)


def test_train_reward_model_records_the_history(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "train.jsonl", ranking_rows())
    heldout = write_jsonl(tmp_path / "heldout.jsonl", ranking_rows(6, offset=20))
    result = train_reward_model(
        model=str(tiny_dir),
        data=str(data),
        output_dir=tmp_path / "out",
        collapse_data=str(heldout),
        collapse_every=2,
        max_steps=3,
        per_device_train_batch_size=4,
        max_length=64,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        precision="fp32",
        utility="x",
    )
    assert [point["step"] for point in result.collapse] == [0, 2, 3]
    assert result.collapse_seconds == pytest.approx(sum(point["seconds"] for point in result.collapse))
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["collapse"] == [pytest.approx(point) for point in result.collapse]
    assert np.isfinite(summary["collapse"][-1]["collapse/index"])


def test_train_reward_model_refuses_an_interval_without_data_or_below_one(tmp_path):
    with pytest.raises(InputValueError, match="`collapse_every` needs held-out"):
        train_reward_model(model=None, data="missing.jsonl", output_dir=tmp_path / "out", collapse_every=2)
    with pytest.raises(InputValueError, match="`collapse_every` must be"):
        train_reward_model(
            model=None, data="missing.jsonl", output_dir=tmp_path / "out", collapse_data="x.jsonl", collapse_every=0
        )
    with pytest.raises(InputValueError, match="`collapse_data` needs"):
        train_reward_model(model=None, data="missing.jsonl", output_dir=tmp_path / "out", collapse_data="x.jsonl")
    watch = CollapseCallback(ranking_rows(4), every=2)
    with pytest.raises(InputValueError, match="give one collapse watch"):
        train_reward_model(
            model=None,
            data="missing.jsonl",
            output_dir=tmp_path / "out",
            eval_data="x.jsonl",
            collapse_every=2,
            callbacks=[watch],
        )
    assert not (tmp_path / "out").exists()  # refused before any folder is made


def test_a_watch_without_its_first_and_last_points_measures_between(tmp_path, tiny_dir):
    # As the experiment uses it: step 0 and the last step come from scoring it does anyway.
    watch = CollapseCallback(ranking_rows(4), every=2, at_start=False, at_end=False)
    data = write_jsonl(tmp_path / "train.jsonl", ranking_rows())
    result = train_reward_model(
        model=str(tiny_dir),
        data=data,
        output_dir=tmp_path / "out",
        max_steps=6,
        per_device_train_batch_size=2,
        max_length=64,
        precision="fp32",
        report_to="none",
        save_strategy="no",
        callbacks=[watch],
    )
    assert [point["step"] for point in result.collapse] == [2, 4] and result.collapse is watch.history
    assert result.collapse_seconds == watch.seconds > 0


def test_cli_collapse_every_defaults_to_the_eval_data(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", ranking_rows())
    heldout = write_jsonl(tmp_path / "heldout.jsonl", ranking_rows(6, offset=20))
    out = tmp_path / "out"
    argv = ["train", "--data", str(data), "--output", str(out), "--model", str(tiny_dir), "--steps", "2"]
    argv += ["--batch-size", "4", "--max_length", "64", "--precision", "fp32", "--report_to", "none"]
    argv += ["--save_strategy", "no", "--eval_data", str(heldout), "--collapse_every", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "collapse points" in printed
    summary = json.loads((out / "training_summary.json").read_text())
    assert [point["step"] for point in summary["collapse"]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--collapse_every", "2"], "`collapse_every` needs held-out rankings"),
        (["--collapse_every", "0", "--collapse_data", "x.jsonl"], "`collapse_every` must be"),
        (["--collapse_data", "x.jsonl"], "`collapse_data` needs `collapse_every`"),
    ],
)
def test_cli_refuses_collapse_options_in_one_line_before_loading(tmp_path, capsys, options, message):
    argv = ["train", "--data", "missing.jsonl", "--output", str(tmp_path / "out"), *options]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()
