"""Each prompt encoded once for its K answers, against one sequence per answer and one per pair member.

Run: .venv/bin/python benchmarks/bench_shared_prompt.py [--prompt-tokens 512 64] [--answers 8] [--answer-tokens 128]

A random-initialised Llama-architecture decoder classifier (4 layers, hidden 256, 4 heads, vocabulary 1,000) trains
on prompts of P random tokens with K answers of A random tokens each, float32, one AdamW step per batch of
--prompts-per-step prompts, with the same ranking loss (U = log sigmoid on raw scores, the Bradley-Terry loss):

* cached: ``SharedLayout(method="cache")``: every prompt of the batch in one call with its keys and values kept,
  every answer's own tokens in a second call on them, P + K A tokens per prompt and no masked attention blocks;
* rows: ``SharedLayout(method="rows")`` (also under DDP or gradient checkpointing): one row [prompt][answer 1]
  ...[answer K] per prompt with the block mask, P + K A tokens, dense (masked) attention over the row;
* separate: ``score_batch``: one sequence per answer, K (P + A) tokens per prompt (this project's default path);
* pairwise: each ranked pair's two sequences, K (K - 1) (P + A) tokens per prompt (TRL's and the paper's way),
  --pairwise-chunk sequences per forward with a backward per chunk.

Each row of the table: median seconds per step over --steps timed steps after one warm-up, prompts per second, the
tokens the model runs per prompt, and the peak resident memory of the steps (each method in its own process).

--grid: the trainers themselves, as users run them. For every cell of P in {16, 64, 200, 512, 2048} prompt tokens,
K in {2, 4, 8} answers of A in {8, 40, 128} tokens, and {1, 4, 16, 64} prompts per step, on random words of a
word-level tokenizer (each word one token): ``RankingRewardTrainer`` with ``shared_prompt`` ``auto`` (its trial's
batches untimed) and ``off``, and TRL's ``RewardTrainer`` on the same prompts as all their ranked pairs, one
optimiser step over the same prompts, the same Bradley-Terry loss, a 2-layer Llama (hidden 64: attention-heavy,
the layout's hardest case), float32. A way whose step would run more than --max-step-tokens tokens is skipped and
said so. Cells are appended to --results as they finish (a rerun continues), then two tables and the issue's goals.

    .venv/bin/python benchmarks/bench_shared_prompt.py --grid --results grid.jsonl   # about 90 minutes on 2 cores

--short-prompts: 64 TRL pair rows of 51 prompts of 2 to 8 tokens, one step over the whole set, auto against off.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from bench_training import PeakMemory, synchronize  # the script's folder is on sys.path

METHODS = ("cached", "rows", "separate", "pairwise")


def model(seed: int = 0, *, vocabulary=1000, hidden=256, inner=688, layers=4, positions=2048):
    """A random Llama-architecture classifier with one output, 4 heads (by default the table's 4 layers, hidden 256)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocabulary,
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=positions,
        num_labels=1,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    return LlamaForSequenceClassification(config)


def batch_of(prompts: list[list[int]], answers: list[list[list[int]]]) -> dict[str, torch.Tensor]:
    """A RankingCollator-shaped batch: one sequence per answer (prompt + answer), right-padded with 0."""
    sequences = [p + a for p, group in zip(prompts, answers, strict=True) for a in group]
    k = len(answers[0])
    width = max(map(len, sequences))
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for n, seq in enumerate(sequences):
        ids[n, : len(seq)], mask[n, : len(seq)] = torch.tensor(seq), 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "answer_slot": torch.arange(len(sequences)),
        "answer_mask": torch.ones(len(prompts), k, dtype=torch.bool),
    }


