"""Openness estimators, measured: the prompt-text classifier on the experiment's labels, and the score estimator.

1. Prompt text. The LongForm data of `rewardcollapse reproduce` (built-in corpus, seed 0) labels each prompt open or
   closed by its instruction suffix. The classifier (mean-pooled MiniLM embeddings + logistic regression) is fitted
   on the training prompts with 20% held out, then scored on the unseen test prompts, and on the same test prompts
   with the suffix reworded (instructions it never saw), against always guessing the larger class.
2. Answer scores. Judge scores of n answers shaped like the n-answer optimum of openness o, plus Gaussian noise
   (sd as a share of the score range): mean |estimate - o| over 11 levels and 20 draws.

Run: .venv/bin/python benchmarks/bench_openness.py
"""

import time

import numpy as np

from rewardcollapse.core import openness_from_scores, openness_utility, optimal_rewards
from rewardcollapse.estimators import fit_openness_classifier
from rewardcollapse.experiments.longform import CLOSED_SUFFIX, OPEN_SUFFIX, build_longform

REWORDED = {
    OPEN_SUFFIX: [" Answer in whatever form and length you like.", " Feel free to be creative and expansive."],
    CLOSED_SUFFIX: [" Give either a brief answer or a detailed one.", " Reply with a short answer or else a long one."],
}


def classifier_figures():
    data = build_longform("builtin", train_prompts=2000, test_prompts=200, seed=0)
    start = time.perf_counter()
    classifier = fit_openness_classifier([r["prompt"] for r in data.train], [r["openness"] for r in data.train])
    fit_seconds = time.perf_counter() - start
    labels = np.array([r["openness"] >= 0.5 for r in data.test])
    majority = max(labels.mean(), 1 - labels.mean())
    rows = [("held out from the training prompts", classifier.metrics["test_accuracy"])]
    predicted = classifier.predict_openness([r["prompt"] for r in data.test])
    rows.append(("test prompts (unseen texts)", float(np.mean((predicted >= 0.5) == labels))))
    for variant in (0, 1):
        reworded = []
        for row in data.test:
            suffix = OPEN_SUFFIX if row["openness"] >= 0.5 else CLOSED_SUFFIX
            reworded.append(row["prompt"].removesuffix(suffix) + REWORDED[suffix][variant])
        predicted = classifier.predict_openness(reworded)
        rows.append(
            (f"test prompts, instructions reworded ({variant + 1})", float(np.mean((predicted >= 0.5) == labels)))
        )
    print(
        f"Prompt-text classifier: {classifier.metrics['train_prompts']} training prompts, fitted in {fit_seconds:.0f} s"
    )
    print("\n| evaluation | prompts | accuracy | majority class | ratio |\n|---|---|---|---|---|")
    for name, accuracy in rows:
        count = classifier.metrics["test_prompts"] if name.startswith("held") else len(data.test)
        print(f"| {name} | {count} | {accuracy:.3f} | {majority:.3f} | {accuracy / majority:.2f}x |")


def score_figures():
    rng = np.random.default_rng(0)
    levels = np.linspace(0, 1, 11)
    print("\nOpenness from answer scores: mean |estimate - openness| over 11 levels x 20 draws\n")
    print("| answers | noise sd 0 | 0.02 | 0.05 | 0.1 |\n|---|---|---|---|---|")
    for n in (8, 32):
        optima = {o: optimal_rewards(n, openness_utility(o)).rewards for o in levels}
        cells = []
        for sd in (0.0, 0.02, 0.05, 0.1):
            errors = [
                abs(openness_from_scores(optima[o] + sd * rng.standard_normal(n)) - o)
                for o in levels
                for _ in range(20 if sd else 1)
            ]
            cells.append(f"{np.mean(errors):.3f}")
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    classifier_figures()
    score_figures()
