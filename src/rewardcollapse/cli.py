"""The ``rewardcollapse`` command line: one entry point, one subcommand per job, each parsed from dataclasses.

Every command's options are the fields of dataclasses (``transformers.HfArgumentParser``), with their help and
``Literal`` choices: the library's own settings (:mod:`rewardcollapse.settings`,
:class:`~rewardcollapse.experiments.longform.LongformDesign`, :class:`~rewardcollapse.experiments.ReproduceOptions`)
and, for the options only this command line has, the small dataclasses here. ``--help`` imports neither torch nor
transformers' training code; ``train --help`` lists the project's options and the most used training ones, and
``train --help-all`` every ``TrainingArguments`` option.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from rewardcollapse._files import (
    atomic_path,
    check_output_file,
    check_output_folder,
    locked_output_file,
    locked_output_folder,
    write_text_atomic,
)
from rewardcollapse.core.errors import InputError, InputValueError
from rewardcollapse.estimators import text_classifier

__all__ = ["build_parser", "command_parser", "main"]


@dataclass
class SolveOptions:
    """``rewardcollapse solve``: the exact optimal rewards of one prompt's ranking."""

    n: int = field(default=100, metadata={"help": "Answers in a total order.", "aliases": ["-n"]})
    ranking: str | None = field(
        default=None,
        metadata={
            "help": "A ranking instead of n: JSON tiers '[[0], [1, 2], [3]]' or '{\"edges\": [[0, 1], [0, 2]]}'."
        },
    )
    utility: str = field(
        default="log",
        metadata={"help": "Utility spec: x, log, x^0.5, logsigmoid; write --utility=-1/x for specs with a leading -."},
    )
    eps: float = field(default=0.0, metadata={"help": "Whole-line extension shift."})
    tol: float = field(default=1e-10, metadata={"help": "Relative KKT residual to reach."})
    json: str | None = field(
        default=None, metadata={"help": "Write the rewards and the solver's report to this JSON file."}
    )
    plot: str | None = field(
        default=None, metadata={"help": "Write a histogram against the limit law to this figure (PNG, PDF, SVG, ...)."}
    )


@dataclass
class LimitsOptions:
    """``rewardcollapse limits``: optimal rewards of a long ranking under each utility, and their limit laws."""

    n: int = field(default=200, metadata={"help": "Answers per ranking.", "aliases": ["-n"]})
    output: str = field(
        default="limits-output",
        metadata={"help": "Folder for optimal_rewards.png, limit_laws.png and summary.json."},
    )


@dataclass
class DiagnoseOptions:
    """``rewardcollapse diagnose``: the scored file to diagnose (or the model and data to score first)."""

    rewards: str | None = field(
        default=None,
        metadata={"help": "A `rewardcollapse score` output (openness optional); or give --model and --data."},
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Score --data with this trained model first. With --rewards: the model that scored them, whose "
            "recorded utility and backbone are read."
        },
    )
    data: str | None = field(default=None, metadata={"help": "Ranking data to score with --model."})
    base_model: str | None = field(
        default=None,
        metadata={"help": "For a --model folder of LoRA adapters: the base model to load them on (as score's)."},
    )
    output: str = field(
        default="diagnostics",
        metadata={
            "help": "Folder for rewards.png and diagnostics.json (and rewards.jsonl when scoring here, "
            "untrained_rewards.jsonl for the untrained reference)."
        },
    )
    levels: list[float] | None = field(
        default=None,
        metadata={"help": "Group the prompts by these openness levels instead of open (>= 0.5) and closed."},
    )
    utility: str | None = field(
        default=None,
        metadata={
            "help": "The training utility, whose exact optimum is each prompt's collapse point: a spec (x, log, "
            "logsigmoid for TRL's models, ...; write --utility=-1/x), 'prompt-aware' or 'openness'. Default: the one "
            "a --model this project trained records; otherwise the distance to each of x, log, -1/x and logsigmoid."
        },
    )
    untrained_model: str | None = field(
        default=None,
        metadata={
            "help": "Score the same rows with this model and a new score head (seed 0), the untrained reference: "
            "Hub name or path. Default: the backbone a --model trained here records, or an adapter folder's base; "
            "'none': skip it."
        },
    )


@dataclass(kw_only=True)
class OpennessRows:
    """The rows an ``openness`` command reads."""

    data: str = field(
        metadata={"help": "Rows with a 'prompt' (and for fit an 'openness'): JSONL, Parquet, CSV, folder or Hub name."}
    )
    split: str = field(default="train", metadata={"help": "Split of a datasets folder or Hub dataset."})


@dataclass(kw_only=True)
class OpennessEncoding(OpennessRows):
    """Rows whose prompts a sentence encoder embeds."""

    batch_size: int = field(
        default=text_classifier.BATCH_SIZE, metadata={"help": "Prompts per forward pass of the encoder."}
    )


