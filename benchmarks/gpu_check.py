"""One-shot GPU check: every check a CPU cannot run, in one script of at most 8 minutes on one H100/H200-class GPU.

Run: .venv/bin/python benchmarks/gpu_check.py [--output gpu-check-output]   (``make gpu-check``)
     .venv/bin/python benchmarks/gpu_check.py --tiny                       (the same code paths on the CPU, < 30 s)

Writes ``gpu_check.json`` (every section's status, figures and seconds) and ``gpu_check.md`` (a table, also printed)
into ``--output``. A section's status is ``passed``, ``failed`` or ``not run: <reason>``; the exit status is 1 if any
section failed (a crash inside a section is a failure), else 0; without CUDA and without ``--tiny``, 2.

Sections:

* ``exactness``: the shared-prompt layout (``SharedLayout(method="cache")`` and ``method="rows"``) against separate
  sequences on the device, for a small random Qwen2 and Llama classifier: scores, the ranking loss and its
  gradients. float32 (TF32 off) to 1e-5: scores and loss absolutely, gradients 1e-5 + 1e-4 |g| element-wise, as the
  CPU tests. bf16 autocast (as training runs it) within :data:`BF16_TOLERANCE` relative: the largest score
  difference over the largest score, and the norm of the gradient difference over the gradient's norm. bf16 keeps 8
  significant bits (unit roundoff 2^-8 = 3.9e-3) and the two layouts round different sums (padding, the prefix
  computed apart from its answers), so they differ by a few units of roundoff: 2e-2 is about 5 of them.
* ``speed``: a random Qwen2-0.5B-shaped classifier (:data:`QWEN2_0_5B`, nothing downloaded) in bf16 with P = 512
  prompt tokens, K = 8 answers of A = 128 tokens: ``RankingRewardTrainer`` with ``shared_prompt="auto"`` and
  ``"off"``, and TRL's ``RewardTrainer`` on the same prompts as all K(K-1)/2 chosen/rejected pairs per prompt, all
  with the Bradley-Terry loss (as ``bench_training.py --trl``). Prompts/s from the median step time after warm-up
  steps, peak GPU memory, ratios; ``goal_met`` says whether auto >= 3x off and >= 15x TRL (a miss is a figure, not a
  failure).
* ``fsdp``, ``deepspeed_zero2``, ``deepspeed_zero3``: a few AdamW steps of MiniLM (float32) under
  ``accelerate launch --config_file configs/accelerate/<config> --num_processes 1`` against the same steps without a
  launcher: every step's loss within :data:`LOSS_TOLERANCE` relative (the first step sees the same weights, later
  ones the optimiser's updates, whose sums the launchers order differently). DeepSpeed needs
  ``pip install deepspeed``; without it those two sections are ``not run``.
* ``experiment``: ``configs/minilm-gpu.yaml`` through :func:`rewardcollapse.experiments.run_experiment`, each
  utility's collapse index from ``report.json``.

``--tiny`` runs every section on the CPU at toy sizes (2-layer models, a few steps, the experiment on 8 prompts); the
distributed sections are ``not run`` there (accelerate sets up FSDP and DeepSpeed only on accelerator devices), and
the bf16 part of exactness runs only on a CPU with native bf16.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
BF16_TOLERANCE = 2e-2
"""Relative difference allowed between the layouts under bf16 autocast: about 5 units of bf16's roundoff (2^-8)."""
FLOAT32_TOLERANCE = 1e-5
LOSS_TOLERANCE = 1e-3
"""Difference allowed between a launcher's step losses and the plain run's (float32 on both): relative to the loss,
absolute below 1."""
SPEED_GOAL = {"auto/off": 3.0, "auto/TRL": 15.0}
"""The issue's goal for the 0.5B decoder at P = 512, K = 8: prompts/s of auto over off, and over TRL."""
NEEDS_CUDA = "needs CUDA (accelerate sets up FSDP/DeepSpeed only on accelerator devices)"
DISTRIBUTED = {
    "fsdp": "fsdp.yaml",
    "deepspeed_zero2": "deepspeed_zero2.yaml",
    "deepspeed_zero3": "deepspeed_zero3.yaml",
}
"""Section name -> the accelerate configuration under configs/accelerate/ it launches."""

