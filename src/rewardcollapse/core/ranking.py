"""Rankings of one prompt's answers: a total order, tiers with ties, or any partial order given by edges."""

from __future__ import annotations

import graphlib
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from rewardcollapse.core.errors import InputTypeError, InputValueError

__all__ = ["Ranking", "parse_ranking"]


@dataclass(frozen=True)
class Ranking:
    """A ranking of ``n`` answers in one of two normal forms.

    Attributes
    ----------
    n : int
        Number of answers, indexed ``0 .. n-1``.
    tiers : tuple of tuple of int or None
        Best tier first; every answer of a tier is ranked above every answer of later tiers and tied with its own
        tier. A total order is ``n`` tiers of one answer. Set for chain-like rankings.
    edges : numpy.ndarray of shape (m, 2) or None
        ``(i, j)`` rows meaning answer ``i`` is ranked above answer ``j``. Set for general partial orders.
    """

    n: int
    tiers: tuple[tuple[int, ...], ...] | None = None
    edges: np.ndarray | None = None

    @property
    def multiplicities(self) -> np.ndarray:
        """Tier sizes, as floats (the pair weights of the tier chain are their products)."""
        assert self.tiers is not None
        return np.array([len(t) for t in self.tiers], dtype=float)

    @property
    def num_pairs(self) -> int:
        """Number of ranked pairs, i.e. terms of the objective."""
        if self.edges is not None:
            return len(self.edges)
        m = self.multiplicities
        return int((m.sum() ** 2 - (m**2).sum()) // 2)


def _as_index(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputTypeError(f"{where} must be an int answer index, got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise InputValueError(f"{where} must be a non-negative answer index, got {value}")
    return int(value)


def _from_tiers(tiers: Sequence[Sequence[int]]) -> Ranking:
    parsed: list[tuple[int, ...]] = []
    seen: dict[int, int] = {}
    for k, tier in enumerate(tiers):
        if isinstance(tier, str | bytes) or not isinstance(tier, Sequence):
            raise InputTypeError(f"`ranking` tier {k} must be a list of answer indices, got {type(tier).__name__}")
        if len(tier) == 0:
            raise InputValueError(f"`ranking` tier {k} is empty; remove it or put an answer in it")
        indices = tuple(_as_index(i, f"`ranking` tier {k} entry") for i in tier)
        for i in indices:
            if i in seen:
                raise InputValueError(f"answer {i} appears in tier {seen[i]} and tier {k} of `ranking`; list it once")
            seen[i] = k
        parsed.append(indices)
    n = len(seen)
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise InputValueError(f"`ranking` tiers must cover answers 0..{n - 1} exactly once; missing {missing[:5]}")
    if len(parsed) < 2:
        raise InputValueError(
            "`ranking` needs at least 2 tiers: with one tier every answer is tied and nothing is ranked"
        )
    return Ranking(n=n, tiers=tuple(parsed))


def _find_cycle(n: int, edges: np.ndarray) -> list[int] | None:
    """One directed cycle as a node list (first node repeated at the end, each above the next), or None for a DAG."""
    sorter = graphlib.TopologicalSorter({node: () for node in range(n)})
    for i, j in edges.tolist():
        sorter.add(j, i)  # i is ranked above j: i comes first
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        return [int(node) for node in error.args[1]]
    return None


def _from_edges(edges: Sequence[Sequence[int]] | np.ndarray) -> Ranking:
    rows = []
    for k, edge in enumerate(edges):
        if isinstance(edge, str | bytes) or len(edge) != 2:
            raise InputValueError(f"`ranking` edge {k} must be a pair (i, j) meaning i is ranked above j, got {edge!r}")
        rows.append((_as_index(edge[0], f"`ranking` edge {k} first entry"), _as_index(edge[1], f"edge {k} second")))
    if not rows:
        raise InputValueError("`ranking` has no edges; give at least one pair (i, j)")
    array = np.array(rows, dtype=np.int64)
    for i, j in rows:
        if i == j:
            raise InputValueError(f"`ranking` has a cycle: edge ({i}, {j}) ranks answer {i} above itself")
    keys = array[:, 0] * (array.max() + 1) + array[:, 1]
    unique, counts = np.unique(keys, return_counts=True)
    if np.any(counts > 1):
        dup = array[np.flatnonzero(keys == unique[np.argmax(counts > 1)])[0]]
        raise InputValueError(f"`ranking` lists edge ({dup[0]}, {dup[1]}) more than once; list each pair once")
    n = int(array.max()) + 1
    cycle = _find_cycle(n, array)
    if cycle is not None:
        raise InputValueError(f"`ranking` has a cycle {' > '.join(map(str, cycle))}; a ranking must be acyclic")
    return Ranking(n=n, edges=array)


def parse_ranking(ranking: int | Sequence | np.ndarray | Ranking) -> Ranking:
    """Normalise a user ranking into a :class:`Ranking`.

    Parameters
    ----------
    ranking : int, list of lists, list of tuples, (m, 2) integer array, or Ranking
        * ``n``: a total order of ``n >= 2`` answers, answer 0 best;
        * a list of **lists**, the tiers, best first: ``[[0], [1, 2], [3]]`` ties answers 1 and 2;
        * a list of **tuples** ``(i, j)`` or an ``(m, 2)`` integer array: the edges of a partial order, ``i`` ranked
          above ``j``; only these pairs enter the objective.

    Returns
    -------
    Ranking

    Raises
    ------
    ValueError
        For fewer than 2 answers, a malformed tier or edge, a repeated answer or edge, or a cycle (named).
    TypeError
        For entries that are not integers.

    Examples
    --------
    >>> parse_ranking(3).tiers
    ((0,), (1,), (2,))
    >>> parse_ranking([(0, 1), (0, 2)]).edges.tolist()
    [[0, 1], [0, 2]]
    """
    if isinstance(ranking, Ranking):
        return ranking
    if isinstance(ranking, bool):
        raise InputTypeError("`ranking` must be an int, a list of tiers or a list of edges, got bool")
    if isinstance(ranking, Integral):
        if ranking < 2:
            raise InputValueError(f"`ranking` must rank at least 2 answers, got n = {ranking}")
        return Ranking(n=int(ranking), tiers=tuple((i,) for i in range(int(ranking))))
    if isinstance(ranking, np.ndarray):
        if ranking.ndim != 2 or ranking.shape[1] != 2 or not np.issubdtype(ranking.dtype, np.integer):
            raise InputValueError(f"an array `ranking` must be an (m, 2) integer array of edges, got {ranking.shape}")
        return _from_edges(ranking.tolist())
    if isinstance(ranking, str | bytes) or not isinstance(ranking, Sequence):
        raise InputTypeError(
            f"`ranking` must be an int, a list of tiers or a list of edges, got {type(ranking).__name__}"
        )
    if len(ranking) == 0:
        raise InputValueError("`ranking` is empty; give n, tiers such as [[0], [1, 2]], or edges such as [(0, 1)]")
    if all(isinstance(item, tuple) for item in ranking):
        return _from_edges(ranking)
    if all(isinstance(item, list) for item in ranking):
        return _from_tiers(ranking)
    raise InputTypeError(
        "`ranking` must be all lists (tiers, e.g. [[0], [1, 2]]) or all tuples (edges, e.g. [(0, 1), (1, 2)]); "
        "got a mix"
    )
