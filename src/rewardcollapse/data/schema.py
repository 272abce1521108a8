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
``margins``
    Optional, with ``pairs`` only: one float per listed pair, TRL's ``margin`` (the loss of pair ``[i, j]`` is
    ``-log sigmoid(r_i - r_j - margins[k])``). Otherwise null.
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
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardcollapse.core.checks import openness_problem
from rewardcollapse.core.errors import InputValueError

__all__ = [
    "RANKING_COLUMNS",
    "SKIP_HINT",
    "RowError",
    "check_margin",
    "merge_pairs",
    "pair_margins",
    "ranked_pairs",
    "ranking_row",
    "scored_row",
    "split_at_prompt",
    "split_implicit_prompt",
    "split_pair",
    "text_key",
]

RANKING_COLUMNS = ("prompt", "responses", "ranks", "pairs", "margins", "utility", "openness")
"""Columns of a loaded ranking dataset, in order."""

SKIP_HINT = "fix the row, or load with skip_invalid=True to drop such rows and get a report"
"""The fix that row errors end with."""


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


def text_key(value: Any) -> str:
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
        key = text_key(response)
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
        if isinstance(rank, bool) or not integral or not -(2**62) < rank < 2**62:
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


def _is_finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.number) and math.isfinite(value)


def _check_margins(
    margins: Any, pairs: list[list[int]] | None, where: str
) -> tuple[list[float] | None, RowError | None]:
    """One finite margin per pair of ``pairs`` (null ``margins`` is no margin)."""
    if margins is None:
        return None, None
    if pairs is None:
        return None, RowError(
            "bad margins",
            f"{where}: `margins` gives one margin per pair of `pairs`, but the row has no `pairs`; list the pairs "
            "(with `ranks` null) or drop `margins`",
        )
    if not isinstance(margins, list) or len(margins) != len(pairs):
        got = f"{len(margins)} values" if isinstance(margins, list) else type(margins).__name__
        return None, RowError(
            "bad margins", f"{where}: `margins` must be a list of {len(pairs)} numbers (one per pair), got {got}"
        )
    for position, margin in enumerate(margins):
        if not _is_finite_number(margin):
            return None, RowError(
                "bad margins",
                f"{where}: `margins[{position}]` must be a finite number (the margin of `pairs[{position}]`), "
                f"got {margin!r}",
            )
    return [float(margin) for margin in margins], None


def check_margin(margin: Any, where: str) -> tuple[float | None, RowError | None]:
    """Validate TRL's per-pair ``margin`` (a pairwise row's column); return it as a float or the reason it is bad."""
    if _is_finite_number(margin):
        return float(margin), None
    return None, RowError(
        "bad margin",
        f"{where}: `margin` must be a finite number (TRL's loss is -log sigmoid(r_chosen - r_rejected - margin)), "
        f"got {margin!r}; give every row a margin (0.0 for none) or drop the row",
    )


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
        problem = openness_problem(openness, f"{where}: `openness`")
        if problem is not None:
            return {}, RowError("openness out of range", problem)
        openness = float(openness)
    return {"utility": spec, "openness": openness}, None


def ranking_row(row: Mapping[str, Any], where: str) -> tuple[dict[str, Any] | None, RowError | None]:
    """Validate a ranking-format row; return it in canonical form (ranks filled in) or the reason it is rejected.

    ``where`` names the row in messages, e.g. ``"row 12"``.
    """
    responses = row.get("responses")
    # A CSV cell holds the whole answer list as JSON text, and then the prompt may be a JSON chat too; elsewhere a
    # prompt that merely looks like JSON ("[3, 1, 2]") is text and stays text.
    csv_cells = isinstance(responses, str)
    responses = _maybe_json(responses)
    prompt = _maybe_json(row.get("prompt")) if csv_cells else row.get("prompt")
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
    margins, error = _check_margins(_maybe_json(row.get("margins")), pairs, where)
    if error:
        return None, error
    extras, error = _check_extras(row, where)
    if error:
        return None, error
    canonical = {"prompt": prompt, "responses": responses, "ranks": ranks, "pairs": pairs, "margins": margins}
    return {**canonical, **extras}, None


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


_WORD = re.compile(r"\S*")