QWEN2_0_5B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
}
"""Qwen2-0.5B's published config.json values (Qwen/Qwen2-0.5B), written out so that nothing is downloaded."""


@dataclass(frozen=True)
class Sizes:
    """How large each section runs: the GPU's sizes, or ``--tiny``'s on the CPU."""

    device: str
    exact_hidden: int
    exact_layers: int
    speed_model: dict[str, Any]
    prompt_tokens: int
    answers: int
    answer_tokens: int
    prompts_per_step: int
    warm_up_steps: int
    timed_steps: int
    trl_accumulation: int
    experiment: dict[str, Any] = field(default_factory=dict)
    """Settings replacing those of configs/minilm-gpu.yaml (``training``: replacing its fields)."""


FULL = Sizes(
    device="cuda",
    exact_hidden=128,
    exact_layers=4,
    speed_model=QWEN2_0_5B,
    prompt_tokens=512,
    answers=8,
    answer_tokens=128,
    prompts_per_step=4,
    warm_up_steps=3,  # shared_prompt auto times its ways on the first 3 batches (LayoutTrial): not timed here
    timed_steps=3,
    trl_accumulation=4,  # 4 x 28 pairs of 640 tokens in one forward would need ~100 GB of activations
)
TINY = Sizes(
    device="cpu",
    exact_hidden=32,
    exact_layers=2,
    speed_model={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    },
    prompt_tokens=32,
    answers=4,
    answer_tokens=8,
    prompts_per_step=2,
    warm_up_steps=1,
    timed_steps=1,
    trl_accumulation=1,
    experiment={
        "train_prompts": 4,
        "test_prompts": 4,
        "utilities": ["x", "prompt-aware"],
        "score_batch_size": 4,
        "collapse_prompts": 0,
        "length_scale": 0.35,
        "training": {  # MiniLM's top layer only (configs/demo.yaml freezes the bottom 3 of 6): a step of ~0.2 s
            "max_steps": 2,
            "per_device_train_batch_size": 1,
            "warmup_steps": 0,
            "max_length": 32,
            "forward_batch_size": 16,
            "freeze_word_embeddings": True,
            "freeze_layers": 5,
            "precision": "fp32",
        },
    },
)


class NotRun(Exception):
    """Raised by a check that cannot run here; its message is the reason, in words."""


@dataclass(frozen=True)
class Section:
    """One check's outcome: ``passed``, ``failed`` or ``not run: <reason>``, its figures and its seconds."""

    status: str
    figures: dict[str, Any]
    seconds: float


Check = Callable[[Sizes, Path], tuple[bool, dict[str, Any]]]
"""A check: (sizes, its own output folder) -> (passed, figures); raises :class:`NotRun` when it cannot run."""


# --- shared pieces -------------------------------------------------------------------------------------------------


