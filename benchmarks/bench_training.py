"""Training speed: one forward pass per answer (RankingRewardTrainer) against forwarding every pair's two sequences.

Run: .venv/bin/python benchmarks/bench_training.py [--prompts-per-step 8] [--answers 8] [--tokens 128]

Both methods train the shipped MiniLM backbone (float32; --bf16 for bfloat16 autocast) on the same prompts, each
with K ranked answers of exactly --tokens tokens (prompt + answer), with the same loss: minus the mean over ranked
pairs of U(sigmoid(R_i) - sigmoid(R_j)), U = -1/x with eps = 0.1, and the same AdamW step.

* ours: ``RankingRewardTrainer``: the K answers of each prompt forwarded once, all K(K-1)/2 pairs formed from the
  scores (forward chunks of --chunk sequences, one backward per step).
* pairwise: as in TRL's RewardTrainer and the paper's code: each ranked pair's chosen and rejected sequences are
  forwarded together, --chunk sequences at a time, with a backward per chunk (gradient accumulation keeps the
  memory bounded), then one optimiser step over all pairs of the step's prompts. Its sequences are tokenised
  before the clock starts, as TRL tokenises its dataset ahead of training; ours tokenise inside the timed step.

Each method runs in its own process; the table gives seconds per optimiser step (median of the timed steps after
one warm-up step), prompts per second, the ratio, and the peak memory: the process's resident set during the steps
on CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
It also times the loss alone (forward + backward of ``ranking_loss`` on a (prompts, K) matrix) against a step.

Against TRL's own ``RewardTrainer`` (``--trl``), at each K of --answers-list:

    .venv/bin/python benchmarks/bench_training.py --trl [--answers-list 2 4 8] [--prompts-per-step 8] [--steps 3]
        [--tokens 128] [--trl-accumulation 1]

Both trainers read the same data, TRL's preference rows (prompt, chosen, rejected): each prompt's K answers as its
K(K-1)/2 ranked pairs; ours merges each prompt's pairs back into its ranking (``load_rankings``) and forwards its K
answers once, TRL forwards each pair's chosen and rejected, K(K-1) sequences per prompt. Both are real
``trainer.train()`` runs timed from ``on_step_begin`` to ``on_step_end`` (median of --steps after one warm-up step,
so batch collation is outside the clock for both), and both minimise the same Bradley-Terry loss, the mean over
all ranked pairs of -log sigmoid(r_chosen - r_rejected): ours with ``utility="logsigmoid"``, ``normalize="none"``,
``pair_weighting="pair"``; the table's mean training loss shows that the two runs agree. Held equal:

* one optimiser step covers the same --prompts-per-step prompts: TRL's ``per_device_train_batch_size`` is their
  prompts * K(K-1)/2 pairs, read in order (``train_sampling_strategy="sequential"`` for both), and TRL runs the
  chosen and rejected of its whole batch in one forward, as ours runs its K answers of every prompt in one forward
  (``forward_batch_size=None``). If TRL's one forward does not fit in memory (K = 8 forwards 56 sequences per
  prompt), --trl-accumulation N splits TRL's step into N micro-batches (``gradient_accumulation_steps``), so a step
  still covers the same prompts; ours keeps its single forward.
* the model (the shipped MiniLM or --backbone, same seed), float32 (TRL's ``RewardConfig`` defaults to
  ``bf16=True``: set to False; --bf16 gives both bf16), ``use_cpu`` without a GPU, AdamW at lr 1e-5 with the same
  linear schedule and gradient clipping, dropout off (TRL's ``disable_dropout=True``, ours too), no gradient
  checkpointing (TRL's default is on: off for both, so neither recomputes its forward).
* the tokens: every prompt + answer is exactly --tokens tokens with ``sequence_format="trl"`` (one text, prompt +
  answer + end-of-sequence token), so no padding. TRL appends ``eos_token`` to every text and fails with a
  TypeError (``str.endswith(None)``) on a tokenizer without one; MiniLM is BERT, with no eos token, so both are
  given ``[SEP]`` (TRL through ``RewardConfig(eos_token="[SEP]")``, which also sets the model's ``eos_token_id``).
  TRL drops rows longer than ``max_length`` instead of cutting them, so the answers are built to fit exactly; a
  check fails the run if either trainer dropped or cut a sequence.

The first table gives each run's seconds per step, prompts per second, milliseconds per forwarded sequence (the whole
step over its sequences, so it includes the cost that does not grow with them: AdamW over all parameters, half of
MiniLM's in the word embeddings) and peak memory; the second, ours / TRL. At K = 2 both forward the same 2 sequences
per prompt and do the same computation, so the ratio there shows the timing noise.
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import torch

METHODS = ("ours", "pairwise")
TRL_METHODS = ("ours", "trl")
TRL_LABELS = {"ours": "ours", "trl": "TRL RewardTrainer"}
UTILITY = "-1/x"
LEARNING_RATE = 1e-5
SAME_AS_TRL = {"disable_dropout": True, "gradient_checkpointing": False, "train_sampling_strategy": "sequential"}
"""Settings both trainers of ``--trl`` share beyond :func:`trainer_arguments` (TRL's checkpointing default is on)."""


def synchronize():
    """Wait for the GPU's queued work, so that wall-clock step times are real."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PeakMemory:
    """Samples the resident set size of this process every few milliseconds while active."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_rows(n_prompts, k, tokenizer, tokens, seed=0):
    """Prompts whose K answers are random real words, cut so that every (prompt, answer) has exactly `tokens`."""
    rng = np.random.default_rng(seed)
    vocabulary = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 3][:5000]
    rows = []
    for p in range(n_prompts):
        prompt = f"Question {p}: explain what the following passage says about its subject."
        answers = [" ".join(rng.choice(vocabulary, size=3 * tokens)) for _ in range(k)]
        rows.append({"prompt": prompt, "responses": answers})
    return rows


