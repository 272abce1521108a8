"""Each prompt encoded once for its K answers, against one sequence per answer and one per pair member.

Run: .venv/bin/python benchmarks/bench_shared_prompt.py [--prompt-tokens 512 64] [--answers 8] [--answer-tokens 128]

A random-initialised Llama-architecture decoder classifier (4 layers, hidden 256, 4 heads, vocabulary 1,000) trains
on prompts of P random tokens with K answers of A random tokens each, float32, one AdamW step per batch of
--prompts-per-step prompts, with the same ranking loss (U = log sigmoid on raw scores, the Bradley-Terry loss):

* cached: ``SharedLayout(method="cache")``, what ``shared_prompt: auto`` runs in one process: each prompt run once
  with its keys and values kept, its K answers as one batch on that cache, P + K A tokens per prompt and no masked
  attention blocks;
* rows: ``SharedLayout(method="rows")``, what runs under DDP or gradient checkpointing: one row [prompt][answer 1]
  ...[answer K] per prompt with the block mask, P + K A tokens, dense (masked) attention over the row;
* separate: ``score_batch``: one sequence per answer, K (P + A) tokens per prompt (this project's default path);
* pairwise: each ranked pair's two sequences, K (K - 1) (P + A) tokens per prompt (TRL's and the paper's way),
  --pairwise-chunk sequences per forward with a backward per chunk.

Each row of the table: median seconds per step over --steps timed steps after one warm-up, prompts per second, the
tokens the model runs per prompt, and the peak resident memory of the steps (each method in its own process).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from bench_training import PeakMemory  # the script's folder is on sys.path

METHODS = ("cached", "rows", "separate", "pairwise")


def model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
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
    args = parser.parse_args()
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
