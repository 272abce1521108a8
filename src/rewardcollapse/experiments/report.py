"""The experiment's report: the markdown tables, the figure, and the closing summary in plain words."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse.core.conventions import OPENNESS, PROMPT_AWARE

__all__ = ["crossings", "duration_text", "markdown_report", "plot_curves", "plot_experiment", "summary_text"]

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


def crossings(curve: list[dict[str, Any]], metric: str = "collapse/index") -> dict[str, int | None]:
    """The steps from which a curve stays collapsed (<= 0.25) and separated (>= 0.6); None if it does not end so.

    Examples
    --------
    >>> crossings([{"step": 0, "collapse/index": 0.3}, {"step": 50, "collapse/index": 0.2},
    ...            {"step": 100, "collapse/index": 0.1}])
    {'collapsed': 50, 'separated': None}
    """
    from rewardcollapse.diagnostics import COLLAPSED_AT_MOST, SEPARATED_AT_LEAST

    points = [(p["step"], p[metric]) for p in curve if p.get(metric) is not None]
    out: dict[str, int | None] = {}
    for name, inside in (
        ("collapsed", lambda v: v <= COLLAPSED_AT_MOST),
        ("separated", lambda v: v >= SEPARATED_AT_LEAST),
    ):
        since = None
        for step, value in points:
            since = (step if since is None else since) if inside(value) else None
        out[name] = since
    return out


def plot_curves(results: dict[str, Any], references: dict[str, Any], path: Path) -> None:
    """Write ``collapse_over_training.png``: collapse index, shape index and distance to the collapse point by step.

    ``results`` maps each utility to its :class:`~rewardcollapse.experiments.UtilityResult` (with its ``curve``);
    ``references`` maps names to the reference rewards' :class:`~rewardcollapse.diagnostics.RankedMeasures`, drawn
    as dotted lines (the untrained model is every curve's step 0).
    """
    from rewardcollapse.plots import plot_collapse_curves, pyplot

    plt = pyplot()
    curves = {spec: result.curve for spec, result in results.items()}
    length = references.get("reward = answer length")
    panels = [
        ("collapse/index", "collapse index (with openness labels)", None if length is None else length.collapse_index),
        ("collapse/shape_index", "shape index (label-free)", None if length is None else length.label_free.shape_index),
        ("collapse/optimum_distance", "distance to its utility's collapse point", None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (metric, title, reference) in zip(axes[0], panels, strict=True):
        marks = None if reference is None else {"reward = answer length": reference}
        plot_collapse_curves(curves, metric, references=marks, ax=ax, title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_report(results: dict[str, Any], references: dict[str, Any], config: Any, steps: int) -> str:
    """The report's markdown: the configuration in a line, per utility its collapse measures, then the references.

    ``results`` maps each utility to its :class:`~rewardcollapse.experiments.UtilityResult`; ``references`` names
    to the reference rewards' :class:`~rewardcollapse.diagnostics.RankedMeasures`.
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
        "target (open target: the 8-answer optimum of -1/x, closed target: that of x). Shape index: the same "
        "without labels, the prompts split by their own reward shapes (docs/diagnostics.md). Distance: to the "
        "utility's collapse point, the exact optimum it gives every prompt of a ranking.",
        "",
        "| utility | collapse index | shape index | distance to its collapse point | open W1 | closed W1 | "
        "pairwise accuracy | Kendall tau |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in results.items():
        d = r.diagnosis
        o, c = d.by_group["open"], d.by_group["closed"]
        lines.append(
            f"| {spec} | {d.collapse_index:.3f} | {_number(r.measures.label_free.shape_index)} | "
            f"{_number(r.measures.label_free.optimum_distance)} | {o.wasserstein:.3f} | {c.wasserstein:.3f} | "
            f"{d.overall('pairwise_accuracy'):.3f} | {d.overall('kendall_tau'):.3f} |"
        )
    for name, m in references.items():
        o, c = m.groups.get("open", {}), m.groups.get("closed", {})
        lines.append(
            f"| *{name}* | {_number(m.collapse_index)} | {_number(m.label_free.shape_index)} | - | "
            f"{_number(o.get('wasserstein'))} | {_number(c.get('wasserstein'))} | {_number(m.pairwise_accuracy)} | - |"
        )
    curves = [(spec, r) for spec, r in results.items() if r.curve]
    if curves:
        lines += ["", "Collapse index during training (step: index), on the curve's test prompts:", ""]
        for spec, r in curves:
            path = ", ".join(f"{p['step']}: {_number(p.get('collapse/index'))}" for p in r.curve)
            cost = (
                ""
                if r.curve_seconds is None or r.training is None
                else (
                    f" (measuring took {r.curve_seconds:.1f} s, {100 * r.curve_seconds / r.training.seconds:.1f}% of "
                    "training)"
                )
            )
            lines.append(f"- {spec}: {path}{cost}")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"  # None or NaN: not measured


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
    lines += _curve_summary(report)
    lines.append(f"report: {report.report_md} and {report.report_json}; models and rewards: runs/")
    expected = "" if report.estimated_seconds is None else f" (expected: {duration_text(report.estimated_seconds)})"
    lines.append(f"total time: {duration_text(report.seconds)}{expected}")
    return "\n".join(lines)


def duration_text(seconds: float) -> str:
    """A duration for people: ``6 min 40 s``, ``45 s``.

    Examples
    --------
    >>> duration_text(400.4), duration_text(45)
    ('6 min 40 s', '45 s')
    """
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _curve_summary(report: Any) -> list[str]:
    """When each utility's collapse index crossed the collapsed and separated thresholds, and the curves' figure."""
    from rewardcollapse.diagnostics import COLLAPSED_AT_MOST, SEPARATED_AT_LEAST

    curved = {spec: r for spec, r in report.utilities.items() if r.curve}
    if not curved or report.curves_figure is None:
        return []
    start = next(iter(curved.values())).curve[0].get("collapse/index")
    lines = ["During training (collapse index of the curve's test prompts):"]
    if start is not None:
        lines.append(f"  the untrained model (step 0) reads {start:.2f}")
    for spec, r in curved.items():
        when = crossings(r.curve)
        if when["collapsed"] is not None:
            said = f"collapsed (<= {COLLAPSED_AT_MOST}) from step {when['collapsed']} on"
        elif when["separated"] is not None:
            said = f"separated (>= {SEPARATED_AT_LEAST}) from step {when['separated']} on"
        else:
            said = "ends between the thresholds"
        lines.append(f"  {spec}: {said}")
    lines.append(
        f"curves: {report.curves_figure}: collapse index, shape index (no labels needed) and distance to each "
        "utility's collapse point, against the step; the dotted line is a reward that is the answer's length."
    )
    return lines
