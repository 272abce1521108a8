"""The paper's ranking data: long answers truncated to 8 lengths, half the prompts open-ended, half closed.

Song et al. (2023, Section 4) build their experiment from the LongForm instruction dataset (Köksal et al., 2023; Hub
``akoksal/LongForm``, fields ``input`` and ``output``). For each prompt whose answer has at least 100 words, 8 answers
are made by cutting the answer after a number of words; a longer answer is better. Each prompt is made, at random:

* **open** (``openness`` 1): the suffix :data:`OPEN_SUFFIX` and lengths 10, 20, ..., 80 words, evenly spaced
  qualities whose target reward distribution is uniform (``utility`` ``"-1/x"`` for prompt-aware training);
* **closed** (``openness`` 0): the suffix :data:`CLOSED_SUFFIX` and lengths 16, 22, 28, 34, 56, 62, 68, 74, two
  clusters whose target is polarised at 0 and 1 (``utility`` ``"x"``).

**Openness levels** (``levels=[0, 1/3, 2/3, 1]``, beyond the paper) generalise the two kinds to any number of
openness values ``o``: a prompt of level ``o`` gets the suffix :data:`LEVEL_SUFFIX` and answer lengths at the
quantiles of its target law, the law of the 8-answer optimum of :func:`~rewardcollapse.openness_utility` ``(o)``
(:func:`level_lengths`), so that one reward growing evenly with length is optimal at every level under the
continuous family, while a fixed utility cannot fit them all.

Nothing can be downloaded on an offline machine, so the same construction also runs on a **built-in corpus**
(``source="builtin"``): the docstrings of numpy, scipy and torch that have at least 100 words, as answers to
"Explain what ``numpy.linalg.svd`` does." (up to the docstring's Examples section, whitespace collapsed). These are
real English technical texts under BSD-style licences (numpy, scipy: BSD-3-Clause; torch: BSD-3-Clause-style),
read from the installed packages, so the corpus is the same on every machine with the same package versions.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from rewardcollapse._files import atomic_path, locked_output_folder, write_text_atomic
from rewardcollapse.core.checks import check_positive_int, openness_problem
from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY
from rewardcollapse.core.errors import InputValueError

__all__ = [
    "CLOSED_LENGTHS",
    "CLOSED_SUFFIX",
    "LEVEL_SUFFIX",
    "MIN_WORDS",
    "OPEN_LENGTHS",
    "OPEN_SUFFIX",
    "FileFormat",
    "LongFormData",
    "LongformDesign",
    "LongformOutput",
    "build_longform",
    "builtin_corpus",
    "level_lengths",
    "write_longform",
]

OPEN_SUFFIX = " Write the answer in an open-ended way."
CLOSED_SUFFIX = " Write either a short answer or a long answer."
OPEN_LENGTHS = (10, 20, 30, 40, 50, 60, 70, 80)
CLOSED_LENGTHS = (16, 22, 28, 34, 56, 62, 68, 74)
MIN_WORDS = 100
LEVEL_SUFFIX = " Write an answer of openness {openness:.2f}."
# Cuts of a level prompt, in words: 4 to 40 (8 answers of technical text then fit in 160 tokens with the prompt),
# and at least 1 word apart (the closest integers to the target's quantiles).
SHORTEST, LONGEST, MIN_GAP = 4, 40, 1

# Modules whose public docstrings make the built-in corpus, walked in this order (names sorted inside each).
BUILTIN_MODULES = (
    "numpy",
    "numpy.linalg",
    "numpy.fft",
    "numpy.random",
    "numpy.ma",
    "numpy.polynomial",
    "scipy.stats",
    "scipy.optimize",
    "scipy.linalg",
    "scipy.signal",
    "scipy.special",
    "scipy.sparse",
    "scipy.sparse.linalg",
    "scipy.integrate",
    "scipy.interpolate",
    "scipy.spatial",
    "scipy.ndimage",
    "scipy.fft",
    "scipy.cluster.hierarchy",
    "scipy.io",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.linalg",
    "torch.fft",
    "torch.distributions",
    "torch.optim",
    "torch.optim.lr_scheduler",
    "torch.utils.data",
    "torch.special",
    "torch.autograd",
    "torch.nn.init",
    "torch.nn.utils",
    "torch.sparse",
)


def _clean_docstring(doc: str) -> str:
    """The docstring's text up to its examples, without signature lines or section underlines, on one line."""
    text = doc.split("\nExamples\n")[0].split("\nExample::")[0].split("\nExamples::")[0]
    lines = text.splitlines()
    if lines and "(" in lines[0] and lines[0].rstrip().endswith(")") and " " not in lines[0].split("(")[0]:
        lines = lines[1:]  # a C function's signature line, e.g. "absolute(x, /, out=None, ...)"
    lines = [line for line in lines if line.strip().strip("-=~^") != "" or not line.strip()]
    return " ".join(" ".join(lines).split())