def build_tokenizer():
    """A byte-level BPE tokenizer trained on the spot (no download), GPT-style: end-of-text token, no padding token.

    The approach of tests/conftest.py's ``decoder_tokenizer``; its single-token words make exact-length texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        f"Question {i}: explain topic {i}. The answer is {word} because of reason {i}."
        for i in range(200)
        for word in ("yes", "no", "maybe", "short", "a long and careful one")
    ]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def decoder(arch: str, tokenizer, *, seed: int = 0, **sizes: Any):
    """A randomly initialised Qwen2 or Llama sequence classifier (one output), its padding token set."""
    from transformers import LlamaConfig, LlamaForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification

    from rewardcollapse.training.models import set_padding_token

    config_class, model_class = {
        "qwen2": (Qwen2Config, Qwen2ForSequenceClassification),
        "llama": (LlamaConfig, LlamaForSequenceClassification),
    }[arch]
    torch.manual_seed(seed)
    settings = {"vocab_size": len(tokenizer), **sizes, "num_labels": 1}
    model = model_class(config_class(**settings))
    set_padding_token(tokenizer, model)
    return model


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {name: value.to(device) if torch.is_tensor(value) else value for name, value in batch.items()}


def exact_words(tokenizer) -> list[str]:
    """Words that are one token each with a leading space, so that a text of n of them is n tokens."""
    candidates = sorted(word.lstrip("Ġ") for word in tokenizer.get_vocab() if word.startswith("Ġ"))
    pieces = tokenizer([" " + word for word in candidates], add_special_tokens=False)["input_ids"]
    return [w for w, ids in zip(candidates, pieces, strict=True) if w.isalpha() and len(ids) == 1]


# --- 1. exactness --------------------------------------------------------------------------------------------------


def exactness_rows() -> list[dict[str, Any]]:
    """Rankings with prompts of 1, 7 and 24 tokens and 2 to 8 answers of 1 to 26 tokens, mixed in one batch."""
    long = " The answer is yes because of reason 3, and reason 4, explained in a long and careful way"
    answers = [long, " no", " maybe", " a long and careful one", " short", " The answer is no", " yes", " 7"]
    return [
        {"prompt": "Question 1: explain topic 1.", "responses": answers},
        {"prompt": "Q", "responses": answers[:2]},
        {"prompt": "Question 2: why is the answer maybe, and not yes or no?", "responses": answers[2:7]},
    ]


def bf16_unavailable(device: str) -> str | None:
    """Why bf16 is not checked on this device, or None."""
    if device == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no native bf16"
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    return None


def layout_run(model, batch, method: str | None, *, bf16: bool, device: str):
    """Scores, loss and gradients (a flat dict by parameter) of one layout; ``method=None``: separate sequences."""
    from rewardcollapse.loss import ranking_loss
    from rewardcollapse.training.scoring import SharedLayout, score_batch

    model.zero_grad(set_to_none=True)
    shared = None if method is None else SharedLayout(method=method)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        rewards = score_batch(model, batch, shared=shared)
    loss = ranking_loss(rewards.float(), utility="log", pairs=batch["pairs"], mask=batch["answer_mask"])
    loss.backward()
    grads = {name: p.grad.detach().float().clone() for name, p in model.named_parameters() if p.grad is not None}
    saved = None if shared is None else shared.stats.saved
    return rewards.detach().float(), loss.detach().float(), grads, saved


def compare(reference, other, *, bf16: bool) -> dict[str, Any]:
    """Differences of one layout from separate sequences, and whether they are within the tolerance."""
    (scores_a, loss_a, grads_a, _), (scores_b, loss_b, grads_b, saved) = reference, other
    if grads_a.keys() != grads_b.keys():
        return {"passed": False, "error": "the layouts gave gradients to different parameters"}
    score_difference = float((scores_b - scores_a).abs().max())
    loss_difference = float((loss_b - loss_a).abs())
    if bf16:
        flat_a = torch.cat([g.flatten() for g in grads_a.values()])
        flat_b = torch.cat([grads_b[name].flatten() for name in grads_a])
        figures = {
            "score_relative": score_difference / float(scores_a.abs().max()),
            "loss_relative": loss_difference / max(float(loss_a.abs()), 1e-12),
            "gradient_relative": float((flat_b - flat_a).norm() / flat_a.norm()),
        }
        passed = all(value <= BF16_TOLERANCE for value in figures.values())
    else:
        excess = max(
            float(((grads_b[n] - grads_a[n]).abs() - 1e-4 * grads_a[n].abs()).max()) for n in grads_a
        )  # |difference| - rtol |g|, to compare with atol
        gradient_difference = max(float((grads_b[n] - grads_a[n]).abs().max()) for n in grads_a)
        figures = {
            "score_max_abs": score_difference,
            "loss_abs": loss_difference,
            "gradient_max_abs": gradient_difference,
        }
        passed = max(score_difference, loss_difference, excess) <= FLOAT32_TOLERANCE
    return {"passed": passed, "tokens_saved": saved, **figures}


def check_exactness(sizes: Sizes, output: Path) -> tuple[bool, dict[str, Any]]:
    """Both shared-prompt ways against separate sequences: Qwen2 and Llama, float32 and bf16 autocast."""
    from rewardcollapse.training.collator import RankingCollator
    from rewardcollapse.training.models import disable_dropout

    device = sizes.device
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 matmuls round to 10 bits: no 1e-5 comparison under them
    torch.backends.cudnn.allow_tf32 = False
    tokenizer = build_tokenizer()
    model_sizes = {
        "hidden_size": sizes.exact_hidden,
        "intermediate_size": 2 * sizes.exact_hidden,
        "num_hidden_layers": sizes.exact_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    }
    # Built first: building one gives the tokenizer its padding token (the end-of-text token), which collating needs.
    models = {arch: decoder(arch, tokenizer, **model_sizes).to(device).train() for arch in ("qwen2", "llama")}
    batch = to_device(RankingCollator(tokenizer, max_length=64, sequence_format="trl")(exactness_rows()), device)
    no_bf16 = bf16_unavailable(device)
    figures: dict[str, Any] = {
        "tolerances": {
            "float32": f"scores and loss {FLOAT32_TOLERANCE} absolute; gradients {FLOAT32_TOLERANCE} + 1e-4 |g|",
            "bf16": f"{BF16_TOLERANCE} relative (scores: to the largest score; gradients: in norm)",
        },
        "bf16": "run" if no_bf16 is None else f"not run: {no_bf16}",
    }
    passed = True
    for arch, model in models.items():
        disable_dropout(model)
        for precision in ("float32", "bf16"):
            if precision == "bf16" and no_bf16 is not None:
                continue
            bf16 = precision == "bf16"
            reference = layout_run(model, batch, None, bf16=bf16, device=device)
            for method in ("cache", "rows"):
                result = compare(reference, layout_run(model, batch, method, bf16=bf16, device=device), bf16=bf16)
                figures[f"{arch} {precision} {method}"] = result
                passed &= result["passed"]
    return passed, figures


# --- 2. speed ------------------------------------------------------------------------------------------------------


def speed_rows(tokenizer, sizes: Sizes, n_prompts: int, seed: int = 0) -> list[dict[str, Any]]:
    """TRL preference rows: prompts of exactly P tokens, K answers of exactly A tokens (end-of-text included), all
    K(K-1)/2 pairs of each prompt, answer a above b for a < b."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = exact_words(tokenizer)
    rows = []
    for _ in range(n_prompts):
        prompt = " " + " ".join(rng.choice(words, size=sizes.prompt_tokens))
        answers = [" " + " ".join(rng.choice(words, size=sizes.answer_tokens - 1)) for _ in range(sizes.answers)]
        better, worse = np.triu_indices(sizes.answers, 1)
        rows += [
            {"prompt": prompt, "chosen": answers[a], "rejected": answers[b]} for a, b in zip(better, worse, strict=True)
        ]
    total = sizes.prompt_tokens + sizes.answer_tokens
    eos = tokenizer.eos_token
    lengths = {len(ids) for ids in tokenizer([r["prompt"] + r["rejected"] + eos for r in rows])["input_ids"]}
    if lengths != {total}:
        raise ValueError(f"the speed rows should all have {total} tokens, got lengths {sorted(lengths)}")
    return rows


