"""The ranking format, and row by row conversion and validation of the three input formats.

Every loader produces rows of the *ranking format*:

``prompt``
    The prompt: a string, or a list of chat messages ``{"role": ..., "content": ...}`` (rendered by the tokenizer's
    chat template at tokenisation).
``responses``
    At least two distinct, non-empty answers (strings, or lists of messages for conversational data).
``ranks``
    One integer per response, lower is better, equal ranks tied. Absent in the input: the list order, best first.
``pairs``
    ``[[i, j], ...]`` with answer ``i`` above answer ``j``: a partial order that no ranks can express (merged TRL
    pairs); ``ranks`` is then null. Otherwise null.
``utility``
    Optional per-prompt utility spec (``"x"``, ``"-1/x"``, ...) for prompt-aware training.
``openness``
    Optional float in ``[0, 1]``: 0 closed (one right answer), 1 open-ended.

Each check returns a :class:`RowError` naming the field and the fix instead of raising, so that a loader can either
raise on the first bad row or drop the bad rows and report them (``skip_invalid``).
"""

from __future__ import annotations

import functools
import graphlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RANKING_COLUMNS",
    "RowError",
    "merge_pairs",
    "ranked_pairs",
    "ranking_row",
    "scored_row",
    "split_implicit_prompt",
]

RANKING_COLUMNS = ("prompt", "responses", "ranks", "pairs", "utility", "openness")
"""Columns of a loaded ranking dataset, in order."""

SKIP_HINT = "fix the row, or load with skip_invalid=True to drop such rows and get a report"


@dataclass(frozen=True)
class RowError:
    """Why a row was rejected: a short ``reason`` key (for the drop report) and a full ``message``."""

    reason: str
    message: str


def _is_message_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) and "content" in m for m in value)
    )


