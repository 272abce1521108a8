"""The experiment's report: the markdown tables, the figure, and the closing summary in plain words."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse.core.conventions import OPENNESS, PROMPT_AWARE

__all__ = ["markdown_report", "plot_experiment", "summary_text"]

_PER_PROMPT = (PROMPT_AWARE, OPENNESS)


def plot_experiment(
    results: dict[str, Any], targets: dict[str, np.ndarray], levels: Sequence[float] | None, path: Path
) -> None:
    """Write the experiment's figure: a row per utility, a panel per group, its rescaled rewards against its target.

    ``results`` maps each utility to its :class:`~rewardcollapse.experiments.UtilityResult`.
    """
    from rewardcollapse.plots import plot_group_rewards, pyplot

    plt = pyplot()
    rows, cols = len(results), len(targets)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for row, (spec, result) in enumerate(results.items()):
        diagnosis = result.diagnosis
        for col, group in enumerate(targets):
            members = [r for r, g in zip(diagnosis.rewards, diagnosis.groups, strict=True) if g == group]
            ks = diagnosis.by_group[group].ks
            title = (
                f"U = {spec}, {group} (CI {diagnosis.collapse_index:.2f})"
                if levels is None
                else (f"U = {spec}, {group} (KS {ks:.2f})")
            )
            plot_group_rewards(members, [group] * len(members), {group: targets[group]}, ax=axes[row, col], title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_report(results: dict[str, Any], config: Any, steps: int) -> str:
    """The report's markdown: the configuration in a line, then per utility its collapse index and diagnostics.

    ``results`` maps each utility to its :class:`~rewardcollapse.experiments.UtilityResult`.
    """
    header = (
        f"Backbone `{config.model or 'all-MiniLM-L6-v2 (shipped)'}`, {steps} steps, data `{config.source}`, "
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
        d = r.diagnosis
        o, c = d.by_group["open"], d.by_group["closed"]
        lines.append(
            f"| {spec} | {d.collapse_index:.3f} | {o.ks:.3f} | {o.wasserstein:.3f} | {c.ks:.3f} | "
            f"{c.wasserstein:.3f} | {d.overall('pairwise_accuracy'):.3f} | {d.overall('kendall_tau'):.3f} |"
        )
    return "\n".join(lines) + "\n"


def _levels_markdown(results: dict[str, Any], header: str) -> str:
    groups = list(next(iter(results.values())).diagnosis.by_group)
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
            values = [getattr(r.diagnosis.by_group[g], metric) for g in groups]
            cells = " | ".join(f"{v:.3f}" for v in values)
            accuracy = r.diagnosis.overall("pairwise_accuracy")
            lines.append(f"| {spec} | {cells} | {np.mean(values):.3f} | {r.collapse_index:.3f} | {accuracy:.3f} |")
    return "\n".join(lines) + "\n"


def summary_text(report: Any, *, levels: Sequence[float] | None = None) -> str:
    """What a run (an :class:`~rewardcollapse.experiments.ExperimentResult`) shows, in words a newcomer follows.

    Per utility the collapse index and its verdict, then the figure.

    For the paper's design the closing sentence says whether the paper's finding was reproduced: every fixed
    utility collapsed (index <= 0.25) and every prompt-aware one separated (>= 0.6), or which ones missed.
    """
    from rewardcollapse.diagnostics import COLLAPSED_AT_MOST, SEPARATED_AT_LEAST

    utilities = report.utilities
    width = max(len(spec) for spec in utilities)
    lines = [
        "Collapse index: 0 = open and closed prompts get the same reward distribution (reward collapse), "
        "1 = each kind on its own target"
        if levels is None
        else "Collapse index across openness levels: 0 = every level gets the same reward distribution, "
        "1 = each level on its own target",
    ]
    for spec, r in utilities.items():
        lines.append(
            f"  {spec:<{width}}  {r.collapse_index:.2f}  {r.verdict:<16}  pairwise accuracy "
            f"{r.pairwise_accuracy:.2f} (its utility's exact optimum: {r.optimum_pairwise_accuracy:.2f})"
            + ("  [reused]" if r.reused else "")
        )
    if levels is None:
        missed = [
            f"{spec} {r.collapse_index:.2f} is not <= {COLLAPSED_AT_MOST}"
            for spec, r in utilities.items()
            if spec not in _PER_PROMPT and r.collapse_index > COLLAPSED_AT_MOST
        ] + [
            f"{spec} {r.collapse_index:.2f} is not >= {SEPARATED_AT_LEAST}"
            for spec, r in utilities.items()
            if spec in _PER_PROMPT and r.collapse_index < SEPARATED_AT_LEAST
        ]
        fixed = [spec for spec in utilities if spec not in _PER_PROMPT]
        aware = [spec for spec in utilities if spec in _PER_PROMPT]
        if missed:
            lines.append(
                "The paper's finding is NOT reproduced by this run: "
                + "; ".join(missed)
                + ". Train longer (--steps) or on a GPU (configs/minilm-gpu.yaml)."
            )
        elif fixed and aware:
            lines.append(
                f"The paper's finding, reproduced: with a fixed utility ({', '.join(fixed)}) open and closed prompts "
                f"get alike rewards (reward collapse); the prompt-aware utility keeps them apart."
            )
        lines.append(
            f"figure: {report.figure}: a row per utility, a panel per kind of prompt; each panel is the histogram "
            "of the test prompts' rewards (rescaled per prompt) against that kind's target (open: spread evenly "
            "over [0, 1]; closed: at 0 and 1). Collapse: the two panels of a row look alike."
        )
    else:
        lines.append(
            f"figure: {report.figure}: a row per utility, a panel per openness level; each panel is the histogram "
            "of the level's rewards (rescaled per prompt) against its target."
        )
    lines.append(f"report: {report.report_md} and {report.report_json}; models and rewards: runs/")
    return "\n".join(lines)