def timed_training(trainer, sizes: Sizes) -> dict[str, Any]:
    """Train, timing every step (bench_training's clock); the median after the warm-up steps, and the peak memory."""
    from bench_training import PeakMemory, step_clock  # the script's folder is on sys.path

    step_times: list[float] = []
    memory = PeakMemory()
    trainer.add_callback(step_clock(step_times, memory))
    if sizes.device == "cuda":
        gc.collect()  # the previous run's trainer (reference cycles) still holds its model and optimiser state
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    loss = trainer.train().training_loss
    memory.__exit__()
    # shared_prompt auto runs its first batches every way (LayoutTrial): those are not its steady steps
    trial = getattr(trainer, "layout_trial", None)
    skip = max(sizes.warm_up_steps, 0 if trial is None or trial.chosen is None else trial.batches)
    seconds = statistics.median(step_times[skip:])
    peak = torch.cuda.max_memory_allocated() if sizes.device == "cuda" else memory.peak
    return {
        "step_seconds": seconds,
        "prompts_per_second": sizes.prompts_per_step / seconds,
        "peak_memory_gib": peak / 2**30,
        "mean_loss": loss,
        "timed_steps": len(step_times) - skip,
    }


def common_arguments(sizes: Sizes, name: str, output: Path) -> dict[str, Any]:
    """What both trainers share: the steps, the length, AdamW, sequential data, no dropout, no saving or logging."""
    from bench_training import LEARNING_RATE, SAME_AS_TRL

    return {
        **SAME_AS_TRL,
        "output_dir": str(output / name),
        "max_length": sizes.prompt_tokens + sizes.answer_tokens,
        "max_steps": sizes.warm_up_steps + sizes.timed_steps,
        "learning_rate": LEARNING_RATE,
        "use_cpu": sizes.device == "cpu",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_strategy": "no",
        "dataloader_pin_memory": False,
    }


