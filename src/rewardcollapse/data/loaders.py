"""Load ranking, TRL pairwise and scored data from files, ``datasets`` directories or the Hub.

All the work goes through ``datasets``: files are read into memory-mapped Arrow tables and converted in batches, so a
file of millions of rows never becomes Python lists. Rows are numbered from 0 in the order of the source.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.data.schema import (
    RANKING_COLUMNS,
    SKIP_HINT,
    RowError,
    check_margin,
    merge_pairs,
    ranking_row,
    scored_row,
    split_at_prompt,
    split_pair,
    text_key,
)

__all__ = [
    "INPUT_FORMATS",
    "InputFormat",
    "detect_format",
    "load_rankings",
    "max_responses",
    "pair_positions",
    "read_table",
]

InputFormat = Literal["ranking", "pairwise", "scored"]
"""A row format; where a setting takes ``"auto"`` too, its type is ``Literal["auto", InputFormat]``."""

INPUT_FORMATS = get_args(InputFormat)
"""The row formats :func:`load_rankings` reads (``input_format="auto"`` picks one from the columns)."""

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_BATCH = 1000


def read_table(source: Any, *, split: str = "train"):
    """Read ``source`` as a ``datasets.Dataset`` without converting it.

    Parameters
    ----------
    source : str, Path or datasets.Dataset
        A ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file; a directory written by ``Dataset.save_to_disk`` (or
        ``DatasetDict.save_to_disk``); a directory of data files; or a Hub dataset name such as
        ``"trl-lib/ultrafeedback_binarized"``. A ``Dataset`` is returned as is.
    split : str, default "train"
        Split to read from a ``DatasetDict`` directory, a data directory or a Hub dataset.
    """
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if not isinstance(source, str | Path):
        got = type(source).__name__
        raise InputTypeError(f"`source` must be a path, a Hub dataset name or a datasets.Dataset, got {got}")
    path = Path(source)
    try:
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                known = ", ".join(_FILE_BUILDERS)
                raise InputValueError(f"`source` {str(path)!r} has an unknown extension; use one of {known}")
            try:
                return datasets.load_dataset(builder, data_files=str(path), split="train")
            except Exception as error:  # name the file's line instead of datasets' generic message
                raise InputValueError(_file_problem(path, error)) from error
        if path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                loaded = datasets.load_from_disk(str(path))
                return _pick_split(loaded, split, source)
            return datasets.load_dataset(str(path), split=split)
        if str(source).startswith((".", "/", "~")) or path.suffix.lower() in _FILE_BUILDERS:
            raise InputValueError(f"`source` {str(source)!r} does not exist; give an existing file or directory")
        return datasets.load_dataset(str(source), split=split)
    except InputValueError:
        raise
    except (ValueError, TypeError) as error:
        if isinstance(error, UnicodeDecodeError):
            raise InputValueError(f"`source` {str(source)!r} is not UTF-8 text ({error}); save it as UTF-8") from error
        raise
    except Exception as error:  # datasets raises many types (network, builder, Arrow); name the source once.
        raise InputValueError(f"could not read `source` {str(source)!r}: {type(error).__name__}: {error}") from error


def _file_problem(path: Path, error: Exception) -> str:
    """What is wrong with a data file that ``datasets`` failed to read: its first bad line where one can be found."""
    name = str(path)
    raw = path.read_bytes()
    if not raw.strip():
        return f"{name} is empty: no rows to read"
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = raw[: bad.start].count(b"\n") + 1
            return f"{name}: line {line} is not UTF-8 text ({bad.reason} at byte {bad.start}); save the file as UTF-8"
        if path.suffix.lower() == ".json":
            try:
                json.loads(text)
            except json.JSONDecodeError as bad:
                return f"{name}: not valid JSON at line {bad.lineno}, column {bad.colno}: {bad.msg}"
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as bad:
                        where = f"{name}: line {number}"
                        return f"{where} is not valid JSON ({bad.msg}, column {bad.colno}); one object a line"
    cause = error.__cause__ or error.__context__ or error
    return f"could not read `source` {name!r}: {type(cause).__name__}: {cause}"


_NON_FINITE = {"NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"}


def _check_mixed_columns(table, source: Any) -> None:
    """Refuse a non-finite constant in a column whose rows mix types (``datasets`` would turn it into null).

    A JSON column holding numbers in some rows and text in others is read as a ``Json`` column; its raw values
    ``NaN``/``Infinity`` then decode to null, so a row would silently lose, e.g., its openness.
    """
    for name, feature in table.features.items():
        if type(feature).__name__ != "Json":
            continue
        raw = table.data.column(name)
        if hasattr(raw.type, "storage_type"):  # an extension type (Arrow's JSON): the JSON text of each row
            raw = pa.chunked_array([chunk.storage for chunk in raw.chunks], type=raw.type.storage_type)
        if not pa.types.is_string(raw.type) and not pa.types.is_large_string(raw.type):
            continue
        for row, value in enumerate(raw.to_pylist()):
            if value is not None and value.strip().strip('"') in _NON_FINITE:
                label = source if isinstance(source, str | Path) else "the dataset"
                raise InputValueError(
                    f"{label}: row {row}: `{name}` is {value.strip()}, not a number; give a finite number or null"
                )


def _pick_split(loaded, split: str, source: Any):
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputValueError(f"`split` {split!r} is not in {str(source)!r}; it has {sorted(loaded)}")
        return loaded[split]
    return loaded


def detect_format(columns: list[str]) -> str:
    """Return the input format that the columns of a table show; raise a ValueError naming them otherwise."""
    names = set(columns)
    if "responses" in names and {"chosen", "rejected"} & names:
        raise InputValueError(
            "the data mixes ranking rows (`responses`) and pairwise rows (`chosen`/`rejected`); put each format "
            "in its own file, or give the pairs of a prompt as one ranking row with `pairs`"
        )
    if {"responses", "scores"} <= names:
        return "scored"
    if "responses" in names:
        return "ranking"
    if {"chosen", "rejected"} <= names:
        return "pairwise"
    raise InputValueError(
        f"cannot tell the data format from the columns {sorted(names)}: expected 'prompt' and 'responses' "
        "(ranking, optional 'ranks'), 'prompt', 'responses' and 'scores' (scored), or 'chosen' and 'rejected' "
        "(TRL pairwise, optional 'prompt')"
    )


def _output_features(table, input_format: str):
    """The canonical column types; prompt and answer types follow the input (text or chat messages)."""
    import datasets

    features = table.features
    if input_format == "pairwise":
        answer = features["chosen"]
        prompt = features["prompt"] if "prompt" in features else answer
    else:
        prompt = features["prompt"]
        responses = features["responses"]
        # CSV cells hold the list as JSON text.
        answer = responses.feature if isinstance(responses, datasets.List) else datasets.Value("string")
    canonical = {
        "prompt": prompt,
        "responses": datasets.List(answer),
        "ranks": datasets.List(datasets.Value("int64")),
        "pairs": datasets.List(datasets.List(datasets.Value("int64"))),
        "margins": datasets.List(datasets.Value("float64")),
        "utility": datasets.Value("string"),
        "openness": datasets.Value("float64"),
        "_reason": datasets.Value("string"),
        "_error": datasets.Value("string"),
    }
    return datasets.Features(canonical)


def _rows(batch: Mapping[str, list]) -> list[dict[str, Any]]:
    keys = list(batch)
    return [dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def _emit(converted: list[tuple[dict | None, RowError | None]], rows: list[dict[str, Any]] | None = None):
    """Column-wise output of a conversion batch, with the error columns that the drop report reads."""
    out: dict[str, list] = {name: [] for name in (*RANKING_COLUMNS, "_reason", "_error")}
    for row, error in converted:
        for name in RANKING_COLUMNS:
            out[name].append(row[name] if row else None)
        out["_reason"].append(error.reason if error else "")
        out["_error"].append(error.message if error else "")
    return out


def _convert_batch(batch: Mapping[str, list], indices: list[int], input_format: str):
    convert = ranking_row if input_format == "ranking" else scored_row
    return _emit([convert(row, f"row {i}") for row, i in zip(_rows(batch), indices, strict=True)])


def _pair_batch(batch: Mapping[str, list], indices: list[int]):
    """One TRL pair per row: check it and its margin, split an implicit prompt, and key the prompt for grouping.

    An implicit text prompt is only a candidate here (the pair's own word prefix, with ``_split`` set): the texts
    are split at their prompt group's prompt when the pairs are merged (see
    :func:`~rewardcollapse.data.split_implicit_prompt`).
    """
    names = ("_key", "prompt", "chosen", "rejected", "_split", "_margin", "_row", "_reason", "_error")
    out: dict[str, list] = {name: [] for name in names}
    for row, i in zip(_rows(batch), indices, strict=True):
        chosen, rejected = row["chosen"], row["rejected"]
        prompt = row.get("prompt")
        where = f"row {i}"
        margin, error = check_margin(row["margin"], where) if "margin" in row else (None, None)
        texts = "prompt" not in row and isinstance(chosen, str) and isinstance(rejected, str)
        if error is None and "prompt" not in row:
            split, error = split_pair(chosen, rejected, where, split_texts=False)
            if split:
                prompt, chosen, rejected = split
        if error is None:
            _, error = ranking_row({"prompt": prompt, "responses": [chosen, rejected]}, where)
            if error and error.reason == "duplicate response":
                error = RowError(error.reason, f"{where}: `chosen` and `rejected` are identical; drop the pair")
        out["_key"].append(text_key(prompt) if error is None else f"\0invalid row {i}")
        out["prompt"].append(prompt if error is None else None)
        out["chosen"].append(chosen)
        out["rejected"].append(rejected)
        out["_split"].append(texts and error is None)
        out["_margin"].append(margin)
        out["_row"].append(i)
        out["_reason"].append(error.reason if error else "")
        out["_error"].append(error.message if error else "")
    return out


def _extras(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"utility": row.get("utility"), "openness": row.get("openness")}


def _merge_batch(
    batch: Mapping[str, list], pairs_table, extra_columns: list[str], has_margin: bool, transitive_closure: bool
):
    """One output row per prompt group (``start``/``stop`` delimit its pairs in the grouped pair table).

    The texts of an implicit text prompt are split at their group's prompt (its ``_key``) here; a row that this
    leaves without an answer becomes an error row of its own and the rest of the group is merged.
    """
    converted = []
    for start, stop in zip(batch["start"], batch["stop"], strict=True):
        group = pairs_table[start:stop]
        if any(group["_reason"]):
            # A bad pair rejects its own row only; it was keyed apart from every other row.
            first = next(k for k, reason in enumerate(group["_reason"]) if reason)
            converted.append((None, RowError(group["_reason"][first], group["_error"][first])))
            continue
        prompt = group["_key"][0] if group["_split"][0] else group["prompt"][0]
        kept, pairs = [], []
        for k, row in enumerate(group["_row"]):
            pair = (group["chosen"][k], group["rejected"][k])
            if group["_split"][k]:
                split, error = split_at_prompt(prompt, *pair, f"row {row}")
                if error:
                    converted.append((None, error))
                    continue
                pair = split[1:]
            kept.append(k)
            pairs.append(pair)
        if not kept:
            continue
        rows = [group["_row"][k] for k in kept]
        disagreeing = [name for name in extra_columns if len({repr(group[name][k]) for k in kept}) > 1]
        if disagreeing:
            where = f"rows {', '.join(map(str, rows))}"
            message = (
                f"{where}: the pairs of one prompt disagree on `{disagreeing[0]}` "
                f"({sorted({repr(group[disagreeing[0]][k]) for k in kept})}); give every row of a prompt the same value"
            )
            converted.append((None, RowError(f"conflicting {disagreeing[0]}", message)))
            continue
        extras = _extras({name: group[name][kept[0]] for name in extra_columns})
        margins = [group["_margin"][k] for k in kept] if has_margin else None
        converted.append(
            merge_pairs(prompt, pairs, rows, extras, margins=margins, transitive_closure=transitive_closure)
        )
    return _emit(converted)


def _group_prompts(keys: Sequence[str]) -> list[str]:
    """The prompt of each candidate prompt in ``keys``: the shortest key that it extends at a word boundary.

    A key ``k`` extends ``s`` at a word boundary when ``k == s`` or ``k`` starts with ``s`` followed by whitespace.
    In sorted order the keys that start with ``s`` follow ``s``, so a stack of the keys that start groups (each a
    prefix of the next) finds every key's group in one pass.
    """
    prompts = [""] * len(keys)
    starts: list[str] = []
    for k in sorted(range(len(keys)), key=keys.__getitem__):
        key = keys[k]
        while starts and not key.startswith(starts[-1]):
            starts.pop()
        prompt = next((s for s in starts if len(key) == len(s) or key[len(s)].isspace()), None)
        if prompt is None:
            starts.append(key)
            prompt = key
        prompts[k] = prompt
    return prompts


def _group_implicit_prompts(keyed):
    """Replace each candidate implicit text prompt in ``_key`` by its prompt group's (see split_implicit_prompt)."""
    split = keyed.data.column("_split").combine_chunks()
    if not pc.any(split).as_py():
        return keyed
    keys = keyed.data.column("_key").combine_chunks()
    candidates = pc.unique(pc.filter(keys, split))
    prompts = pa.array(_group_prompts(candidates.to_pylist()), type=keys.type)
    shared = pc.if_else(split, pc.take(prompts, pc.index_in(keys, value_set=candidates)), keys)
    return keyed.remove_columns("_key").add_column("_key", shared)


