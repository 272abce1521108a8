"""The paper's ranking data: long answers truncated to 8 lengths, half the prompts open-ended, half closed.

Song et al. (2023, Section 4) build their experiment from the LongForm instruction dataset (Köksal et al., 2023; Hub
``akoksal/LongForm``, fields ``input`` and ``output``). For each prompt whose answer has at least 100 words, 8 answers
are made by cutting the answer after a number of words; a longer answer is better. Each prompt is made, at random:

* **open** (``openness`` 1): the suffix :data:`OPEN_SUFFIX` and lengths 10, 20, ..., 80 words, evenly spaced
  qualities whose target reward distribution is uniform (``utility`` ``"-1/x"`` for prompt-aware training);
* **closed** (``openness`` 0): the suffix :data:`CLOSED_SUFFIX` and lengths 16, 22, 28, 34, 56, 62, 68, 74, two
  clusters whose target is polarised at 0 and 1 (``utility`` ``"x"``).

Nothing can be downloaded on an offline machine, so the same construction also runs on a **built-in corpus**
(``source="builtin"``): the docstrings of numpy, scipy and torch that have at least 100 words, as answers to
"Explain what ``numpy.linalg.svd`` does." (up to the docstring's Examples section, whitespace collapsed). These are
real English technical texts under BSD-style licences (numpy, scipy: BSD-3-Clause; torch: BSD-3-Clause-style),
read from the installed packages, so the corpus is the same on every machine with the same package versions.
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLOSED_LENGTHS",
    "CLOSED_SUFFIX",
    "MIN_WORDS",
    "OPEN_LENGTHS",
    "OPEN_SUFFIX",
    "LongFormData",
    "build_longform",
    "builtin_corpus",
    "write_longform",
]

OPEN_SUFFIX = " Write the answer in an open-ended way."
CLOSED_SUFFIX = " Write either a short answer or a long answer."
OPEN_LENGTHS = (10, 20, 30, 40, 50, 60, 70, 80)
CLOSED_LENGTHS = (16, 22, 28, 34, 56, 62, 68, 74)
MIN_WORDS = 100
OPEN_UTILITY, CLOSED_UTILITY = "-1/x", "x"

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
        raise ValueError(
            f"`source` {str(source)!r} lacks the LongForm columns {missing} (it has {table.column_names}); "
            "LongForm rows have 'input' (the instruction) and 'output' (the long answer)"
        )
    return table["input"], table["output"], str(source)


def _ranking_row(prompt: str, answer_words: list[str], kind: str, source_row: int) -> dict[str, Any]:
    lengths = sorted(OPEN_LENGTHS if kind == "open" else CLOSED_LENGTHS, reverse=True)  # longest = best first
    return {
        "prompt": prompt.rstrip() + (OPEN_SUFFIX if kind == "open" else CLOSED_SUFFIX),
        "responses": [" ".join(answer_words[:n]) for n in lengths],
        "ranks": list(range(len(lengths))),
        "utility": OPEN_UTILITY if kind == "open" else CLOSED_UTILITY,
        "openness": 1.0 if kind == "open" else 0.0,
        "type": kind,
        "lengths": lengths,
        "source_row": source_row,
    }


def _balanced_types(n: int, rng: np.random.Generator) -> list[str]:
    """Exactly half open (the extra one, for odd n, open), in random order."""
    kinds = ["open"] * ((n + 1) // 2) + ["closed"] * (n // 2)
    return [kinds[i] for i in rng.permutation(n)]


def build_longform(
    source: Any = "builtin",
    *,
    train_prompts: int = 8192,
    test_prompts: int = 16,
    seed: int = 0,
    split: str = "train",
    min_words: int = MIN_WORDS,
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

    Returns
    -------
    LongFormData
        Train and test rows, each split exactly balanced between open and closed prompts (the odd one open).

    Raises
    ------
    ValueError
        For a source without ``input``/``output``, bad sizes, or fewer usable rows than ``test_prompts``.
    """
    if test_prompts < 1 or train_prompts < 0:
        raise ValueError(f"`test_prompts` must be >= 1 and `train_prompts` >= 0, got {test_prompts}, {train_prompts}")
    if min_words < max(OPEN_LENGTHS + CLOSED_LENGTHS):
        raise ValueError(f"`min_words` must be at least {max(OPEN_LENGTHS)} (the longest cut), got {min_words}")
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
        raise ValueError(
            f"{name}: only {len(usable)} rows have an answer of at least {min_words} words, fewer than "
            f"test_prompts={test_prompts}"
        )
    rng = np.random.default_rng(seed)
    order = [usable[i] for i in rng.permutation(len(usable))]
    test_rows = order[:test_prompts]
    train_rows = order[test_prompts : test_prompts + train_prompts]
    splits = {}
    for split_name, rows in (("test", test_rows), ("train", train_rows)):
        kinds = _balanced_types(len(rows), rng)
        splits[split_name] = [
            _ranking_row(inputs[row], outputs[row].split(), kind, row) for row, kind in zip(rows, kinds, strict=True)
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

- {train_prompts} training prompts, {test_prompts} test prompts, each split half open-ended and half closed.
- Source rows read: {rows_read}; usable (answer of at least {min_words} words): {rows_usable}; too short:
  {rows_too_short}; invalid (no string input/output): {rows_invalid}.
- Each prompt has 8 answers: its source answer cut after a number of words, **longer is better** (`ranks` 0 = best).
  - open (`openness` 1, `utility` "-1/x"): suffix "{open_suffix}", lengths 10, 20, ..., 80 words;
  - closed (`openness` 0, `utility` "x"): suffix "{closed_suffix}", lengths 16, 22, 28, 34, 56, 62, 68, 74.
- Files: `train.{ext}`, `test.{ext}` in the ranking format of `rewardcollapse.data` (extra columns `type`, `lengths`,
  `source_row`).
- Licence: that of the source ({licence}).

Reference: Song, Cai, Lee, Su, "Reward Collapse in Aligning Large Language Models", arXiv:2305.17608.
"""


def write_longform(data: LongFormData, output_dir: str | Path, *, file_format: str = "jsonl") -> dict[str, Path]:
    """Write ``train`` and ``test`` as JSONL or Parquet plus a dataset card ``README.md``; return the paths."""
    if file_format not in ("jsonl", "parquet"):
        raise ValueError(f"`file_format` must be 'jsonl' or 'parquet', got {file_format!r}")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in (("train", data.train), ("test", data.test)):
        path = output / f"{name}.{file_format}"
        if file_format == "jsonl":
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        else:
            import datasets

            datasets.Dataset.from_list(rows).to_parquet(str(path))
        paths[name] = path
    builtin = data.report.get("source") == "builtin"
    licence = "numpy, scipy: BSD-3-Clause; torch: BSD-3-Clause-style" if builtin else "see the source dataset"
    card = _CARD.format(
        **data.report,
        open_suffix=OPEN_SUFFIX.strip(),
        closed_suffix=CLOSED_SUFFIX.strip(),
        ext=file_format,
        licence=licence,
    )
    paths["card"] = output / "README.md"
    paths["card"].write_text(card)
    (output / "build_report.json").write_text(json.dumps(data.report, indent=2) + "\n")
    return paths