def run_ours(setting: str, rows, tokenizer, sizes: Sizes, output: Path) -> dict[str, Any]:
    import datasets

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

    config = RankingRewardConfig(
        **common_arguments(sizes, f"ours_{setting}", output),
        shared_prompt=setting,
        utility="logsigmoid",
        normalize="none",
        pair_weighting="pair",
        sequence_format="trl",
        precision="bf16" if sizes.device == "cuda" else "fp32",
        forward_batch_size=None,
        per_device_train_batch_size=sizes.prompts_per_step,
    )
    data = load_rankings(datasets.Dataset.from_list(rows))  # each prompt's pairs merged back into its ranking
    model = speed_model(tokenizer, sizes)
    trainer = RankingRewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    result = timed_training(trainer, sizes)
    shared = getattr(trainer, "shared", None)
    stats = getattr(shared, "stats", None)
    result["layout"] = getattr(trainer, "layout", None)
    result["tokens_saved"] = None if stats is None else stats.saved
    trial = trainer.layout_trial
    result["layout_trial"] = None if trial is None or trial.chosen is None else trial.record()
    return result


def run_trl(rows, tokenizer, sizes: Sizes, output: Path) -> dict[str, Any]:
    import datasets
    from trl import RewardConfig, RewardTrainer

    pairs = sizes.prompts_per_step * sizes.answers * (sizes.answers - 1) // 2
    config = RewardConfig(
        **common_arguments(sizes, "trl", output),
        bf16=sizes.device == "cuda",
        per_device_train_batch_size=pairs // sizes.trl_accumulation,
        gradient_accumulation_steps=sizes.trl_accumulation,
        eos_token=tokenizer.eos_token,
    )
    data = datasets.Dataset.from_list(rows)
    trainer = RewardTrainer(
        model=speed_model(tokenizer, sizes), args=config, train_dataset=data, processing_class=tokenizer
    )
    if len(trainer.train_dataset) != len(rows):
        raise ValueError(f"TRL dropped {len(rows) - len(trainer.train_dataset)} rows longer than max_length")
    return timed_training(trainer, sizes)


def speed_model(tokenizer, sizes: Sizes):
    """The speed section's random decoder (the same weights each time), built on the device (fast initialisation)."""
    with torch.device(sizes.device):
        return decoder("qwen2", tokenizer, seed=0, **sizes.speed_model)