def _text_key(value: Any) -> str:
    """A hashable, order-preserving key of a string or a message list (for duplicates and grouping)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _maybe_json(value: Any) -> Any:
    """CSV cells hold lists as JSON text; decode those, leave everything else alone."""
    if isinstance(value, str) and value[:1] == "[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _message_problem(value: Any) -> str:
    """Why ``value`` is not a chat message list, in words (for a value that is no string either)."""
    if not isinstance(value, list):
        return f"got {type(value).__name__}"
    if not value:
        return "got an empty list"
    for k, message in enumerate(value):
        if not isinstance(message, Mapping):
            return f"message {k} is a {type(message).__name__}, not an object"
        if not isinstance(message.get("role"), str):
            return f"message {k} has no 'role' (a string such as 'user' or 'assistant')"
        if "content" not in message:
            return f"message {k} has no 'content'"
    return "got a list"


def _check_prompt(prompt: Any, where: str) -> RowError | None:
    if isinstance(prompt, str) or _is_message_list(prompt):
        return None
    return RowError(
        "bad prompt",
        f"{where}: `prompt` must be a string or a list of chat messages with 'role' and 'content'; "
        f"{_message_problem(prompt)}",
    )


def _check_responses(responses: Any, where: str) -> RowError | None:
    if not isinstance(responses, list):
        return RowError("bad responses", f"{where}: `responses` must be a list, got {type(responses).__name__}")
    if len(responses) < 2:
        return RowError(
            "fewer than 2 responses",
            f"{where}: `responses` has {len(responses)} entr{'y' if len(responses) == 1 else 'ies'}; "
            "a ranking needs at least 2 responses per prompt",
        )
    seen: dict[str, int] = {}
    for position, response in enumerate(responses):
        if isinstance(response, str):
            if not response.strip():
                return RowError("empty response", f"{where}: response {position} is empty; remove it or fill it in")
        elif not _is_message_list(response):
            return RowError(
                "bad responses",
                f"{where}: response {position} must be a string or a list of chat messages; "
                f"{_message_problem(response)}",
            )
        key = _text_key(response)
        if key in seen:
            return RowError(
                "duplicate response",
                f"{where}: responses {seen[key]} and {position} are identical; give each answer once "
                "(tie distinct answers with equal ranks instead)",
            )
        seen[key] = position
    return None


def _check_ranks(ranks: Any, n: int, where: str) -> tuple[list[int] | None, RowError | None]:
    if not isinstance(ranks, list) or len(ranks) != n:
        got = f"{len(ranks)} values" if isinstance(ranks, list) else type(ranks).__name__
        message = f"{where}: `ranks` must be a list of {n} integers (one per response), got {got}"
        return None, RowError("bad ranks", message)
    out = []
    for position, rank in enumerate(ranks):
        # JSON readers may turn integers into floats when another row has one; integral floats are fine.
        integral = isinstance(rank, int | np.integer) or (isinstance(rank, float) and rank.is_integer())
        if isinstance(rank, bool) or not integral:
            return None, RowError(
                "bad ranks",
                f"{where}: `ranks[{position}]` must be an integer (lower is better, equal ranks tied), got {rank!r}",
            )
        out.append(int(rank))
    if len(set(out)) == 1:
        return None, RowError(
            "all responses tied", f"{where}: all {n} responses have rank {out[0]}, so the row has no ranked pair"
        )
    return out, None


def _check_pairs(pairs: Any, n: int, where: str) -> tuple[list[list[int]] | None, RowError | None]:
    """A list of ``[i, j]`` (answer i above answer j) over ``n`` answers: in range, distinct, without a cycle."""
    shape = f"a list of [i, j] pairs of answer indices 0 to {n - 1} (answer i above answer j)"
    if not isinstance(pairs, list) or not pairs:
        got = "an empty list" if isinstance(pairs, list) else type(pairs).__name__
        return None, RowError("bad pairs", f"{where}: `pairs` must be {shape}, got {got}")
    out: list[list[int]] = []
    for position, pair in enumerate(pairs):
        valid = isinstance(pair, list | tuple) and len(pair) == 2
        valid = valid and all(
            not isinstance(k, bool) and (isinstance(k, int | np.integer) or (isinstance(k, float) and k.is_integer()))
            for k in pair
        )
        if not valid or not all(0 <= k < n for k in pair) or pair[0] == pair[1]:
            return None, RowError(
                "bad pairs", f"{where}: `pairs[{position}]` must be [i, j] with i != j in 0..{n - 1}, got {pair!r}"
            )
        out.append([int(pair[0]), int(pair[1])])
    if len({tuple(pair) for pair in out}) < len(out):
        return None, RowError("bad pairs", f"{where}: `pairs` lists a pair twice; give each pair once")
    sorter = graphlib.TopologicalSorter()
    for i, j in out:
        sorter.add(j, i)
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle = " above ".join(map(str, error.args[1]))
        return None, RowError(
            "contradictory pairs", f"{where}: `pairs` contradict each other ({cycle}); remove one of them"
        )
    return out, None


@functools.lru_cache(maxsize=256)
def _utility_error(spec: str) -> str | None:
    from rewardcollapse.core.utilities import utility

    try:
        utility(spec)
    except (ValueError, TypeError) as error:
        return str(error)
    return None


def _check_extras(row: Mapping[str, Any], where: str) -> tuple[dict[str, Any], RowError | None]:
    spec, openness = row.get("utility"), row.get("openness")
    if spec is not None:
        problem = _utility_error(spec) if isinstance(spec, str) else f"got {type(spec).__name__}"
        if problem:
            return {}, RowError("unknown utility", f"{where}: `utility` {spec!r} is not a utility spec: {problem}")
    if openness is not None:
        if isinstance(openness, bool) or not isinstance(openness, int | float) or not 0 <= openness <= 1:
            return {}, RowError(
                "openness out of range",
                f"{where}: `openness` must be a number in [0, 1] (0 closed, 1 open-ended), got {openness!r}",
            )
        openness = float(openness)
    return {"utility": spec, "openness": openness}, None


def ranking_row(row: Mapping[str, Any], where: str) -> tuple[dict[str, Any] | None, RowError | None]:
    """Validate a ranking-format row; return it in canonical form (ranks filled in) or the reason it is rejected.

    ``where`` names the row in messages, e.g. ``"row 12"``.
    """
    prompt, responses = _maybe_json(row.get("prompt")), _maybe_json(row.get("responses"))
    error = _check_prompt(prompt, where) or _check_responses(responses, where)
    if error:
        return None, error
    ranks, pairs = _maybe_json(row.get("ranks")), _maybe_json(row.get("pairs"))
    if pairs is not None:
        if ranks is not None:
            return None, RowError(
                "ranks and pairs",
                f"{where}: the row has both `ranks` and `pairs`; give one (ranks for a weak order, pairs for any "
                "partial order) and set the other to null",
            )
        pairs, error = _check_pairs(pairs, len(responses), where)
    else:
        ranks, error = _check_ranks(list(range(len(responses))) if ranks is None else ranks, len(responses), where)
    if error:
        return None, error
    extras, error = _check_extras(row, where)
    if error:
        return None, error
    return {"prompt": prompt, "responses": responses, "ranks": ranks, "pairs": pairs, **extras}, None


def scored_row(row: Mapping[str, Any], where: str) -> tuple[dict[str, Any] | None, RowError | None]:
    """Convert a scored row (``prompt``, ``responses``, ``scores``; higher is better) to the ranking format.

    Equal scores are tied: ``ranks[i]`` is the number of distinct scores above ``scores[i]``.
    """
    scores = _maybe_json(row.get("scores"))
    responses = _maybe_json(row.get("responses"))
    n = len(responses) if isinstance(responses, list) else None
    if not isinstance(scores, list) or (n is not None and len(scores) != n):
        got = f"{len(scores)} values" if isinstance(scores, list) else type(scores).__name__
        return None, RowError("bad scores", f"{where}: `scores` must be a list of one number per response, got {got}")
    for position, score in enumerate(scores):
        if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
            return None, RowError(
                "bad scores", f"{where}: `scores[{position}]` must be a number (not NaN), got {score!r}; drop the row"
            )
    distinct = np.unique(np.asarray(scores, dtype=float))[::-1]
    ranks = np.searchsorted(-distinct, -np.asarray(scores, dtype=float)).tolist()
    return ranking_row({**row, "responses": responses, "ranks": ranks}, where)


def split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """Split TRL's implicit-prompt pair into (prompt, chosen, rejected) at their longest common prefix.

    Message lists split at the first differing message. Strings split after the last whitespace of the common
    prefix, so that no word is cut: ``"Q: hi A: yes"`` and ``"Q: hi A: no"`` give the prompt ``"Q: hi A:"``.
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        common = 0
        while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
            common += 1
        return chosen[:common], chosen[common:], rejected[common:]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return None, chosen, rejected
    common = 0
    while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
        common += 1
    cut = max(chosen.rfind(" ", 0, common + 1), chosen.rfind("\n", 0, common + 1))
    cut = cut if cut > 0 else 0
    return chosen[:cut].rstrip(), chosen[cut:].lstrip(), rejected[cut:].lstrip()