def _group_pairs(table, num_proc: int | None, transitive_closure: bool, group_pairs: bool = True):
    """Group the pair rows by prompt (in order of first appearance) and merge each group into a ranking row.

    Without ``group_pairs`` each pair row is a group of its own (a two-answer ranking, in the rows' order).
    """
    import datasets

    features = _output_features(table, "pairwise")
    extra_columns = [name for name in ("utility", "openness") if name in table.column_names]
    pair_features = {
        "_key": datasets.Value("string"),
        "prompt": features["prompt"],
        "chosen": features["responses"].feature,
        "rejected": features["responses"].feature,
        "_split": datasets.Value("bool"),
        "_margin": datasets.Value("float64"),
        "_row": datasets.Value("int64"),
        "_reason": datasets.Value("string"),
        "_error": datasets.Value("string"),
        **{name: table.features[name] for name in extra_columns},
    }
    keyed = table.map(
        _pair_batch,
        with_indices=True,
        batched=True,
        batch_size=_BATCH,
        remove_columns=[c for c in table.column_names if c not in extra_columns],
        features=datasets.Features(pair_features),
        num_proc=num_proc,
        desc="reading pairs",
    )
    keyed = _group_implicit_prompts(keyed)
    # dictionary_encode numbers the prompts in order of first appearance; a stable sort keeps row order inside.
    if group_pairs:
        group = pc.dictionary_encode(keyed.data.column("_key").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    else:
        group = np.arange(len(keyed))
    order = np.argsort(group, kind="stable")
    grouped = keyed.select(order).flatten_indices()
    sizes = np.bincount(group)
    stops = np.cumsum(sizes)
    bounds = datasets.Dataset.from_dict({"start": (stops - sizes).tolist(), "stop": stops.tolist()})
    merge_options = {"has_margin": "margin" in table.column_names, "transitive_closure": transitive_closure}
    return bounds.map(
        _merge_batch,
        batched=True,
        batch_size=_BATCH,
        remove_columns=["start", "stop"],
        fn_kwargs={"pairs_table": grouped, "extra_columns": extra_columns, **merge_options},
        features=features,
        new_fingerprint=f"{grouped._fingerprint}-merged-{transitive_closure}-{group_pairs}",
        desc="merging pairs per prompt",
    )


def _report_errors(converted, source: Any, skip_invalid: bool):
    """Raise on the first invalid row, or drop the invalid rows and warn with a count and an example per reason."""
    reasons = converted.data.column("_reason").combine_chunks()
    bad = pc.not_equal(reasons, "").to_numpy(zero_copy_only=False)
    bad_rows = np.flatnonzero(bad)
    if len(bad_rows) == 0:
        return converted.remove_columns(["_reason", "_error"])
    name = source if isinstance(source, str | Path) else "the dataset"
    errors = converted.data.column("_error")
    if not skip_invalid:
        more = f" ({len(bad_rows) - 1} more invalid rows)" if len(bad_rows) > 1 else ""
        raise InputValueError(f"{name}: {errors[int(bad_rows[0])].as_py()}{more}; {SKIP_HINT}")
    first_of: dict[str, int] = {}
    counts: dict[str, int] = {}
    for row, reason in zip(bad_rows, reasons.take(pa.array(bad_rows)).to_pylist(), strict=True):
        first_of.setdefault(reason, int(row))
        counts[reason] = counts.get(reason, 0) + 1
    summary = "; ".join(f"{counts[r]} {r} (first: {errors[first_of[r]].as_py()})" for r in counts)
    warnings.warn(f"{name}: dropped {len(bad_rows)} of {len(converted)} prompts: {summary}", UserWarning, stacklevel=3)
    return converted.select(np.flatnonzero(~bad)).remove_columns(["_reason", "_error"])


def load_rankings(
    source: Any,
    *,
    split: str = "train",
    input_format: str = "auto",
    skip_invalid: bool = False,
    num_proc: int | None = None,
    transitive_closure: bool = True,
    group_pairs: bool = True,
):
    """Load ranking data as a ``datasets.Dataset`` in the ranking format of :mod:`rewardcollapse.data.schema`.

    Parameters
    ----------
    source : str, Path or datasets.Dataset
        File (JSONL, JSON, Parquet, CSV), ``save_to_disk`` directory, data directory, Hub dataset name, or a
        ``Dataset`` (see :func:`read_table`).
    split : str, default "train"
        Split of a dataset dictionary or Hub dataset.
    input_format : {"auto", "ranking", "pairwise", "scored"}, default "auto"
        ``ranking``: ``prompt``, ``responses``, optional ``ranks`` or ``pairs`` (with optional ``margins``),
        ``utility``, ``openness``. ``pairwise``: TRL preference rows ``chosen``/``rejected`` with an explicit
        ``prompt`` or an implicit one, and an optional ``margin``; the pairs of each prompt are merged into one
        partial order. ``scored``: ``prompt``, ``responses`` and ``scores`` (higher better; equal scores tied).
        ``auto`` picks from the columns.
    skip_invalid : bool, default False
        Drop invalid rows (fewer than 2 responses, empty or duplicate responses, bad ranks, pairs, margins or
        scores, unknown utility, openness outside [0, 1], no common implicit prompt, an answer that an implicit
        prompt leaves empty, contradictory pairs) and warn with a count per reason, instead of raising on the first
        one.
    num_proc : int, optional
        Worker processes for the row conversion of large files.
    transitive_closure : bool, default True
        Pairwise rows: rank the pairs that a prompt's pairs imply as well (a above b above c ranks a above c), and
        give the prompt ``ranks`` when they form a weak order (and have no margins). False keeps exactly the given
        pairs (each once) as ``pairs``, the pairs TRL's reward trainer trains on. See
        :func:`~rewardcollapse.data.merge_pairs`.
    group_pairs : bool, default True
        Pairwise rows: merge the pairs of one prompt into one ranking row (each answer scored once). False keeps
        each pair row its own two-answer ranking, in the rows' order, as TRL's reward trainer batches them (a
        batch of ``n`` rows is then ``n`` pairs, whatever the prompts).

    Returns
    -------
    datasets.Dataset
        Columns ``prompt``, ``responses``, ``ranks``, ``pairs``, ``margins``, ``utility``, ``openness``; one row
        per prompt (per pair row without ``group_pairs``).

    Notes
    -----
    An implicit prompt (pairwise rows without a ``prompt`` column) is split as
    :func:`~rewardcollapse.data.split_implicit_prompt` describes: conversations before their final assistant
    message(s); texts per prompt group, at the longest common word prefix of all the chosen and rejected texts of
    the rows that share the prompt, so that answers that begin with the same words keep them; the whitespace after
    the prompt begins each answer, so that prompt + answer is the text given. A pair with no common prompt, or an
    answer that the split leaves empty or punctuation only, is an invalid row. A ``margin`` column must hold a
    finite number in every row; a prompt's merged row then has ``pairs`` and ``margins`` (TRL's loss
    ``-log sigmoid(r_chosen - r_rejected - margin)``), with margin 0.0 for a pair implied only by the transitive
    closure.

    Raises
    ------
    ValueError
        For an unreadable source, unknown columns, or an invalid row (naming the row, the field and the fix)
        unless ``skip_invalid``.
    """
    if input_format not in ("auto", *INPUT_FORMATS):
        raise InputValueError(f"`input_format` must be 'auto' or one of {INPUT_FORMATS}, got {input_format!r}")
    if not isinstance(transitive_closure, bool):
        got = type(transitive_closure).__name__
        raise InputTypeError(f"`transitive_closure` must be True or False, got {got}")
    if not isinstance(group_pairs, bool):
        raise InputTypeError(f"`group_pairs` must be True or False, got {type(group_pairs).__name__}")
    table = read_table(source, split=split)
    try:
        return _load(table, source, input_format, skip_invalid, num_proc, transitive_closure, group_pairs)
    except UnicodeDecodeError as error:  # Arrow keeps a file's bytes as read; they are decoded row by row
        path = Path(source) if isinstance(source, str | Path) else None
        where = _file_problem(path, error) if path is not None and path.is_file() else f"{error}"
        raise InputValueError(f"text that is not UTF-8: {where}") from error


def _load(
    table,
    source: Any,
    input_format: str,
    skip_invalid: bool,
    num_proc: int | None,
    transitive_closure: bool = True,
    group_pairs: bool = True,
):
    """Convert a read table to the ranking format (:func:`load_rankings` without the reading)."""
    _check_mixed_columns(table, source)
    if input_format == "auto":
        input_format = detect_format(table.column_names)
    if input_format == "pairwise":
        missing = {"chosen", "rejected"} - set(table.column_names)
        if missing:
            raise InputValueError(f"pairwise data needs columns 'chosen' and 'rejected'; {sorted(missing)} missing")
        ignored = sorted({"ranks", "pairs", "scores"} & set(table.column_names))
        if ignored:
            raise InputValueError(
                f"pairwise rows (`chosen`/`rejected`) with {ignored} columns: each row is one pair, so those would "
                "be ignored; drop them, or give each prompt as one ranking row (`responses` with `ranks` or `pairs`)"
            )
        converted = _group_pairs(table, num_proc, transitive_closure, group_pairs)
    else:
        required = {"prompt", "responses"} | ({"scores"} if input_format == "scored" else set())
        missing = required - set(table.column_names)
        if missing:
            raise InputValueError(f"{input_format} data needs columns {sorted(required)}; {sorted(missing)} missing")
        converted = table.map(
            _convert_batch,
            with_indices=True,
            batched=True,
            batch_size=_BATCH,
            remove_columns=table.column_names,
            fn_kwargs={"input_format": input_format},
            features=_output_features(table, input_format),
            num_proc=num_proc,
            desc=f"reading {input_format} rows",
        )
    return _report_errors(converted, source, skip_invalid)


def max_responses(*datasets_: Any) -> int:
    """The largest number of responses in any row of the given ranking datasets (None entries are skipped).

    Read from the Arrow column of a ``datasets.Dataset`` without building Python lists; any other iterable of rows
    is walked.
    """
    largest = 0
    for dataset in datasets_:
        if dataset is None:
            continue
        table = getattr(dataset, "data", None)
        if table is not None and hasattr(table, "column"):
            if len(dataset):
                largest = max(largest, pc.max(pc.list_value_length(table.column("responses"))).as_py())
        else:
            largest = max([largest, *(len(row["responses"]) for row in dataset)])
    return largest


def pair_positions(pairs: Any, rankings: Any) -> list[tuple[int, int, int] | None]:
    """Where the answers of each pairwise row went when :func:`load_rankings` merged the rows into rankings.

    Parameters
    ----------
    pairs : datasets.Dataset
        TRL pairwise rows (``chosen``/``rejected``, with an explicit ``prompt`` or an implicit one, text or
        conversational), as :func:`read_table` reads them.
    rankings : datasets.Dataset
        ``load_rankings(pairs)``: one row per prompt, each distinct answer once.

    Returns
    -------
    list
        Per row of ``pairs``, in order: ``(ranking row, chosen index, rejected index)`` into ``rankings`` and its
        ``responses``; None for a row that loading dropped as invalid (``skip_invalid``).

    Notes
    -----
    Loading keeps every text whole (the prompt followed by the answer is the row's text, also for an implicit
    prompt), so a row's answers are found by prompt + answer; with an explicit prompt, in the ranking of that very
    prompt.
    """
    explicit = "prompt" in pairs.column_names
    prompts = [text_key(prompt) for prompt in rankings["prompt"]]
    found: dict[str, list[tuple[int, int]]] = {}  # text_key(prompt + answer) -> (ranking row, answer index)
    for p, (prompt, responses) in enumerate(zip(rankings["prompt"], rankings["responses"], strict=True)):
        for a, answer in enumerate(responses):
            found.setdefault(text_key(prompt + answer), []).append((p, a))
    given = pairs["prompt"] if explicit else [None] * len(pairs)
    positions: list[tuple[int, int, int] | None] = []
    for prompt, chosen, rejected in zip(given, pairs["chosen"], pairs["rejected"], strict=True):
        if explicit:
            chosen, rejected = prompt + chosen, prompt + rejected
        rejected_at = dict(found.get(text_key(rejected), []))
        in_place = [
            (p, a, rejected_at[p])
            for p, a in found.get(text_key(chosen), [])
            if p in rejected_at and (prompt is None or prompts[p] == text_key(prompt))
        ]
        positions.append(in_place[0] if in_place else None)
    return positions