def preference_rows(n_prompts, k, tokenizer, tokens, seed=0):
    """TRL preference rows: each prompt's K answers as its K(K-1)/2 ranked pairs, answer a above b for a < b.

    The answers are random one-token words, as many as make prompt + answer + end-of-sequence token exactly `tokens`
    tokens: TRL drops (does not cut) rows longer than ``max_length``, so every row must fit it exactly.
    """
    rng = np.random.default_rng(seed)
    # Sorted: a tokenizer's vocabulary dict can come in a different order in each process.
    candidates = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 3)
    pieces = tokenizer([" " + w for w in candidates], add_special_tokens=False)["input_ids"]
    vocabulary = [w for w, ids in zip(candidates, pieces, strict=True) if len(ids) == 1]
    eos = tokenizer.eos_token
    rows = []
    for p in range(n_prompts):
        prompt = f"Question {p}: explain what the following passage says about its subject."
        room = tokens - len(tokenizer(prompt + eos)["input_ids"])
        if room < 1:
            raise SystemExit(f"--tokens {tokens} leaves no room for an answer after the prompt; use more")
        answers = [" " + " ".join(rng.choice(vocabulary, size=room)) for _ in range(k)]
        better, worse = np.triu_indices(k, 1)
        rows += [
            {"prompt": prompt, "chosen": answers[a], "rejected": answers[b]} for a, b in zip(better, worse, strict=True)
        ]
    lengths = {len(ids) for ids in tokenizer([r["prompt"] + r["rejected"] + eos for r in rows])["input_ids"]}
    if lengths != {tokens}:
        raise SystemExit(f"preference rows should all have {tokens} tokens, got lengths {sorted(lengths)}")
    return rows


def trainer_arguments(args, name):
    """Arguments every Trainer here shares: float32 (or --bf16), the same AdamW steps, no saving or logging."""
    return {
        "output_dir": f"/tmp/bench_training_{name}",
        "max_length": args.tokens,
        "max_steps": args.steps + 1,
        "learning_rate": LEARNING_RATE,
        "bf16": args.bf16,
        "use_cpu": not torch.cuda.is_available(),
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_strategy": "no",
        "dataloader_pin_memory": False,
        # On a GPU, tokenising the next batch in worker processes overlaps it with the step, as users run it.
        "dataloader_num_workers": 2 if torch.cuda.is_available() else 0,
    }