def merge_pairs(
    prompt: Any, pairs: Sequence[tuple[Any, Any]], rows: Sequence[int], extras: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, RowError | None]:
    """Merge one prompt's (chosen, rejected) pairs into a ranking row.

    The answers are numbered in order of first appearance; the ranked pairs are the transitive closure of the
    given ones (a better than b better than c ranks a above c). When the closure is a weak order the row gets
    ``ranks``; otherwise it keeps the partial order as ``pairs``. A cycle (a above b and b above a, possibly through
    other answers) is a contradiction and rejects the whole prompt, naming its rows.
    """
    where = f"rows {', '.join(map(str, rows))}" if len(rows) > 1 else f"row {rows[0]}"
    index: dict[str, int] = {}
    responses: list[Any] = []
    for chosen, rejected in pairs:
        for answer in (chosen, rejected):
            key = _text_key(answer)
            if key not in index:
                index[key] = len(responses)
                responses.append(answer)
    n = len(responses)
    above = np.zeros((n, n), dtype=bool)
    for chosen, rejected in pairs:
        above[index[_text_key(chosen)], index[_text_key(rejected)]] = True
    # Transitive closure by repeated squaring of the boolean relation (n is small: a prompt's answers).
    while True:
        closure = above | ((above.astype(np.int64) @ above.astype(np.int64)) > 0)
        if (closure == above).all():
            break
        above = closure
    if np.diag(above).any():
        return None, RowError(
            "contradictory pairs",
            f"{where}: the chosen/rejected pairs of prompt {_short(prompt)} contradict each other (an answer ends "
            "up above itself through a cycle); remove the conflicting pairs",
        )
    ranks = above.sum(axis=0)  # number of answers above each one
    row = {"prompt": prompt, "responses": responses, **extras}
    if ((ranks[:, None] < ranks[None, :]) == above).all():
        return ranking_row({**row, "ranks": ranks.tolist()}, where)
    canonical, error = ranking_row(row, where)
    if error:
        return None, error
    canonical["ranks"] = None
    canonical["pairs"] = np.argwhere(above).tolist()
    return canonical, None


def ranked_pairs(row: Mapping[str, Any]) -> np.ndarray:
    """The ``(n, n)`` bool matrix of a canonical row: entry ``(i, j)`` True when answer ``i`` is above ``j``."""
    n = len(row["responses"])
    if row.get("pairs") is not None:
        above = np.zeros((n, n), dtype=bool)
        for i, j in row["pairs"]:
            above[i, j] = True
        return above
    ranks = np.asarray(row["ranks"] if row.get("ranks") is not None else range(n))
    return ranks[:, None] < ranks[None, :]


def _short(prompt: Any, width: int = 60) -> str:
    text = _text_key(prompt)
    return repr(text if len(text) <= width else text[: width - 3] + "...")
