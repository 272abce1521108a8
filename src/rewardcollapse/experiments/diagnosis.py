"""Diagnosing the experiment's scored test prompts: groups, their targets, collapse index, the optimum's accuracy.

The test prompts of the paper's design fall in two groups by their ``openness``, ``"open"`` (from 0.5) and
``"closed"``; with openness levels, one group per level (:func:`level_label`). Each group's target is the exact
optimum of its answers under the group's prompt-aware utility (:func:`~rewardcollapse.diagnostics.targets_for`) and
its limit law the Beta law of that utility.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse.core.checks import check_openness
from rewardcollapse.core.conventions import is_open
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.diagnostics import level_label, targets_for

__all__ = [
    "Diagnosis",
    "GroupDiagnostics",
    "check_diagnosable",
    "check_levels",
    "diagnose_file",
    "optimum_accuracy",
    "read_scored",
]


@dataclass(frozen=True)
class GroupDiagnostics:
    """How one group's rewards (rescaled per prompt) compare with its target and rank its answers."""

    prompts: int
    ks: float
    """KS distance to the group's n-answer target."""
    wasserstein: float
    """1-Wasserstein distance to the group's n-answer target."""
    pairwise_accuracy: float
    kendall_tau: float
    ks_limit: float
    """KS distance to the limit law of the group's utility."""


@dataclass(frozen=True, eq=False)
class Diagnosis:
    """A scored file, diagnosed: what was read, the targets, the collapse index and the per-group diagnostics.

    :meth:`to_dict` is ``diagnostics.json``.
    """

    rows: list[dict[str, Any]]
    """The scored rows, checked (ranking fields, ``openness`` and ``normalized_rewards``), less those left out."""
    rewards: list[np.ndarray]
    """Each prompt's normalised rewards."""
    groups: list[str]
    """Each prompt's group: ``"open"`` or ``"closed"``, or its openness level's label."""
    pairs: list[np.ndarray]
    """Each prompt's ``(n, n)`` ranked pairs, answer ``i`` above ``j``."""
    targets: dict[str, np.ndarray]
    """Each group's target rewards (:func:`targets_for`)."""
    collapse_index: float
    by_group: dict[str, GroupDiagnostics]
    """In the order of the targets (the levels)."""
    left_out: int = 0
    """Rows flagged ``indistinguishable`` by ``score`` (answers all cut to the same tokens), not diagnosed."""

    def overall(self, metric: str) -> float:
        """A ranking metric over all prompts: the groups' values weighted by their prompts."""
        total = sum(g.prompts for g in self.by_group.values())
        return sum(getattr(g, metric) * g.prompts for g in self.by_group.values()) / total

    def to_dict(self) -> dict[str, Any]:
        """The collapse index and the per-group diagnostics, as ``{"collapse_index": ..., "groups": {...}}``."""
        groups = {group: dataclasses.asdict(values) for group, values in self.by_group.items()}
        return {"collapse_index": self.collapse_index, "groups": groups}


def _limit_laws(levels: Sequence[float] | None) -> dict[str, Any]:
    from rewardcollapse.core import openness_law

    if levels is None:
        return {"open": openness_law(1.0), "closed": openness_law(0.0)}
    return {level_label(o): openness_law(o) for o in levels}