def step_clock(step_times, memory):
    """A TrainerCallback that appends each optimiser step's seconds to `step_times` and starts `memory` at step 1."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            if state.global_step == 1:  # after the warm-up step
                memory.__enter__()
            synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kwargs):
            synchronize()
            step_times.append(time.perf_counter() - self.start)

    return Clock()


def run_ours(rows, args, tokenizer, model):
    import datasets

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

    datasets.disable_progress_bars()
    step_times, memory = [], PeakMemory()
    config = RankingRewardConfig(
        **trainer_arguments(args, "ours"),
        utility=UTILITY,
        forward_batch_size=args.chunk,
        per_device_train_batch_size=args.prompts_per_step,
    )
    data = load_rankings(datasets.Dataset.from_list(rows))
    trainer = RankingRewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.add_callback(step_clock(step_times, memory))
    trainer.train()
    memory.__exit__()
    truncated, sequences = trainer.truncation_counts()
    assert truncated == sequences, "every sequence should be cut to exactly --tokens tokens"
    return step_times[1:], memory.peak


def run_ours_as_trl(rows, args, tokenizer, model):
    """``RankingRewardTrainer`` on TRL's preference rows with TRL's loss and input format: (step times, peak, loss)."""
    import datasets

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

    datasets.disable_progress_bars()
    step_times, memory = [], PeakMemory()
    config = RankingRewardConfig(
        **trainer_arguments(args, "ours_as_trl"),
        **SAME_AS_TRL,
        utility="logsigmoid",
        normalize="none",
        pair_weighting="pair",
        sequence_format="trl",
        precision="bf16" if args.bf16 else "fp32",
        forward_batch_size=None,  # all K answers of every prompt in one forward, as TRL runs its batch
        per_device_train_batch_size=args.prompts_per_step,
    )
    data = load_rankings(datasets.Dataset.from_list(rows))  # each prompt's pairs merged back into its ranking
    if len(data) != args.prompts_per_step * (args.steps + 1) or set(map(len, data["responses"])) != {args.answers}:
        raise SystemExit("the preference rows did not merge back into one ranking of K answers per prompt")
    trainer = RankingRewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.add_callback(step_clock(step_times, memory))
    loss = trainer.train().training_loss
    memory.__exit__()
    truncated, sequences = trainer.truncation_counts()
    if truncated or sequences != args.answers * len(data):
        raise SystemExit(f"ours cut {truncated} of {sequences} sequences; every one should fit --tokens exactly")
    return step_times[1:], memory.peak, loss


def run_trl(rows, args, tokenizer, model):
    """TRL's own ``RewardTrainer`` on the preference rows: (step times, peak, loss)."""
    import datasets
    from trl import RewardConfig, RewardTrainer

    datasets.disable_progress_bars()
    pairs = args.prompts_per_step * args.answers * (args.answers - 1) // 2
    if pairs % args.trl_accumulation:
        raise SystemExit(f"--trl-accumulation {args.trl_accumulation} must divide the {pairs} pairs of a step")
    step_times, memory = [], PeakMemory()
    config = RewardConfig(
        **trainer_arguments(args, "trl"),
        **SAME_AS_TRL,
        per_device_train_batch_size=pairs // args.trl_accumulation,
        gradient_accumulation_steps=args.trl_accumulation,
        eos_token=tokenizer.eos_token,  # [SEP] for BERT, which has no eos token of its own (see `worker`)
    )
    data = datasets.Dataset.from_list(rows)
    trainer = RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    if len(trainer.train_dataset) != len(rows):
        raise SystemExit(f"TRL dropped {len(rows) - len(trainer.train_dataset)} rows longer than --tokens")
    trainer.add_callback(step_clock(step_times, memory))
    loss = trainer.train().training_loss
    memory.__exit__()
    return step_times[1:], memory.peak, loss


