"""What each setting of configs/demo.yaml buys: the collapse index of one utility per variant and seed.

Each variant is configs/demo.yaml with a few settings changed, trained for one utility (default: prompt-aware) and
scored on the demo's 100 test prompts; the table gives the collapse index and the seconds per step of each seed.

    python benchmarks/bench_demo_choices.py                                  # every variant, seeds 0 1 2
    python benchmarks/bench_demo_choices.py --variants demo lr1e-4 --utility=-1/x
"""

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

from rewardcollapse.experiments import ExperimentConfig, run_experiment

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {  # changes to the `training` mapping of configs/demo.yaml (docs/experiment.md: how they were chosen)
    "demo": {},
    "135 steps at 2.2e-4": {"max_steps": 135, "learning_rate": 2.2e-4},
    "120 steps at 4e-4": {"max_steps": 120, "learning_rate": 4e-4},
    "4 layers frozen, 170 steps": {"freeze_layers": 4, "max_steps": 170},
    "no layer frozen, 80 steps": {"freeze_layers": 0, "max_steps": 80},
    "embeddings trained": {"freeze_word_embeddings": False},
    "bf16": {"precision": "bf16"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--utility", default="prompt-aware")
    parser.add_argument("--precision", default="fp32", help="for every variant that does not set its own")
    args = parser.parse_args()
    logging.getLogger("rewardcollapse").setLevel(logging.WARNING)

    base = ExperimentConfig.from_yaml(ROOT / "configs" / "demo.yaml")
    print(f"configs/demo.yaml variants, utility {args.utility}, precision {args.precision} unless the variant says\n")
    print("| variant | " + " | ".join(f"CI seed {s}" for s in args.seeds) + " | s / step |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for name in args.variants:
        training = {**base.training, "precision": args.precision, **VARIANTS[name]}
        indices, step_seconds = [], []
        for seed in args.seeds:
            config = dataclasses.replace(base, seed=seed, utilities=[args.utility], training=training)
            with tempfile.TemporaryDirectory() as folder:
                result = run_experiment(config, folder).utilities[args.utility]
            indices.append(result.collapse_index)
            step_seconds.append(result.training.seconds / result.training.steps)
        cells = " | ".join(f"{value:.3f}" for value in indices)
        print(f"| {name} | {cells} | {sum(step_seconds) / len(step_seconds):.2f} |", flush=True)


if __name__ == "__main__":
    main()