def check_speed(sizes: Sizes, output: Path) -> tuple[bool, dict[str, Any]]:
    """``RankingRewardTrainer`` auto vs off vs TRL's ``RewardTrainer``: prompts/s and peak memory, same prompts."""
    import datasets

    datasets.disable_progress_bars()
    tokenizer = build_tokenizer()
    rows = speed_rows(tokenizer, sizes, sizes.prompts_per_step * (sizes.warm_up_steps + sizes.timed_steps))
    runs = {
        "auto": run_ours("auto", rows, tokenizer, sizes, output),
        "off": run_ours("off", rows, tokenizer, sizes, output),
        "TRL": run_trl(rows, tokenizer, sizes, output),
    }
    ratios = {
        f"auto/{other}": runs["auto"]["prompts_per_second"] / runs[other]["prompts_per_second"]
        for other in ("off", "TRL")
    }
    full_size = sizes.speed_model == QWEN2_0_5B
    figures = {
        "setting": {
            "model": "Qwen2-0.5B config, random weights" if full_size else "tiny Qwen2, random weights",
            "precision": "bf16" if sizes.device == "cuda" else "float32",
            "P": sizes.prompt_tokens,
            "K": sizes.answers,
            "A": sizes.answer_tokens,
            "prompts_per_step": sizes.prompts_per_step,
            "warm_up_steps": sizes.warm_up_steps,
            "trl_accumulation": sizes.trl_accumulation,
            "peak_memory": "torch.cuda.max_memory_allocated" if sizes.device == "cuda" else "the process's peak RSS",
        },
        "runs": runs,
        "ratios": ratios,
        "goal": {name: f">= {bound}x" for name, bound in SPEED_GOAL.items()},
        # The goal is about the 0.5B decoder on a GPU; the tiny run only proves the code path.
        "goal_met": all(ratios[name] >= bound for name, bound in SPEED_GOAL.items()) if full_size else None,
    }
    return True, figures


# --- 3. distributed ------------------------------------------------------------------------------------------------

DISTRIBUTED_STEPS = 3
DISTRIBUTED_BATCH = 4


def distributed_rows() -> list[dict[str, Any]]:
    answers = [" yes", " no, because the reason is long", " maybe", " a long and careful answer to it", " short"]
    return [
        {"prompt": f"Question {p}: explain topic {p}.", "responses": answers[: 2 + p % 4], "openness": p % 2}
        for p in range(DISTRIBUTED_STEPS * DISTRIBUTED_BATCH)
    ]