def run_pairwise(rows, args, tokenizer, model):
    from rewardcollapse.loss import ranking_loss
    from rewardcollapse.training import RankingCollator, score_batch

    collator = RankingCollator(tokenizer, max_length=args.tokens)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    k = args.answers
    i, j = np.triu_indices(k, 1)  # answer i is ranked above j for i < j
    step_times, memory = [], PeakMemory()
    per_chunk = max(1, args.chunk // 2)
    for step in range(args.steps + 1):
        prompts = rows[step * args.prompts_per_step : (step + 1) * args.prompts_per_step]
        # Every ranked pair becomes its own two-answer row: chosen first, rejected second. Tokenised before the
        # clock starts (TRL tokenises its dataset ahead of training), so only our trainer pays for tokenising.
        pair_rows = [
            {"prompt": row["prompt"], "responses": [row["responses"][a], row["responses"][b]]}
            for row in prompts
            for a, b in zip(i, j, strict=True)
        ]
        chunks = [collator(pair_rows[c : c + per_chunk]) for c in range(0, len(pair_rows), per_chunk)]
        if step == 1:
            memory.__enter__()
        synchronize()
        start = time.perf_counter()
        optimizer.zero_grad()
        for chunk in chunks:
            batch = {name: v.to(device) if torch.is_tensor(v) else v for name, v in chunk.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                rewards = score_batch(model, batch)  # (pairs in chunk, 2)
            chunk_loss = ranking_loss(rewards, utility=UTILITY, eps=0.1, reduction="sum") / len(pair_rows)
            chunk_loss.backward()
        optimizer.step()
        synchronize()
        step_times.append(time.perf_counter() - start)
    memory.__exit__()
    return step_times[1:], memory.peak


def loss_cost(args):
    """Seconds for the loss's forward and backward on a (prompts, K) matrix, on the training device: median of 200."""
    from rewardcollapse.loss import ranking_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rewards = torch.randn(args.prompts_per_step, args.answers, device=device, requires_grad=True)
    times = []
    for _ in range(200):
        synchronize()
        start = time.perf_counter()
        ranking_loss(rewards, utility=UTILITY, eps=0.1).backward()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[20:])


def worker(args):
    from rewardcollapse.training import load_reward_model

    torch.manual_seed(0)
    model, tokenizer = load_reward_model(args.backbone)
    n_prompts = args.prompts_per_step * (args.steps + 1)
    result = {}
    if args.trl:
        if tokenizer.eos_token is None:  # BERT: TRL appends eos_token to every text, so both end with [SEP]
            tokenizer.eos_token = tokenizer.sep_token
        rows = preference_rows(n_prompts, args.answers, tokenizer, args.tokens)
        run = run_trl if args.worker == "trl" else run_ours_as_trl
        times, peak, result["loss"] = run(rows, args, tokenizer, model)
    else:
        rows = make_rows(n_prompts, args.answers, tokenizer, args.tokens)
        run = run_ours if args.worker == "ours" else run_pairwise
        times, peak = run(rows, args, tokenizer, model)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()  # the GPU's peak, not the host process's
    result |= {"step_seconds": statistics.median(times), "steps": len(times), "peak_memory": peak}
    print(json.dumps(result))


def run_worker(method, args, *, steps, answers):
    """Run one method in a fresh process and return its JSON result."""
    command = [sys.executable, __file__, "--worker", method, "--steps", str(steps), "--answers", str(answers)]
    for name in ("prompts_per_step", "tokens", "chunk", "backbone", "trl_accumulation"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command += ["--bf16"] if args.bf16 else []
    command += ["--trl"] if args.trl else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_with_trl(args):
    """Ours against TRL's RewardTrainer at each K of --answers-list: one table of steps, one of ratios."""
    from rewardcollapse.training.models import backbone_label

    results = {}
    for k in args.answers_list:
        for method in TRL_METHODS:
            print(f"K = {k}: {TRL_LABELS[method]} ...", file=sys.stderr, flush=True)
            results[k, method] = run_worker(method, args, steps=args.steps, answers=k)

    b = args.prompts_per_step
    precision = "bf16" if args.bf16 else "float32"
    print(
        f"\n## Training throughput against TRL's RewardTrainer, {backbone_label(args.backbone)}, {precision}, "
        f"{b} prompts/step, {args.tokens} tokens/sequence, Bradley-Terry loss\n"
    )
    memory = "peak GPU memory" if torch.cuda.is_available() else "peak RSS"
    print(f"| K | method | sequences / prompt | s / step | prompts / s | ms / sequence | {memory} (GiB) | mean loss |")
    print("|---|---|---|---|---|---|---|---|")
    per_sequence = {}
    for (k, method), r in results.items():
        sequences = k if method == "ours" else k * (k - 1)
        per_sequence[k, method] = r["step_seconds"] / (b * sequences)
        print(
            f"| {k} | {TRL_LABELS[method]} | {sequences} | {r['step_seconds']:.2f} (median of {r['steps']}) | "
            f"{b / r['step_seconds']:.2f} | {1e3 * per_sequence[k, method]:.1f} | {r['peak_memory'] / 2**30:.2f} | "
            f"{r['loss']:.5f} |"
        )
    print("\n| K | prompts / s, ours / TRL | ms / sequence, ours / TRL | forward-pass bound |")
    print("|---|---|---|---|")
    for k in args.answers_list:
        speed = results[k, "trl"]["step_seconds"] / results[k, "ours"]["step_seconds"]
        cost = per_sequence[k, "ours"] / per_sequence[k, "trl"]
        print(f"| {k} | {speed:.2f}x | {cost:.2f} | {k - 1}x |")
    if args.trl_accumulation > 1:
        print(f"\nTRL's steps ran as {args.trl_accumulation} accumulated micro-batches; ours in one forward.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=16, help="sequences per forward pass, both methods")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--pairwise-steps", type=int, default=2, help="timed pairwise steps (each is ~7x longer)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (only fast with AMX or a GPU)")
    parser.add_argument("--backbone", default=None, help="model name or path (default: the shipped MiniLM)")
    parser.add_argument("--trl", action="store_true", help="against TRL's RewardTrainer, each K of --answers-list")
    parser.add_argument("--answers-list", type=int, nargs="+", default=[2, 4, 8], help="the K values of --trl")
    parser.add_argument(
        "--trl-accumulation", type=int, default=1, help="--trl: split TRL's step into this many micro-batches"
    )
    parser.add_argument("--worker", choices=(*METHODS, "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backbone is None:
        from rewardcollapse.training import default_backbone

        args.backbone = default_backbone()
    if args.worker:
        worker(args)
        return
    if args.trl:
        compare_with_trl(args)
        return

    results = {}
    for method in METHODS:
        steps = args.steps if method == "ours" else args.pairwise_steps
        results[method] = run_worker(method, args, steps=steps, answers=args.answers)

    k, b = args.answers, args.prompts_per_step
    setting = f"K = {k} answers of {args.tokens} tokens, {b} prompts/step"
    precision = "bf16 autocast" if args.bf16 else "float32"
    print(f"\n## Training throughput, MiniLM, {precision}, {setting}\n")
    memory = "peak GPU memory" if torch.cuda.is_available() else "peak RSS"
    print(f"| method | forward passes / prompt | s / step | prompts / s | {memory} (GiB) |")
    print("|---|---|---|---|---|")
    passes = {"ours": k, "pairwise": k * (k - 1)}
    for method, r in results.items():
        rate = b / r["step_seconds"]
        print(
            f"| {method} | {passes[method]} | {r['step_seconds']:.2f} (median of {r['steps']}) | {rate:.2f} | "
            f"{r['peak_memory'] / 2**30:.2f} |"
        )
    ratio = results["pairwise"]["step_seconds"] / results["ours"]["step_seconds"]
    print(f"\nspeed-up (prompts/s, ours / pairwise): {ratio:.2f}x (forward-pass bound: {passes['pairwise'] / k:.0f}x)")
    seconds = loss_cost(args)
    share = seconds / results["ours"]["step_seconds"]
    print(f"loss forward + backward on ({b}, {k}): {seconds * 1e3:.3f} ms = {100 * share:.4f}% of our training step")


if __name__ == "__main__":
    main()
