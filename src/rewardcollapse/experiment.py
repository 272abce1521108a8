"""The paper's experiment end to end: build the data, train one reward model per utility, score, diagnose, report.

Song et al. (2023, Section 4) train a reward model on prompts with 8 answers of different lengths, half asking for
an open-ended answer and half for a short-or-long one, once per utility. With a fixed utility the test prompts of
both kinds get alike reward distributions (collapse); with the prompt-aware utility (``x`` for closed prompts,
``-1/x`` for open ones) each kind follows its own target. :func:`run_experiment` does all of it and writes

* ``data/``: the dataset and its card (:mod:`rewardcollapse.data.longform`);
* ``runs/<utility>/model``: the trained model, ``runs/<utility>/rewards.jsonl``: the test prompts' scored answers;
* ``rewards.png``: a row of histograms per utility, open against closed test prompts, with their targets;
* ``report.md`` and ``report.json``: collapse index and per-group diagnostics per utility;
* ``config.yaml``: the configuration used.

Each utility's run records the settings it was trained with (``runs/<utility>/run.json``, written last). Started
again, the experiment reuses the data and every finished run whose settings are unchanged, and says so; a run whose
settings changed, or that was interrupted, is trained again. Every final file is written whole or not at all, so an
interrupted run (Ctrl-C, a kill) leaves nothing half-written at a final path.

**Openness levels** (``openness_levels: [0, 0.333, 0.667, 1]``, ``configs/levels.yaml``) go beyond the paper's two
kinds: the test prompts fall in one group per level ``o``, whose answer lengths follow the quantiles of the level's
target law (:func:`rewardcollapse.data.longform.level_lengths`), and the report gives per level the KS distance of the
trained rewards to the level's target (the 8-answer optimum of ``openness_utility(o)``) and to its limit law
Beta(o, o). Train with ``utility: openness`` (the continuous family) against fixed utilities to see the family track
the targets.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse._files import atomic_directory, atomic_path, write_text_atomic
from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY, OPENNESS, PROMPT_AWARE, is_open

__all__ = [
    "ExperimentConfig",
    "diagnose_file",
    "level_label",
    "optimum_accuracy",
    "read_scored",
    "run_experiment",
    "summary_text",
    "targets_for",
    "utility_slug",
]

GROUP_UTILITIES = {"open": OPEN_UTILITY, "closed": CLOSED_UTILITY}
"""The prompt-aware utility of each group, whose optimal rewards are the group's target."""

_PER_PROMPT = (PROMPT_AWARE, OPENNESS)
_RUN_RECORD = "run.json"
_log = logging.getLogger(__name__)


