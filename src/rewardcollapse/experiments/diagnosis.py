"""Diagnosing the experiment's scored test prompts: groups, their targets, collapse index, the optimum's accuracy.

The test prompts of the paper's design fall in two groups by their ``openness``, ``"open"`` (from 0.5) and
``"closed"``; with openness levels, one group per level (:func:`level_label`). Each group's target is the exact
optimum of its answers under the group's prompt-aware utility (:func:`targets_for`) and its limit law the Beta law
of that utility.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY, OPENNESS, is_open, prompt_utility
from rewardcollapse.core.errors import InputValueError

__all__ = [
    "GROUP_UTILITIES",
    "diagnose_file",
    "level_label",
    "optimum_accuracy",
    "overall",
    "read_scored",
    "targets_for",
]

GROUP_UTILITIES = {"open": OPEN_UTILITY, "closed": CLOSED_UTILITY}
"""The prompt-aware utility of each group, whose optimal rewards are the group's target."""


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


def _scored_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The (line number, row) pairs of a scored JSONL file, each checked like a loaded ranking row plus its rewards."""
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
        rows.append((number, {**canonical, "normalized_rewards": rewards}))
    if not rows:
        raise InputValueError(f"{path}: no rows; give the JSONL file that `rewardcollapse score` wrote")
    return rows


def read_scored(
    path: Path, levels: Sequence[float] | None = None
) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """Normalised rewards, group labels and pair matrices of a ``score`` output file.

    A row's group comes from its ``openness``: ``"open"`` (>= 0.5) or ``"closed"``, or with ``levels`` the label of
    the level it equals (to 1e-9; a row at no level is an error naming it). Every row is checked as the ranking
    loader checks it, and its ``normalized_rewards`` must be one finite number in [0, 1] per response; a bad row is
    an error naming its line and field.
    """
    from rewardcollapse.data.schema import ranked_pairs

    rewards, groups, pairs = [], [], []
    for number, row in _scored_rows(Path(path)):
        openness = row["openness"]
        if levels is None:
            groups.append("open" if is_open(openness) else "closed")
        else:
            matches = [o for o in levels if abs(o - openness) <= 1e-9]
            if not matches:
                raise InputValueError(
                    f"{path}: line {number} has openness {openness}, which is none of the levels {levels}"
                )
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


def overall(groups: dict[str, dict[str, float]], metric: str) -> float:
    """A ranking metric over all test prompts: the groups' values weighted by their prompts."""
    total = sum(g["prompts"] for g in groups.values())
    return sum(g[metric] * g["prompts"] for g in groups.values()) / total


def _ranking(row: dict[str, Any]) -> Any:
    """A row's ranking as :func:`~rewardcollapse.optimal_rewards` takes it: tiers from ``ranks``, or edges."""
    if row.get("pairs") is not None:
        return [tuple(edge) for edge in row["pairs"]]
    ranks = row.get("ranks") or list(range(len(row["responses"])))
    return [[i for i, r in enumerate(ranks) if r == value] for value in sorted(set(ranks))]


def optimum_accuracy(rows: Sequence[dict[str, Any]], utility: str) -> float:
    """The pairwise accuracy of the exact optimal rewards of each row's ranking under its utility, ties as half.

    A trained model can approach this but has no reason to beat it by much: ``x`` ties the answers of each cluster
    at 0 or 1 (8 answers: 0.786), ``-1/x`` orders them all (1.0). ``utility`` is a spec, ``"prompt-aware"`` (each
    row's utility) or ``"openness"`` (each row's :func:`~rewardcollapse.openness_utility`).
    """
    from rewardcollapse.core import openness_utility, optimal_rewards
    from rewardcollapse.data.schema import ranked_pairs
    from rewardcollapse.diagnostics import ranking_metrics

    correct = total = 0.0
    cache: dict[tuple[str, str], np.ndarray] = {}
    for row in rows:
        spec = openness_utility(row["openness"]) if utility == OPENNESS else prompt_utility(row, utility)
        ranking = _ranking(row)
        key = (getattr(spec, "name", spec), json.dumps(ranking))
        if key not in cache:
            cache[key] = optimal_rewards(ranking, spec).rewards
        pairs = ranked_pairs(row)
        metrics = ranking_metrics(cache[key][None, :], pairs[None])
        correct += metrics["pairwise_accuracy"] * pairs.sum()
        total += pairs.sum()
    return correct / total