def distributed_worker(model_dir: str, data: str, output: str) -> None:
    """A few AdamW steps of ``RankingRewardTrainer`` (float32), alone or under a launcher; writes result.json with
    every step's loss and what accelerate set up. The arguments come before the model, so that DeepSpeed ZeRO-3's
    ``zero3_init_flag`` builds the model sharded."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

    datasets.disable_progress_bars()
    losses: list[float] = []

    class Recording(RankingRewardTrainer):
        """Keeps each step's training loss (one micro-batch per step here)."""

        def compute_loss(self, model, inputs, **kwargs):
            loss = super().compute_loss(model, inputs, **kwargs)
            losses.append(float(loss.detach()))
            return loss

    args = RankingRewardConfig(
        output_dir=output,
        per_device_train_batch_size=DISTRIBUTED_BATCH,
        max_steps=DISTRIBUTED_STEPS,
        learning_rate=1e-4,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        max_length=64,
        utility="prompt-aware",
        precision="fp32",
        dataloader_pin_memory=False,
        disable_dropout=True,
    )
    trainer = Recording(
        model=AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1),
        args=args,
        train_dataset=load_rankings(data),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    if args.process_index == 0:
        state = trainer.accelerator.state
        result = {
            "losses": losses,
            "world_size": args.world_size,
            "device": str(args.device),
            "distributed_type": state.distributed_type.value,
            "model_class": type(trainer.model_wrapped).__name__,
        }
        Path(output, "result.json").write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_worker(command: list[str], output: Path) -> dict[str, Any]:
    """Run the worker in a subprocess; its result.json, or a ValueError with the end of its error output."""
    output.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    (output / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not (output / "result.json").exists():
        raise ValueError(f"exit status {done.returncode}: {done.stderr[-1500:]}")
    return json.loads((output / "result.json").read_text())


def plain_reference(output: Path) -> tuple[list[str], dict[str, Any]]:
    """The worker's inputs and its run without a launcher (once for the three launchers).

    The model is the shipped MiniLM, a BERT: fsdp.yaml wraps its ``BertLayer``s as they are.
    """
    from rewardcollapse.training import default_backbone

    data = output / "data.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(row) + "\n" for row in distributed_rows()))
    inputs = [default_backbone(), str(data)]
    folder = output / "plain"
    if not (folder / "result.json").exists():
        launch_worker([sys.executable, __file__, "--distributed-worker", *inputs, str(folder)], folder)
    return inputs, json.loads((folder / "result.json").read_text())


def distributed_check(name: str) -> Check:
    """The check of one accelerate configuration: its step losses against the plain run's."""

    def check(sizes: Sizes, output: Path) -> tuple[bool, dict[str, Any]]:
        if sizes.device != "cuda":
            raise NotRun(NEEDS_CUDA)
        if name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            raise NotRun("deepspeed is not installed (pip install deepspeed)")
        inputs, plain = plain_reference(output.parent / "distributed")
        config = CONFIGS / "accelerate" / DISTRIBUTED[name]
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        launcher += ["--num_processes", "1", "--main_process_port", str(free_port())]
        launched = launch_worker([*launcher, __file__, "--distributed-worker", *inputs, str(output)], output)
        differences = [abs(a - b) / max(abs(b), 1.0) for a, b in zip(launched["losses"], plain["losses"], strict=True)]
        expected = "FSDP" if name == "fsdp" else "DEEPSPEED"
        figures = {
            "config": f"configs/accelerate/{DISTRIBUTED[name]}",
            "distributed_type": launched["distributed_type"],
            "model_class": launched["model_class"],
            "losses": launched["losses"],
            "plain_losses": plain["losses"],
            "max_relative_difference": max(differences),
            "tolerance": f"{LOSS_TOLERANCE} relative (absolute below 1), every step, float32 both",
        }
        passed = launched["distributed_type"] == expected and max(differences) <= LOSS_TOLERANCE
        return passed, figures

    return check


# --- 4. experiment -------------------------------------------------------------------------------------------------


def check_experiment(sizes: Sizes, output: Path) -> tuple[bool, dict[str, Any]]:
    """configs/minilm-gpu.yaml through the experiment's Python API; each utility's collapse index."""
    from rewardcollapse.experiments.run import ExperimentConfig, run_experiment

    config = ExperimentConfig.from_yaml(CONFIGS / "minilm-gpu.yaml")
    changes = dict(sizes.experiment)
    if "training" in changes:
        changes["training"] = {**config.training, **changes["training"]}
    config = dataclasses.replace(config, **changes)
    result = run_experiment(config, output)
    report = json.loads(Path(result.report_json).read_text())
    indices = {spec: entry["collapse_index"] for spec, entry in report["utilities"].items()}
    figures = {
        "config": "configs/minilm-gpu.yaml" + (" (tiny slice)" if changes else ""),
        "collapse_index": indices,
        "verdict": {spec: entry["verdict"] for spec, entry in report["utilities"].items()},
        "precision": report["precision"],
        "seconds": report["seconds"],
    }
    return all(index is not None for index in indices.values()), figures


# --- running and reporting -----------------------------------------------------------------------------------------

CHECKS: dict[str, Check] = {
    "exactness": check_exactness,
    "speed": check_speed,
    **{name: distributed_check(name) for name in DISTRIBUTED},
    "experiment": check_experiment,
}
"""Every section, in the order it runs (a test replaces entries to see a failure reported)."""


def run_section(check: Check, sizes: Sizes, output: Path) -> Section:
    """Run one check: its verdict, or ``not run`` with the reason, or ``failed`` with the error of a crash."""
    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    try:
        passed, figures = check(sizes, output)
        status = "passed" if passed else "failed"
    except NotRun as reason:
        status, figures = f"not run: {reason}", {}
    except Exception as error:  # a crash is a failed check, reported with the others
        status = "failed"
        figures = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    return Section(status, figures, time.perf_counter() - started)


def summary(name: str, section: Section) -> str:
    """The table's figures cell of one section."""
    figures = section.figures
    if "error" in figures:
        return figures["error"].splitlines()[0][:200]
    if not figures:
        return ""
    if name == "exactness":
        worst = {"float32": 0.0, "bf16": 0.0}
        for key, value in figures.items():
            if isinstance(value, dict) and "passed" in value:
                precision = key.split()[1]
                measured = [v for k, v in value.items() if k.endswith(("_abs", "_relative"))]
                worst[precision] = max(worst[precision], *measured)
        return (
            f"largest difference: float32 {worst['float32']:.1e} (<= {FLOAT32_TOLERANCE}); "
            f"bf16 {worst['bf16']:.1e} relative (<= {BF16_TOLERANCE}; {figures['bf16']})"
        )
    if name == "speed":
        runs, ratios = figures["runs"], figures["ratios"]
        rates = ", ".join(
            f"{run} {r['prompts_per_second']:.2f} prompts/s ({r['peak_memory_gib']:.1f} GiB)" for run, r in runs.items()
        )
        goal = {None: "goal: 0.5B run only", True: "goal met", False: "goal missed"}[figures["goal_met"]]
        return f"{rates}; auto/off {ratios['auto/off']:.2f}x, auto/TRL {ratios['auto/TRL']:.2f}x ({goal})"
    if name in DISTRIBUTED:
        return (
            f"{figures['distributed_type']}, {figures['model_class']}: step losses within "
            f"{figures['max_relative_difference']:.1e} of the plain run's (<= {LOSS_TOLERANCE})"
        )
    if name == "experiment":
        return ", ".join(f"{spec} {index:.3f}" for spec, index in figures["collapse_index"].items())
    return ""


def markdown(sections: dict[str, Section], header: str) -> str:
    lines = [header, "", "| check | status | figures | seconds |", "|---|---|---|---|"]
    for name, section in sections.items():
        cell = summary(name, section).replace("|", "/")
        lines.append(f"| {name} | {section.status} | {cell} | {section.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def environment(sizes: Sizes) -> dict[str, Any]:
    import transformers

    device = torch.cuda.get_device_name() if sizes.device == "cuda" else "cpu"
    return {"device": device, "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="gpu-check-output", help="folder of gpu_check.json and gpu_check.md")
    parser.add_argument("--tiny", action="store_true", help="the same code paths on the CPU at toy sizes (< 30 s)")
    parser.add_argument("--distributed-worker", nargs=3, metavar=("MODEL", "DATA", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.distributed_worker:
        distributed_worker(*args.distributed_worker)
        return 0
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA GPU (or --tiny for the CPU code-path check); no CUDA device here")
        return 2
    sizes = TINY if args.tiny else FULL
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections = {}
    for name, check in CHECKS.items():
        print(f"gpu check: {name} ...", file=sys.stderr, flush=True)
        sections[name] = run_section(check, sizes, output / name)
    seconds = time.perf_counter() - started
    report = {
        "mode": "tiny (CPU)" if args.tiny else "full (GPU)",
        **environment(sizes),
        "seconds": seconds,
        "sections": {name: dataclasses.asdict(section) for name, section in sections.items()},
    }
    (output / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    header = f"## GPU check ({report['mode']}: {report['device']}, torch {report['torch']}), {seconds:.0f} s"
    table = markdown(sections, header)
    (output / "gpu_check.md").write_text(table)
    print(table)
    print(f"wrote {output / 'gpu_check.json'} and {output / 'gpu_check.md'}")
    return 1 if any(section.status == "failed" for section in sections.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