def _scored_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """The (line number, row) pairs of a scored JSONL file, each checked like a loaded ranking row plus its rewards.

    Rows that ``score`` flagged ``indistinguishable`` are left out (with a warning); also returns how many.
    """
    import math

    from rewardcollapse.data.schema import ranking_row

    if not path.is_file():
        raise InputValueError(
            f"`rewards` {str(path)!r} is not a file; give the JSONL file that `rewardcollapse score` wrote"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputValueError(f"{path}: not UTF-8 text ({error}); give the JSONL that `score` wrote") from error
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputValueError(f"{where} is not valid JSON ({error.msg}); one JSON object per line") from error
        if not isinstance(row, dict):
            raise InputValueError(f"{where} is a JSON {type(row).__name__}, not an object; give JSONL, one row a line")
        if "normalized_rewards" not in row:
            raise InputValueError(
                f"{where} has no `normalized_rewards`; score the file first (`rewardcollapse score`), or give "
                "--model and --data to score it here"
            )
        canonical, error = ranking_row(row, where)
        if error:
            raise InputValueError(error.message)
        rewards = row["normalized_rewards"]
        n = len(canonical["responses"])
        valid = isinstance(rewards, list) and len(rewards) == n
        valid = valid and all(
            isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) and 0 <= r <= 1 for r in rewards
        )
        if not valid:
            raise InputValueError(
                f"{where}: `normalized_rewards` must be {n} finite numbers in [0, 1] (one per response), got "
                f"{rewards!r:.80}"
            )
        if canonical["openness"] is None:
            raise InputValueError(f"{where} has no `openness`, so it belongs to no group (open or closed)")
        flag = row.get("indistinguishable", False)
        if not isinstance(flag, bool):
            raise InputValueError(
                f"{where}: `indistinguishable` must be true or false (as `score` writes it), got {flag!r}"
            )
        rows.append((number, {**canonical, "normalized_rewards": rewards}, flag))
    if not rows:
        raise InputValueError(f"{path}: no rows; give the JSONL file that `rewardcollapse score` wrote")
    kept = [(number, row) for number, row, flag in rows if not flag]
    left_out = len(rows) - len(kept)
    fix = "score again with a larger --max_length, or shorten the prompts"
    if not kept:
        raise InputValueError(
            f"{path}: every row is flagged `indistinguishable` (answers cut to the same tokens); {fix}"
        )
    if left_out:
        warnings.warn(
            f"{path}: {left_out} of {len(rows)} prompts are flagged `indistinguishable` (their answers were all cut to "
            f"the same tokens when scored, so their rewards are equal by construction) and left out; {fix}",
            UserWarning,
            stacklevel=3,
        )
    return kept, left_out


def read_scored(
    path: Path, levels: Sequence[float] | None = None
) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """Normalised rewards, group labels and pair matrices of a ``score`` output file.

    A row's group comes from its ``openness``: ``"open"`` (>= 0.5) or ``"closed"``, or with ``levels`` the label of
    the level it equals (to 1e-9; a row at no level is an error naming it). Every row is checked as the ranking
    loader checks it, and its ``normalized_rewards`` must be one finite number in [0, 1] per response; a bad row is
    an error naming its line and field.
    """
    rows, _ = _scored_rows(Path(path))
    return _rewards_groups_pairs(rows, path, check_levels(levels))


def _rewards_groups_pairs(
    rows: list[tuple[int, dict[str, Any]]], path: str | Path, levels: Sequence[float] | None
) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    from rewardcollapse.data.schema import ranked_pairs

    rewards, groups, pairs = [], [], []
    for number, row in rows:
        groups.append(_group(row["openness"], levels, f"{path}: line {number}"))
        rewards.append(np.asarray(row["normalized_rewards"], dtype=float))
        pairs.append(ranked_pairs(row))
    return rewards, groups, pairs


def check_levels(levels: Sequence[float] | None, name: str = "levels") -> list[float] | None:
    """``levels`` as floats when each is an openness in [0, 1] and their labels differ, else an error naming them."""
    if levels is None:
        return None
    levels = [check_openness(o, f"each of `{name}` {list(levels)}") for o in levels]
    if len(levels) < 2:
        raise InputValueError(f"`{name}` {levels} must name at least two openness levels to compare, e.g. 0 0.5 1")
    if len({level_label(o) for o in levels}) != len(levels):
        raise InputValueError(f"`{name}` {levels} must differ in their first 3 significant digits")
    return levels


def _group(openness: float | None, levels: list[float] | None, where: str) -> str:
    """The group of a row of ``openness``: open or closed, or the label of the level it equals (to 1e-9)."""
    if openness is None:
        raise InputValueError(f"{where} has no `openness`, so it belongs to no group (open or closed)")
    if levels is None:
        return "open" if is_open(openness) else "closed"
    matches = [o for o in levels if abs(o - openness) <= 1e-9]
    if not matches:
        raise InputValueError(f"{where} has openness {openness}, which is none of the levels {levels}")
    return level_label(matches[0])


