"""`make demo` for several seeds, natively and on the slowest CPU's stand-in: time, memory, collapse, curves' cost.

Runs ``rewardcollapse reproduce --config configs/demo.yaml --seed S --precision fp32`` in a fresh folder per run (no
reuse), as `make demo` does after set-up, once per seed and kernel setting:

* ``native``: the machine as it is;
* ``avx2``: the stand-in for the slowest measured CPU (a 2-core AMD EPYC with AVX2 only): ATen's, MKL's and
  oneDNN's kernels capped at AVX2 (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
  ONEDNN_MAX_CPU_ISA=AVX2``) and 2 threads.

The stand-in is calibrated on the one figure measured on that CPU: 1.28 s per training step of the demo
configuration the issue measured (the shipped backbone, 2 prompts of 8 answers a step, cuts at half length, chunks
of 4 sequences, max length 128, float32; :data:`CALIBRATION`). The script times such steps under each kernel setting
(:func:`calibration_step`) and scales each run's wall time by 1.28 s over that step time: the slowest CPU's
expected wall time.

Per run it prints the wall time (and the slowest CPU's, for the stand-in), the run's own estimate and how far it
was off, the peak RSS, each utility's collapse index, and the share of training time the collapse curves'
measurements took; then the verdict against the demo's bars (:data:`BARS`).

    python benchmarks/bench_demo.py                              # seeds 0 1 2, native and stand-in
    python benchmarks/bench_demo.py --seeds 0 --kernels avx2     # one run on the stand-in
    python benchmarks/bench_demo.py --keep bench-demo-output     # and keep each run's reports, figures and log
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo.yaml"
PER_PROMPT = ("prompt-aware", "openness")
STAND_IN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SLOWEST_STEP_S = 1.28
"""Seconds per training step of :data:`CALIBRATION` on the slowest measured CPU (float32, fresh clone)."""
CALIBRATION = {
    "length_scale": 0.5,
    "training": {
        "per_device_train_batch_size": 2,
        "max_length": 128,
        "forward_batch_size": 4,
        "freeze_word_embeddings": True,
        "learning_rate": 2.0e-4,
        "warmup_steps": 5,
        "disable_dropout": False,
    },
}
"""The demo configuration whose step the slowest CPU was timed on (the demo's before issue 22)."""
BARS = {
    "fixed utilities' collapse index at most": 0.25,
    "prompt-aware collapse index at least": 0.75,
    "wall time on the slowest CPU at most (s)": 480,
    "estimate off by at most": 0.20,
    "curves' share of training time at most": 0.05,
    "peak RSS at most (GB)": 3.0,
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def environment(kernels: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in STAND_IN}
    if kernels == "avx2":
        env.update(STAND_IN, OMP_NUM_THREADS="2")
    return env


def calibration_step(kernels: str, scratch: Path) -> float:
    """Seconds per step of :data:`CALIBRATION` under ``kernels``, without the Trainer's start-up.

    Two runs of one utility, 10 and 40 steps: the difference of their training times over 30 steps.
    """
    import yaml

    seconds = {}
    for steps in (10, 40):
        config = yaml.safe_load(CONFIG.read_text())
        config.update(CALIBRATION, utilities=["x"], test_prompts=16, collapse_prompts=0)
        config["training"] = {**CALIBRATION["training"], "max_steps": steps, "precision": "fp32"}
        path = scratch / f"calibration-{kernels}-{steps}.yaml"
        path.write_text(yaml.safe_dump(config))
        folder = scratch / f"calibration-{kernels}-{steps}"
        command = [sys.executable, "-m", "rewardcollapse.cli", "reproduce", "--config", str(path)]
        subprocess.run([*command, "--output", str(folder)], env=environment(kernels), check=True, capture_output=True)
        seconds[steps] = json.loads((folder / "runs" / "x" / "run.json").read_text())["training"]["seconds"]
    return (seconds[40] - seconds[10]) / 30


def run_demo(seed: int, kernels: str, folder: Path) -> dict:
    """One demo run as a child process: its report, wall seconds and peak resident memory (from wait4)."""
    command = [sys.executable, "-m", "rewardcollapse.cli", "reproduce", "--config", str(CONFIG)]
    command += ["--seed", str(seed), "--precision", "fp32", "--output", str(folder)]
    started = time.perf_counter()
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment(kernels))
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"seed {seed} ({kernels}) failed; see {folder.parent / f'{folder.name}.log'}")
    report = json.loads((folder / "report.json").read_text())
    return {"seed": seed, "kernels": kernels, "wall": wall, "rss_gb": usage.ru_maxrss / 2**20, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kernels", nargs="+", default=["native", "avx2"], choices=["native", "avx2"])
    parser.add_argument("--keep", type=Path, help="Copy each run's reports, figures and log to this folder.")
    args = parser.parse_args()

    import torch

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, configuration {CONFIG.name}")
    rows, factor = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for kernels in args.kernels:
            step = calibration_step(kernels, Path(scratch))
            factor[kernels] = SLOWEST_STEP_S / step
            print(
                f"  {kernels}: the calibration step takes {step:.3f} s here, {SLOWEST_STEP_S} s on the slowest CPU: "
                f"x{factor[kernels]:.2f}",
                flush=True,
            )
            for seed in args.seeds:
                folder = Path(scratch) / f"demo-{kernels}-{seed}"
                row = run_demo(seed, kernels, folder)
                rows.append(row)
                if args.keep is not None:
                    kept = args.keep / folder.name
                    kept.mkdir(parents=True, exist_ok=True)
                    for name in ("report.json", "report.md", "rewards.png", "collapse_over_training.png"):
                        shutil.copy2(folder / name, kept / name)
                    shutil.copy2(folder.parent / f"{folder.name}.log", kept / "log.txt")
                print(f"  seed {seed}, {kernels}: {row['wall']:.0f} s", flush=True)
    utilities = list(rows[0]["utilities"])
    header = ["seed", "kernels", "wall (s)", "slowest CPU (s)", "estimate (s)", "off by", "peak RSS (GB)"]
    header += [f"CI {u}" for u in utilities] + ["curves' share", "meets the bars"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        results = row["utilities"]
        slowest = row["wall"] * factor[row["kernels"]]
        off = row["estimated_seconds"] / row["seconds"] - 1
        share = sum(results[u]["curve_seconds"] for u in utilities) / sum(
            results[u]["training_seconds"] for u in utilities
        )
        bars = [
            results[u]["collapse_index"] >= BARS["prompt-aware collapse index at least"]
            if u in PER_PROMPT
            else results[u]["collapse_index"] <= BARS["fixed utilities' collapse index at most"]
            for u in utilities
        ]
        bars += [
            slowest <= BARS["wall time on the slowest CPU at most (s)"],
            abs(off) <= BARS["estimate off by at most"],
            share <= BARS["curves' share of training time at most"],
            row["rss_gb"] <= BARS["peak RSS at most (GB)"],
        ]
        cells = [str(row["seed"]), row["kernels"], f"{row['wall']:.0f}", f"{slowest:.0f}"]
        cells += [f"{row['estimated_seconds']:.0f}", f"{100 * off:+.0f}%", f"{row['rss_gb']:.2f}"]
        cells += [f"{results[u]['collapse_index']:.3f}" for u in utilities]
        cells += [f"{100 * share:.1f}%", "yes" if all(bars) else "NO"]
        print("| " + " | ".join(cells) + " |")
    print("\nbars: " + "; ".join(f"{name} {value}" for name, value in BARS.items()))


if __name__ == "__main__":
    main()
