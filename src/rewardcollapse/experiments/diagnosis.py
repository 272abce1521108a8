"""Diagnosing scored prompts: label-free collapse measures, and with openness labels groups, targets and index.

Every scored file gets the label-free measures of :mod:`rewardcollapse.diagnostics` (shape index, distance to the
collapse point of the training utility, or of each of :data:`COMPARED_UTILITIES` when it is not known), each with
its reference values: the exact targets (each prompt's exact optimum under the utility), reward = answer length,
and, scored separately, the untrained model. When every row has an ``openness``, the test prompts fall in two groups,
``"open"`` (from 0.5) and ``"closed"``; with openness levels, one group per level (:func:`level_label`). Each
group's target is the exact optimum of its answers under the group's prompt-aware utility
(:func:`~rewardcollapse.diagnostics.targets_for`) and its limit law the Beta law of that utility; the collapse index
compares the groups.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse.core.checks import check_openness, read_config_text
from rewardcollapse.core.conventions import OPENNESS, PROMPT_AWARE, is_open
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.diagnostics import (
    MIN_ANSWERS,
    RankedMeasures,
    collapse_verdict,
    level_label,
    measure_ranked,
    optimum_verdict,
    prompt_optima,
    targets_for,
)

__all__ = [
    "COMPARED_UTILITIES",
    "REFERENCES",
    "Diagnosis",
    "GroupDiagnostics",
    "Measured",
    "answer_lengths",
    "check_diagnosable",
    "check_levels",
    "check_utility",
    "diagnose_file",
    "optimum_accuracy",
    "read_scored",
    "reference_rewards",
    "score_untrained",
    "shape_halves",
    "training_record",
    "untrained_backbone",
]

COMPARED_UTILITIES = ("x", "log", "-1/x", "logsigmoid")
"""The fixed utilities whose collapse points a diagnosis compares when the training utility is not known."""

REFERENCES = {
    "exact_targets": "exact targets",
    "answer_length": "answer length",
    "untrained_model": "untrained model",
}
"""The references every figure is read against, by their key in ``diagnostics.json`` and their name in words."""


@dataclass(frozen=True)
class Measured:
    """One set of rewards on the diagnosed prompts (the model's, or a reference's), measured under each utility."""

    source: str
    """What the rewards are, in words."""
    by_utility: dict[str, RankedMeasures]
    """:func:`~rewardcollapse.diagnostics.measure_ranked` under each utility compared, the training one (or the
    first compared) first; all share the shape measures, the collapse index and the pairwise accuracy."""

    @property
    def measures(self) -> RankedMeasures:
        """The measures under the first utility: shape measures, collapse index, per-group W1, accuracy."""
        return next(iter(self.by_utility.values()))

    @property
    def shape_index(self) -> float | None:
        """The label-free collapse index (:class:`~rewardcollapse.diagnostics.LabelFreeMeasures`)."""
        return self.measures.label_free.shape_index

    @property
    def collapse_index(self) -> float | None:
        """The collapse index between the openness groups; None without labels on every row."""
        return self.measures.collapse_index

    @property
    def distances(self) -> dict[str, float | None]:
        """Each utility's mean distance to its collapse point; None where it cannot be given."""
        return {spec: m.label_free.optimum_distance for spec, m in self.by_utility.items()}

    @property
    def nearest(self) -> str | None:
        """The utility whose collapse point is nearest; None when no distance is given."""
        given = {spec: d for spec, d in self.distances.items() if d is not None}
        return min(given, key=given.__getitem__) if given else None

    @property
    def why_not(self) -> dict[str, str]:
        """Why each measure that is not given is not, one line each (distances by ``optimum_distance <utility>``)."""
        reasons = {k: v for k, v in self.measures.to_dict()["why_not"].items() if k != "optimum_distance"}
        for spec, m in self.by_utility.items():
            if m.label_free.optimum_distance is None:
                reasons[f"optimum_distance {spec}"] = m.label_free.why_not["optimum_distance"]
        return reasons

    def to_dict(self) -> dict[str, Any]:
        """The measures, their verdicts and the reasons, as JSON values."""
        free = self.measures.label_free
        index = self.collapse_index
        return {
            "source": self.source,
            "prompts": free.prompts,
            "left_out_few_answers": free.left_out_few_answers,
            "left_out_equal_rewards": free.left_out_equal_rewards,
            "shape_index": free.shape_index,
            "shape_verdict": free.verdict,
            "shape_spread": free.shape_spread,
            "shape_spread_if_collapsed": free.shape_spread_if_collapsed,
            "optimum_distance": {
                spec: {"distance": d, "verdict": None if d is None else optimum_verdict(d)}
                for spec, d in self.distances.items()
            },
            "nearest_collapse_point": self.nearest,
            "collapse_index": index,
            "verdict": None if index is None else collapse_verdict(index),
            "wasserstein": {group: entry["wasserstein"] for group, entry in self.measures.groups.items()},
            "pairwise_accuracy": self.measures.pairwise_accuracy,
            "why_not": self.why_not,
        }