def _word_prefix(chosen: str, rejected: str) -> str:
    """The common prefix of two texts up to its last whitespace, without trailing whitespace: whole words only."""
    common = os.path.commonprefix([chosen, rejected])  # noqa: RUF071 (a text prefix, by character, is meant)
    # Match the last word on the reversed text: a search for r"\S*\Z" backtracks quadratically on long words.
    cut = len(common) - _WORD.match(common[::-1]).end()
    return common[:cut].rstrip()


def _no_words(text: str) -> bool:
    """True for a text with nothing but whitespace and punctuation (Unicode category P)."""
    return all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in text)


def _answer_error(prompt: Any, answer: Any, name: str, where: str) -> RowError | None:
    """An answer left empty or punctuation only by an implicit prompt split (message answers: their text contents)."""
    if isinstance(answer, list):
        contents = [message.get("content") for message in answer]
        if answer and not all(isinstance(content, str) for content in contents):
            return None  # multimodal content parts: no text to judge
        text = "".join(contents)
    else:
        text = answer
    if not _no_words(text):
        return None
    what = "empty" if not text.strip() else f"{text.strip()!r}, punctuation only"
    return RowError(
        "empty answer",
        f"{where}: the `{name}` answer after the implicit prompt {_short(prompt)} is {what}; give a `prompt` column "
        "so that the answers are split where you mean, or drop the row",
    )


def _no_common_prompt(where: str, conversations: bool) -> RowError:
    shared = "no message before their final assistant turn(s)" if conversations else "no leading words"
    return RowError(
        "no common prompt",
        f"{where}: `chosen` and `rejected` have no common prompt (they share {shared}); give a `prompt` column, or "
        "start both with the prompt they answer",
    )


def _split_conversations(chosen: list, rejected: list, where: str) -> tuple[tuple | None, RowError | None]:
    """Split two conversations before their final assistant message(s); see :func:`split_implicit_prompt`."""
    common = 0
    while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
        common += 1
    # Leading assistant messages of the final turn that both share stay in the answers, as shared words do in texts.
    start = common
    while start > 0 and chosen[start - 1]["role"] == "assistant":
        start -= 1
    if start == 0:
        return None, _no_common_prompt(where, conversations=True)
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        for k in range(start, len(conversation)):
            if conversation[k]["role"] != "assistant":
                return None, RowError(
                    "differing conversations",
                    f"{where}: `chosen` and `rejected` differ before their final assistant turn (`{name}[{k}]` is a "
                    f"{conversation[k]['role']!r} message after the first difference, at message {start}); an "
                    "implicit prompt is every message before the final assistant message(s), shared by both: give a "
                    "`prompt` column, or make both conversations share every earlier message",
                )
    prompt = chosen[:start]
    return _answers(prompt, chosen[start:], rejected[start:], where)


def split_at_prompt(prompt: str, chosen: str, rejected: str, where: str) -> tuple[tuple | None, RowError | None]:
    """Split two texts that start with ``prompt`` and whitespace; the whitespace begins the answers.

    So ``prompt + answer`` is each text exactly, as TRL tokenises it (the whole text), and every row of a prompt
    group shares one prompt whatever whitespace separates it from the answer.
    """
    if not prompt:
        return None, _no_common_prompt(where, conversations=False)
    return _answers(prompt, chosen[len(prompt) :], rejected[len(prompt) :], where)


def _answers(prompt: Any, chosen: Any, rejected: Any, where: str) -> tuple[tuple | None, RowError | None]:
    error = _answer_error(prompt, chosen, "chosen", where) or _answer_error(prompt, rejected, "rejected", where)
    return (None, error) if error else ((prompt, chosen, rejected), None)


