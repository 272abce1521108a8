"""The paper's experiment end to end: build the data, train one reward model per utility, score, diagnose, report.

Song et al. (2023, Section 4) train a reward model on prompts with 8 answers of different lengths, half asking for
an open-ended answer and half for a short-or-long one, once per utility. With a fixed utility the test prompts of
both kinds get alike reward distributions (collapse); with the prompt-aware utility (``x`` for closed prompts,
``-1/x`` for open ones) each kind follows its own target. :func:`run_experiment` does all of it and writes

* ``data/``: the dataset and its card (:mod:`rewardcollapse.data.longform`);
* ``runs/<utility>/model``: the trained model, ``runs/<utility>/rewards.jsonl``: the test prompts' scored answers;
* ``rewards.png``: a row of histograms per utility, open against closed test prompts, with their targets;
* ``report.md`` and ``report.json``: collapse index and per-group diagnostics per utility;
* ``config.yaml``: the configuration used.

Finished utilities (their ``rewards.jsonl`` written) are not retrained when the run is started again.

**Openness levels** (``openness_levels: [0, 0.333, 0.667, 1]``, ``configs/levels.yaml``) go beyond the paper's two
kinds: the test prompts fall in one group per level ``o``, whose answer lengths follow the quantiles of the level's
target law (:func:`rewardcollapse.data.longform.level_lengths`), and the report gives per level the KS distance of the
trained rewards to the level's target (the 8-answer optimum of ``openness_utility(o)``) and to its limit law
Beta(o, o). Train with ``utility: openness`` (the continuous family) against fixed utilities to see the family track
the targets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ExperimentConfig",
    "diagnose_file",
    "level_label",
    "read_scored",
    "run_experiment",
    "targets_for",
    "utility_slug",
]

GROUP_UTILITIES = {"open": "-1/x", "closed": "x"}
"""The prompt-aware utility of each group, whose optimal rewards are the group's target."""


