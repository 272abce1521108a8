"""Ranking data: the ranking format, validation, and loaders for ranking, TRL pairwise and scored rows."""

from rewardcollapse.data.loaders import (
    INPUT_FORMATS,
    InputFormat,
    detect_format,
    load_rankings,
    max_responses,
    pair_positions,
    read_table,
)
from rewardcollapse.data.schema import (
    RANKING_COLUMNS,
    RowError,
    merge_pairs,
    pair_margins,
    ranked_pairs,
    split_implicit_prompt,
)

__all__ = [
    "INPUT_FORMATS",
    "RANKING_COLUMNS",
    "InputFormat",
    "RowError",
    "detect_format",
    "load_rankings",
    "max_responses",
    "merge_pairs",
    "pair_margins",
    "pair_positions",
    "ranked_pairs",
    "read_table",
    "split_implicit_prompt",
]