def builtin_corpus(modules: Sequence[str] = BUILTIN_MODULES, *, min_words: int = MIN_WORDS) -> list[dict[str, str]]:
    """Rows ``{"input": "Explain what numpy.fft.rfft does.", "output": docstring}`` from installed packages.

    Docstrings with fewer than ``min_words`` words and repeats of an earlier docstring (aliases) are left out.
    Modules that are not installed are skipped with a warning.
    """
    rows, seen, missing = [], set(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases warn when touched
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                missing.append(module_name)
                continue
            for name in sorted(dir(module)):
                if name.startswith("_"):
                    continue
                try:
                    obj = getattr(module, name)
                except Exception:  # lazy attributes may fail to import; they are not part of the corpus
                    continue
                if not callable(obj):
                    continue
                doc = inspect.getdoc(obj)
                text = _clean_docstring(doc) if doc else ""
                if len(text.split()) < min_words or text in seen:
                    continue
                seen.add(text)
                rows.append({"input": f"Explain what {module_name}.{name} does.", "output": text})
    if missing:
        warnings.warn(f"built-in corpus: modules {missing} are not installed and were skipped", stacklevel=2)
    return rows


@dataclass(frozen=True)
class LongFormData:
    """The built dataset: ranking-format rows for training and test, and what was read and left out.

    Attributes
    ----------
    train, test : list of dict
        Ranking rows: ``prompt``, ``responses`` (best, i.e. longest, first), ``ranks``, ``utility``, ``openness``,
        ``type`` ("open" or "closed"), ``lengths`` (words per answer) and ``source_row``.
    report : dict
        Source, rows read, rows kept, rows too short, invalid rows (with the first few row numbers), prompts asked
        for and built, and the seed.
    """

    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


def _source_rows(source: Any, split: str) -> tuple[list[Any], list[Any], str]:
    if isinstance(source, str) and source == "builtin":
        rows = builtin_corpus()
        return [r["input"] for r in rows], [r["output"] for r in rows], "builtin"
    from rewardcollapse.data.loaders import read_table

    table = read_table(source, split=split)
    missing = [c for c in ("input", "output") if c not in table.column_names]
    if missing:
        raise InputValueError(
            f"`source` {str(source)!r} lacks the LongForm columns {missing} (it has {table.column_names}); "
            "LongForm rows have 'input' (the instruction) and 'output' (the long answer)"
        )
    return table["input"], table["output"], str(source)


def level_lengths(
    openness: float, *, answers: int = 8, shortest: int = SHORTEST, longest: int = LONGEST, min_gap: int = MIN_GAP
) -> tuple[int, ...]:
    r"""Answer lengths in words (shortest first) of an openness level: the quantiles of its target law.

    The target law of ``answers`` ranked answers at openness ``o`` is the law of their optimal rewards
    :math:`t_1 \le \dots \le t_K` under :func:`~rewardcollapse.openness_utility` ``(o)``; its quantiles at
    levels :math:`(k - 1/2)/K` are the :math:`t_k` themselves, so the lengths are
    ``round(shortest + (longest - shortest) * t_k)``. Equal cuts would be the same answer ranked twice, so cuts closer
    than ``min_gap`` words are pushed apart, from the shortest up in the lower half and mirrored in the upper half
    (the target law is symmetric): openness 0, whose optimum is 0 four times and 1 four times, gives
    4, 5, 6, 7, 37, 38, 39, 40.

    Examples
    --------
    >>> level_lengths(0.0)
    (4, 5, 6, 7, 37, 38, 39, 40)
    >>> level_lengths(1.0, shortest=10, longest=80)
    (10, 18, 29, 39, 51, 61, 72, 80)
    """
    from rewardcollapse.core import openness_utility, optimal_rewards

    if answers < 2:
        raise InputValueError(f"`answers` must be at least 2, got {answers}")
    if min_gap < 1 or longest - shortest < (answers - 1) * min_gap:
        raise InputValueError(
            f"{answers} answers {min_gap} words apart do not fit between {shortest} and {longest} words; "
            "lower `min_gap` or widen the range"
        )
    optimum = np.sort(optimal_rewards(answers, openness_utility(openness)).rewards)
    lengths = np.rint(shortest + (longest - shortest) * optimum).astype(int)
    half = answers // 2
    lengths[0] = shortest
    for k in range(1, half):
        lengths[k] = max(lengths[k], lengths[k - 1] + min_gap)
    lengths[answers - half :] = (shortest + longest - lengths[:half])[::-1]
    if answers % 2:
        lengths[half] = (shortest + longest) // 2
    return tuple(int(n) for n in lengths)


@dataclass(frozen=True)
class _Design:
    """What a kind of prompt gets: a prompt suffix, cut lengths (shortest first), a utility spec and an openness."""

    suffix: str
    lengths: tuple[int, ...]
    utility: str
    openness: float
    kind: str


_PAPER_DESIGNS = {
    "open": _Design(OPEN_SUFFIX, OPEN_LENGTHS, OPEN_UTILITY, 1.0, "open"),
    "closed": _Design(CLOSED_SUFFIX, CLOSED_LENGTHS, CLOSED_UTILITY, 0.0, "closed"),
}


def _level_design(openness: float) -> _Design:
    from rewardcollapse.core import openness_utility

    return _Design(
        LEVEL_SUFFIX.format(openness=openness),
        level_lengths(openness),
        openness_utility(openness).name,
        float(openness),
        f"openness {openness:.2f}",
    )


def _level_designs(levels: Sequence[float]) -> list[_Design]:
    values = [float(o) for o in levels]
    if len(values) < 2 or len(set(values)) != len(values):
        raise InputValueError(f"`levels` must hold at least two distinct openness values, got {list(levels)}")
    bad = [o for o in values if openness_problem(o)]
    if bad:
        raise InputValueError(f"`levels` must lie in [0, 1] (0 closed, 1 open-ended), got {bad}")
    return [_level_design(o) for o in values]


def _designs(levels: Sequence[float] | None, length_scale: float) -> list[_Design]:
    """The kinds of prompt of a build, their cut lengths multiplied by ``length_scale`` (rounded to whole words)."""
    designs = list(_PAPER_DESIGNS.values()) if levels is None else _level_designs(levels)
    if length_scale == 1:
        return designs
    if not 0 < length_scale <= 1:
        raise InputValueError(
            f"`length_scale` must be in (0, 1] (1: the paper's cuts; 0.5: halved), got {length_scale}"
        )
    scaled = []
    for design in designs:
        lengths = tuple(int(n) for n in np.rint(np.multiply(design.lengths, length_scale)))
        if lengths[0] < 1 or len(set(lengths)) != len(lengths):
            raise InputValueError(
                f"`length_scale` {length_scale} turns the {design.kind} cuts {design.lengths} into {lengths}, which "
                "are not distinct positive word counts; use a larger scale"
            )
        scaled.append(dataclasses.replace(design, lengths=lengths))
    return scaled


def _ranking_row(prompt: str, answer_words: list[str], design: _Design, source_row: int) -> dict[str, Any]:
    lengths = sorted(design.lengths, reverse=True)  # longest = best first
    return {
        "prompt": prompt.rstrip() + design.suffix,
        "responses": [" ".join(answer_words[:n]) for n in lengths],
        "ranks": list(range(len(lengths))),
        "utility": design.utility,
        "openness": design.openness,
        "type": design.kind,
        "lengths": lengths,
        "source_row": source_row,
    }


def _balanced(designs: Sequence[_Design], n: int, rng: np.random.Generator) -> list[_Design]:
    """``n`` designs in random order, each used equally often (the first ones once more when they do not divide n)."""
    blocks = [d for i, d in enumerate(designs) for _ in range(n // len(designs) + (i < n % len(designs)))]
    return [blocks[i] for i in rng.permutation(n)]


FileFormat = Literal["jsonl", "parquet"]
"""The file formats :func:`write_longform` writes."""


@dataclass
class LongformDesign:
    """The design of the ranking data: its source, sizes and seed, the kinds of prompt and the answer lengths.

    ``rewardcollapse data longform`` is parsed from it and :class:`~rewardcollapse.experiments.ExperimentConfig`
    extends it; :meth:`build` runs :func:`build_longform`, whose defaults are these.
    """

    source: str = field(
        default="builtin",
        metadata={
            "help": "'builtin' (docstrings of numpy, scipy and torch), a Hub name (akoksal/LongForm), or a "
            "JSONL/Parquet file or datasets folder with input and output columns."
        },
    )
    train_prompts: int = field(
        default=8192, metadata={"help": "Training prompts, balanced between the kinds of prompt."}
    )
    test_prompts: int = field(default=16, metadata={"help": "Test prompts, the ones scored and diagnosed."})
    seed: int = field(
        default=0,
        metadata={
            "help": "Seeds the choice of prompts and their kinds (in the experiment also the model head and the "
            "data order)."
        },
    )
    openness_levels: list[float] | None = field(
        default=None,
        metadata={
            "help": "Openness levels instead of the paper's open and closed prompts, at least two in [0, 1], e.g. "
            "0 0.333 0.667 1: one group of prompts per level.",
            "aliases": ["--levels"],
        },
    )
    length_scale: float = field(
        default=1.0,
        metadata={
            "help": "Answer cut lengths times this (1: the paper's 10 to 80 words; 0.5: 5 to 40); the targets do "
            "not change."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise InputValueError(f"`source` must be text, got {self.source!r}")
        check_positive_int(self.train_prompts, "train_prompts")
        check_positive_int(self.test_prompts, "test_prompts")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputValueError(f"`seed` must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.length_scale, bool) or not isinstance(self.length_scale, int | float):
            raise InputValueError(f"`length_scale` must be a number > 0, got {self.length_scale!r}")
        if not self.length_scale > 0:
            raise InputValueError(f"`length_scale` must be > 0, got {self.length_scale!r}")
        levels = self.openness_levels
        if levels is not None and (
            not isinstance(levels, list) or len(levels) < 2 or any(openness_problem(o) for o in levels)
        ):
            raise InputValueError(f"`openness_levels` must be a list of at least 2 numbers in [0, 1], got {levels!r}")

    def build(self) -> LongFormData:
        """The dataset of this design (:func:`build_longform`)."""
        return build_longform(
            self.source,
            train_prompts=self.train_prompts,
            test_prompts=self.test_prompts,
            seed=self.seed,
            levels=self.openness_levels,
            length_scale=self.length_scale,
        )


@dataclass
class LongformOutput:
    """Where :func:`write_longform` writes a dataset (``rewardcollapse data longform --output --format``)."""

    output: str = field(metadata={"help": "Folder for the train and test files and the dataset card."})
    format: FileFormat = field(default="jsonl", metadata={"help": "File format of the train and test files."})


def build_longform(
    source: Any = LongformDesign.source,
    *,
    train_prompts: int = LongformDesign.train_prompts,
    test_prompts: int = LongformDesign.test_prompts,
    seed: int = LongformDesign.seed,
    split: str = "train",
    min_words: int = MIN_WORDS,
    levels: Sequence[float] | None = None,
    length_scale: float = LongformDesign.length_scale,
) -> LongFormData:
    """Build the paper's ranking dataset from LongForm-format rows (or the built-in corpus).

    Parameters
    ----------
    source : str, Path or datasets.Dataset, default "builtin"
        ``"builtin"``, a Hub name (``"akoksal/LongForm"``), a JSONL/JSON/Parquet file, or a ``datasets`` folder with
        ``input`` and ``output`` columns.
    train_prompts, test_prompts : int
        Prompts per split. Test prompts are drawn first; when the source has fewer usable rows than asked for, the
        training split gets what is left and the report says so.
    seed : int
        Seeds the choice of prompts and of their types; the same seed gives the same dataset.
    split : str
        Split of a Hub dataset or dataset folder.
    min_words : int
        Answers shorter than this (in whitespace-separated words) are left out; the longest cut needs 80.
    levels : sequence of float, optional
        Openness levels in [0, 1] (at least two, distinct) instead of the paper's open and closed kinds: prompts of
        level ``o`` get :data:`LEVEL_SUFFIX`, the cut lengths :func:`level_lengths` ``(o)``, ``openness`` ``o`` and
        ``utility`` ``openness_utility(o).name``.
    length_scale : float, default 1
        Multiplies every cut length (rounded to whole words; the cuts must stay distinct). The targets depend on
        the answers' ranks and the spacing of their lengths, not on the scale, so 0.5 (5 to 40 words instead of 10
        to 80) keeps the experiment's design at about half the tokens: what ``configs/demo.yaml`` uses on a CPU.

    Returns
    -------
    LongFormData
        Train and test rows, each split exactly balanced between open and closed prompts (the odd one open), or
        between the levels (the first ones once more when they do not divide a split).

    Raises
    ------
    ValueError
        For a source without ``input``/``output``, bad sizes, or fewer usable rows than ``test_prompts``.
    """
    if test_prompts < 1 or train_prompts < 0:
        raise InputValueError(
            f"`test_prompts` must be >= 1 and `train_prompts` >= 0, got {test_prompts}, {train_prompts}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    designs = _designs(levels, length_scale)
    longest = max(max(d.lengths) for d in designs)
    if min_words < longest:
        raise InputValueError(f"`min_words` must be at least {longest} (the longest cut), got {min_words}")
    inputs, outputs, name = _source_rows(source, split)
    usable, too_short, invalid = [], 0, []
    for row, (prompt, answer) in enumerate(zip(inputs, outputs, strict=True)):
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(answer, str):
            invalid.append(row)
        elif len(answer.split()) < min_words:
            too_short += 1
        else:
            usable.append(row)
    if len(usable) < test_prompts:
        raise InputValueError(
            f"{name}: only {len(usable)} rows have an answer of at least {min_words} words, fewer than "
            f"test_prompts={test_prompts}"
        )
    rng = np.random.default_rng(seed)
    order = [usable[i] for i in rng.permutation(len(usable))]
    test_rows = order[:test_prompts]
    train_rows = order[test_prompts : test_prompts + train_prompts]
    splits = {}
    for split_name, rows in (("test", test_rows), ("train", train_rows)):
        chosen = _balanced(designs, len(rows), rng)
        splits[split_name] = [
            _ranking_row(inputs[row], outputs[row].split(), design, row)
            for row, design in zip(rows, chosen, strict=True)
        ]
    report = {
        "source": name,
        "rows_read": len(usable) + too_short + len(invalid),
        "rows_usable": len(usable),
        "rows_too_short": too_short,
        "rows_invalid": len(invalid),
        "first_invalid_rows": invalid[:5],
        "train_prompts_asked": train_prompts,
        "train_prompts": len(splits["train"]),
        "test_prompts": len(splits["test"]),
        "seed": seed,
        "min_words": min_words,
        "levels": None if levels is None else [d.openness for d in designs],
        "length_scale": length_scale,
    }
    if invalid:
        warnings.warn(
            f"{name}: {len(invalid)} rows have no string 'input' and 'output' and were left out "
            f"(first: rows {invalid[:5]})",
            UserWarning,
            stacklevel=2,
        )
    return LongFormData(train=splits["train"], test=splits["test"], report=report)


_CARD = """# Reward-collapse ranking data (the construction of Song et al., 2023)

Built by `rewardcollapse data longform` from **{source}** with seed {seed}.

- {train_prompts} training prompts, {test_prompts} test prompts, each split balanced between the kinds below.
- Source rows read: {rows_read}; usable (answer of at least {min_words} words): {rows_usable}; too short:
  {rows_too_short}; invalid (no string input/output): {rows_invalid}.
- Each prompt has 8 answers: its source answer cut after a number of words, **longer is better** (`ranks` 0 = best).
{kinds}
- Files: `train.{ext}`, `test.{ext}` in the ranking format of `rewardcollapse.data` (extra columns `type`, `lengths`,
  `source_row`).
- Licence: that of the source ({licence}).

Reference: Song, Cai, Lee, Su, "Reward Collapse in Aligning Large Language Models", arXiv:2305.17608.
"""


def write_longform(data: LongFormData, output_dir: str | Path, *, file_format: FileFormat = "jsonl") -> dict[str, Path]:
    """Write ``train`` and ``test`` as JSONL or Parquet plus a dataset card ``README.md``; return the paths."""
    if file_format not in get_args(FileFormat):
        raise InputValueError(f"`file_format` must be 'jsonl' or 'parquet', got {file_format!r}")
    with locked_output_folder(output_dir, "output_dir") as output:
        return _write_into(data, output, file_format)


def _write_into(data: LongFormData, output: Path, file_format: FileFormat) -> dict[str, Path]:
    """The work of :func:`write_longform` once its output folder is checked and held."""
    paths = {}
    for name, rows in (("train", data.train), ("test", data.test)):
        path = output / f"{name}.{file_format}"
        if file_format == "jsonl":
            write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        else:
            import datasets

            with atomic_path(path) as temporary:
                datasets.Dataset.from_list(rows).to_parquet(str(temporary))
        paths[name] = path
    builtin = data.report.get("source") == "builtin"
    licence = "numpy, scipy: BSD-3-Clause; torch: BSD-3-Clause-style" if builtin else "see the source dataset"
    levels = data.report.get("levels")
    designs = _designs(levels, data.report.get("length_scale", 1.0))
    kinds = "\n".join(
        f'  - {d.kind} (`openness` {d.openness:g}, `utility` "{d.utility}"): suffix "{d.suffix.strip()}", '
        f"lengths {', '.join(map(str, d.lengths))} words;"
        for d in designs
    )
    card = _CARD.format(**data.report, kinds=kinds, ext=file_format, licence=licence)
    paths["card"] = output / "README.md"
    write_text_atomic(paths["card"], card)
    write_text_atomic(output / "build_report.json", json.dumps(data.report, indent=2) + "\n")  # last: a whole build
    return paths