@dataclass
class ExperimentConfig:
    """Settings of :func:`run_experiment`; load with :meth:`from_yaml` (``configs/paper.yaml``, ``demo.yaml``)."""

    source: str = field(default="builtin", metadata={"help": "LongForm source: 'builtin', Hub name, file or folder"})
    train_prompts: int = field(default=8192, metadata={"help": "training prompts (half open, half closed)"})
    test_prompts: int = field(default=16, metadata={"help": "test prompts scored and diagnosed"})
    seed: int = field(default=0, metadata={"help": "seeds the data, the model head and the data order"})
    model: str | None = field(default=None, metadata={"help": "backbone; None: the shipped MiniLM"})
    utilities: list[str] = field(default_factory=lambda: ["x", "log", "-1/x", "prompt-aware"])
    openness_levels: list[float] | None = field(
        default=None,
        metadata={"help": "None: the paper's open/closed prompts; a list: one group per openness level (beyond it)"},
    )
    steps: int = field(default=1000, metadata={"help": "optimiser steps per utility"})
    batch_size: int = field(default=8, metadata={"help": "prompts per device per micro-batch"})
    gradient_accumulation: int = field(default=1, metadata={"help": "micro-batches per optimiser step"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (linear decay)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    max_length: int = field(default=512, metadata={"help": "tokens per (prompt, answer)"})
    forward_batch_size: int | None = field(default=8, metadata={"help": "sequences per forward pass"})
    eps: float = field(default=0.1, metadata={"help": "utility shift U(x + eps) - U(eps)"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast (GPUs, CPUs with AMX)"})
    score_batch_size: int = field(default=16, metadata={"help": "prompts per batch when scoring the test set"})

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read a YAML mapping of these fields (``yaml.safe_load``; unknown keys are an error)."""
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a configuration must be a mapping of settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_yaml(self) -> str:
        """The configuration as YAML text."""
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


def utility_slug(spec: str) -> str:
    """A folder name for a utility spec: ``"-1/x"`` -> ``"neg1_over_x"``, ``"x^0.5"`` -> ``"x_pow_0.5"``."""
    from rewardcollapse.training.config import OPENNESS, PROMPT_AWARE

    if spec in (PROMPT_AWARE, OPENNESS):
        return spec
    return spec.replace("-", "neg").replace("/", "_over_").replace("^", "_pow_")


def level_label(openness: float) -> str:
    """The group label of an openness level: ``0.333...`` -> ``"o=0.333"``."""
    return f"o={openness:.3g}"


def targets_for(n: int = 8, levels: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Each group's target rewards: the exact optimum of ``n`` ranked answers under the group's utility.

    Without ``levels`` the groups are ``"open"`` (``-1/x``) and ``"closed"`` (``x``); with them, one group per level
    ``o`` (labelled by :func:`level_label`) whose utility is :func:`~rewardcollapse.openness_utility` ``(o)``.
    """
    from rewardcollapse.core import openness_utility, optimal_rewards

    if levels is None:
        return {group: optimal_rewards(n, spec).rewards for group, spec in GROUP_UTILITIES.items()}
    return {level_label(o): np.sort(optimal_rewards(n, openness_utility(o)).rewards) for o in levels}


def _limit_laws(levels: Sequence[float] | None) -> dict[str, Any]:
    from rewardcollapse.core import openness_law

    if levels is None:
        return {"open": openness_law(1.0), "closed": openness_law(0.0)}
    return {level_label(o): openness_law(o) for o in levels}


def read_scored(
    path: Path, levels: Sequence[float] | None = None
) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """Normalised rewards, group labels and pair matrices of a ``score`` output file.

    A row's group comes from its ``openness``: ``"open"`` (>= 0.5) or ``"closed"``, or with ``levels`` the label of
    the level it equals (to 1e-9; a row at no level is an error naming it).
    """
    from rewardcollapse.data.schema import ranked_pairs

    rewards, groups, pairs = [], [], []
    for number, line in enumerate(Path(path).read_text().splitlines()):
        row = json.loads(line)
        openness = row.get("openness")
        if openness is None:
            raise ValueError(f"{path}: row {number} has no `openness`, so it belongs to no group")
        if levels is None:
            groups.append("open" if openness >= 0.5 else "closed")
        else:
            matches = [o for o in levels if abs(o - openness) <= 1e-9]
            if not matches:
                raise ValueError(f"{path}: row {number} has openness {openness}, which is none of the levels {levels}")
            groups.append(level_label(matches[0]))
        rewards.append(np.asarray(row["normalized_rewards"], dtype=float))
        pairs.append(ranked_pairs(row))
    return rewards, groups, pairs


def diagnose_file(path: str | Path, levels: Sequence[float] | None = None) -> dict[str, Any]:
    """Collapse index and per-group diagnostics of a scored file (``rewardcollapse score`` output).

    Per group: ``ks`` and ``wasserstein`` to the group's n-answer target (:func:`targets_for`), ``ks_limit`` to its
    limit law (uniform for open, atoms at 0 and 1 for closed, Beta(o, o) for level ``o``), prompts, pairwise accuracy
    and Kendall tau.
    """
    from rewardcollapse.diagnostics import collapse_index, group_diagnostics

    rewards, groups, pairs = read_scored(Path(path), levels)
    n = int(np.median([len(r) for r in rewards]))
    targets = targets_for(n, levels)
    measured = group_diagnostics(rewards, groups, targets, pairs, limits=_limit_laws(levels))
    diagnostics = {group: measured[group] for group in targets if group in measured}  # in the order of the levels
    return {"collapse_index": collapse_index(rewards, groups, targets), "groups": diagnostics}


def _build_data(config: ExperimentConfig, folder: Path) -> dict[str, Path]:
    from rewardcollapse.data.longform import build_longform, write_longform

    wanted = {
        "source": config.source,
        "seed": config.seed,
        "test_prompts": config.test_prompts,
        "levels": config.openness_levels,
    }
    report_path = folder / "build_report.json"
    if report_path.exists() and (folder / "train.jsonl").exists() and (folder / "test.jsonl").exists():
        built = json.loads(report_path.read_text())
        if (
            all(built.get(k) == v for k, v in wanted.items())
            and built.get("train_prompts_asked") == config.train_prompts
        ):
            return {"train": folder / "train.jsonl", "test": folder / "test.jsonl", "card": folder / "README.md"}
    data = build_longform(
        config.source,
        train_prompts=config.train_prompts,
        test_prompts=config.test_prompts,
        seed=config.seed,
        levels=config.openness_levels,
    )
    return write_longform(data, folder)


def _train_and_score(config: ExperimentConfig, spec: str, paths: dict[str, Path], folder: Path) -> Path:
    import torch

    from rewardcollapse.training.run import score_file, train_reward_model

    rewards = folder / "rewards.jsonl"
    if rewards.exists():
        return rewards  # finished earlier: not retrained
    train_reward_model(
        model=config.model,
        data=paths["train"],
        output_dir=folder / "model",
        utility=spec,
        eps=config.eps,
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        max_length=config.max_length,
        forward_batch_size=config.forward_batch_size,
        bf16=config.bf16,
        seed=config.seed,
        save_strategy="no",
        logging_steps=max(1, config.steps // 10),
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    partial = folder / "rewards.jsonl.partial"
    score_file(
        model=folder / "model",
        data=paths["test"],
        output=partial,
        batch_size=config.score_batch_size,
        max_length=config.max_length,
        forward_batch_size=config.forward_batch_size,
        bf16=config.bf16,
    )
    partial.rename(rewards)  # written whole or not at all: a killed run re-scores
    return rewards


def _figure(
    results: dict[str, dict[str, Any]], targets: dict[str, np.ndarray], levels: Sequence[float] | None, path: Path
) -> None:
    """A row per utility, a panel per group: the group's rescaled rewards against its target."""
    from rewardcollapse.diagnostics import plot_group_rewards
    from rewardcollapse.plots import _pyplot

    plt = _pyplot()
    rows, cols = len(results), len(targets)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for row, (spec, result) in enumerate(results.items()):
        rewards, groups, _ = read_scored(result["rewards_path"], levels)
        for col, group in enumerate(targets):
            members = [r for r, g in zip(rewards, groups, strict=True) if g == group]
            ks = result["groups"][group]["ks"]
            title = (
                f"U = {spec}, {group} (CI {result['collapse_index']:.2f})"
                if levels is None
                else (f"U = {spec}, {group} (KS {ks:.2f})")
            )
            plot_group_rewards(members, [group] * len(members), {group: targets[group]}, ax=axes[row, col], title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _overall(groups: dict[str, dict[str, float]], metric: str) -> float:
    """A ranking metric over all test prompts: the groups' values weighted by their prompts."""
    total = sum(g["prompts"] for g in groups.values())
    return sum(g[metric] * g["prompts"] for g in groups.values()) / total


def _markdown(results: dict[str, dict[str, Any]], config: ExperimentConfig) -> str:
    header = (
        f"Backbone `{config.model or 'all-MiniLM-L6-v2 (shipped)'}`, {config.steps} steps, data `{config.source}`, "
        f"{config.test_prompts} test prompts; rewards rescaled per prompt."
    )
    if config.openness_levels is not None:
        return _levels_markdown(results, header)
    lines = [
        "# Reward collapse: one reward model per utility",
        "",
        f"{header} Collapse index: 0 = open and closed prompts get alike reward distributions, 1 = each at its own "
        "target (open target: the 8-answer optimum of -1/x, closed target: that of x).",
        "",
        "| utility | collapse index | open KS | open W1 | closed KS | closed W1 | pairwise accuracy | Kendall tau |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in results.items():
        o, c = r["groups"]["open"], r["groups"]["closed"]
        lines.append(
            f"| {spec} | {r['collapse_index']:.3f} | {o['ks']:.3f} | {o['wasserstein']:.3f} | {c['ks']:.3f} | "
            f"{c['wasserstein']:.3f} | {_overall(r['groups'], 'pairwise_accuracy'):.3f} | "
            f"{_overall(r['groups'], 'kendall_tau'):.3f} |"
        )
    return "\n".join(lines) + "\n"


def _levels_markdown(results: dict[str, dict[str, Any]], header: str) -> str:
    groups = list(next(iter(results.values()))["groups"])
    lines = [
        "# Continuous openness: do the trained rewards of each openness level follow its target?",
        "",
        f"{header} Target of level o: the 8-answer optimum of openness_utility(o); limit law: Beta(o, o). KS to a "
        "target with atoms (o = 0) counts any deviation from them in full; W1 measures how far.",
    ]
    tables = (
        ("KS distance to the level's 8-answer target", "ks"),
        ("1-Wasserstein distance to the level's 8-answer target", "wasserstein"),
        ("KS distance to the level's limit law Beta(o, o)", "ks_limit"),
    )
    for title, metric in tables:
        lines += [
            "",
            f"{title}:",
            "",
            f"| utility | {' | '.join(groups)} | mean | collapse index | pairwise accuracy |",
        ]
        lines.append("|---" * (len(groups) + 4) + "|")
        for spec, r in results.items():
            values = [r["groups"][g][metric] for g in groups]
            cells = " | ".join(f"{v:.3f}" for v in values)
            accuracy = _overall(r["groups"], "pairwise_accuracy")
            lines.append(f"| {spec} | {cells} | {np.mean(values):.3f} | {r['collapse_index']:.3f} | {accuracy:.3f} |")
    return "\n".join(lines) + "\n"


def run_experiment(config: ExperimentConfig, output_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) the experiment of :class:`ExperimentConfig` in ``output_dir``; return the report.

    Returns
    -------
    dict
        ``utilities``: per utility the collapse index, per-group diagnostics and the rewards file; ``figure``,
        ``report_md``, ``report_json``, ``config`` and ``data``: paths written.
    """
    from rewardcollapse.training.config import OPENNESS, PROMPT_AWARE

    levels = config.openness_levels
    if levels is not None and len({level_label(o) for o in levels}) != len(levels):
        raise ValueError(f"`openness_levels` {levels} must differ in their first 3 significant digits")
    for spec in config.utilities:
        if spec not in (PROMPT_AWARE, OPENNESS):
            from rewardcollapse.core import utility

            utility(spec)  # fail before any training on a bad spec
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(config.to_yaml())
    paths = _build_data(config, output / "data")
    targets = targets_for(8, levels)
    results: dict[str, dict[str, Any]] = {}
    for spec in config.utilities:
        rewards_path = _train_and_score(config, spec, paths, output / "runs" / utility_slug(spec))
        results[spec] = {**diagnose_file(rewards_path, levels), "rewards_path": rewards_path}
    _figure(results, targets, levels, output / "rewards.png")
    report = {
        "utilities": {
            spec: {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for spec, r in results.items()
        },
        "figure": str(output / "rewards.png"),
        "report_md": str(output / "report.md"),
        "report_json": str(output / "report.json"),
        "config": str(output / "config.yaml"),
        "data": str(paths["train"].parent),
    }
    (output / "report.md").write_text(_markdown(results, config))
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