def _measured(
    rows: Sequence[Mapping[str, Any]], rewards: Sequence[np.ndarray], utilities: Sequence[str], levels, source: str
) -> Measured:
    by_utility = {spec: measure_ranked(rows, rewards, utility=spec, levels=levels) for spec in utilities}
    return Measured(source=source, by_utility=by_utility)


def answer_lengths(rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """Each row's answers' lengths in characters (a message list: its text contents): the reward = length reference."""

    def length(answer: Any) -> int:
        if isinstance(answer, str):
            return len(answer)
        return sum(len(m["content"]) for m in answer if isinstance(m.get("content"), str))

    return [np.array([length(answer) for answer in row["responses"]], dtype=float) for row in rows]


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
    """A scored file, diagnosed: the label-free measures with their references, and with labels the collapse index.

    With an openness on every row: the groups, their targets, the collapse index and the per-group diagnostics.
    :meth:`all_measures` is ``diagnostics.json``.
    """

    rows: list[dict[str, Any]]
    """The scored rows, checked (ranking fields and rewards), less those left out."""
    rewards: list[np.ndarray]
    """Each prompt's rewards: its ``normalized_rewards``, or its raw ``rewards`` where the row has no normalised ones
    (each prompt is rescaled to [0, 1] before it is measured, so either reads the same way up to the sigmoid)."""
    groups: list[str] | None
    """Each prompt's group: ``"open"`` or ``"closed"``, or its openness level's label; None unless every row has an
    openness."""
    pairs: list[np.ndarray]
    """Each prompt's ``(n, n)`` ranked pairs, answer ``i`` above ``j``."""
    targets: dict[str, np.ndarray] | None
    """Each group's target rewards (:func:`targets_for`); None without groups."""
    collapse_index: float | None
    """Between the groups; None without groups, or when they cannot be compared (``measured.why_not`` says why)."""
    by_group: dict[str, GroupDiagnostics]
    """In the order of the targets (the levels); empty without groups."""
    left_out: int = 0
    """Rows flagged ``indistinguishable`` by ``score`` (answers all cut to the same tokens), not diagnosed."""
    levels: list[float] | None = None
    """The openness levels the groups follow; None: open and closed."""
    utility: str | None = None
    """The training utility, whose exact optimum is each prompt's collapse point; None: not known, so the collapse
    points of each of :data:`COMPARED_UTILITIES` are measured."""
    measured: Measured | None = None
    """The model's rewards, measured (label-free, and the collapse index with labels)."""
    references: dict[str, Measured] = field(default_factory=dict)
    """The same measures on reference rewards, by :data:`REFERENCES` key."""
    not_given: dict[str, str] = field(default_factory=dict)
    """For each reference not computed, why and how to get it."""

    @property
    def utilities(self) -> tuple[str, ...]:
        """The utilities whose collapse points are measured: the training one, or :data:`COMPARED_UTILITIES`."""
        return COMPARED_UTILITIES if self.utility is None else (self.utility,)

    @property
    def collapse_point(self) -> str | None:
        """The utility whose exact optimum the exact targets are: the training one, else the nearest measured."""
        return self.utility or (None if self.measured is None else self.measured.nearest)

    def overall(self, metric: str) -> float:
        """A ranking metric over all prompts: the groups' values weighted by their prompts (labelled files)."""
        total = sum(g.prompts for g in self.by_group.values())
        return sum(getattr(g, metric) * g.prompts for g in self.by_group.values()) / total

    def with_reference(self, key: str, rewards: Sequence[np.ndarray], source: str) -> Diagnosis:
        """The diagnosis with the reference ``key`` (of :data:`REFERENCES`) measured on ``rewards`` of its rows."""
        if key not in REFERENCES:
            raise InputValueError(f"`key` must be one of {sorted(REFERENCES)}, got {key!r}")
        if len(rewards) != len(self.rows):
            raise InputValueError(f"`rewards` has {len(rewards)} prompts but the diagnosis has {len(self.rows)}")
        measured = _measured(self.rows, rewards, self.utilities, self.levels, source)
        not_given = {k: v for k, v in self.not_given.items() if k != key}
        return dataclasses.replace(self, references={**self.references, key: measured}, not_given=not_given)

    def with_reason(self, key: str, reason: str) -> Diagnosis:
        """The diagnosis saying why the reference ``key`` is not computed (``reason``: why, and how to get it)."""
        return dataclasses.replace(self, not_given={**self.not_given, key: reason})

    def to_dict(self) -> dict[str, Any]:
        """The collapse index and the per-group diagnostics, as ``{"collapse_index": ..., "groups": {...}}``.

        Without labels the index is None and the groups empty; :meth:`all_measures` has everything.
        """
        groups = {group: dataclasses.asdict(values) for group, values in self.by_group.items()}
        return {"collapse_index": self.collapse_index, "groups": groups}

    def all_measures(self) -> dict[str, Any]:
        """:meth:`to_dict` and every label-free measure, reference and reason, as JSON values: ``diagnostics.json``.

        The keys added: ``utility``, ``prompts``, ``left_out``, ``measures`` (:meth:`Measured.to_dict` of the model's
        rewards), ``references`` (the same for each reference computed) and ``not_given`` (each reference not
        computed, and why).
        """
        out = self.to_dict()
        if self.measured is not None:
            out.update(
                utility=self.utility,
                prompts=len(self.rows),
                left_out=self.left_out,
                measures=self.measured.to_dict(),
                references={key: m.to_dict() for key, m in self.references.items()},
                not_given=self.not_given,
            )
        return out


def _limit_laws(levels: Sequence[float] | None) -> dict[str, Any]:
    from rewardcollapse.core import openness_law

    if levels is None:
        return {"open": openness_law(1.0), "closed": openness_law(0.0)}
    return {level_label(o): openness_law(o) for o in levels}


def _scored_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """The (line number, row) pairs of a scored JSONL file, each checked like a loaded ranking row plus its rewards.

    A row's rewards are its ``normalized_rewards`` (numbers in [0, 1]), else its raw ``rewards``; each row keeps the
    one field it was read from. Rows that ``score`` flagged ``indistinguishable`` are left out (with a warning);
    also returns how many.
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
        field_name = "normalized_rewards" if "normalized_rewards" in row else "rewards"
        if field_name not in row:
            raise InputValueError(
                f"{where} has no `normalized_rewards`; score the file first (`rewardcollapse score` writes them and "
                "the raw `rewards`, either of which is read), or give --model and --data to score it here"
            )
        canonical, error = ranking_row(row, where)
        if error:
            raise InputValueError(error.message)
        rewards = row[field_name]
        n = len(canonical["responses"])
        normalised = field_name == "normalized_rewards"
        valid = isinstance(rewards, list) and len(rewards) == n
        valid = valid and all(
            isinstance(r, int | float)
            and not isinstance(r, bool)
            and math.isfinite(r)
            and (0 <= r <= 1 or not normalised)
            for r in rewards
        )
        if not valid:
            scale = " in [0, 1]" if normalised else ""
            raise InputValueError(
                f"{where}: `{field_name}` must be {n} finite numbers{scale} (one per response), got {rewards!r:.80}"
            )
        flag = row.get("indistinguishable", False)
        if not isinstance(flag, bool):
            raise InputValueError(
                f"{where}: `indistinguishable` must be true or false (as `score` writes it), got {flag!r}"
            )
        rows.append((number, {**canonical, field_name: rewards}, flag))
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


def _rewards_of(row: Mapping[str, Any]) -> np.ndarray:
    """A read row's rewards: its ``normalized_rewards``, else its raw ``rewards``."""
    return np.asarray(row["normalized_rewards"] if "normalized_rewards" in row else row["rewards"], dtype=float)


def read_scored(
    path: Path, levels: Sequence[float] | None = None
) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """Rewards (normalised, else raw), group labels and pair matrices of a ``score`` output file with openness.

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
        rewards.append(_rewards_of(row))
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


def check_diagnosable(
    rows: Iterable[Mapping[str, Any]],
    levels: Sequence[float] | None = None,
    *,
    name: str,
    require_openness: bool = True,
) -> None:
    """Check, before they are scored, that ranking rows can be diagnosed with ``levels``; an error names what cannot.

    The checks :func:`diagnose_file` makes that do not need the rewards: the levels (each an openness in [0, 1],
    labels that differ) and each row's group. With ``require_openness`` (as the experiment, whose finding is the
    collapse index) every row needs an openness and the groups' targets must differ (at least two groups, 4 answers
    and more); without it, rows without openness are diagnosed without labels, so only the rows' group (where every
    row has one) and that some prompt has the :data:`~rewardcollapse.diagnostics.MIN_ANSWERS` answers a collapse
    measure needs are checked. ``name`` names the rows' source in messages.
    """
    from rewardcollapse.diagnostics import collapse_index

    levels = check_levels(levels)
    rows = list(rows)
    if not rows:
        raise InputValueError(f"{name}: no rows to diagnose")
    sizes = [len(row["responses"]) for row in rows]
    if not require_openness:
        if all(row.get("openness") is not None for row in rows):
            for index, row in enumerate(rows):
                _group(row["openness"], levels, f"{name}: row {index}")
        if max(sizes) < MIN_ANSWERS:
            raise InputValueError(
                f"{name}: every row has fewer than {MIN_ANSWERS} answers, so no collapse measure can be given (with "
                f"2 or 3 the rescaled rewards leave at most one value free); give prompts with {MIN_ANSWERS} or more "
                "ranked answers"
            )
        return
    groups = [_group(row.get("openness"), levels, f"{name}: row {index}") for index, row in enumerate(rows)]
    targets = targets_for(int(np.median(sizes)), levels)
    collapse_index([targets[group] for group in groups], groups, targets)  # raises what the diagnosis would


def check_utility(utility: str | None, name: str = "utility") -> str | None:
    """``utility`` when it is a utility spec, ``"prompt-aware"``, ``"openness"`` or None, else an error naming it."""
    from rewardcollapse.core.utilities import utility as parse_utility

    if utility is None or utility in (PROMPT_AWARE, OPENNESS):
        return utility
    try:
        parse_utility(utility)
    except (ValueError, TypeError) as error:
        raise InputValueError(
            f"`{name}` must be a utility spec ('x', 'log', '-1/x', 'logsigmoid', ...), '{PROMPT_AWARE}' or "
            f"'{OPENNESS}', got {utility!r}: {error}"
        ) from error
    return utility


def diagnose_file(path: str | Path, levels: Sequence[float] | None = None, *, utility: str | None = None) -> Diagnosis:
    """Read a scored file (``rewardcollapse score`` output) and diagnose it; every row is checked first.

    Always: the label-free measures (:func:`~rewardcollapse.diagnostics.measure_ranked`) of the rewards, under the
    training ``utility`` (a spec, ``"prompt-aware"`` or ``"openness"``), or under each of
    :data:`COMPARED_UTILITIES` when it is None; and the same measures on two references, each prompt's exact optimum
    under the utility (or the nearest one's) and reward = answer length in characters. The untrained model is a third
    reference, scored separately (:func:`score_untrained`, :meth:`Diagnosis.with_reference`).

    When every row has an ``openness``, per group as well: ``ks`` and ``wasserstein`` to the group's n-answer target
    (:func:`targets_for`, n the median number of answers), ``ks_limit`` to its limit law (uniform for open, atoms at
    0 and 1 for closed, Beta(o, o) for level ``o``), prompts, pairwise accuracy and Kendall tau, and the collapse
    index between the groups. Rows that ``score`` flagged ``indistinguishable`` (answers all cut to the same tokens:
    equal rewards by construction, which would read as collapse) are left out with a warning and counted in
    ``left_out``.

    Raises
    ------
    InputValueError
        For a bad row (naming its line and field), a labelled row at none of ``levels``, a labelled file whose
        flagged rows took a whole group, and a file on which no collapse measure can be given (naming why).
    """
    from rewardcollapse.data.schema import ranked_pairs
    from rewardcollapse.diagnostics import group_diagnostics

    levels = check_levels(levels)
    utility = check_utility(utility)
    numbered, left_out = _scored_rows(Path(path))
    rows = [row for _, row in numbered]
    rewards = [_rewards_of(row) for row in rows]
    pairs = [ranked_pairs(row) for row in rows]
    groups = targets = None
    by_group: dict[str, GroupDiagnostics] = {}
    if all(row["openness"] is not None for row in rows):
        _, groups, _ = _rewards_groups_pairs(numbered, path, levels)
        if left_out and len(set(groups)) < 2:
            raise InputValueError(
                f"{path}: with the {left_out} prompts flagged `indistinguishable` left out, only the group(s) "
                f"{sorted(set(groups))} remain and the diagnosis compares groups; score again with a larger "
                "--max_length, or shorten the prompts"
            )
        targets = targets_for(int(np.median([len(r) for r in rewards])), levels)
        measured = group_diagnostics(rewards, groups, targets, pairs, limits=_limit_laws(levels))
        # In the order of the targets (the levels).
        by_group = {group: GroupDiagnostics(**measured[group]) for group in targets if group in measured}
    utilities = COMPARED_UTILITIES if utility is None else (utility,)
    model = _measured(rows, rewards, utilities, levels, "the model's rewards")
    _check_measurable(path, model, labelled=groups is not None)
    diagnosis = Diagnosis(
        rows=rows,
        rewards=rewards,
        groups=groups,
        pairs=pairs,
        targets=targets,
        collapse_index=model.collapse_index,
        by_group=by_group,
        left_out=left_out,
        levels=levels,
        utility=utility,
        measured=model,
    )
    spec = diagnosis.collapse_point
    try:
        if spec is None:
            raise InputValueError(f"no utility: {model.why_not[f'optimum_distance {utilities[0]}']}")
        optima = prompt_optima(rows, spec)
    except ValueError as error:
        diagnosis = diagnosis.with_reason("exact_targets", f"no exact optimum to measure ({error})")
    else:
        diagnosis = diagnosis.with_reference("exact_targets", optima, f"each prompt's exact optimum under {spec}")
    return diagnosis.with_reference("answer_length", answer_lengths(rows), "each answer's length in characters")


def _check_measurable(path: str | Path, model: Measured, labelled: bool) -> None:
    """Refuse, in one line naming the file, the reasons and the fix, rewards on which no collapse measure is given.

    Without labels on every row the collapse index's reason (no openness) is left out: labels would not help.
    """
    given = [model.shape_index, model.collapse_index, *model.distances.values()]
    if any(value is not None for value in given):
        return
    why = {key: reason for key, reason in model.why_not.items() if labelled or key != "collapse_index"}
    reasons = list(dict.fromkeys(why.values()))  # each reason once, in order
    raise InputValueError(
        f"{path}: no collapse measure can be given: {'; '.join(reasons)}; give prompts with at least {MIN_ANSWERS} "
        "ranked answers each, scored by a model that tells them apart"
    )


def shape_halves(rewards: Sequence[np.ndarray]) -> list[str]:
    """Each prompt's half by its polarisation (:func:`~rewardcollapse.diagnostics.polarisation`): the figure's split.

    ``"less polarised half"`` for the lower half of the prompts (ties kept in order), ``"more polarised half"`` for
    the others: the split the shape spread measures, drawn on every prompt.
    """
    from rewardcollapse.diagnostics import polarisation

    order = np.argsort(polarisation(rewards), kind="stable")
    halves = ["more polarised half"] * len(rewards)
    for b in order[: len(rewards) // 2]:
        halves[b] = "less polarised half"
    return halves


def training_record(model: str | Path | None) -> dict[str, Any]:
    """What a model folder this project trained records in its ``training_summary.json``; {} for any other model.

    Raises
    ------
    InputValueError
        For a summary that is not a JSON object, naming the file.
    """
    from rewardcollapse.training.run import SUMMARY_FILE

    path = Path(model) / SUMMARY_FILE if model else None
    if path is None or not path.is_file():
        return {}
    try:
        record = json.loads(read_config_text(path))
    except ValueError as error:
        raise InputValueError(f"{path} is not valid JSON ({str(error)[:200]}); train the model again") from error
    if not isinstance(record, dict):
        raise InputValueError(f"{path} must hold a JSON object, got {type(record).__name__}; train the model again")
    return record


def untrained_backbone(
    model: str | Path | None, *, base_model: str | None = None, untrained_model: str | None = None
) -> tuple[str | None, str]:
    """The model a reward model started from, to score as the untrained reference, and where it was found.

    ``untrained_model`` when given; else the ``backbone`` a ``model`` folder this project trained records; else, for
    a folder of LoRA adapters, ``base_model`` or the base its ``adapter_config.json`` names. Returns ``(name, where
    it came from)``, or ``(None, why not and how to get it)``.
    """
    if untrained_model is not None:
        return untrained_model, "--untrained_model"
    fix = "give --untrained_model NAME_OR_PATH, the model the reward model was trained from"
    if model is None:
        return None, f"the model the rewards came from is not known; {fix}"
    from rewardcollapse.training.run import SUMMARY_FILE

    backbone = training_record(model).get("backbone")
    if backbone:
        return str(backbone), f"the backbone {Path(model) / SUMMARY_FILE} records"
    adapters = Path(model) / "adapter_config.json"
    if adapters.is_file():
        if base_model is not None:
            return base_model, "--base_model"
        try:
            base = json.loads(read_config_text(adapters)).get("base_model_name_or_path")
        except (ValueError, AttributeError):
            base = None
        if base:
            return str(base), f"the base model {adapters} names"
    return None, f"{model} records no backbone (no {SUMMARY_FILE}, no adapter_config.json); {fix}"


def score_untrained(backbone: str, data: str | Path, output: str | Path, **settings: Any) -> Path:
    """Score the rows of ``data`` with ``backbone`` and a new score head, its weights seeded 0: the untrained model.

    ``settings`` are :func:`~rewardcollapse.training.score_file`'s (``max_length``, ``precision``, ...), so the
    reference reads the answers as the trained model did. Returns ``output``, one scored row per prompt.
    """
    from transformers import set_seed

    from rewardcollapse.training.run import score_file

    set_seed(0)  # the new score head's initial weights, as training seeds them
    score_file(
        model=backbone,
        data=data,
        output=output,
        pairwise_output=False,
        description="scoring the untrained model",
        **settings,
    )
    return Path(output)


def reference_rewards(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """Each of ``rows``' rewards in the scored file ``path`` (normalised, else raw), matched by prompt and answers.

    Raises
    ------
    InputValueError
        For a row whose prompt and answers ``path`` does not hold, naming it.
    """
    from rewardcollapse.data.schema import text_key

    def key(row: Mapping[str, Any]) -> tuple[str, ...]:
        return (text_key(row["prompt"]), *(text_key(answer) for answer in row["responses"]))

    scored = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            scored[key(row)] = _rewards_of(row)
    missing = [index for index, row in enumerate(rows) if key(row) not in scored]
    if missing:
        raise InputValueError(
            f"{path} has no scores for {len(missing)} of the {len(rows)} rows diagnosed (the first: prompt "
            f"{str(rows[missing[0]]['prompt'])[:60]!r}); score the same rows"
        )
    return [scored[key(row)] for row in rows]


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
