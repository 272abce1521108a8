"""Data-side cost of a training step: tokenising in the collator at every step against tokenising once with map.

Builds the demo's training data (2,000 prompts of 8 answers, halved cuts) as a JSONL file, then times the collation
of its batches of 2 prompts (16 sequences, as in configs/demo.yaml): from raw rows, which the collator tokenises
(the former path), and from rows that `tokenize_rankings` tokenised once, which it only pads. The one-off map is
timed in a fresh datasets cache and again from that cache (a rerun on the same file).

    python benchmarks/bench_data.py [--batches 500]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import datasets

from rewardcollapse.data import load_rankings
from rewardcollapse.experiments.longform import build_longform, write_longform
from rewardcollapse.training import default_backbone
from rewardcollapse.training.collator import RankingCollator, tokenize_rankings


def time_batches(collator, dataset, batch_size: int, batches: int) -> float:
    """Seconds per collated batch over the first ``batches`` batches (rows read as a step's loader would)."""
    start = time.perf_counter()
    for b in range(batches):
        collator(dataset.select(range(b * batch_size, (b + 1) * batch_size)).to_list())
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_backbone())
    built = build_longform("builtin", train_prompts=2000, test_prompts=100, seed=0, length_scale=0.5)
    collator = RankingCollator(tokenizer, max_length=128, utility="prompt-aware")
    with tempfile.TemporaryDirectory() as folder:
        datasets.config.HF_DATASETS_CACHE = Path(folder) / "cache"  # a fresh cache: the first map is real
        os.environ["HF_DATASETS_CACHE"] = str(datasets.config.HF_DATASETS_CACHE)
        raw = load_rankings(str(write_longform(built, folder)["train"]))
        maps = []
        for _ in range(2):  # the second map of the same file-backed data comes from datasets' cache
            start = time.perf_counter()
            tokenized = tokenize_rankings(raw, tokenizer, max_length=128, utility="prompt-aware", name="train")
            maps.append(time.perf_counter() - start)
        before = time_batches(collator, raw, args.batch_size, args.batches)
        after = time_batches(collator, tokenized, args.batch_size, args.batches)
    steps = len(raw) // args.batch_size
    amortised = after + maps[0] / steps
    print(f"{len(raw)} prompts, batches of {args.batch_size} prompts (16 sequences), {args.batches} batches timed\n")
    print("| data path | ms per step | one-off |")
    print("|---|---|---|")
    print(f"| tokenise in the collator at every step (before) | {1000 * before:.2f} | - |")
    print(f"| tokenise once with map, pad in the collator (after) | {1000 * after:.2f} | map {maps[0]:.2f} s |")
    print(f"| after, the map spread over one pass ({steps} steps) | {1000 * amortised:.2f} | |")
    print(f"| after, on a rerun (map from the cache) | {1000 * after:.2f} | {maps[1]:.2f} s |")
    ratio, first = before / after, before / amortised
    print(f"\nper step: {ratio:.2f}x less data work; first pass including the map: {first:.2f}x")


if __name__ == "__main__":
    main()