@dataclass
class ExperimentConfig:
    """Settings of :func:`run_experiment`; load with :meth:`from_yaml` (``configs/paper.yaml``, ``demo.yaml``)."""

    source: str = field(default="builtin", metadata={"help": "LongForm source: 'builtin', Hub name, file or folder"})
    train_prompts: int = field(default=8192, metadata={"help": "training prompts (half open, half closed)"})
    test_prompts: int = field(default=16, metadata={"help": "test prompts scored and diagnosed"})
    seed: int = field(default=0, metadata={"help": "seeds the data, the model head and the data order"})
    model: str | None = field(default=None, metadata={"help": "backbone; None: the shipped MiniLM"})
    utilities: list[str] = field(default_factory=lambda: ["x", "log", "-1/x", "prompt-aware"])
    openness_levels: list[float] | None = field(
        default=None,
        metadata={"help": "None: the paper's open/closed prompts; a list: one group per openness level (beyond it)"},
    )
    steps: int = field(default=1000, metadata={"help": "optimiser steps per utility"})
    batch_size: int = field(default=8, metadata={"help": "prompts per device per micro-batch"})
    gradient_accumulation: int = field(default=1, metadata={"help": "micro-batches per optimiser step"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (linear decay)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    max_length: int = field(default=512, metadata={"help": "tokens per (prompt, answer)"})
    forward_batch_size: int | None = field(default=8, metadata={"help": "sequences per forward pass"})
    eps: float = field(default=0.1, metadata={"help": "utility shift U(x + eps) - U(eps)"})
    length_scale: float = field(
        default=1.0,
        metadata={"help": "answer cut lengths x this (1: the paper's 10 to 80 words; 0.5: 5 to 40); targets unchanged"},
    )
    freeze_word_embeddings: bool = field(
        default=False, metadata={"help": "keep the word-embedding matrix fixed (no gradient or optimiser state)"}
    )
    precision: str = field(
        default="auto",
        metadata={"help": "auto | fp32 | bf16 | fp16; auto: bf16 where the hardware computes it natively, else fp32"},
    )
    score_batch_size: int = field(default=16, metadata={"help": "prompts per batch when scoring the test set"})

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read a YAML mapping of these fields (``yaml.safe_load``; unknown keys are an error).

        The old ``bf16: true/false`` is read as ``precision: bf16/fp32`` with a deprecation warning.
        """
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a configuration must be a mapping of settings, got {type(values).__name__}")
        if "bf16" in values:
            bf16 = values.pop("bf16")
            values.setdefault("precision", "bf16" if bf16 else "fp32")
            warnings.warn(
                f"{path}: `bf16: {bf16}` is deprecated; write `precision: {values['precision']}` (or `auto`)",
                FutureWarning,
                stacklevel=2,
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_yaml(self) -> str:
        """The configuration as YAML text."""
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


def utility_slug(spec: str) -> str:
    """A folder name for a utility spec: ``"-1/x"`` -> ``"neg1_over_x"``, ``"x^0.5"`` -> ``"x_pow_0.5"``."""
    if spec in _PER_PROMPT:
        return spec
    return spec.replace("-", "neg").replace("/", "_over_").replace("^", "_pow_")


def level_label(openness: float) -> str:
    """The group label of an openness level: ``0.333...`` -> ``"o=0.333"``."""
    return f"o={openness:.3g}"


def targets_for(n: int = 8, levels: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Each group's target rewards: the exact optimum of ``n`` ranked answers under the group's utility.

    Without ``levels`` the groups are ``"open"`` (``-1/x``) and ``"closed"`` (``x``); with them, one group per level
    ``o`` (labelled by :func:`level_label`) whose utility is :func:`~rewardcollapse.openness_utility` ``(o)``.
    """
    from rewardcollapse.core import openness_utility, optimal_rewards

    if levels is None:
        return {group: optimal_rewards(n, spec).rewards for group, spec in GROUP_UTILITIES.items()}
    return {level_label(o): np.sort(optimal_rewards(n, openness_utility(o)).rewards) for o in levels}


def _limit_laws(levels: Sequence[float] | None) -> dict[str, Any]:
    from rewardcollapse.core import openness_law

    if levels is None:
        return {"open": openness_law(1.0), "closed": openness_law(0.0)}
    return {level_label(o): openness_law(o) for o in levels}


def read_scored(
    path: Path, levels: Sequence[float] | None = None
) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
    """Normalised rewards, group labels and pair matrices of a ``score`` output file.

    A row's group comes from its ``openness``: ``"open"`` (>= 0.5) or ``"closed"``, or with ``levels`` the label of
    the level it equals (to 1e-9; a row at no level is an error naming it).
    """
    from rewardcollapse.data.schema import ranked_pairs

    rewards, groups, pairs = [], [], []
    for number, line in enumerate(Path(path).read_text().splitlines()):
        row = json.loads(line)
        openness = row.get("openness")
        if openness is None:
            raise ValueError(f"{path}: row {number} has no `openness`, so it belongs to no group")
        if levels is None:
            groups.append("open" if is_open(openness) else "closed")
        else:
            matches = [o for o in levels if abs(o - openness) <= 1e-9]
            if not matches:
                raise ValueError(f"{path}: row {number} has openness {openness}, which is none of the levels {levels}")
            groups.append(level_label(matches[0]))
        rewards.append(np.asarray(row["normalized_rewards"], dtype=float))
        pairs.append(ranked_pairs(row))
    return rewards, groups, pairs


def diagnose_file(path: str | Path, levels: Sequence[float] | None = None) -> dict[str, Any]:
    """Collapse index and per-group diagnostics of a scored file (``rewardcollapse score`` output).

    Per group: ``ks`` and ``wasserstein`` to the group's n-answer target (:func:`targets_for`), ``ks_limit`` to its
    limit law (uniform for open, atoms at 0 and 1 for closed, Beta(o, o) for level ``o``), prompts, pairwise accuracy
    and Kendall tau.
    """
    from rewardcollapse.diagnostics import collapse_index, group_diagnostics

    rewards, groups, pairs = read_scored(Path(path), levels)
    n = int(np.median([len(r) for r in rewards]))
    targets = targets_for(n, levels)
    measured = group_diagnostics(rewards, groups, targets, pairs, limits=_limit_laws(levels))
    diagnostics = {group: measured[group] for group in targets if group in measured}  # in the order of the levels
    return {"collapse_index": collapse_index(rewards, groups, targets), "groups": diagnostics}


def _build_data(config: ExperimentConfig, folder: Path) -> tuple[dict[str, Path], bool]:
    """The dataset's paths, and whether a finished build with the same settings was reused."""
    from rewardcollapse.data.longform import build_longform, write_longform

    wanted = {
        "source": config.source,
        "seed": config.seed,
        "test_prompts": config.test_prompts,
        "levels": config.openness_levels,
        "train_prompts_asked": config.train_prompts,
        "length_scale": config.length_scale,
    }
    paths = {"train": folder / "train.jsonl", "test": folder / "test.jsonl", "card": folder / "README.md"}
    report_path = folder / "build_report.json"  # written last: its presence marks a finished build
    if report_path.exists() and paths["train"].exists() and paths["test"].exists():
        built = json.loads(report_path.read_text())
        if all(built.get(key, 1.0 if key == "length_scale" else None) == value for key, value in wanted.items()):
            return paths, True
    report_path.unlink(missing_ok=True)
    data = build_longform(
        config.source,
        train_prompts=config.train_prompts,
        test_prompts=config.test_prompts,
        seed=config.seed,
        levels=config.openness_levels,
        length_scale=config.length_scale,
    )
    return write_longform(data, folder), False


def _run_settings(config: ExperimentConfig, spec: str, precision: str) -> dict[str, Any]:
    """What a utility's run depends on: every setting but the list of utilities and the scoring batch size."""
    settings = dataclasses.asdict(config)
    for name in ("utilities", "score_batch_size", "precision"):
        settings.pop(name)
    return {"utility": spec, "precision": precision, **settings}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings that differ, as ``"steps 3 -> 7, learning_rate 0.0001 -> 0.0002"``."""
    names = [name for name in new if old.get(name) != new[name]]
    return ", ".join(f"{name} {old.get(name)!r} -> {new[name]!r}" for name in names)


def _finished_run(folder: Path, settings: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``folder`` holds a finished run with these settings, and what to tell the user either way."""
    record = folder / _RUN_RECORD
    if not record.exists():
        if (folder / "rewards.jsonl").exists():
            return False, "no record of its settings (made by an older version): training it again"
        if folder.exists():
            return False, "interrupted before it finished: training it again"
        return False, ""
    recorded = json.loads(record.read_text()).get("settings", {})
    if recorded != settings:
        return False, f"settings changed ({_changes(recorded, settings)}): training it again"
    if not (folder / "rewards.jsonl").exists() or not (folder / "model").is_dir():
        return False, "its files are incomplete: training it again"
    return True, "finished earlier with the same settings: reused"


def _step_seconds(config: ExperimentConfig, train_path: Path, precision: Any) -> float:
    """Seconds of one training step's forward and backward passes here: the fastest of three after a warm-up."""
    import torch

    from rewardcollapse.training.collator import RankingCollator
    from rewardcollapse.training.run import default_backbone
    from rewardcollapse.training.scoring import score_batch
    from rewardcollapse.training.trainer import fit_max_length, load_reward_model

    with train_path.open() as handle:
        rows = [json.loads(next(handle)) for _ in range(config.batch_size)]
    model, tokenizer = load_reward_model(config.model or default_backbone())
    model.get_input_embeddings().weight.requires_grad_(not config.freeze_word_embeddings)
    device = torch.device(precision.device)
    model.to(device).train()
    batch = RankingCollator(tokenizer, max_length=fit_max_length(model, config.max_length))(rows)
    tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        with precision.autocast():
            rewards = score_batch(model, tensors, forward_batch_size=config.forward_batch_size)
        rewards.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


def _estimate_minutes(config: ExperimentConfig, step_seconds: float, runs: int) -> float:
    """Minutes for ``runs`` utilities: their steps, plus scoring (a forward pass is about a third of a step).

    The forward and backward passes get 10% more for the optimiser and the Trainer's own work, and each model 5 s to
    load and save (both measured on the demo configuration).
    """
    steps = config.steps * config.gradient_accumulation
    scoring = config.test_prompts / config.batch_size / 3
    return runs * (1.1 * step_seconds * (steps + scoring) + 5.0) / 60


def _train_and_score(
    config: ExperimentConfig, spec: str, paths: dict[str, Path], folder: Path, precision: Any, name: str
) -> dict[str, Any]:
    """Train one utility's model and score the test prompts; every final file is written whole or not at all."""
    import torch

    from rewardcollapse.training.run import score_file, train_reward_model

    for stale in (folder / _RUN_RECORD, folder / "rewards.jsonl"):
        stale.unlink(missing_ok=True)  # the record first: a kill from here on leaves an unfinished run
    with atomic_directory(folder / "model") as model_dir:
        summary = train_reward_model(
            model=config.model,
            data=paths["train"],
            output_dir=model_dir,
            utility=spec,
            eps=config.eps,
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.gradient_accumulation,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_steps,
            max_length=config.max_length,
            forward_batch_size=config.forward_batch_size,
            freeze_word_embeddings=config.freeze_word_embeddings,
            seed=config.seed,
            save_strategy="no",
            logging_steps=max(1, config.steps // 20),
            report_to="none",
            run_name=f"{name} training",
            disable_tqdm=False,  # transformers would turn its bar off, as its logging is quiet here
            dataloader_pin_memory=torch.cuda.is_available(),
            **precision.training_arguments,
        )
    summary["model"] = str(folder / "model")
    with atomic_path(folder / "rewards.jsonl") as partial:
        score_file(
            model=folder / "model",
            data=paths["test"],
            output=partial,
            batch_size=config.score_batch_size,
            max_length=config.max_length,
            forward_batch_size=config.forward_batch_size,
            bf16=precision.name == "bf16",
            description=f"{name} scoring",
        )
    return summary


def _figure(
    results: dict[str, dict[str, Any]], targets: dict[str, np.ndarray], levels: Sequence[float] | None, path: Path
) -> None:
    """A row per utility, a panel per group: the group's rescaled rewards against its target."""
    from rewardcollapse.diagnostics import plot_group_rewards
    from rewardcollapse.plots import _pyplot

    plt = _pyplot()
    rows, cols = len(results), len(targets)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for row, (spec, result) in enumerate(results.items()):
        rewards, groups, _ = read_scored(result["rewards_path"], levels)
        for col, group in enumerate(targets):
            members = [r for r, g in zip(rewards, groups, strict=True) if g == group]
            ks = result["groups"][group]["ks"]
            title = (
                f"U = {spec}, {group} (CI {result['collapse_index']:.2f})"
                if levels is None
                else (f"U = {spec}, {group} (KS {ks:.2f})")
            )
            plot_group_rewards(members, [group] * len(members), {group: targets[group]}, ax=axes[row, col], title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _overall(groups: dict[str, dict[str, float]], metric: str) -> float:
    """A ranking metric over all test prompts: the groups' values weighted by their prompts."""
    total = sum(g["prompts"] for g in groups.values())
    return sum(g[metric] * g["prompts"] for g in groups.values()) / total


def _markdown(results: dict[str, dict[str, Any]], config: ExperimentConfig) -> str:
    header = (
        f"Backbone `{config.model or 'all-MiniLM-L6-v2 (shipped)'}`, {config.steps} steps, data `{config.source}`, "
        f"{config.test_prompts} test prompts; rewards rescaled per prompt."
    )
    if config.openness_levels is not None:
        return _levels_markdown(results, header)
    lines = [
        "# Reward collapse: one reward model per utility",
        "",
        f"{header} Collapse index: 0 = open and closed prompts get alike reward distributions, 1 = each at its own "
        "target (open target: the 8-answer optimum of -1/x, closed target: that of x).",
        "",
        "| utility | collapse index | open KS | open W1 | closed KS | closed W1 | pairwise accuracy | Kendall tau |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in results.items():
        o, c = r["groups"]["open"], r["groups"]["closed"]
        lines.append(
            f"| {spec} | {r['collapse_index']:.3f} | {o['ks']:.3f} | {o['wasserstein']:.3f} | {c['ks']:.3f} | "
            f"{c['wasserstein']:.3f} | {_overall(r['groups'], 'pairwise_accuracy'):.3f} | "
            f"{_overall(r['groups'], 'kendall_tau'):.3f} |"
        )
    return "\n".join(lines) + "\n"


def _levels_markdown(results: dict[str, dict[str, Any]], header: str) -> str:
    groups = list(next(iter(results.values()))["groups"])
    lines = [
        "# Continuous openness: do the trained rewards of each openness level follow its target?",
        "",
        f"{header} Target of level o: the 8-answer optimum of openness_utility(o); limit law: Beta(o, o). KS to a "
        "target with atoms (o = 0) counts any deviation from them in full; W1 measures how far.",
    ]
    tables = (
        ("KS distance to the level's 8-answer target", "ks"),
        ("1-Wasserstein distance to the level's 8-answer target", "wasserstein"),
        ("KS distance to the level's limit law Beta(o, o)", "ks_limit"),
    )
    for title, metric in tables:
        lines += [
            "",
            f"{title}:",
            "",
            f"| utility | {' | '.join(groups)} | mean | collapse index | pairwise accuracy |",
        ]
        lines.append("|---" * (len(groups) + 4) + "|")
        for spec, r in results.items():
            values = [r["groups"][g][metric] for g in groups]
            cells = " | ".join(f"{v:.3f}" for v in values)
            accuracy = _overall(r["groups"], "pairwise_accuracy")
            lines.append(f"| {spec} | {cells} | {np.mean(values):.3f} | {r['collapse_index']:.3f} | {accuracy:.3f} |")
    return "\n".join(lines) + "\n"


def _ranking(row: dict[str, Any]) -> Any:
    """A row's ranking as :func:`~rewardcollapse.optimal_rewards` takes it: tiers from ``ranks``, or edges."""
    if row.get("pairs") is not None:
        return [tuple(edge) for edge in row["pairs"]]
    ranks = row.get("ranks") or list(range(len(row["responses"])))
    return [[i for i, r in enumerate(ranks) if r == value] for value in sorted(set(ranks))]


def optimum_accuracy(rows: Sequence[dict[str, Any]], utility: str) -> float:
    """The pairwise accuracy of the exact optimal rewards of each row's ranking under its utility, ties as half.

    A trained model can approach this but has no reason to beat it by much: ``x`` ties the answers of each cluster
    at 0 or 1 (8 answers: 0.786), ``-1/x`` orders them all (1.0). ``utility`` is a spec, ``"prompt-aware"`` (each
    row's utility) or ``"openness"`` (each row's :func:`~rewardcollapse.openness_utility`).
    """
    from rewardcollapse.core import openness_utility, optimal_rewards
    from rewardcollapse.core.conventions import prompt_utility
    from rewardcollapse.data.schema import ranked_pairs
    from rewardcollapse.diagnostics import ranking_metrics

    correct = total = 0.0
    cache: dict[tuple[str, str], np.ndarray] = {}
    for row in rows:
        spec = openness_utility(row["openness"]) if utility == OPENNESS else prompt_utility(row, utility)
        ranking = _ranking(row)
        key = (getattr(spec, "name", spec), json.dumps(ranking))
        if key not in cache:
            cache[key] = optimal_rewards(ranking, spec).rewards
        pairs = ranked_pairs(row)
        metrics = ranking_metrics(cache[key][None, :], pairs[None])
        correct += metrics["pairwise_accuracy"] * pairs.sum()
        total += pairs.sum()
    return correct / total


def _header(config: ExperimentConfig, precision: Any) -> str:
    from rewardcollapse.training.backbone import backbone_label

    what = "openness levels " + ", ".join(map(str, config.openness_levels)) if config.openness_levels else "the paper's"
    steps = f"{config.steps} steps of {config.batch_size * config.gradient_accumulation} prompts"
    return (
        f"reward collapse, {what} experiment (Song et al. 2023, Section 4): one reward model per utility "
        f"({', '.join(config.utilities)}), {steps} each, backbone {backbone_label(config.model)}, "
        f"{precision.describe()}"
    )


def _device_line(precision: Any) -> str:
    import torch

    if precision.device == "cuda":
        return f"device: {torch.cuda.get_device_name()}"
    capability = torch.backends.cpu.get_cpu_capability()
    return f"device: CPU, {torch.get_num_threads()} threads, {capability} kernels"


def run_experiment(config: ExperimentConfig, output_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) the experiment of :class:`ExperimentConfig` in ``output_dir``; return the report.

    Progress goes to the ``rewardcollapse`` logger (what runs, on what, about how long; which runs are reused) and
    to one progress bar per utility.

    Returns
    -------
    dict
        ``utilities``: per utility the collapse index, its verdict, per-group diagnostics, the pairwise accuracy of
        the model and of its utility's exact optimum, whether the run was reused, and the rewards file; ``figure``,
        ``report_md``, ``report_json``, ``config`` and ``data``: paths written; ``precision`` and ``device``.
    """
    from rewardcollapse.core import utility
    from rewardcollapse.diagnostics import collapse_verdict
    from rewardcollapse.training.precision import choose_precision
    from rewardcollapse.training.trainer import quiet_transformers

    levels = config.openness_levels
    if levels is not None and len({level_label(o) for o in levels}) != len(levels):
        raise ValueError(f"`openness_levels` {levels} must differ in their first 3 significant digits")
    for spec in config.utilities:
        if spec not in _PER_PROMPT:
            utility(spec)  # fail before any training on a bad spec
    precision = choose_precision(config.precision)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / "config.yaml", config.to_yaml())
    started = time.perf_counter()
    _log.info(_header(config, precision))
    _log.info(_device_line(precision))
    with quiet_transformers():
        paths, reused = _build_data(config, output / "data")
        _log.info(
            "data: %s %s",
            "reusing the dataset built earlier with the same settings in" if reused else "built",
            paths["train"].parent,
        )
        runs = {spec: output / "runs" / utility_slug(spec) for spec in config.utilities}
        settings = {spec: _run_settings(config, spec, precision.name) for spec in config.utilities}
        states = {spec: _finished_run(runs[spec], settings[spec]) for spec in config.utilities}
        to_train = [spec for spec in config.utilities if not states[spec][0]]
        if to_train:
            minutes = _estimate_minutes(config, _step_seconds(config, paths["train"], precision), len(to_train))
            _log.info(
                "expected: %s for %d model%s to train (from a step timed here)",
                f"about {minutes:.0f} min" if minutes >= 1 else "under a minute",
                len(to_train),
                "s" if len(to_train) > 1 else "",
            )
        results: dict[str, dict[str, Any]] = {}
        for number, spec in enumerate(config.utilities, start=1):
            name = f"[{number}/{len(config.utilities)}] {spec}"
            finished, why = states[spec]
            if why:
                _log.info("%s: %s", name, why)
            summary = None
            if not finished:
                summary = _train_and_score(config, spec, paths, runs[spec], precision, name)
            rewards_path = runs[spec] / "rewards.jsonl"
            rows = [json.loads(line) for line in rewards_path.read_text().splitlines()]
            result = {**diagnose_file(rewards_path, levels), "rewards_path": rewards_path, "reused": finished}
            result["verdict"] = collapse_verdict(result["collapse_index"])
            result["pairwise_accuracy"] = _overall(result["groups"], "pairwise_accuracy")
            result["optimum_pairwise_accuracy"] = optimum_accuracy(rows, spec)
            if summary is not None:
                record = {"settings": settings[spec], "training": summary, "collapse_index": result["collapse_index"]}
                write_text_atomic(runs[spec] / _RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")
            results[spec] = result
    targets = targets_for(8, levels)
    with atomic_path(output / "rewards.png") as figure:
        _figure(results, targets, levels, figure)
    report = {
        "utilities": {
            spec: {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for spec, r in results.items()
        },
        "figure": str(output / "rewards.png"),
        "report_md": str(output / "report.md"),
        "report_json": str(output / "report.json"),
        "config": str(output / "config.yaml"),
        "data": str(paths["train"].parent),
        "precision": precision.name,
        "seconds": time.perf_counter() - started,
    }
    write_text_atomic(output / "report.md", _markdown(results, config))
    write_text_atomic(output / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def summary_text(report: dict[str, Any], *, levels: Sequence[float] | None = None) -> str:
    """What a run shows, in words a newcomer follows: per utility the collapse index and its verdict, the figure.

    For the paper's design the closing sentence says whether the paper's finding was reproduced: every fixed
    utility collapsed (index <= 0.25) and every prompt-aware one separated (>= 0.6), or which ones missed.
    """
    from rewardcollapse.diagnostics import COLLAPSED_AT_MOST, SEPARATED_AT_LEAST

    utilities = report["utilities"]
    width = max(len(spec) for spec in utilities)
    lines = [
        "Collapse index: 0 = open and closed prompts get the same reward distribution (reward collapse), "
        "1 = each kind on its own target"
        if levels is None
        else "Collapse index across openness levels: 0 = every level gets the same reward distribution, "
        "1 = each level on its own target",
    ]
    for spec, r in utilities.items():
        lines.append(
            f"  {spec:<{width}}  {r['collapse_index']:.2f}  {r['verdict']:<16}  pairwise accuracy "
            f"{r['pairwise_accuracy']:.2f} (its utility's exact optimum: {r['optimum_pairwise_accuracy']:.2f})"
            + ("  [reused]" if r.get("reused") else "")
        )
    if levels is None:
        missed = [
            f"{spec} {r['collapse_index']:.2f} is not <= {COLLAPSED_AT_MOST}"
            for spec, r in utilities.items()
            if spec not in _PER_PROMPT and r["collapse_index"] > COLLAPSED_AT_MOST
        ] + [
            f"{spec} {r['collapse_index']:.2f} is not >= {SEPARATED_AT_LEAST}"
            for spec, r in utilities.items()
            if spec in _PER_PROMPT and r["collapse_index"] < SEPARATED_AT_LEAST
        ]
        fixed = [spec for spec in utilities if spec not in _PER_PROMPT]
        aware = [spec for spec in utilities if spec in _PER_PROMPT]
        if missed:
            lines.append(
                "The paper's finding is NOT reproduced by this run: "
                + "; ".join(missed)
                + ". Train longer (--steps) or on a GPU (configs/minilm-gpu.yaml)."
            )
        elif fixed and aware:
            lines.append(
                f"The paper's finding, reproduced: with a fixed utility ({', '.join(fixed)}) open and closed prompts "
                f"get alike rewards (reward collapse); the prompt-aware utility keeps them apart."
            )
        lines.append(
            f"figure: {report['figure']}: a row per utility, a panel per kind of prompt; each panel is the histogram "
            "of the test prompts' rewards (rescaled per prompt) against that kind's target (open: spread evenly "
            "over [0, 1]; closed: at 0 and 1). Collapse: the two panels of a row look alike."
        )
    else:
        lines.append(
            f"figure: {report['figure']}: a row per utility, a panel per openness level; each panel is the histogram "
            "of the level's rewards (rescaled per prompt) against its target."
        )
    lines.append(f"report: {report['report_md']} and {report['report_json']}; models and rewards: runs/")
    return "\n".join(lines)
