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
UTILITY = "-1/x"


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


def run_ours(rows, args, tokenizer, model):
    import datasets
    from transformers import TrainerCallback

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardConfig, RankingRewardTrainer

    datasets.disable_progress_bars()
    step_times, memory = [], PeakMemory()

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            if state.global_step == 1:  # after the warm-up step
                memory.__enter__()
            synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kwargs):
            synchronize()
            step_times.append(time.perf_counter() - self.start)

    config = RankingRewardConfig(
        output_dir="/tmp/bench_training_ours",
        utility=UTILITY,
        max_length=args.tokens,
        forward_batch_size=args.chunk,
        per_device_train_batch_size=args.prompts_per_step,
        max_steps=args.steps + 1,
        learning_rate=1e-5,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        dataloader_pin_memory=False,
        # On a GPU, tokenising the next batch in worker processes overlaps it with the step, as users run it.
        dataloader_num_workers=2 if torch.cuda.is_available() else 0,
    )
    data = load_rankings(datasets.Dataset.from_list(rows))
    trainer = RankingRewardTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.add_callback(Clock())
    trainer.train()
    memory.__exit__()
    truncated, sequences = trainer.truncation_counts()
    assert truncated == sequences, "every sequence should be cut to exactly --tokens tokens"
    return step_times[1:], memory.peak


def run_pairwise(rows, args, tokenizer, model):
    from rewardcollapse.loss import ranking_loss
    from rewardcollapse.training import RankingCollator, score_batch

    collator = RankingCollator(tokenizer, max_length=args.tokens)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
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
    rows = make_rows(args.prompts_per_step * (args.steps + 1), args.answers, tokenizer, args.tokens)
    run = run_ours if args.worker == "ours" else run_pairwise
    times, peak = run(rows, args, tokenizer, model)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()  # the GPU's peak, not the host process's
    print(json.dumps({"step_seconds": statistics.median(times), "steps": len(times), "peak_memory": peak}))


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
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backbone is None:
        from rewardcollapse.training import default_backbone

        args.backbone = default_backbone()
    if args.worker:
        worker(args)
        return

    results = {}
    for method in METHODS:
        steps = args.steps if method == "ours" else args.pairwise_steps
        command = [sys.executable, __file__, "--worker", method, "--steps", str(steps)]
        for name in ("prompts_per_step", "answers", "tokens", "chunk", "backbone"):
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        command += ["--bf16"] if args.bf16 else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])

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