def split_pair(
    chosen: Any, rejected: Any, where: str, *, split_texts: bool = True
) -> tuple[tuple | None, RowError | None]:
    """Split one implicit-prompt pair on its own (texts: at the word prefix of the pair alone).

    With ``split_texts`` False two texts come back whole after that word prefix: the candidate prompt that
    :func:`~rewardcollapse.data.load_rankings` groups before it splits the texts at their group's prompt.
    """
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(answer, str) and not _is_message_list(answer):
            return None, RowError(
                "bad responses",
                f"{where}: `{name}` must be a string or a list of chat messages; {_message_problem(answer)}",
            )
    if isinstance(chosen, str) != isinstance(rejected, str):
        return None, RowError(
            "bad responses",
            f"{where}: `chosen` and `rejected` must both be texts or both lists of chat messages, got "
            f"{type(chosen).__name__} and {type(rejected).__name__}",
        )
    if chosen == rejected:
        return None, RowError("duplicate response", f"{where}: `chosen` and `rejected` are identical; drop the pair")
    if isinstance(chosen, list):
        return _split_conversations(chosen, rejected, where)
    prompt = _word_prefix(chosen, rejected)
    if not split_texts:
        return ((prompt, chosen, rejected), None) if prompt else (None, _no_common_prompt(where, conversations=False))
    return split_at_prompt(prompt, chosen, rejected, where)


def split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """Split TRL's implicit-prompt pair into ``(prompt, chosen, rejected)``.

    Conversations (lists of chat messages) split before their final assistant message(s): the prompt is the
    messages both share up to the last one that is not from the assistant; the answers are the assistant messages
    after it. Texts split at the last whitespace of their common prefix, so that no word is cut; the whitespace
    between the prompt and the answers begins the answers, so that ``prompt + chosen`` and ``prompt + rejected``
    are the texts given, character for character (TRL tokenises an implicit-prompt row as its whole text, and
    ``sequence_format="trl"`` joins prompt and answer as they are).

    Parameters
    ----------
    chosen, rejected : str or list of dict
        The full texts, or the full conversations, of the preferred and the other answer.

    Returns
    -------
    tuple
        ``(prompt, chosen, rejected)``.

    Raises
    ------
    ValueError
        When the two share no prompt (no leading words, or no message before the final assistant turn), when two
        conversations differ before their final assistant turn, or when an answer would be empty or punctuation
        only.

    Notes
    -----
    :func:`~rewardcollapse.data.load_rankings` splits texts per prompt group, not per row, so that answers that
    begin with the same words keep them: every row is keyed by its own word prefix (as here); a key that extends a
    shorter key at a word boundary joins that key's group; and every row of a group is split at the group's
    shortest key, which is the longest common word prefix of all the chosen and rejected texts of the group. Two
    different prompts one of which extends the other at a word boundary (a dialogue and its own continuation, say)
    thus fall in one group: give such data a ``prompt`` column.

    Examples
    --------
    >>> split_implicit_prompt("Q: hi A: yes", "Q: hi A: yeah")
    ('Q: hi A:', ' yes', ' yeah')
    >>> user = {"role": "user", "content": "2+2?"}
    >>> prompt, chosen, rejected = split_implicit_prompt(
    ...     [user, {"role": "assistant", "content": "4"}], [user, {"role": "assistant", "content": "5"}]
    ... )
    >>> prompt, chosen
    ([{'role': 'user', 'content': '2+2?'}], [{'role': 'assistant', 'content': '4'}])
    """
    split, error = split_pair(chosen, rejected, "the pair")
    if error:
        raise InputValueError(error.message)
    return split


def _closure(above: np.ndarray) -> np.ndarray:
    # Transitive closure by repeated squaring of the boolean relation (n is small: a prompt's answers). Its diagonal
    # shows the cycles that contradict a ranking, which scipy.sparse.csgraph.shortest_path sets to 0.
    while True:
        closure = above | ((above.astype(np.int64) @ above.astype(np.int64)) > 0)
        if (closure == above).all():
            return closure
        above = closure