def check_diagnosable(rows: Iterable[Mapping[str, Any]], levels: Sequence[float] | None = None, *, name: str) -> None:
    """Check, before they are scored, that ranking rows can be diagnosed with ``levels``; an error names what cannot.

    The checks :func:`diagnose_file` makes that do not need the rewards: the levels (each an openness in [0, 1],
    labels that differ), each row's openness and group, and the groups' targets (at least two groups whose targets
    differ, as the collapse index needs). ``name`` names the rows' source in messages.
    """
    from rewardcollapse.diagnostics import collapse_index

    levels = check_levels(levels)
    groups, sizes = [], []
    for index, row in enumerate(rows):
        groups.append(_group(row.get("openness"), levels, f"{name}: row {index}"))
        sizes.append(len(row["responses"]))
    if not groups:
        raise InputValueError(f"{name}: no rows to diagnose")
    targets = targets_for(int(np.median(sizes)), levels)
    collapse_index([targets[group] for group in groups], groups, targets)  # raises what the diagnosis would


def diagnose_file(path: str | Path, levels: Sequence[float] | None = None) -> Diagnosis:
    """Read a scored file (``rewardcollapse score`` output) and diagnose it; every row is checked first.

    Per group: ``ks`` and ``wasserstein`` to the group's n-answer target (:func:`targets_for`, n the median number
    of answers), ``ks_limit`` to its limit law (uniform for open, atoms at 0 and 1 for closed, Beta(o, o) for level
    ``o``), prompts, pairwise accuracy and Kendall tau. Rows that ``score`` flagged ``indistinguishable`` (answers
    all cut to the same tokens: equal rewards by construction, which would read as collapse) are left out with a
    warning and counted in ``left_out``.
    """
    from rewardcollapse.diagnostics import collapse_index, group_diagnostics

    levels = check_levels(levels)
    numbered, left_out = _scored_rows(Path(path))
    rewards, groups, pairs = _rewards_groups_pairs(numbered, path, levels)
    if left_out and len(set(groups)) < 2:
        raise InputValueError(
            f"{path}: with the {left_out} prompts flagged `indistinguishable` left out, only the group(s) "
            f"{sorted(set(groups))} remain and the diagnosis compares groups; score again with a larger --max_length, "
            "or shorten the prompts"
        )
    targets = targets_for(int(np.median([len(r) for r in rewards])), levels)
    measured = group_diagnostics(rewards, groups, targets, pairs, limits=_limit_laws(levels))
    return Diagnosis(
        rows=[row for _, row in numbered],
        rewards=rewards,
        groups=groups,
        pairs=pairs,
        targets=targets,
        collapse_index=collapse_index(rewards, groups, targets),
        # In the order of the targets (the levels).
        by_group={group: GroupDiagnostics(**measured[group]) for group in targets if group in measured},
        left_out=left_out,
    )


def optimum_accuracy(rows: Sequence[dict[str, Any]], utility: str) -> float:
    """The pairwise accuracy of the exact optimal rewards of each row's ranking under its utility, ties as half.

    A trained model can approach this but has no reason to beat it by much: ``x`` ties the answers of each cluster
    at 0 or 1 (8 answers: 0.786), ``-1/x`` orders them all (1.0). ``utility`` is a spec, ``"prompt-aware"`` (each
    row's utility) or ``"openness"`` (each row's :func:`~rewardcollapse.openness_utility`).
    """
    from rewardcollapse.data.schema import ranked_pairs
    from rewardcollapse.diagnostics import prompt_optima, ranking_metrics

    correct = total = 0.0
    for row, optimum in zip(rows, prompt_optima(rows, utility), strict=True):
        pairs = ranked_pairs(row)
        metrics = ranking_metrics(optimum[None, :], pairs[None])
        correct += metrics["pairwise_accuracy"] * pairs.sum()
        total += pairs.sum()
    return correct / total
