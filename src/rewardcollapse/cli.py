"""The ``rewardcollapse`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rewardcollapse._files import atomic_path, check_output_file, check_output_folder, write_text_atomic
from rewardcollapse.core.errors import InputError, InputValueError

__all__ = ["main"]


def _parse_ranking(args: argparse.Namespace):
    if args.ranking is None:
        return args.n
    example = "e.g. '[[0], [1, 2], [3]]' (tiers), '[[0, 1], [1, 2]]' as edges in {\"edges\": ...}"
    try:
        value = json.loads(args.ranking)
    except json.JSONDecodeError as error:
        raise InputValueError(f"--ranking is not valid JSON ({error}); {example}") from None
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


def _solve(args: argparse.Namespace) -> int:
    from rewardcollapse.core import describe_law, ks_distance, limit_distribution, optimal_rewards, utility

    if args.plot and args.ranking is not None:
        raise InputValueError("--plot draws n answers of a total order; use -n instead of --ranking")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_file(path, option)
    if args.plot:
        _check_figure_format(args.plot, "--plot")
    u = utility(args.utility, eps=args.eps)
    started = time.perf_counter()
    result = optimal_rewards(_parse_ranking(args), u, tol=args.tol)
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


def _demo(args: argparse.Namespace) -> int:
    from rewardcollapse.core import describe_law, ks_distance, limit_distribution, optimal_rewards
    from rewardcollapse.plots import DEFAULT_PLOT_UTILITIES, plot_limit_laws, plot_optimal_rewards

    output = check_output_folder(args.output, "--output")
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


def _save_figure(fig, path: str | Path) -> None:
    """Save a matplotlib figure whole (atomically) at ``path``, in the format of its suffix."""
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=120, format=Path(path).suffix.lstrip(".").lower() or None)


def _print_table(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name:<{width}}  {shown}")


_TRAIN_ALIASES = {
    "--steps": "--max_steps",
    "--epochs": "--num_train_epochs",
    "--batch-size": "--per_device_train_batch_size",
    "--gradient-accumulation": "--gradient_accumulation_steps",
    "--output": "--output_dir",
}
"""Short option names of ``train`` and the ``TrainingArguments`` field each stands for."""


def _train_argv(argv: Sequence[str]) -> list[str]:
    """Translate the short names (``--steps 10``, ``--output=dir``) and a bare ``--resume`` (the latest checkpoint)."""
    out: list[str] = []
    for k, token in enumerate(argv):
        name, equals, value = token.partition("=")
        name = _TRAIN_ALIASES.get(name, name)
        out.append(f"{name}{equals}{value}")
        if token == "--resume" and (k + 1 == len(argv) or argv[k + 1].startswith("--")):
            out.append("latest")
    return out


def train_parser() -> argparse.ArgumentParser:
    """The ``train`` command's parser: :class:`TrainJob` and every :class:`RankingRewardConfig` field (help included).

    Built from the dataclasses with ``transformers.HfArgumentParser``, as TRL's scripts do, so a new config field is
    a new option without a line of CLI code; ``--max-steps`` and ``--max_steps`` both work, and the short names
    ``--steps``, ``--epochs``, ``--batch-size``, ``--gradient-accumulation`` and ``--output`` are kept.
    """
    from transformers import HfArgumentParser

    from rewardcollapse.training.config import RankingRewardConfig
    from rewardcollapse.training.run import TrainJob

    parser = HfArgumentParser(
        (TrainJob, RankingRewardConfig),
        prog="rewardcollapse train",
        description="Train a reward model on ranked answers, one forward pass per answer. Short names: "
        + ", ".join(f"{short} = {full}" for short, full in _TRAIN_ALIASES.items())
        + "; a bare --resume continues from the latest checkpoint.",
    )
    parser.set_defaults(output_dir=None)
    return parser


def _train(argv: Sequence[str]) -> int:
    from rewardcollapse.training.run import train_reward_model

    parser = train_parser()
    try:
        job, config = parser.parse_args_into_dataclasses(args=_train_argv(argv))
    except ValueError as error:  # a setting the config (ours or TrainingArguments) rejects: an input error
        raise InputValueError(str(error)) from error
    if config.output_dir is None:
        raise InputValueError(
            "--output_dir (or --output) is required: the folder for checkpoints and the trained model"
        )
    summary = train_reward_model(
        model=job.model,
        data=job.data,
        eval_data=job.eval_data,
        input_format=job.input_format,
        skip_invalid=job.skip_invalid,
        resume=True if job.resume == "latest" else job.resume,
        args=config,
        peft_config=job.peft_config(),
        merge_lora=job.merge_lora,
    )
    rows = [
        ("model saved to", summary["model"]),
        ("utility", summary["utility"]),
        ("precision", f"{summary['precision']} ({summary['precision_reason']})"),
        ("model input", summary["sequence_format"]),
        ("layout", summary["layout"]),
        ("train prompts", summary["train_prompts"]),
        ("steps", summary["steps"]),
        ("train loss", summary["train_loss"]),
        ("time (s)", summary["seconds"]),
        ("prompts/s", summary["prompts_per_second"]),
        *([("tokens saved", f"{summary['tokens_saved']:.1%}")] if summary["tokens_saved"] is not None else []),
        (
            "truncated",
            f"{summary['truncated_sequences']} of {summary['sequences']} sequences (max_length {config.max_length})",
        ),
    ]
    rows += [
        (name.removeprefix("eval_"), value)
        for name, value in summary.get("eval", {}).items()
        if name.startswith("eval_") and "runtime" not in name and "per_second" not in name
    ]
    print()
    _print_table(rows)
    return 0


def _score(args: argparse.Namespace) -> int:
    from rewardcollapse.training.run import score_file

    summary = score_file(
        model=args.model,
        data=args.data,
        output=args.output,
        batch_size=args.batch_size,
        max_length=args.max_length,
        forward_batch_size=args.forward_batch_size,
        bf16=args.bf16,
        input_format=args.input_format,
        skip_invalid=args.skip_invalid,
        sequence_format=args.sequence_format,
        shared_prompt=args.shared_prompt,
    )
    print()
    _print_table([(name.replace("_", " "), value) for name, value in summary.items() if name != "output"])
    print(f"wrote {summary['output']}")
    return 0


def _data_longform(args: argparse.Namespace) -> int:
    from rewardcollapse.experiments.longform import build_longform, write_longform

    data = build_longform(
        args.source,
        train_prompts=args.train_prompts,
        test_prompts=args.test_prompts,
        seed=args.seed,
        levels=args.levels,
    )
    paths = write_longform(data, args.output, file_format=args.format)
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


def _print_diagnostics(name: str, result: dict) -> None:
    print(f"\n{name}: collapse index {result['collapse_index']:.3f}")
    print("| group | prompts | KS to target | W1 to target | KS to limit law | pairwise accuracy | Kendall tau |")
    print("|---|---|---|---|---|---|---|")
    for group, g in result["groups"].items():
        print(
            f"| {group} | {g['prompts']} | {g['ks']:.3f} | {g['wasserstein']:.3f} | {g['ks_limit']:.3f} | "
            f"{g['pairwise_accuracy']:.3f} | {g['kendall_tau']:.3f} |"
        )


def _diagnose(args: argparse.Namespace) -> int:
    import numpy as np

    from rewardcollapse.experiments.diagnosis import diagnose_file, read_scored, targets_for
    from rewardcollapse.plots import plot_group_rewards

    output = Path(args.output)
    rewards_path = args.rewards
    if rewards_path is None:
        if args.model is None or args.data is None:
            raise InputValueError("give --rewards FILE, or --model DIR with --data FILE to score first")
        from rewardcollapse.training.run import score_file

        rewards_path = output / "rewards.jsonl"
        score_file(model=args.model, data=args.data, output=rewards_path, max_length=args.max_length)
    result = diagnose_file(rewards_path, args.levels)  # checks every row before anything is written
    check_output_folder(output, "--output")
    _print_diagnostics(str(rewards_path), result)
    rewards, groups, _ = read_scored(Path(rewards_path), args.levels)
    n = int(np.median([len(r) for r in rewards]))
    targets = targets_for(n, args.levels)
    fig, _ = plot_group_rewards(rewards, groups, targets, title=f"collapse index {result['collapse_index']:.2f}")
    _save_figure(fig, output / "rewards.png")
    write_text_atomic(output / "diagnostics.json", json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output / 'rewards.png'} and {output / 'diagnostics.json'}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from rewardcollapse.experiments import ExperimentConfig, run_experiment, summary_text

    config = ExperimentConfig.from_yaml(args.config) if args.config else ExperimentConfig()
    if args.utilities:
        config.utilities = [u.strip() for u in args.utilities.split(",") if u.strip()]
    for name in ("model", "seed"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    for name, field_name in (("steps", "max_steps"), ("precision", "precision")):
        if getattr(args, name) is not None:
            config.training[field_name] = getattr(args, name)
    if args.levels is not None:
        config.openness_levels = args.levels
    try:
        report = run_experiment(config, args.output)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished utilities are kept in {args.output}; run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print()
    print(Path(report["report_md"]).read_text())
    print(summary_text(report, levels=config.openness_levels))
    return 0


def _write_rows(rows: Sequence[dict], path: str | Path) -> None:
    """Write rows as JSONL, whole or not at all; NaN or infinity anywhere is refused (it is not JSON)."""
    try:
        text = "".join(json.dumps(row, ensure_ascii=False, default=str, allow_nan=False) + "\n" for row in rows)
    except ValueError as error:
        raise InputValueError(f"cannot write {path}: a value is NaN or infinite ({error}); check the inputs") from error
    write_text_atomic(path, text)


def _print_openness_summary(estimates, labels) -> None:
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


def _read_rows(args: argparse.Namespace) -> list[dict]:
    from rewardcollapse.data.loaders import read_table

    return read_table(args.data, split=args.split).to_list()


def _openness_fit(args: argparse.Namespace) -> int:
    from rewardcollapse.estimators import fit_openness_classifier, prompts_and_openness

    check_output_folder(args.output, "--output")
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


def _openness_predict(args: argparse.Namespace) -> int:
    from rewardcollapse.estimators import OpennessClassifier, prompts_and_openness

    check_output_file(args.output, "--output")
    classifier = OpennessClassifier.load(args.model)
    rows = _read_rows(args)
    prompts, labels = prompts_and_openness(rows, source=str(args.data))
    predicted = classifier.predict_openness(prompts, batch_size=args.batch_size)
    _write_rows([{**row, "predicted_openness": float(o)} for row, o in zip(rows, predicted, strict=True)], args.output)
    _print_openness_summary(predicted, labels)
    print(f"wrote {args.output}")
    return 0


def _openness_estimate(args: argparse.Namespace) -> int:
    from rewardcollapse.core import openness_from_rankings, openness_from_scores

    column, estimate = (
        ("scores", openness_from_scores) if args.estimator == "scores" else ("rankings", openness_from_rankings)
    )
    check_output_file(args.output, "--output")
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


def _add_data_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data", required=True, help="JSONL, JSON, Parquet or CSV file, datasets folder, or Hub name")
    command.add_argument(
        "--input-format",
        default="auto",
        choices=["auto", "ranking", "pairwise", "scored"],
        help="row format (default: from the columns)",
    )
    command.add_argument("--skip-invalid", action="store_true", help="drop invalid rows and report them, not stop")
    command.add_argument("--max-length", type=int, default=512, help="tokens per (prompt, answer); default 512")
    command.add_argument("--batch-size", type=int, default=8, help="prompts per batch (default 8)")
    command.add_argument("--forward-batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    command.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPUs, and CPUs with AMX)")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="rewardcollapse", description="Study and prevent reward collapse in ranking-trained reward models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    solve = sub.add_parser("solve", help="exact optimal rewards of one prompt's ranking")
    solve.add_argument("-n", type=int, default=100, help="answers in a total order (default 100)")
    solve.add_argument("--ranking", help="JSON tiers '[[0], [1, 2], [3]]' or '{\"edges\": [[0, 1], [0, 2]]}'")
    solve.add_argument(
        "--utility",
        default="log",
        help="utility spec: x, log, x^0.5, logsigmoid; write --utility=-1/x for specs with a leading -",
    )
    solve.add_argument("--eps", type=float, default=0.0, help="whole-line extension shift (default 0)")
    solve.add_argument("--tol", type=float, default=1e-10, help="relative KKT residual to reach")
    solve.add_argument("--json", help="write rewards and solver report to this JSON file")
    solve.add_argument("--plot", help="write a histogram against the limit law to this PNG")
    solve.set_defaults(run=_solve)

    demo = sub.add_parser("demo", help="the built-in demonstration: optimal rewards and limit laws, with figures")
    demo.add_argument("-n", type=int, default=200, help="answers per ranking (default 200)")
    demo.add_argument("--output", default="demo-output", help="folder for figures and summary")
    demo.set_defaults(run=_demo)

    # `train` is parsed by train_parser() (every RankingRewardConfig field); this entry lists it and routes to it.
    train = sub.add_parser(
        "train", help="train a reward model on ranked answers, one forward pass per answer", add_help=False
    )
    train.set_defaults(run=None)

    score = sub.add_parser("score", help="score every answer with a trained reward model, write JSONL")
    score.add_argument("--model", required=True, help="trained model folder or Hub name")
    _add_data_options(score)
    score.add_argument("--output", required=True, help="JSONL file: each row plus rewards and normalized_rewards")
    score.add_argument(
        "--sequence-format",
        default="auto",
        choices=["auto", "trl", "pair"],
        help="model input: auto (as the model was trained, else pair for encoders, trl for decoders), trl "
        "(prompt + answer + EOS, TRL's), pair (the tokenizer's text pair)",
    )
    score.add_argument(
        "--shared-prompt",
        default="auto",
        choices=["auto", "on", "off"],
        help="encode each prompt once for its answers: auto (causal models), on (refuse a model that cannot), off",
    )
    score.set_defaults(run=_score)

    data = sub.add_parser("data", help="build datasets")
    data_sub = data.add_subparsers(dest="dataset", required=True)
    longform = data_sub.add_parser("longform", help="the paper's ranking data from LongForm or the built-in corpus")
    longform.add_argument("--source", default="builtin", help="'builtin', Hub name, JSONL/Parquet file or folder")
    longform.add_argument("--output", required=True, help="folder for train/test files and the dataset card")
    longform.add_argument("--train-prompts", type=int, default=8192)
    longform.add_argument("--test-prompts", type=int, default=16)
    longform.add_argument("--seed", type=int, default=0)
    longform.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"])
    longform.add_argument(
        "--levels", type=float, nargs="+", help="openness levels instead of open/closed prompts, e.g. 0 0.333 0.667 1"
    )
    longform.set_defaults(run=_data_longform)

    diagnose = sub.add_parser("diagnose", help="collapse index and per-group diagnostics of scored answers, plots")
    diagnose.add_argument("--rewards", help="a `rewardcollapse score` output (rows with openness)")
    diagnose.add_argument("--model", help="score --data with this model first")
    diagnose.add_argument("--data", help="ranking data to score with --model")
    diagnose.add_argument("--max-length", type=int, default=512)
    diagnose.add_argument("--output", default="diagnostics", help="folder for rewards.png and diagnostics.json")
    diagnose.add_argument("--levels", type=float, nargs="+", help="group by these openness levels, not open/closed")
    diagnose.set_defaults(run=_diagnose)

    reproduce = sub.add_parser("reproduce", help="the paper's experiment: one reward model per utility, report")
    reproduce.add_argument("--config", help="YAML settings (configs/paper.yaml, configs/demo.yaml)")
    reproduce.add_argument("--utilities", help="comma-separated, e.g. x,log,-1/x,prompt-aware (quote it)")
    reproduce.add_argument("--model", help="backbone name or path")
    reproduce.add_argument("--steps", type=int, help="optimiser steps per utility")
    reproduce.add_argument("--seed", type=int, help="seeds the data, the model head and the data order")
    reproduce.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default auto: bf16 where native, else fp32"
    )
    reproduce.add_argument(
        "--levels", type=float, nargs="+", help="openness levels instead of open/closed prompts, e.g. 0 0.333 0.667 1"
    )
    reproduce.add_argument("--output", default="reproduce-output", help="folder; a rerun resumes it")
    reproduce.set_defaults(run=_reproduce)

    openness = sub.add_parser("openness", help="estimate prompts' openness: from prompt text, scores or rankings")
    openness_sub = openness.add_subparsers(dest="estimator", required=True)
    fit = openness_sub.add_parser("fit", help="fit a prompt-text classifier (MiniLM embeddings + logistic regression)")
    fit.add_argument("--data", required=True, help="rows with 'prompt' and 'openness' (JSONL, Parquet, folder, Hub)")
    fit.add_argument("--output", required=True, help="folder for openness_classifier.json")
    fit.add_argument("--encoder", help="sentence encoder, Hub name or path (default: the shipped MiniLM)")
    fit.add_argument("--test-fraction", type=float, default=0.2, help="prompts held out to measure accuracy")
    fit.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(run=_openness_fit)
    predict = openness_sub.add_parser("predict", help="predicted openness of each prompt with a fitted classifier")
    predict.add_argument("--model", required=True, help="folder written by `rewardcollapse openness fit`")
    predict.add_argument("--data", required=True, help="rows with 'prompt' (an 'openness' label is compared)")
    predict.add_argument("--output", required=True, help="JSONL file: each row plus predicted_openness")
    predict.set_defaults(run=_openness_predict)
    fit.add_argument("--max-length", type=int, default=128, help="tokens per prompt (kept for predict)")
    for command in (fit, predict):
        command.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass")
    for name, column, what in (
        ("scores", "scores", "per-answer quality scores (nearest family optimum)"),
        ("rankings", "rankings", "several raters' rankings of the same answers (1 - Kendall's W, a heuristic)"),
    ):
        estimator = openness_sub.add_parser(name, help=f"openness of each row from {what}")
        estimator.add_argument("--data", required=True, help=f"rows with a '{column}' field")
        estimator.add_argument("--output", required=True, help="JSONL file: each row plus estimated_openness")
        estimator.set_defaults(run=_openness_estimate)
    for command in openness_sub.choices.values():
        command.add_argument("--split", default="train", help="split of a dataset folder or Hub dataset")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        _show_progress_messages()
        return _run(_train, argv[1:])
    args = build_parser().parse_args(argv)
    _show_progress_messages()
    return _run(args.run, args)


def _run(command, args) -> int:
    """Run a subcommand: the library's input errors become one line and exit status 2; anything else is a bug.

    Ctrl-C ends with exit status 130 and one line: every output is written whole or not at all, so nothing is
    half-written at a final path.
    """
    try:
        return command(args)
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


if __name__ == "__main__":
    sys.exit(main())