def merge_pairs(
    prompt: Any,
    pairs: Sequence[tuple[Any, Any]],
    rows: Sequence[int],
    extras: Mapping[str, Any],
    *,
    margins: Sequence[float] | None = None,
    transitive_closure: bool = True,
) -> tuple[dict[str, Any] | None, RowError | None]:
    """Merge one prompt's (chosen, rejected) pairs into a ranking row.

    Parameters
    ----------
    prompt : str or list of dict
        The prompt the pairs answer.
    pairs : sequence of (chosen, rejected)
        The answers of each pair, preferred first.
    rows : sequence of int
        The source row of each pair, for messages.
    extras : mapping
        ``utility`` and ``openness`` of the row.
    margins : sequence of float, optional
        TRL's ``margin`` of each pair.
    transitive_closure : bool, default True
        Rank the pairs that the given ones imply (a above b above c ranks a above c) as well.

    Returns
    -------
    tuple
        The ranking row, or None and the reason it is rejected.

    Notes
    -----
    The answers are numbered in order of first appearance; a pair given twice counts once (with two different
    margins it rejects the prompt). A cycle (a above b and b above a, possibly through other answers) is a
    contradiction and rejects the whole prompt, naming its rows, with or without the closure.

    With ``transitive_closure`` the ranked pairs are the transitive closure of the given ones: without margins the
    row gets ``ranks`` when the closure is a weak order and keeps the partial order as ``pairs`` otherwise; with
    margins it gets the closure as ``pairs`` and their ``margins``, 0.0 for a pair implied only by transitivity.
    Without ``transitive_closure`` the row keeps exactly the given pairs as ``pairs`` (and ``margins``), the pairs
    TRL's reward trainer would train on.
    """
    where = f"rows {', '.join(map(str, rows))}" if len(rows) > 1 else f"row {rows[0]}"
    index: dict[str, int] = {}
    responses: list[Any] = []
    for chosen, rejected in pairs:
        for answer in (chosen, rejected):
            key = text_key(answer)
            if key not in index:
                index[key] = len(responses)
                responses.append(answer)
    given: dict[tuple[int, int], float] = {}  # each distinct pair and its margin, in order of first appearance
    weights = [0.0] * len(pairs) if margins is None else margins
    for (chosen, rejected), row, margin in zip(pairs, rows, weights, strict=True):
        margin, error = check_margin(margin, f"row {row}")
        if error:
            return None, error
        pair = (index[text_key(chosen)], index[text_key(rejected)])
        if given.setdefault(pair, margin) != margin:
            return None, RowError(
                "conflicting margins",
                f"{where}: prompt {_short(prompt)} has the pair {_short(chosen, 30)} above {_short(rejected, 30)} "
                f"twice, with margins {given[pair]} and {margin}; give each pair once",
            )
    n = len(responses)
    above = np.zeros((n, n), dtype=bool)
    above[tuple(np.array(list(given)).T)] = True
    closure = _closure(above)
    if np.diag(closure).any():
        return None, RowError(
            "contradictory pairs",
            f"{where}: the chosen/rejected pairs of prompt {_short(prompt)} contradict each other (an answer ends "
            "up above itself through a cycle); remove the conflicting pairs",
        )
    row = {"prompt": prompt, "responses": responses, **extras}
    if not transitive_closure:
        kept = None if margins is None else list(given.values())
        return ranking_row({**row, "pairs": [list(pair) for pair in given], "margins": kept}, where)
    ranks = closure.sum(axis=0)  # number of answers above each one
    if margins is None and ((ranks[:, None] < ranks[None, :]) == closure).all():
        return ranking_row({**row, "ranks": ranks.tolist()}, where)
    listed = np.argwhere(closure).tolist()
    if margins is None:
        return ranking_row({**row, "pairs": listed}, where)
    return ranking_row({**row, "pairs": listed, "margins": [given.get(tuple(p), 0.0) for p in listed]}, where)


def pair_margins(row: Mapping[str, Any]) -> np.ndarray:
    """The ``(n, n)`` float matrix of a canonical row's margins: entry ``(i, j)`` the margin of its pair ``[i, j]``.

    Zero where the row lists no pair, and everywhere when it has no ``margins`` (pair it with :func:`ranked_pairs`).

    Examples
    --------
    >>> pair_margins({"responses": ["a", "b", "c"], "pairs": [[0, 1], [2, 1]], "margins": [0.5, 2.0]}).tolist()
    [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    """
    n = len(row["responses"])
    out = np.zeros((n, n))
    if row.get("margins") is not None:
        pairs = np.asarray(row["pairs"], dtype=np.int64).reshape(-1, 2)
        out[pairs[:, 0], pairs[:, 1]] = row["margins"]
    return out


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
    text = text_key(prompt)
    return repr(text if len(text) <= width else text[: width - 3] + "...")