@dataclass(kw_only=True)
class OpennessFit(OpennessEncoding):
    """``rewardcollapse openness fit``."""

    output: str = field(metadata={"help": "Folder for openness_classifier.json."})
    encoder: str | None = field(
        default=None, metadata={"help": "Sentence encoder, Hub name or path; default: the shipped MiniLM."}
    )
    test_fraction: float = field(
        default=text_classifier.TEST_FRACTION, metadata={"help": "Prompts held out to measure the accuracy."}
    )
    c: float = field(
        default=text_classifier.INVERSE_L2, metadata={"help": "Inverse L2 strength of the logistic regression."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds the held-out split."})
    max_length: int = field(
        default=text_classifier.MAX_LENGTH, metadata={"help": "Tokens per prompt (kept for predict)."}
    )


@dataclass(kw_only=True)
class OpennessPredict(OpennessEncoding):
    """``rewardcollapse openness predict``."""

    model: str = field(metadata={"help": "Folder written by `rewardcollapse openness fit`."})
    output: str = field(metadata={"help": "JSONL file: each row plus predicted_openness."})


@dataclass(kw_only=True)
class OpennessEstimate(OpennessRows):
    """``rewardcollapse openness scores`` and ``openness rankings``."""

    output: str = field(metadata={"help": "JSONL file: each row plus estimated_openness."})


def _parse_ranking(args: SolveOptions) -> Any:
    if args.ranking is None:
        return args.n
    example = "e.g. '[[0], [1, 2], [3]]' (tiers), '[[0, 1], [1, 2]]' as edges in {\"edges\": ...}"
    try:
        value = json.loads(args.ranking)
    except json.JSONDecodeError as error:
        raise InputValueError(f"--ranking is not valid JSON ({error}); {example}") from None
    except RecursionError:  # json nests by recursion
        raise InputValueError(f"--ranking is nested too deep for a ranking; {example}") from None
    if isinstance(value, dict):
        edges = value.get("edges")
        if set(value) != {"edges"} or not isinstance(edges, list) or not all(isinstance(e, list) for e in edges):
            raise InputValueError(f'--ranking as an object must be {{"edges": [[i, j], ...]}}, got {args.ranking}')
        return [tuple(edge) for edge in edges]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, list):
        raise InputValueError(
            f"--ranking must be a JSON list of tiers or an edges object, got {args.ranking}; {example}"
        )
    return value


def _solve(args: SolveOptions) -> int:
    from rewardcollapse.core import describe_law, ks_distance, limit_distribution, optimal_rewards, utility

    if args.plot and args.ranking is not None:
        raise InputValueError("--plot draws n answers of a total order; use -n instead of --ranking")
    if args.plot:
        _check_figure_format(args.plot, "--plot")
    u = utility(args.utility, eps=args.eps)
    ranking = _parse_ranking(args)  # every input before the output checks, which may create folders
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_file(path, option)
    started = time.perf_counter()
    result = optimal_rewards(ranking, u, tol=args.tol)
    elapsed = time.perf_counter() - started
    rows = [
        ("utility", u.name),
        ("answers", str(len(result.rewards))),
        ("rewards", f"[{result.rewards.min():.6g}, {result.rewards.max():.6g}]"),
        ("objective", f"{result.objective:.12g}"),
        ("KKT residual", f"{result.residual:.2e} ({'converged' if result.success else result.message})"),
        ("iterations", f"{result.iterations} ({result.method}, {elapsed:.3f} s)"),
    ]
    if args.ranking is None:
        law = limit_distribution(u)
        rows += [("limit law", describe_law(law)), ("KS to limit", f"{ks_distance(result.rewards, law):.4g}")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        payload = {
            "utility": u.name,
            "rewards": result.rewards.tolist(),
            "objective": result.objective,
            "residual": result.residual,
            "iterations": result.iterations,
            "success": result.success,
            "message": result.message,
            "method": result.method,
        }
        write_text_atomic(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from rewardcollapse.plots import plot_optimal_rewards

        fig, _ = plot_optimal_rewards(args.n, [u])
        _save_figure(fig, args.plot)
        print(f"wrote {args.plot}")
    return 0 if result.success else 1


def _limits(args: LimitsOptions) -> int:
    from rewardcollapse.core import describe_law, ks_distance, limit_distribution, optimal_rewards
    from rewardcollapse.plots import DEFAULT_PLOT_UTILITIES, plot_limit_laws, plot_optimal_rewards

    with locked_output_folder(args.output, "--output") as output:
        print(f"Reward collapse: optimal rewards of n = {args.n} ranked answers and their limit laws\n")
        print(f"{'utility':<12} {'limit law':<44} {'KS(n, limit)':>12} {'residual':>9} {'time':>8}")
        summary = []
        for spec in DEFAULT_PLOT_UTILITIES:
            started = time.perf_counter()
            result = optimal_rewards(args.n, spec)
            law = limit_distribution(spec)
            elapsed = time.perf_counter() - started
            distance = ks_distance(result.rewards, law)
            print(f"{spec:<12} {describe_law(law):<44} {distance:>12.4f} {result.residual:>9.1e} {elapsed:>7.2f}s")
            summary.append({"utility": spec, "ks_to_limit": distance, "residual": result.residual})
        fig, _ = plot_optimal_rewards(args.n)
        _save_figure(fig, output / "optimal_rewards.png")
        fig, _ = plot_limit_laws()
        _save_figure(fig, output / "limit_laws.png")
        write_text_atomic(output / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {output / 'optimal_rewards.png'}, {output / 'limit_laws.png'} and {output / 'summary.json'}")
    return 0


def _check_figure_format(path: str | Path, option: str) -> None:
    """Refuse a figure path whose suffix matplotlib cannot write, before any work."""
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise InputValueError(
            f"{option} {str(path)!r}: the figure format comes from the suffix; use one of "
            f"{', '.join('.' + name for name in sorted(formats))}"
        )


def _save_figure(fig: Any, path: str | Path) -> None:
    """Save a matplotlib figure whole (atomically) at ``path``, in the format of its suffix."""
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=120, format=Path(path).suffix.lstrip(".").lower() or None)


def _print_table(rows: Sequence[tuple[str, object]]) -> None:
    """Print ``(name, value)`` rows as two aligned columns, floats to 4 significant digits."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name:<{width}}  {shown}")


def _train_result_rows(result: Any, max_length: int) -> list[tuple[str, object]]:
    """The summary table of a training run: where the model went, how it trained, and its evaluation."""
    truncated = f"{result.truncated_sequences} of {result.sequences} sequences (max_length {max_length})"
    rows = [
        ("model saved to", result.model),
        ("utility", result.utility),
        ("precision", f"{result.precision} ({result.precision_reason})"),
        ("model input", result.sequence_format),
        ("layout", result.layout),
        ("train prompts", result.train_prompts),
        ("steps", result.steps),
        ("train loss", result.train_loss),
        ("time (s)", result.seconds),
        ("prompts/s", result.prompts_per_second),
        *([("tokens saved", f"{result.tokens_saved:.1%}")] if result.tokens_saved is not None else []),
        ("truncated", truncated),
    ]
    if result.collapse:
        rows.append(("collapse points", f"{len(result.collapse)} ({result.collapse_seconds:.1f} s)"))
        rows += [(name, value) for name, value in result.collapse[-1].items() if name.startswith("collapse/")]
    return rows + [
        (name.removeprefix("eval_"), value)
        for name, value in (result.eval or {}).items()
        if name.startswith("eval_") and "runtime" not in name and "per_second" not in name
    ]


def _train(job: Any, config: Any) -> int:
    from rewardcollapse.training.run import train_reward_model

    if job.resume is not None and config.resume_from_checkpoint is not None:
        raise InputValueError(
            f"--resume and --resume_from_checkpoint {config.resume_from_checkpoint!r} both say where to continue "
            "from; give --resume only (bare for the newest checkpoint, or a checkpoint folder)"
        )
    result = train_reward_model(
        model=job.model,
        data=job.data,
        eval_data=job.eval_data,
        input_format=job.input_format,
        skip_invalid=job.skip_invalid,
        resume=True if job.resume == "latest" else job.resume,
        args=config,
        peft_config=job.peft_config(),
        merge_lora=job.merge_lora,
        collapse_data=job.collapse_data,
        collapse_every=job.collapse_every,
    )
    print()
    _print_table(_train_result_rows(result, config.max_length))
    return 0


def _score(job: Any, model_input: Any) -> int:
    from rewardcollapse.training.run import score_file

    result = score_file(
        model=job.model,
        data=job.data,
        output=job.output,
        batch_size=job.batch_size,
        input_format=job.input_format,
        skip_invalid=job.skip_invalid,
        base_model=job.base_model,
        **dataclasses.asdict(model_input),
    )
    print()
    shown = {name: value for name, value in dataclasses.asdict(result).items() if value is not None}
    _print_table([(name.replace("_", " "), value) for name, value in shown.items() if name != "output"])
    lines = "one line per prompt" if result.pair_rows is None else "one line per input row, in its order"
    print(f"wrote {result.output} ({lines})")
    return 0


def _data_longform(design: Any, where: Any) -> int:
    from rewardcollapse.experiments.longform import write_longform

    data = design.build()
    paths = write_longform(data, where.output, file_format=where.format)
    report = data.report
    print()
    _print_table(
        [
            ("source", report["source"]),
            ("rows read", report["rows_read"]),
            ("usable (>= 100 words)", report["rows_usable"]),
            ("too short", report["rows_too_short"]),
            ("invalid", report["rows_invalid"]),
            ("train prompts", f"{report['train_prompts']} (asked {report['train_prompts_asked']})"),
            ("test prompts", report["test_prompts"]),
        ]
    )
    print(f"wrote {paths['train']}, {paths['test']} and {paths['card']}")
    return 0


def _print_diagnosis(name: str, diagnosis: Any, utility_source: str) -> None:
    """The report: the label-free block, the block with labels when every row has one, then what is not given."""
    from rewardcollapse.diagnostics import MIN_ANSWERS, collapse_verdict, optimum_verdict
    from rewardcollapse.experiments.diagnosis import REFERENCES

    measured = diagnosis.measured
    references = diagnosis.references

    def number(value: float | None) -> str:
        return "-" if value is None or value != value else f"{value:.3f}"  # NaN: no ranked pair

    exact = f"{REFERENCES['exact_targets']} ({diagnosis.collapse_point})"
    names = [exact if key == "exact_targets" else REFERENCES[key] for key in references]
    header = f"| measure | value | verdict | {' | '.join(names)} |\n|{'---|' * (3 + len(names))}"

    def row(label: str, value: float | None, verdict: str, of: Callable[[Any], float | None]) -> str:
        cells = " | ".join(number(of(reference)) for reference in references.values())
        return f"| {label} | {number(value)} | {verdict} | {cells} |"

    shape = measured.shape_index
    free = measured.measures.label_free
    left = [f"{free.left_out_few_answers} with fewer than {MIN_ANSWERS} answers"] * bool(free.left_out_few_answers)
    left += [f"{free.left_out_equal_rewards} with all rewards equal"] * bool(free.left_out_equal_rewards)
    counted = f" ({free.prompts} measured, left out: {' and '.join(left)})" if left else ""
    print(f"\n{name}: {len(diagnosis.rows)} prompts{counted}; utility {utility_source}")
    print("\nlabel-free (no openness needed)")
    print(header)
    print(row("shape index", shape, "-" if shape is None else collapse_verdict(shape), lambda m: m.shape_index))
    for spec, distance in measured.distances.items():
        verdict = "-" if distance is None else optimum_verdict(distance)
        print(row(f"distance to {spec}'s collapse point", distance, verdict, lambda m, s=spec: m.distances[s]))
    accuracy = measured.measures.pairwise_accuracy
    print(row("pairwise accuracy", accuracy, "", lambda m: m.measures.pairwise_accuracy))
    if diagnosis.utility is None and measured.nearest is not None:
        nearest, distance = measured.nearest, measured.distances[measured.nearest]
        print(f"nearest collapse point: {nearest}'s ({distance:.3f}, {optimum_verdict(distance)})")
    if diagnosis.groups is not None:
        index = diagnosis.collapse_index
        verdict = "-" if index is None else collapse_verdict(index)
        print(f"\nwith openness labels: collapse index {number(index)} ({verdict})")
        print(header)
        print(row("collapse index", index, verdict, lambda m: m.collapse_index))
        print("| group | prompts | KS to target | W1 to target | KS to limit law | pairwise accuracy | Kendall tau |")
        print("|---|---|---|---|---|---|---|")
        for group, g in diagnosis.by_group.items():
            print(
                f"| {group} | {g.prompts} | {g.ks:.3f} | {g.wasserstein:.3f} | {g.ks_limit:.3f} | "
                f"{g.pairwise_accuracy:.3f} | {g.kendall_tau:.3f} |"
            )
    shown = {key: reason for key, reason in measured.why_not.items() if key != "shape_spread"}  # not in the table
    missing = {_measure_name(key): reason for key, reason in shown.items()}
    missing.update({REFERENCES[key]: reason for key, reason in diagnosis.not_given.items()})
    if missing:
        print("\nnot given:")
        for what, reason in missing.items():
            print(f"- {what}: {reason}")


def _measure_name(key: str) -> str:
    """A measure's key in ``why_not`` in words: ``"optimum_distance x"`` -> ``"distance to x's collapse point"``."""
    measure, _, spec = key.partition(" ")
    return f"distance to {spec}'s collapse point" if measure == "optimum_distance" else measure.replace("_", " ")


def _diagnose(args: DiagnoseOptions, model_input: Any) -> int:
    from rewardcollapse.experiments.diagnosis import check_levels, check_utility, diagnose_file

    levels = check_levels(args.levels)  # before the heavy imports, any reading or scoring
    utility = check_utility(args.utility, "--utility")
    utility, utility_source = _training_utility(args, utility)  # a --model's record, read before any scoring
    output = Path(args.output)
    rewards_path = args.rewards
    if rewards_path is None:
        if args.model is None or args.data is None:
            raise InputValueError("give --rewards FILE, or --model DIR with --data FILE to score first")
        from rewardcollapse.data import load_rankings
        from rewardcollapse.experiments.diagnosis import check_diagnosable
        from rewardcollapse.training.run import score_file

        # Everything the diagnosis checks that does not need the rewards, before scoring (score_file checks --output).
        check_diagnosable(load_rankings(args.data), levels, name=f"--data {args.data}", require_openness=False)
        rewards_path = output / "rewards.jsonl"
        score_file(
            model=args.model,
            data=args.data,
            output=rewards_path,
            base_model=args.base_model,
            pairwise_output=False,  # the diagnosis reads rankings, one line per prompt
            **dataclasses.asdict(model_input),
        )
    diagnosis = diagnose_file(rewards_path, levels, utility=utility)  # checks every row before anything is written
    check_output_folder(output, "--output")
    diagnosis = _with_untrained(diagnosis, args, model_input, Path(rewards_path), output)
    _print_diagnosis(str(rewards_path), diagnosis, utility_source)
    fig = _diagnosis_figure(diagnosis)
    _save_figure(fig, output / "rewards.png")
    report = {**diagnosis.all_measures(), "utility_source": utility_source}
    write_text_atomic(output / "diagnostics.json", json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output / 'rewards.png'} and {output / 'diagnostics.json'}")
    return 0


def _diagnosis_figure(diagnosis: Any) -> Any:
    """With labels, each group's rewards against its target; without, the halves the shape index compares.

    The halves are drawn against the pooled exact optimum of the collapse point (the training utility's, else the
    nearest one's), where it is known.
    """
    import numpy as np

    from rewardcollapse.diagnostics import prompt_optima, rescale_per_prompt
    from rewardcollapse.experiments.diagnosis import shape_halves
    from rewardcollapse.plots import plot_group_rewards

    if diagnosis.groups is not None:
        index = diagnosis.collapse_index
        title = "collapse index " + ("not given" if index is None else f"{index:.2f}")
        return plot_group_rewards(diagnosis.rewards, diagnosis.groups, diagnosis.targets, title=title)[0]
    shape = diagnosis.measured.shape_index
    title = "shape index " + ("not given" if shape is None else f"{shape:.2f}")
    reference = None
    if "exact_targets" in diagnosis.references:
        spec = diagnosis.collapse_point
        pooled = np.concatenate(rescale_per_prompt(prompt_optima(diagnosis.rows, spec)))
        reference = (f"collapse point of {spec}", pooled)
    fig, _ = plot_group_rewards(diagnosis.rewards, shape_halves(diagnosis.rewards), title=title, reference=reference)
    fig.tight_layout()  # the axis label inside the saved figure
    return fig


def _training_utility(args: DiagnoseOptions, utility: str | None) -> tuple[str | None, str]:
    """The training utility (given, or the one a --model trained here records) and where it came from, in words."""
    if utility is not None:
        return utility, f"{utility} (--utility)"
    from rewardcollapse.experiments.diagnosis import COMPARED_UTILITIES

    if args.model is not None:
        from rewardcollapse.experiments.diagnosis import check_utility, training_record
        from rewardcollapse.training.run import SUMMARY_FILE

        recorded = training_record(args.model).get("utility")
        if recorded is not None:
            summary = Path(args.model) / SUMMARY_FILE
            return check_utility(recorded, str(summary)), f"{recorded} (recorded in {summary})"
    return None, f"not known (give --utility): the collapse points of {', '.join(COMPARED_UTILITIES)} compared"


def _with_untrained(diagnosis: Any, args: DiagnoseOptions, model_input: Any, rewards: Path, output: Path) -> Any:
    """The diagnosis with the untrained model's reference, or the reason it is not computed and how to get it."""
    from rewardcollapse.experiments.diagnosis import reference_rewards, score_untrained, untrained_backbone

    if args.untrained_model == "none":
        return diagnosis.with_reason("untrained_model", "not computed (--untrained_model none)")
    backbone, where = untrained_backbone(args.model, base_model=args.base_model, untrained_model=args.untrained_model)
    if backbone is None:
        return diagnosis.with_reason("untrained_model", f"not computed: {where}")
    settings = dataclasses.asdict(model_input)
    if settings["sequence_format"] == "auto" and args.model is not None:
        from rewardcollapse.training.models import read_model_settings

        # Read the answers as the trained model did, whatever the backbone's architecture suggests.
        settings["sequence_format"] = read_model_settings(args.model).get("sequence_format", "auto")
    try:
        scored = score_untrained(backbone, rewards, output / "untrained_rewards.jsonl", **settings)
    except InputValueError as error:
        if args.untrained_model is not None:
            raise
        fix = "give --untrained_model NAME_OR_PATH, or --untrained_model none"
        return diagnosis.with_reason("untrained_model", f"not computed: {backbone} ({where}): {error}; {fix}")
    source = f"the untrained {backbone} ({where}) with a new score head, seed 0"
    return diagnosis.with_reference("untrained_model", reference_rewards(scored, diagnosis.rows), source)


def _reproduce(args: Any) -> int:
    from rewardcollapse.experiments import run_experiment, summary_text

    config = args.experiment_config()
    try:
        result = run_experiment(config, args.output)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished utilities are kept in {args.output}; run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print()
    print(result.report_md.read_text())
    print(summary_text(result, levels=config.openness_levels))
    return 0


def _write_rows(rows: Sequence[dict], path: str | Path) -> None:
    """Write rows as JSONL, whole or not at all; NaN or infinity anywhere is refused (it is not JSON)."""
    try:
        text = "".join(json.dumps(row, ensure_ascii=False, default=str, allow_nan=False) + "\n" for row in rows)
    except ValueError as error:
        raise InputValueError(f"cannot write {path}: a value is NaN or infinite ({error}); check the inputs") from error
    write_text_atomic(path, text)


def _print_openness_summary(estimates: Sequence[float], labels: Sequence[float] | None) -> None:
    """Rows, the estimates' spread and, where every row has an openness label, how well they agree with it."""
    import numpy as np
    from scipy import stats

    from rewardcollapse.core.conventions import OPEN_AT

    values = np.asarray(estimates, dtype=float)
    rows: list[tuple[str, object]] = [
        ("rows", values.size),
        ("openness mean", float(values.mean())),
        ("openness quartiles", " / ".join(f"{q:.3f}" for q in np.quantile(values, [0.25, 0.5, 0.75]))),
    ]
    if labels is not None:
        truth = np.asarray(labels, dtype=float)
        agree = np.mean((values >= OPEN_AT) == (truth >= OPEN_AT))
        rows.append((f"accuracy, open = openness >= {OPEN_AT}", float(agree)))
        rows.append(("mean |estimate - label|", float(np.mean(np.abs(values - truth)))))
        if np.ptp(truth) > 0 and np.ptp(values) > 0:
            rows.append(("Spearman rho with labels", float(stats.spearmanr(values, truth).statistic)))
    print()
    _print_table(rows)


def _read_rows(args: OpennessRows) -> list[dict]:
    from rewardcollapse.data.loaders import read_table

    return read_table(args.data, split=args.split).to_list()


def _openness_fit(args: OpennessFit) -> int:
    from rewardcollapse.estimators import fit_openness_classifier, prompts_and_openness

    with locked_output_folder(args.output, "--output"):
        prompts, labels = prompts_and_openness(_read_rows(args), source=str(args.data), labels=True)
        classifier = fit_openness_classifier(
            prompts,
            labels,
            encoder=args.encoder,
            test_fraction=args.test_fraction,
            seed=args.seed,
            c=args.c,
            max_length=args.max_length,
            batch_size=args.batch_size,
        )
        path = classifier.save(args.output)
    print()
    _print_table([(name.replace("_", " "), value) for name, value in classifier.metrics.items()])
    print(f"wrote {path}")
    return 0


def _openness_predict(args: OpennessPredict) -> int:
    from rewardcollapse.estimators import OpennessClassifier, prompts_and_openness

    with locked_output_file(args.output, "--output"):
        classifier = OpennessClassifier.load(args.model)
        rows = _read_rows(args)
        prompts, labels = prompts_and_openness(rows, source=str(args.data))
        predicted = classifier.predict_openness(prompts, batch_size=args.batch_size)
        written = [{**row, "predicted_openness": float(o)} for row, o in zip(rows, predicted, strict=True)]
        _write_rows(written, args.output)
    _print_openness_summary(predicted, labels)
    print(f"wrote {args.output}")
    return 0


def _openness_estimate(args: OpennessEstimate, column: str) -> int:
    from rewardcollapse.core import openness_from_rankings, openness_from_scores

    estimate = {"scores": openness_from_scores, "rankings": openness_from_rankings}[column]
    with locked_output_file(args.output, "--output"):
        rows = _read_rows(args)
        estimates = []
        for number, row in enumerate(rows):
            if row.get(column) is None:
                raise InputValueError(f"{args.data}: row {number} has no '{column}' field; every row needs one")
            try:
                estimates.append(estimate(row[column]))
            except (ValueError, TypeError) as error:
                raise InputValueError(f"{args.data}: row {number}, field '{column}': {error}") from error
        _write_rows([{**row, "estimated_openness": o} for row, o in zip(rows, estimates, strict=True)], args.output)
    labelled = all(isinstance(row.get("openness"), int | float) for row in rows)
    _print_openness_summary(estimates, [row["openness"] for row in rows] if labelled else None)
    print(f"wrote {args.output}")
    return 0


@dataclass(frozen=True)
class _Command:
    """A subcommand: its one-line help, the dataclasses its options come from, and what runs them."""

    help: str
    settings: Callable[[], tuple[type, ...]]
    """The dataclasses, imported only when the command runs or shows its help."""
    run: Callable[..., int]
    more: str = ""
    """What ``--help`` says after the one-line help."""


def _train_settings(*, every_option: bool) -> tuple[type, ...]:
    """``train``'s dataclasses: the job, and the full training config or only its first options (no torch)."""
    from rewardcollapse.settings import ModelInput, RankingRewardOptions, TrainJob

    if every_option:
        from rewardcollapse.training.config import RankingRewardConfig

        return TrainJob, RankingRewardConfig
    return TrainJob, RankingRewardOptions, ModelInput


def _score_settings() -> tuple[type, ...]:
    from rewardcollapse.settings import ModelInput, ScoreJob

    return ScoreJob, ModelInput


def _diagnose_settings() -> tuple[type, ...]:
    from rewardcollapse.settings import ModelInput

    return DiagnoseOptions, ModelInput


def _reproduce_settings() -> tuple[type, ...]:
    from rewardcollapse.experiments import ReproduceOptions

    return (ReproduceOptions,)


def _longform_settings() -> tuple[type, ...]:
    from rewardcollapse.experiments.longform import LongformDesign, LongformOutput

    return LongformDesign, LongformOutput


def _commands() -> dict[tuple[str, ...], _Command]:
    """Every subcommand by its words (``("data", "longform")``); built per call, so a test may replace a runner."""
    return {
        ("solve",): _Command("exact optimal rewards of one prompt's ranking", lambda: (SolveOptions,), _solve),
        ("limits",): _Command(
            "optimal rewards of a long ranking under each utility and their limit laws, with figures",
            lambda: (LimitsOptions,),
            _limits,
        ),
        ("train",): _Command(
            "train a reward model on ranked answers, one forward pass per answer",
            lambda: _train_settings(every_option=True),
            _train,
        ),
        ("score",): _Command("score every answer with a trained reward model, write JSONL", _score_settings, _score),
        ("diagnose",): _Command(
            "collapse measures of scored answers (openness optional) with their references, plots",
            _diagnose_settings,
            _diagnose,
        ),
        ("reproduce",): _Command(
            "the paper's experiment: one reward model per utility, report",
            _reproduce_settings,
            _reproduce,
            "The settings come from --config (default: the paper's); an option given here replaces the file's.",
        ),
        ("data", "longform"): _Command(
            "the paper's ranking data from LongForm or the built-in corpus", _longform_settings, _data_longform
        ),
        ("openness", "fit"): _Command(
            "fit a prompt-text classifier (MiniLM embeddings + logistic regression)",
            lambda: (OpennessFit,),
            _openness_fit,
        ),
        ("openness", "predict"): _Command(
            "predicted openness of each prompt with a fitted classifier", lambda: (OpennessPredict,), _openness_predict
        ),
        ("openness", "scores"): _Command(
            "openness of each row from per-answer quality scores (nearest family optimum)",
            lambda: (OpennessEstimate,),
            lambda args: _openness_estimate(args, "scores"),
        ),
        ("openness", "rankings"): _Command(
            "openness of each row from several raters' rankings (1 - Kendall's W, a heuristic)",
            lambda: (OpennessEstimate,),
            lambda args: _openness_estimate(args, "rankings"),
        ),
    }


class _ShortUsageErrors:
    """A parser whose usage errors are one line and a pointer to ``--help``, without the usage dump.

    argparse prints the whole usage before its error (over a hundred lines for ``train``), so the line that says what
    is wrong ends up last; here it comes alone, and the exit status stays argparse's 2.
    """

    prog: str

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; `{self.prog} --help` lists the options", file=sys.stderr)
        raise SystemExit(2)


class _Parser(_ShortUsageErrors, argparse.ArgumentParser):
    """The top-level parser (and its groups' parsers), with one-line usage errors."""


def _refuse_two_spellings(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Refuse one setting given under two names (``--output`` and ``--output_dir``, ``--x`` and ``--no_x``, ...).

    argparse keeps the last value given, silently, whichever name it came under; the same name given twice keeps
    that behaviour (a later option replaces an earlier one, as a script's defaults are overridden).
    """
    names = parser._option_string_actions  # argparse keeps no public map from option names to their actions
    given: dict[str, list[str]] = {}
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        action = names.get(name)
        if action is None and name.startswith("--") and parser.allow_abbrev:  # argparse takes unique prefixes too
            matches = {option: names[option] for option in names if option.startswith(name)}
            action = next(iter(matches.values())) if len({id(a) for a in matches.values()}) == 1 else None
            name = min(matches, key=len) if action is not None else name
        if action is None or not action.option_strings or action.dest == "help":
            continue
        spellings = given.setdefault(action.dest, [])
        if name not in spellings:
            spellings.append(name)
    for dest, spellings in given.items():
        if len(spellings) > 1:
            raise InputValueError(
                f"{' and '.join(spellings)} set the same option ({dest}); give it once, under one name"
            )


_GROUPS = {
    "data": "build datasets",
    "openness": "estimate prompts' openness: from prompt text, scores or rankings",
}


def command_parser(words: Sequence[str], *, every_option: bool = True) -> argparse.ArgumentParser:
    """The parser of one subcommand (``["score"]``, ``["data", "longform"]``), built from its dataclasses.

    For ``train``, ``every_option=False`` gives the parser its ``--help`` shows: the job, the ranking loss, the
    model input and the most used training options, without importing torch; the full one adds every
    ``TrainingArguments`` field. Short names: ``--steps``, ``--epochs``, ``--batch-size``,
    ``--gradient-accumulation`` and ``--output``; every option also takes dashes for underscores.
    """
    from transformers import HfArgumentParser

    words = tuple(words)
    command = _commands()[words]
    short = words == ("train",) and not every_option
    settings = _train_settings(every_option=False) if short else command.settings()
    prog = "rewardcollapse " + " ".join(words)
    usage = f"{prog} --data FILE --output DIR [options]" if words == ("train",) else None
    parser_class = type("CommandParser", (_ShortUsageErrors, HfArgumentParser), {})
    parser = parser_class(
        settings, prog=prog, usage=usage, description=f"{command.help[:1].upper()}{command.help[1:]}. {command.more}"
    )
    for action in parser._actions:  # argparse keeps no public list of its options
        if words == ("train",) and action.dest == "output_dir":
            action.required = True  # TrainingArguments defaults it to "trainer_output"; train needs it given
        negated = [name for name in action.option_strings if name.startswith("--no_")]
        if negated:  # HfArgumentParser gives --no_x the help of --x; say what it does instead
            action.help = f"Turn {negated[0].removeprefix('--no_')} off."
    if short:
        parser.add_argument("--help-all", action="store_true", help="Show every option, TrainingArguments' included.")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--version`` and the list of subcommands (each parsed by :func:`command_parser`)."""
    parser = _Parser(
        prog="rewardcollapse", description="Study and prevent reward collapse in ranking-trained reward models."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('rewardcollapse')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}
    for words, command in _commands().items():
        if len(words) == 1:
            sub.add_parser(words[0], help=command.help, add_help=False)
            continue
        if words[0] not in groups:
            group = sub.add_parser(words[0], help=_GROUPS[words[0]])
            groups[words[0]] = group.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
        groups[words[0]].add_parser(words[1], help=command.help, add_help=False)
    return parser


def _parse(words: tuple[str, ...], argv: list[str]) -> list[Any]:
    """The dataclasses of one subcommand's options; ``train --help`` shows the short list (``--help-all``: all).

    A value a dataclass refuses (its ``__post_init__``, or ``TrainingArguments``' own checks) is an input error, and
    so is one setting given under two of its names.
    """
    every_option = words != ("train",) or "--help-all" in argv or not {"-h", "--help"} & set(argv)
    parser = command_parser(words, every_option=every_option)
    if words == ("train",) and "--help-all" in argv:
        parser.print_help()
        raise SystemExit(0)
    _refuse_two_spellings(parser, argv)
    try:
        *settings, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise InputValueError(" ".join(str(error).split())) from error  # transformers' messages span lines
    except RecursionError as error:  # json.loads of a mapping option (lr_scheduler_kwargs, ...) nests by recursion
        raise InputValueError(
            f"an option's JSON value is nested too deep ({error}); settings nest a few levels"
        ) from None
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return settings


def _parse_and_run(words: tuple[str, ...], argv: list[str]) -> int:
    return _commands()[words].run(*_parse(words, argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words = next((w for w in _commands() if tuple(argv[: len(w)]) == w), None)
    if words is None:
        build_parser().parse_args(argv)  # prints the help, the version or what is wrong, and exits
        return 2
    _show_progress_messages()
    with _one_line_warnings(), _sigterm_unwinds():
        return _run(_parse_and_run, words, argv[len(words) :])


class _Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``, a scheduler), raised where the command runs so that its cleanup runs too."""


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into an exception while a command runs (Python's default ends at once, skipping every cleanup).

    The lock file, temporary files and the empty folders a job made are removed as on Ctrl-C; SIGKILL cannot be
    caught, and what it leaves is cleaned by the next run. The previous handler is put back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each warning as ``warning: <message>``, one line, instead of Python's file, line number and source line.

    A command's warnings (answers cut at ``max_length``, rows skipped) are for its user, not for a programmer reading
    the library's source; the library called from Python keeps Python's format.
    """
    shown = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        yield
    finally:
        warnings.formatwarning = shown


def _format_warning(message: Warning | str, *_: Any, **__: Any) -> str:
    return f"warning: {' '.join(str(message).split())}\n"


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at the time of each message (tests replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_progress_messages() -> None:
    """Print the library's INFO messages (what runs, what is reused) to stderr, one plain line each."""
    logger = logging.getLogger("rewardcollapse")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _run(command: Callable[..., int], *settings: Any) -> int:
    """Run a subcommand: the library's input errors become one line and exit status 2; anything else is a bug.

    Ctrl-C ends with exit status 130 and one line, SIGTERM with 143 and one line: every output is written whole or
    not at all, so nothing is half-written at a final path.
    """
    try:
        return command(*settings)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the outputs at their final paths are the previous ones or complete new ones; run the "
            "command again to redo the rest (train: add --resume to continue from the last checkpoint)",
            file=sys.stderr,
        )
        return 130
    except _Terminated:
        print(
            "\nterminated (SIGTERM): the outputs at their final paths are the previous ones or complete new ones; "
            "run the command again to redo the rest (train: add --resume to continue from the last checkpoint)",
            file=sys.stderr,
        )
        return 143


if __name__ == "__main__":
    sys.exit(main())