def worker(args) -> dict:
    from rewardcollapse.loss import ranking_loss
    from rewardcollapse.training.scoring import SharedLayout, score_batch

    generator = torch.Generator().manual_seed(0)
    net = model().train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
    k, times, tokens = args.answers, [], 0
    memory = PeakMemory()
    for step in range(args.steps + 1):
        prompts = [
            torch.randint(1, 1000, (args.prompt_tokens,), generator=generator).tolist()
            for _ in range(args.prompts_per_step)
        ]
        answers = [
            [torch.randint(1, 1000, (args.answer_tokens,), generator=generator).tolist() for _ in range(k)]
            for _ in prompts
        ]
        if step == 1:
            memory.__enter__()
        start = time.perf_counter()
        optimizer.zero_grad()
        if args.worker == "pairwise":
            pairs = [(b, i, j) for b in range(len(prompts)) for i in range(k) for j in range(i + 1, k)]
            for c in range(0, len(pairs), args.pairwise_chunk // 2):
                chunk = pairs[c : c + args.pairwise_chunk // 2]
                batch = batch_of(
                    [prompts[b] for b, _, _ in chunk], [[answers[b][i], answers[b][j]] for b, i, j in chunk]
                )
                rewards = score_batch(net, batch)
                loss = ranking_loss(rewards, utility="logsigmoid", normalize="none", reduction="sum") / len(pairs)
                loss.backward()
                tokens += int(batch["attention_mask"].sum())
        else:
            batch = batch_of(prompts, answers)
            layout = {"cached": SharedLayout(method="cache"), "rows": SharedLayout(method="rows")}.get(args.worker)
            rewards = score_batch(net, batch, shared=layout)
            ranking_loss(rewards, utility="logsigmoid", normalize="none", pair_weighting="pair").backward()
            tokens += layout.stats.tokens if layout else int(batch["attention_mask"].sum())
        optimizer.step()
        if step >= 1:
            times.append(time.perf_counter() - start)
    memory.__exit__()
    per_prompt = tokens / ((args.steps + 1) * args.prompts_per_step)
    return {"seconds": statistics.median(times), "tokens_per_prompt": per_prompt, "peak": memory.peak}


# ---------------------------------------------------------------------------------------------------------------
# --grid: RankingRewardTrainer with shared_prompt auto and off, and TRL's RewardTrainer, over prompt and answer sizes

GRID = {"prompt_tokens": (16, 64, 200, 512, 2048), "answers": (2, 4, 8), "answer_tokens": (8, 40, 128)}
GRID_PROMPTS_PER_STEP = (1, 4, 16, 64)
GRID_WAYS = ("off", "auto", "trl")


def word_tokenizer(words: int = 1000):
    """A word-level tokenizer of ``w0`` ... ``w{words-1}``, pad and end-of-sequence tokens: each word one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i + 3 for i in range(words)}
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def grid_model(vocabulary: int, seed: int = 0):
    """The grid's decoder: a random Llama-architecture classifier, 2 layers, hidden 64, 4 heads (attention-heavy)."""
    return model(seed, vocabulary=vocabulary, hidden=64, inner=172, layers=2, positions=4096)


def grid_rows(prompts: int, k: int, prompt_tokens: int, answer_tokens: int, seed: int = 0):
    """``prompts`` rankings of random words, as ranking rows and as TRL's pair rows (every ranked pair, a above b)."""
    rng = np.random.default_rng(seed)

    def words(n):
        return " ".join(f"w{i}" for i in rng.integers(0, 1000, n))

    rankings = [
        {"prompt": words(prompt_tokens), "responses": [" " + words(answer_tokens) for _ in range(k)]}
        for _ in range(prompts)
    ]
    pairs = [
        {"prompt": r["prompt"], "chosen": r["responses"][a], "rejected": r["responses"][b]}
        for r in rankings
        for a in range(k)
        for b in range(a + 1, k)
    ]
    return rankings, pairs


class _StepClock:
    """Seconds of each optimiser step, from ``on_step_begin`` to ``on_step_end`` (collation outside the clock)."""

    def __init__(self):
        from transformers import TrainerCallback

        times = self.times = []

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                synchronize()
                self.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                synchronize()
                times.append(time.perf_counter() - self.start)

        self.callback = Clock()


def _trainer_settings(cell, steps, name):
    """What both trainers share: float32, AdamW, data in order, the sequence prompt + answer + eos, nothing saved."""
    return {
        "output_dir": f"/tmp/bench_shared_prompt_grid_{name}",
        "max_steps": steps,
        "max_length": cell["prompt_tokens"] + cell["answer_tokens"] + 1,
        "learning_rate": 1e-5,
        "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_strategy": "no",
        "dataloader_pin_memory": False,
        "disable_dropout": True,
        "gradient_checkpointing": False,
        "train_sampling_strategy": "sequential",
    }


def run_grid_way(way: str, cell: dict, steps: int):
    """Train ``steps`` steps one way on the cell's data: (each step's seconds, what auto kept or None)."""
    import datasets

    datasets.disable_progress_bars()
    tokenizer = word_tokenizer()
    b, k = cell["prompts_per_step"], cell["answers"]
    rankings, pairs = grid_rows(b * steps, k, cell["prompt_tokens"], cell["answer_tokens"])
    clock = _StepClock()
    model = grid_model(len(tokenizer))
    if way == "trl":
        from trl import RewardConfig, RewardTrainer

        config = RewardConfig(
            **_trainer_settings(cell, steps, way),
            per_device_train_batch_size=b * k * (k - 1) // 2,
            bf16=False,
            eos_token=tokenizer.eos_token,
        )
        trainer = RewardTrainer(
            model=model, args=config, train_dataset=datasets.Dataset.from_list(pairs), processing_class=tokenizer
        )
    else:
        from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

        config = RankingRewardConfig(
            **_trainer_settings(cell, steps, way),
            per_device_train_batch_size=b,
            shared_prompt=way,
            utility="logsigmoid",  # TRL's loss: the mean over ranked pairs of -log sigmoid(r_a - r_b)
            normalize="none",
            pair_weighting="pair",
            sequence_format="trl",
            precision="fp32",
            forward_batch_size=None,
        )
        trainer = RankingRewardTrainer(
            model=model, args=config, train_dataset=datasets.Dataset.from_list(rankings), processing_class=tokenizer
        )
    trainer.add_callback(clock.callback)
    with contextlib.redirect_stdout(io.StringIO()):  # the trainers' end-of-training lines, 3 per cell
        trainer.train()
    trial = getattr(trainer, "layout_trial", None)
    return clock.times, None if trial is None else trial.record()


def _timed_steps(tokens_per_step: int) -> int:
    """Timed steps of a cell: more where a step is short (milliseconds), so that the median steadies."""
    return 20 if tokens_per_step <= 4096 else 6 if tokens_per_step <= 32768 else 3


def grid_cell(cell: dict, max_step_tokens: int) -> dict:
    """One cell: seconds per step of each way (the least of the timed steps), or why a way was not run.

    The least, not the median: a step's own cost is fixed, and what varies here is delay added from outside (the
    scheduler, the allocator, the garbage collector), and it varies from run to run as well as from step to step:
    the same 10 ms step of the same way measured 9.8 to 13.5 ms as the least of 20 steps in six runs. So cells of
    up to 4,096 tokens per step run each way 3 times, cells of up to 32,768 twice, in turn (off, auto, TRL, off,
    ...), and each way's least step over its runs is taken. auto's steps are timed after its trial.
    """
    p, k, a, b = (cell[n] for n in ("prompt_tokens", "answers", "answer_tokens", "prompts_per_step"))
    separate = b * k * (p + a + 1)  # tokens of a step as separate sequences; TRL runs K - 1 times as many
    tokens = {"off": separate, "auto": separate, "trl": separate * (k - 1)}
    timed = _timed_steps(separate)
    result = dict(cell, timed_steps=timed)
    # auto's trial: up to 1 + 8 batches where they take milliseconds, 1 + 2 where they take longer (LayoutTrial)
    trial_batches = 9 if separate <= 32768 else 3
    for repeat in range(3 if separate <= 4096 else 2 if separate <= 32768 else 1):
        for way in GRID_WAYS:
            if tokens[way] > max_step_tokens:
                result[way] = {"skipped": f"{tokens[way]:,} tokens per step > --max-step-tokens {max_step_tokens:,}"}
                continue
            times, trial = run_grid_way(way, cell, (trial_batches if way == "auto" else 1) + timed)
            before = 1 if trial is None or not trial["timed_batches"] else 1 + trial["timed_batches"]
            if trial is not None and trial["chosen"] is None:
                raise SystemExit(f"auto's trial did not finish in {trial_batches} batches: {trial['reason']}")
            seconds, first = min(times[before:]), sum(times[:before])
            if repeat and result[way]["seconds"] <= seconds:
                continue
            result[way] = {"seconds": seconds, "first_steps": first}
            if trial is not None:
                result[way]["kept"] = trial["chosen"]
                result[way]["timed_in_trial"] = trial["timed_batches"] > 0
    return result


def grid(args) -> None:
    import transformers

    transformers.logging.set_verbosity_error()  # "the tokenizer has new PAD/BOS/EOS tokens", once per trainer
    cells = [
        {"prompt_tokens": p, "answers": k, "answer_tokens": a, "prompts_per_step": b}
        for p in args.grid_prompt_tokens
        for k in args.grid_answers
        for a in args.grid_answer_tokens
        for b in args.grid_prompts_per_step
    ]
    done = {}
    if args.results:
        os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    if args.results and os.path.exists(args.results):
        with open(args.results) as handle:
            for line in handle:
                cell = json.loads(line)
                done[_key(cell)] = cell
    for cell in cells:
        if _key(cell) in done:
            continue
        started = time.perf_counter()
        result = grid_cell(cell, args.max_step_tokens)
        result["cell_seconds"] = round(time.perf_counter() - started, 1)
        done[_key(cell)] = result
        print(json.dumps(result), file=sys.stderr, flush=True)
        if args.results:
            with open(args.results, "a") as handle:
                handle.write(json.dumps(result) + "\n")
    print(grid_table([done[_key(c)] for c in cells], args))


def _key(cell: dict) -> tuple:
    return tuple(cell[n] for n in ("prompt_tokens", "answers", "answer_tokens", "prompts_per_step"))


def _speedup(result: dict, over: str) -> float | None:
    """auto's prompts/s over ``over``'s in a cell (the same prompts per step), None where either did not run."""
    auto, other = result["auto"], result[over]
    return other["seconds"] / auto["seconds"] if "seconds" in auto and "seconds" in other else None


def grid_table(results: list[dict], args) -> str:
    """Two tables, prompts (P, A, K) down and prompts per step across: auto over off (with the way auto kept: o, c,
    r, an asterisk where the estimate kept it untimed) and auto over TRL; then the issue's goals, each with its cells.
    """
    per_step = sorted({r["prompts_per_step"] for r in results})
    shapes = sorted({(r["prompt_tokens"], r["answer_tokens"], r["answers"]) for r in results})
    index = {(r["prompt_tokens"], r["answer_tokens"], r["answers"], r["prompts_per_step"]): r for r in results}
    header = "| P | A | K | " + " | ".join(f"{b} prompt{'s' if b > 1 else ''}/step" for b in per_step) + " |"
    rule = "|---|---|---|" + "---|" * len(per_step)

    def entry(r, over):
        if r is None:
            return ""
        ratio = _speedup(r, over)
        if ratio is None:
            return "skipped"
        if over == "trl":
            return f"{ratio:.2f}"
        kept = r["auto"]["kept"][0] + ("" if r["auto"]["timed_in_trial"] else "*")
        return f"{ratio:.2f} {kept}"

    lines = [
        f"\nPrompts/s of `auto` over `off` ({len(results)} cells; 2-layer Llama, hidden 64, float32, "
        f"{torch.get_num_threads()} threads; the way auto kept: o = off, c = cache, r = rows, * = by the estimate, "
        f"untimed; skipped = over {args.max_step_tokens:,} tokens per step):\n",
        header,
        rule,
    ]
    for p, a, k in shapes:
        cells = [entry(index.get((p, a, k, b)), "off") for b in per_step]
        lines.append(f"| {p} | {a} | {k} | " + " | ".join(cells) + " |")
    lines += [
        "\nPrompts/s of `auto` over TRL's `RewardTrainer` (same prompts per step, all their pairs):\n",
        header,
        rule,
    ]
    for p, a, k in shapes:
        cells = [entry(index.get((p, a, k, b)), "trl") for b in per_step]
        lines.append(f"| {p} | {a} | {k} | " + " | ".join(cells) + " |")

    def name(r):
        return f"P {r['prompt_tokens']} A {r['answer_tokens']} K {r['answers']} x{r['prompts_per_step']}"

    def listed(rows, over):
        return ", ".join(f"{name(r)}: {_speedup(r, over):.2f} ({r['auto']['kept']})" for r in rows) or "none"

    off = [r for r in results if _speedup(r, "off") is not None]
    trl = [r for r in results if _speedup(r, "trl") is not None]
    low = [r for r in off if _speedup(r, "off") < 0.95]
    goal = [r for r in off if _key(r) == (512, 8, 128, 16)]
    long_k8 = [r for r in trl if r["answers"] == 8 and r["prompt_tokens"] >= 200]
    k2 = [r for r in trl if r["answers"] == 2]
    lines += [
        "",
        f"* auto >= 0.95x off in every cell: {len(off) - len(low)} of {len(off)} cells; below: {listed(low, 'off')}",
        f"* >= 3x off at P 512, K 8, A 128, 16 prompts/step: {listed(goal, 'off')}",
        "* >= 10x TRL at K 8, P >= 200 (cells TRL ran): lowest "
        + (f"{min(_speedup(r, 'trl') for r in long_k8):.2f}" if long_k8 else "-")
        + f"; below 10: {listed([r for r in long_k8 if _speedup(r, 'trl') < 10], 'trl')}",
        f"* K 2, no slower than TRL: {sum(_speedup(r, 'trl') >= 1 for r in k2)} of {len(k2)} cells; slower: "
        + listed([r for r in k2 if _speedup(r, "trl") < 1], "trl"),
    ]
    return "\n".join(lines)


def short_prompts(args) -> None:
    """The issue's TRL user: 64 pair rows of 51 short prompts, one step over the whole set, auto against off."""
    import datasets
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)

    def words(n):
        return " ".join(f"w{i}" for i in rng.integers(0, 1000, n))

    rows = []
    for p in range(51):  # 38 prompts with one pair, 13 with two (a > b, b > c: a ranking of three)
        prompt, answers = words(rng.integers(2, 9)), [" " + words(rng.integers(1, 13)) for _ in range(3)]
        rows.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1]})
        if p < 13:
            rows.append({"prompt": prompt, "chosen": answers[1], "rejected": answers[2]})
    tokenizer = word_tokenizer()
    results = {}
    for way in ("off", "auto"):
        torch.manual_seed(0)
        config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=172,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_labels=1,
            pad_token_id=0,
            attn_implementation="sdpa",
        )
        clock = _StepClock()
        steps = 1 + 8 + 10  # auto's trial: up to 9 batches; then 10 steps of the way it kept
        settings = _trainer_settings({"prompt_tokens": 8, "answer_tokens": 12}, steps, f"short_{way}")
        trainer = RankingRewardTrainer(
            model=Qwen2ForSequenceClassification(config),
            args=RankingRewardConfig(**settings, per_device_train_batch_size=51, shared_prompt=way, precision="fp32"),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        trainer.add_callback(clock.callback)
        with contextlib.redirect_stdout(io.StringIO()):
            loss = trainer.train().training_loss
        trial = trainer.layout_trial
        results[way] = (clock.times, 1 if trial is None else trial.batches, loss, trainer.layout)
    print("\n## 64 TRL rows of 51 short prompts (2 to 8 tokens), one step over the set, tiny Qwen2, float32\n")
    print("| shared_prompt | first step (s) | trial's steps (s) | later steps, median (s) | train loss | layout |")
    print("|---|---|---|---|---|---|")
    for way, (times, before, loss, layout) in results.items():
        later = statistics.median(times[before:])
        print(f"| {way} | {times[0]:.3f} | {sum(times[:before]):.3f} | {later:.4f} | {loss:.6f} | {layout} |")
    (off, *_), (auto, before, *_) = results["off"], results["auto"]
    later = statistics.median(off[1:]) / statistics.median(auto[before:])
    print(f"\nauto / off prompts/s, steps after auto's trial: {later:.2f}; first step: {off[0] / auto[0]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[512, 64])
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=128)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--pairwise-chunk", type=int, default=16, help="sequences per pairwise forward pass")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    grid_options = parser.add_argument_group("--grid: auto and off against TRL's RewardTrainer over sizes")
    grid_options.add_argument("--grid", action="store_true", help="run the grid (the cells below) instead")
    grid_options.add_argument("--grid-prompt-tokens", type=int, nargs="+", default=list(GRID["prompt_tokens"]))
    grid_options.add_argument("--grid-answers", type=int, nargs="+", default=list(GRID["answers"]))
    grid_options.add_argument("--grid-answer-tokens", type=int, nargs="+", default=list(GRID["answer_tokens"]))
    grid_options.add_argument("--grid-prompts-per-step", type=int, nargs="+", default=list(GRID_PROMPTS_PER_STEP))
    grid_options.add_argument(
        "--max-step-tokens", type=int, default=131072, help="skip a way whose step would run more tokens than this"
    )
    grid_options.add_argument("--results", help="JSON lines file: each cell appended when done, done cells skipped")
    grid_options.add_argument(
        "--short-prompts", action="store_true", help="64 TRL rows of 51 short prompts in one step, auto against off"
    )
    args = parser.parse_args()
    if args.grid:
        grid(args)
        return
    if args.short_prompts:
        short_prompts(args)
        return
    if args.worker:
        args.prompt_tokens = args.prompt_tokens[0]
        print(json.dumps(worker(args)))
        return
    torch_threads = torch.get_num_threads()
    print(
        f"\n## Shared prompt, Llama-architecture decoder (4 layers, hidden 256), float32, {torch_threads} threads, "
        f"K = {args.answers}, A = {args.answer_tokens}, {args.prompts_per_step} prompts/step\n"
    )
    print("| P | method | tokens / prompt | s / step | prompts / s | peak RSS (GiB) | prompts/s vs separate |")
    print("|---|---|---|---|---|---|---|")
    for p in args.prompt_tokens:
        results = {}
        for method in args.methods:
            command = [sys.executable, __file__, "--worker", method, "--prompt-tokens", str(p)]
            command += ["--answers", str(args.answers), "--answer-tokens", str(args.answer_tokens)]
            command += ["--prompts-per-step", str(args.prompts_per_step), "--steps", str(args.steps)]
            command += ["--pairwise-chunk", str(args.pairwise_chunk)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[method] = json.loads(out.strip().splitlines()[-1])
        base = results.get("separate")
        for method, r in results.items():
            rate = args.prompts_per_step / r["seconds"]
            ratio = f"{rate / (args.prompts_per_step / base['seconds']):.2f}x" if base else "-"
            print(
                f"| {p} | {method} | {r['tokens_per_prompt']:.0f} | {r['seconds']:.2f} | {rate:.3f} | "
                f"{r['peak'] / 2**30:.2f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
