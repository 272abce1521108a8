"""`make demo` for several seeds: each seed's collapse indices, pairwise accuracies, wall time and peak memory.

Runs ``rewardcollapse reproduce --config configs/demo.yaml --seed S --precision P`` in a fresh folder per run (no
reuse), as `make demo` does after set-up, and prints one row per run plus the verdict against the demo's bars:
every fixed utility's collapse index <= 0.25, the prompt-aware one >= 0.6, wall time <= 10 minutes, peak RSS <= 3 GB.

    python benchmarks/bench_demo.py                         # seeds 0 1 2 in float32 (the bar's setting)
    python benchmarks/bench_demo.py --precision fp32 auto   # and again with the machine's automatic choice
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rewardcollapse.diagnostics import COLLAPSED_AT_MOST, SEPARATED_AT_LEAST
from rewardcollapse.training.precision import choose_precision

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo.yaml"
PER_PROMPT = ("prompt-aware", "openness")
WALL_LIMIT_S, RSS_LIMIT_GB = 600, 3.0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run_demo(seed: int, precision: str, folder: Path) -> dict:
    """One demo run as a child process: its report, wall seconds and peak resident memory (from wait4)."""
    command = [sys.executable, "-m", "rewardcollapse.cli", "reproduce", "--config", str(CONFIG)]
    command += ["--seed", str(seed), "--precision", precision, "--output", str(folder)]
    started = time.perf_counter()
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"seed {seed} ({precision}) failed; see {folder.parent / f'{folder.name}.log'}")
    report = json.loads((folder / "report.json").read_text())
    return {"seed": seed, "precision": report["precision"], "wall": wall, "rss_gb": usage.ru_maxrss / 2**20, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "auto", "bf16"])
    args = parser.parse_args()

    auto = choose_precision("auto")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.backends.cpu.get_cpu_capability()} kernels; auto precision here: {auto.describe()}"
    )
    print(f"configuration: {CONFIG.relative_to(ROOT)}\n")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for precision in args.precision:
            for seed in args.seeds:
                row = run_demo(seed, precision, Path(scratch) / f"demo-{precision}-{seed}")
                rows.append(row)
                print(f"  seed {seed}, {row['precision']}: {row['wall']:.0f} s", flush=True)
    utilities = list(rows[0]["utilities"])
    print()
    header = ["seed", "precision", "wall (s)", "peak RSS (GB)"]
    header += [f"CI {u}" for u in utilities] + [f"accuracy {u} (optimum)" for u in utilities] + ["meets the bar"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        results = row["utilities"]
        bars = [
            results[u]["collapse_index"] >= SEPARATED_AT_LEAST
            if u in PER_PROMPT
            else results[u]["collapse_index"] <= COLLAPSED_AT_MOST
            for u in utilities
        ]
        bars += [row["wall"] <= WALL_LIMIT_S, row["rss_gb"] <= RSS_LIMIT_GB]
        bars += [results[u]["pairwise_accuracy"] >= results[u]["optimum_pairwise_accuracy"] - 0.05 for u in utilities]
        cells = [str(row["seed"]), row["precision"], f"{row['wall']:.0f}", f"{row['rss_gb']:.2f}"]
        cells += [f"{results[u]['collapse_index']:.3f}" for u in utilities]
        cells += [
            f"{results[u]['pairwise_accuracy']:.3f} ({results[u]['optimum_pairwise_accuracy']:.3f})" for u in utilities
        ]
        cells.append("yes" if all(bars) else "NO")
        print("| " + " | ".join(cells) + " |")
    for precision in {row["precision"] for row in rows}:
        walls = [row["wall"] for row in rows if row["precision"] == precision]
        print(f"\n{precision}: mean wall {sum(walls) / len(walls):.0f} s over {len(walls)} seeds", end="")
    baseline = [row["wall"] for row in rows if row["precision"] == "fp32"]
    others = [row for row in rows if row["precision"] != "fp32"]
    if baseline and others:
        mean = sum(baseline) / len(baseline)
        faster = mean / (sum(row["wall"] for row in others) / len(others))
        print(f"\n{others[0]['precision']} is {faster:.2f}x as fast as fp32 on the whole demo", end="")
    print(
        f"\nbars: fixed utilities CI <= {COLLAPSED_AT_MOST}, prompt-aware CI >= {SEPARATED_AT_LEAST}, wall <= "
        f"{WALL_LIMIT_S} s, peak RSS <= {RSS_LIMIT_GB} GB, accuracy >= its optimum's - 0.05"
    )


if __name__ == "__main__":
    main()
