"""The paper's experiment end to end: build the data, train one reward model per utility, score, diagnose, report.

Song et al. (2023, Section 4) train a reward model on prompts with 8 answers of different lengths, half asking for
an open-ended answer and half for a short-or-long one, once per utility. With a fixed utility the test prompts of
both kinds get alike reward distributions (collapse); with the prompt-aware utility (``x`` for closed prompts,
``-1/x`` for open ones) each kind follows its own target. :func:`run_experiment` does all of it and writes

* ``data/``: the dataset and its card (:mod:`rewardcollapse.experiments.longform`);
* ``runs/<utility>/model``: the trained model, ``runs/<utility>/rewards.jsonl``: the test prompts' scored answers;
* ``rewards.png``: a row of histograms per utility, open against closed test prompts, with their targets;
* ``report.md`` and ``report.json``: collapse index and per-group diagnostics per utility;
* ``config.yaml``: the configuration used.

The training settings are :class:`~rewardcollapse.training.RankingRewardConfig` fields, given as the configuration's
``training`` mapping and passed to it as they are; the configuration itself holds only the experiment's design.

Each utility's run records the settings it was trained with (``runs/<utility>/run.json``, written last). Started
again, the experiment reuses the data and every finished run whose settings are unchanged, and says so; a run whose
settings changed, or that was interrupted, is trained again. Every final file is written whole or not at all, so an
interrupted run (Ctrl-C, a kill) leaves nothing half-written at a final path.

**Openness levels** (``openness_levels: [0, 0.333, 0.667, 1]``, ``configs/levels.yaml``) go beyond the paper's two
kinds: the test prompts fall in one group per level ``o``, whose answer lengths follow the quantiles of the level's
target law (:func:`rewardcollapse.experiments.longform.level_lengths`), and the report gives per level the KS
distance of the trained rewards to the level's target (the 8-answer optimum of ``openness_utility(o)``) and to its
limit law Beta(o, o). Train with ``utility: openness`` (the continuous family) against fixed utilities to see the
family track the targets.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardcollapse._files import atomic_directory, atomic_path, locked_output_folder, write_text_atomic
from rewardcollapse.core.checks import MAX_CONFIG_DEPTH, check_positive_int, read_config_text
from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY, OPENNESS, PROMPT_AWARE, PrecisionSetting
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.experiments.diagnosis import Diagnosis, check_levels, diagnose_file, optimum_accuracy
from rewardcollapse.experiments.longform import LongformDesign, write_longform
from rewardcollapse.experiments.report import crossings, duration_text, markdown_report, plot_curves, plot_experiment
from rewardcollapse.settings import MAX_LENGTH, ModelInput, RankingRewardOptions, field_help

if TYPE_CHECKING:
    from rewardcollapse.diagnostics import RankedMeasures
    from rewardcollapse.training import RankingRewardConfig, TrainResult
    from rewardcollapse.training.precision import Precision

__all__ = [
    "CURVE_PROMPTS",
    "PAPER_TRAINING",
    "ExperimentConfig",
    "ExperimentResult",
    "ReproduceOptions",
    "UtilityResult",
    "run_experiment",
    "utility_slug",
]

_PER_PROMPT = (PROMPT_AWARE, OPENNESS)
_RUN_RECORD = "run.json"
_UNTRAINED = "untrained"  # the reference run's folder and utility in its record
CURVE_PROMPTS = 16
"""Test prompts the collapse curves are measured on by default: a point costs about one training step (MiniLM)."""
CURVE_PROMPTS = 16
"""Test prompts the collapse curves are measured on by default: a point costs about one training step (MiniLM)."""
_log = logging.getLogger(__name__)

_SET_BY_THE_EXPERIMENT = (
    "utility",
    "seed",
    "output_dir",
    "save_strategy",
    "logging_steps",
    "report_to",
    "run_name",
    "disable_tqdm",
)
"""The training settings each run sets itself (``_train_and_score``); a ``training`` mapping may not set them."""

PAPER_TRAINING = {
    "max_steps": 1000,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-5,
    "max_length": MAX_LENGTH,
    "forward_batch_size": 8,
    "disable_dropout": False,
}
"""The default ``training`` mapping: the paper's schedule (Song et al. 2023, Section 4) without its accumulation."""


@dataclass
class ExperimentConfig(LongformDesign):
    """Settings of :func:`run_experiment`; load with :meth:`from_yaml` (``configs/paper.yaml``, ``demo.yaml``).

    The experiment's design is here: the data's (:class:`~rewardcollapse.experiments.longform.LongformDesign`),
    the backbone, the utilities and the scoring batch. How each model trains is ``training``, a mapping of
    :class:`~rewardcollapse.training.RankingRewardConfig` fields passed to it unchanged (``max_steps``,
    ``learning_rate``, ``precision``, ...). The experiment sets ``utility`` and ``seed`` itself, and how runs are
    saved and logged.
    """

    model: str | None = field(
        default=None, metadata={"help": "Backbone, a Hub name or a local path; default: the shipped all-MiniLM-L6-v2."}
    )
    utilities: list[str] = field(
        default_factory=lambda: [CLOSED_UTILITY, "log", OPEN_UTILITY, PROMPT_AWARE],
        metadata={"help": "The utilities to train one reward model each with (specs, 'prompt-aware', 'openness')."},
    )
    score_batch_size: int = field(default=16, metadata={"help": "Prompts per batch when scoring the test set."})
    collapse_prompts: int | None = field(
        default=None,
        metadata={
            "help": "Test prompts (as many of each kind or level as they divide into) on which each model's collapse "
            f"is measured during training, for the curves of collapse_over_training.png; None: {CURVE_PROMPTS} (or "
            "every test prompt, if fewer); 0: no curves."
        },
    )
    collapse_every: int | None = field(
        default=None,
        metadata={
            "help": "Training steps between two measurements of the curves; default: a third of max_steps. Step 0 "
            "(the untrained model) and the last step come from the test prompts' scoring, at no extra cost."
        },
    )
    training: dict[str, Any] = field(
        default_factory=lambda: dict(PAPER_TRAINING),
        metadata={"help": "RankingRewardConfig fields for every model, e.g. max_steps, learning_rate, precision."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.score_batch_size, "score_batch_size")
        check_positive_int(self.collapse_every, "collapse_every", optional=True)
        prompts = self.collapse_prompts
        if prompts is not None and (isinstance(prompts, bool) or not isinstance(prompts, int)):
            raise InputValueError(f"`collapse_prompts` must be a whole number (0: no curves), got {prompts!r}")
        if prompts is not None and not 0 <= prompts <= self.test_prompts:
            raise InputValueError(
                f"`collapse_prompts` must be between 0 (no curves) and `test_prompts` ({self.test_prompts}), got "
                f"{self.collapse_prompts}"
            )
        if self.model is not None and not isinstance(self.model, str):
            raise InputValueError(f"`model` must be text or null, got {self.model!r}")
        if (
            not isinstance(self.utilities, list)
            or not self.utilities
            or not all(isinstance(spec, str) and spec for spec in self.utilities)
        ):
            raise InputValueError(f"`utilities` must be a non-empty list of utility specs, got {self.utilities!r}")
        if not isinstance(self.training, dict):
            raise InputValueError(f"`training` must be a mapping of RankingRewardConfig fields, got {self.training!r}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read a YAML mapping of these fields (YAML's safe subset); an unknown key is an error.

        The file is bounded before its values are read: at most :data:`~rewardcollapse.core.checks.MAX_CONFIG_BYTES`
        bytes, lists and mappings nested at most :data:`~rewardcollapse.core.checks.MAX_CONFIG_DEPTH` deep, and no
        aliases (``*name``), whose expansion is unbounded (a "billion laughs" of nested aliases); each is refused
        with the file and the line.

        A training setting at the top level (``max_steps: 3``, or a ``train`` command's short name such as
        ``steps``) is refused with the place it belongs: under ``training:``.
        """
        import yaml

        if not Path(path).is_file():
            raise InputValueError(f"`config` {str(path)!r} is not a file; see configs/ for examples")
        text = read_config_text(path)
        try:
            values = yaml.load(text, Loader=_bounded_loader())  # a SafeLoader subclass: no Python objects
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            kind = "is refused" if getattr(error, "context", None) == _REFUSED else "is not valid YAML"
            raise InputValueError(f"{path} {kind}{where}: {problem}") from error
        if values is None:  # empty, or only comments: most likely not the file meant
            raise InputValueError(
                f"`config` {str(path)!r} holds no settings; leave --config out for the paper's settings, or give "
                "the settings to change (e.g. seed: 1)"
            )
        if not isinstance(values, dict):
            raise InputValueError(f"{path}: a configuration must be a mapping of settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputValueError(f"{path}: unknown settings {unknown}; {_where_they_go(unknown, values, known)}")
        training = values.pop("training", None)
        if training is not None and not isinstance(training, dict):
            raise InputValueError(
                f"{path}: `training` must be a mapping of RankingRewardConfig fields, got {training!r}"
            )
        return cls(**values, training=dict(PAPER_TRAINING if training is None else training))

    @property
    def curve_prompts(self) -> int:
        """The test prompts the curves are measured on: ``collapse_prompts``, else :data:`CURVE_PROMPTS` or all."""
        if self.collapse_prompts is None:
            return min(CURVE_PROMPTS, self.test_prompts)
        return self.collapse_prompts

    def to_yaml(self) -> str:
        """The configuration as YAML text."""
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)

    def training_arguments(self, **overrides: Any) -> RankingRewardConfig:
        """The :class:`~rewardcollapse.training.RankingRewardConfig` of one run: ``training`` plus ``overrides``.

        The runs have no evaluation data, so settings that evaluate during training are refused here too.

        Raises
        ------
        ValueError
            For a ``training`` key that is no field of it, or one the experiment sets itself.
        """
        from rewardcollapse.training.config import RankingRewardConfig

        reserved = sorted(set(_SET_BY_THE_EXPERIMENT) & set(self.training))
        if reserved:
            raise InputValueError(
                f"`training` must not set {reserved}: the experiment sets them for each run (seed: top-level `seed`)"
            )
        fields = {f.name for f in dataclasses.fields(RankingRewardConfig) if f.init}
        unknown = sorted(set(self.training) - fields)
        if unknown:
            raise InputValueError(f"`training` has {unknown}, which are not RankingRewardConfig fields")
        args = RankingRewardConfig(**{"output_dir": "unused", "seed": self.seed, **self.training, **overrides})
        args.check_evaluation_data(False)
        return args


@dataclass
class ReproduceOptions:
    """``rewardcollapse reproduce``: a configuration file, the output folder, and settings that override the file."""

    config: str | None = field(
        default=None,
        metadata={
            "help": "YAML settings of the experiment (configs/paper.yaml, configs/demo.yaml); default: the paper's."
        },
    )
    output: str = field(
        default="reproduce-output",
        metadata={"help": "Folder of the experiment; a rerun resumes it, reusing finished runs."},
    )
    utilities: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated utilities instead of the configuration's, e.g. x,log,-1/x,prompt-aware (quote it)."
        },
    )
    model: str | None = field(default=None, metadata={"help": field_help(ExperimentConfig, "model")})
    seed: int | None = field(default=None, metadata={"help": field_help(ExperimentConfig, "seed")})
    max_steps: int | None = field(
        default=None, metadata={"help": field_help(RankingRewardOptions, "max_steps"), "aliases": ["--steps"]}
    )
    precision: PrecisionSetting | None = field(default=None, metadata={"help": field_help(ModelInput, "precision")})
    openness_levels: list[float] | None = field(
        default=None, metadata={"help": field_help(LongformDesign, "openness_levels"), "aliases": ["--levels"]}
    )

    def experiment_config(self) -> ExperimentConfig:
        """The configuration file's settings (default: the paper's), with the ones given here instead."""
        config = ExperimentConfig.from_yaml(self.config) if self.config else ExperimentConfig()
        if self.utilities:
            config.utilities = [spec.strip() for spec in self.utilities.split(",") if spec.strip()]
        for name in ("model", "seed", "openness_levels"):
            if getattr(self, name) is not None:
                setattr(config, name, getattr(self, name))
        for name in ("max_steps", "precision"):
            if getattr(self, name) is not None:
                config.training[name] = getattr(self, name)
        config.__post_init__()
        return config


_REFUSED = "a configuration refuses"
"""The context of the YAML errors that :func:`_bounded_loader` raises for valid YAML it does not take."""


@functools.cache
def _bounded_loader() -> type:
    """YAML's safe loader refusing aliases and nesting deeper than ``MAX_CONFIG_DEPTH``, as it composes the nodes.

    Both are checked on the node tree, before any value is constructed, so that neither an alias chain (each level
    doubling what the next reader walks) nor a deep nesting (Python's recursion) costs more than the file's size.
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    _REFUSED,
                    None,
                    f"an alias (*{event.anchor}): configurations are written by hand and take no aliases, whose "
                    "expansion has no bound; write the value out",
                    event.start_mark,
                )
            if self.depth >= MAX_CONFIG_DEPTH:
                raise yaml.composer.ComposerError(
                    _REFUSED,
                    None,
                    f"lists and mappings nested deeper than {MAX_CONFIG_DEPTH} levels; a configuration nests a few",
                    event.start_mark,
                )
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader


def _where_they_go(unknown: list[str], values: dict[str, Any], known: set[str]) -> str:
    """Where the unknown top-level keys belong: under ``training:`` for training settings, else the known keys.

    A key may be a ``RankingRewardConfig`` field or one of the ``train`` command's short names (``steps``,
    ``batch_size``, ...: the ``aliases`` of :class:`~rewardcollapse.settings.RankingRewardOptions`).
    """
    from rewardcollapse.training.config import RankingRewardConfig

    fields = {f.name for f in dataclasses.fields(RankingRewardConfig) if f.init}
    short = {
        alias.lstrip("-").replace("-", "_"): spec.name
        for spec in dataclasses.fields(RankingRewardOptions)
        for alias in spec.metadata.get("aliases", [])
    }
    moved = {short.get(key, key): values[key] for key in unknown if key in fields or key in short}
    if not moved:
        return f"known: {sorted(known)}"
    lines = ", ".join(f"{name}: {value!r}" for name, value in moved.items())
    return f"training settings go under `training:` as RankingRewardConfig fields ({lines})"


def utility_slug(spec: str) -> str:
    """A folder name for a utility spec: ``"-1/x"`` -> ``"neg1_over_x"``, ``"x^0.5"`` -> ``"x_pow_0.5"``."""
    if spec in _PER_PROMPT:
        return spec
    return spec.replace("-", "neg").replace("/", "_over_").replace("^", "_pow_")


@dataclass(frozen=True, eq=False)
class UtilityResult:
    """One utility's model, diagnosed: its test prompts' rewards against their targets, and how it was trained."""

    diagnosis: Diagnosis
    """The scored test prompts: rewards, groups, targets, collapse index and per-group diagnostics."""
    verdict: str
    """``"collapsed"``, ``"partly separated"`` or ``"separated"`` (see ``collapse_verdict``)."""
    pairwise_accuracy: float
    """Of the model, over all test prompts."""
    optimum_pairwise_accuracy: float
    """Of the exact optimal rewards of the utility, over the same prompts."""
    rewards_path: Path
    reused: bool
    """Whether the run was finished earlier with the same settings (then ``training`` is None)."""
    measures: RankedMeasures
    """Every collapse measure of the test prompts, label-free ones included, against the utility's collapse point."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """The collapse measures against the training step on the curve's prompts, from step 0 to the last."""
    curve_seconds: float | None = None
    """Seconds the measurements during training took (None when reused or without curves)."""
    training: TrainResult | None = None

    @property
    def collapse_index(self) -> float:
        """The diagnosis's collapse index."""
        return self.diagnosis.collapse_index

    def to_dict(self) -> dict[str, Any]:
        """The entry of ``report.json``: the diagnosis, the rewards file, reuse, verdict and accuracies."""
        return {
            **self.diagnosis.to_dict(),
            "rewards_path": str(self.rewards_path),
            "reused": self.reused,
            "verdict": self.verdict,
            "pairwise_accuracy": self.pairwise_accuracy,
            "optimum_pairwise_accuracy": self.optimum_pairwise_accuracy,
            "label_free": self.measures.label_free.to_dict(),
            "curve": self.curve,
            "crossings": crossings(self.curve),
            "curve_seconds": self.curve_seconds,
            "training_seconds": None if self.training is None else self.training.seconds,
        }


@dataclass(frozen=True, eq=False)
class ExperimentResult:
    """What :func:`run_experiment` found and wrote; :meth:`to_dict` is ``report.json``."""

    utilities: dict[str, UtilityResult]
    references: dict[str, RankedMeasures]
    """The same measures for reference rewards of the test prompts: the untrained model (every run's step 0), reward
    = answer length, and the exact optimum of each prompt's kind (or level)."""
    figure: Path
    curves_figure: Path | None
    """``collapse_over_training.png``; None without curves."""
    report_md: Path
    report_json: Path
    config: Path
    data: Path
    """The dataset's folder."""
    precision: str
    seconds: float
    estimated_seconds: float | None = None
    """What the run was expected to take, logged at its start (None when every run was reused)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values: paths as text, each utility as :meth:`UtilityResult.to_dict`."""
        paths = ("figure", "curves_figure", "report_md", "report_json", "config", "data")
        return {
            "utilities": {spec: result.to_dict() for spec, result in self.utilities.items()},
            "references": {name: measures.to_dict() for name, measures in self.references.items()},
            **{name: None if getattr(self, name) is None else str(getattr(self, name)) for name in paths},
            "precision": self.precision,
            "seconds": self.seconds,
            "estimated_seconds": self.estimated_seconds,
        }


def _build_data(config: ExperimentConfig, folder: Path) -> tuple[dict[str, Path], bool]:
    """The dataset's paths, and whether a finished build with the same settings was reused."""
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
    return write_longform(config.build(), folder), False


def _run_settings(config: ExperimentConfig, spec: str, precision: str) -> dict[str, Any]:
    """What a utility's run depends on: the design but the list of utilities and the scoring batch, and training."""
    settings = dataclasses.asdict(config)
    for name in ("utilities", "score_batch_size", "training"):
        settings.pop(name)
    return {"utility": spec, **settings, **config.training, "precision": precision}


def _reference_settings(config: ExperimentConfig, args: Any, precision: str) -> dict[str, Any]:
    """What the untrained reference depends on: the backbone, the seed, the test prompts and how they are scored."""
    design = dataclasses.asdict(config)
    for name in ("utilities", "score_batch_size", "training", "collapse_prompts", "collapse_every"):
        design.pop(name)
    scoring = {name: getattr(args, name) for name in ("max_length", "sequence_format", "forward_batch_size")}
    return {"utility": _UNTRAINED, **design, **scoring, "precision": precision}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings that differ, as ``"max_steps 3 -> 7, learning_rate 0.0001 -> 0.0002"``."""
    names = [name for name in {**old, **new} if old.get(name) != new.get(name)]
    return ", ".join(f"{name} {old.get(name)!r} -> {new.get(name)!r}" for name in names)


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


_TIMED_STEPS = 6
"""Training steps timed for the estimate, the first :data:`_WARM_UP_STEPS` only to warm up."""
_WARM_UP_STEPS = 3  # after a load the first steps ran up to 1.5 times as long as later ones (kernel and memory set-up)
_SAMPLED_STEPS = 50
"""Training batches whose tokens are counted to scale the timed step to the run's mean."""


@dataclass(frozen=True)
class _Costs:
    """Seconds of the experiment's pieces, timed here on its own data before the runs start."""

    load: float
    """Loading the backbone (and its tokenizer)."""
    step: float
    """One training step: forward and backward passes and the AdamW update (the fastest of three after a warm-up)."""
    score_prompt: float
    """Scoring one prompt's answers at inference, in the scoring batches of ``score_batch_size`` prompts."""

    def run_seconds(self, steps: int, scored_prompts: int) -> float:
        """One model: load, train ``steps`` steps, score, save (1 s).

        A step gets 35% more than the timed forward and backward passes and AdamW update of one batch: the
        Trainer's own work and the run's many batch shapes (measured on the demo: 0.53 s a step against 0.39 s
        timed, with the kernels capped at AVX2).
        """
        return self.load + 1.35 * self.step * steps + self.score_prompt * scored_prompts + 1.0


def _measured_costs(config: ExperimentConfig, args: Any, train_path: Path, test_path: Path, precision: Any) -> _Costs:
    """Time a load, training steps and a scoring batch here, on the experiment's data and settings."""
    import torch

    from rewardcollapse.training.collator import RankingCollator
    from rewardcollapse.training.models import (
        TRAINING_DTYPE,
        default_backbone,
        fit_max_length,
        freeze_bottom_layers,
        load_reward_model,
        resolve_sequence_format,
    )
    from rewardcollapse.training.scoring import SCORING_CHUNK, score_batch

    def rows(path: Path, count: int) -> list[dict[str, Any]]:
        """The first ``count`` rows of ``path``, from its start again where it has fewer."""
        with path.open() as handle:
            read = [json.loads(line) for line, _ in zip(handle, range(count), strict=False)]
        return [read[i % len(read)] for i in range(count)]

    started = time.perf_counter()
    model, tokenizer = load_reward_model(config.model or default_backbone(), dtype=TRAINING_DTYPE)
    load = time.perf_counter() - started
    model.get_input_embeddings().weight.requires_grad_(not args.freeze_word_embeddings)
    freeze_bottom_layers(model, args.freeze_layers)
    device = torch.device(precision.device)
    model.to(device).train()
    fmt = resolve_sequence_format(args.sequence_format, model)
    collator = RankingCollator(tokenizer, max_length=fit_max_length(model, args.max_length), sequence_format=fmt)

    def tensors(batch_rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: v.to(device) for k, v in collator(batch_rows).items() if isinstance(v, torch.Tensor)}

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    timed = tensors(rows(train_path, args.per_device_train_batch_size))
    steps = []
    for _ in range(_TIMED_STEPS):  # one batch again and again: a new shape would time the kernels' set-up
        start = time.perf_counter()
        for _ in range(args.gradient_accumulation_steps):
            with precision.autocast():
                rewards = score_batch(model, timed, forward_batch_size=args.forward_batch_size)
            rewards.float().sum().backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        synchronise()
        steps.append(time.perf_counter() - start)
    # A step's cost grows with its tokens: scale the timed batch's to the mean of the run's first batches.
    sample = rows(train_path, per_step * _SAMPLED_STEPS)
    width = args.per_device_train_batch_size
    tokens = [int(tensors(sample[i : i + width])["attention_mask"].sum()) for i in range(0, len(sample), width)]
    scale = (sum(tokens) / len(tokens)) / int(timed["attention_mask"].sum())
    model.eval()
    scoring = rows(test_path, config.score_batch_size)
    start = time.perf_counter()
    with torch.inference_mode(), precision.autocast():
        score_batch(model, tensors(scoring), forward_batch_size=SCORING_CHUNK)  # as the test scoring runs
    synchronise()
    step = min(steps[_WARM_UP_STEPS:]) * scale
    return _Costs(load=load, step=step, score_prompt=(time.perf_counter() - start) / len(scoring))


def _curve_rows(test_path: Path, count: int, levels: list[float] | None) -> list[int]:
    """Line indices of the curve's test prompts: the first of each kind (or level) in turn, ``count`` in all."""
    from rewardcollapse.core.conventions import is_open
    from rewardcollapse.diagnostics import level_label

    by_group: dict[str, list[int]] = {}
    with test_path.open() as handle:
        for index, line in enumerate(handle):
            openness = json.loads(line)["openness"]
            group = ("open" if is_open(openness) else "closed") if levels is None else level_label(openness)
            by_group.setdefault(group, []).append(index)
    picked: list[int] = []
    for rank in range(max(map(len, by_group.values()))):
        picked += [members[rank] for members in by_group.values() if rank < len(members)]
    return sorted(picked[:count])


def _scored_point(rewards_path: Path, indices: list[int], spec: str | None, levels: Any, step: int) -> dict[str, Any]:
    """A curve's point from a scored file: the collapse measures of the curve's prompts (lines ``indices``)."""
    from rewardcollapse.diagnostics import measure_ranked

    lines = rewards_path.read_text().splitlines()
    rows = [json.loads(lines[i]) for i in indices]
    rows = [row for row in rows if not row.get("indistinguishable", False)]
    measures = measure_ranked(rows, [row["normalized_rewards"] for row in rows], utility=spec, levels=levels)
    return {"step": step, **measures.metrics()}


def _train_and_score(
    config: ExperimentConfig,
    spec: str,
    paths: dict[str, Path],
    folder: Path,
    args: Any,
    name: str,
    curve: list[int],
) -> TrainResult:
    """Train one utility's model, measuring collapse on the ``curve`` prompts as it trains, and score the test prompts.

    Every final file is written whole or not at all.
    """
    from rewardcollapse.training.callbacks import CollapseCallback
    from rewardcollapse.training.run import train_reward_model
    from rewardcollapse.training.scoring import SCORING_CHUNK

    for stale in (folder / _RUN_RECORD, folder / "rewards.jsonl"):
        stale.unlink(missing_ok=True)  # the record first: a kill from here on leaves an unfinished run
    watch = None
    if curve:
        lines = paths["test"].read_text().splitlines()
        watch = CollapseCallback(
            [json.loads(lines[i]) for i in curve],
            every=config.collapse_every or max(1, args.max_steps // 3),
            at_start=False,  # step 0 and the last step come from the test prompts' scoring
            at_end=False,
            levels=config.openness_levels,
            batch_size=config.score_batch_size,
            forward_batch_size=SCORING_CHUNK,
        )
    with atomic_directory(folder / "model") as model_dir:
        run = {
            "utility": spec,
            "seed": config.seed,
            "save_strategy": "no",
            "logging_steps": max(1, args.max_steps // 20),
            "report_to": "none",
            "run_name": f"{name} training",
            "disable_tqdm": False,  # transformers would turn its bar off, as its logging is quiet here
        }
        trained = train_reward_model(
            model=config.model,
            data=paths["train"],
            output_dir=model_dir,
            callbacks=[] if watch is None else [watch],
            **run,
            **config.training,
        )
    _score_test(config, args, folder / "model", paths["test"], folder / "rewards.jsonl", f"{name} scoring")
    return dataclasses.replace(trained, model=str(folder / "model"))


def _score_test(config: ExperimentConfig, args: Any, model: Path, test: Path, output: Path, description: str) -> None:
    """Score the test prompts with ``model`` (written whole or not at all; a kill's temporary file is removed later)."""
    from rewardcollapse.training.run import score_file
    from rewardcollapse.training.scoring import SCORING_CHUNK

    score_file(
        model=model,
        data=test,
        output=output,
        batch_size=config.score_batch_size,
        max_length=args.max_length,
        forward_batch_size=SCORING_CHUNK,  # not the training's chunks, sized for a backward pass
        precision=args.precision,
        description=description,
    )


def _untrained_reference(config: ExperimentConfig, args: Any, paths: dict[str, Path], folder: Path) -> None:
    """Score the test prompts with the model every run starts from: the backbone and a score head seeded as theirs."""
    from transformers import set_seed

    from rewardcollapse.training.models import default_backbone, load_reward_model

    folder.joinpath(_RUN_RECORD).unlink(missing_ok=True)
    set_seed(args.seed)  # as train_reward_model seeds it before loading: the same initial score head
    network, tokenizer = load_reward_model(
        config.model or default_backbone(), model_init_kwargs=args.from_pretrained_kwargs()
    )
    with atomic_directory(folder / "model") as model_dir:
        network.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    _score_test(config, args, folder / "model", paths["test"], folder / "rewards.jsonl", "untrained model scoring")


def _header(config: ExperimentConfig, args: Any, precision: Any) -> str:
    from rewardcollapse.training.models import backbone_label

    what = "openness levels " + ", ".join(map(str, config.openness_levels)) if config.openness_levels else "the paper's"
    prompts = args.per_device_train_batch_size * args.gradient_accumulation_steps
    return (
        f"reward collapse, {what} experiment (Song et al. 2023, Section 4): one reward model per utility "
        f"({', '.join(config.utilities)}), {args.max_steps} steps of {prompts} prompts each, backbone "
        f"{backbone_label(config.model)}, {precision.describe()}"
    )


def _device_line(precision: Any) -> str:
    import torch

    if precision.device == "cuda":
        return f"device: {torch.cuda.get_device_name()}"
    capability = torch.backends.cpu.get_cpu_capability()
    return f"device: CPU, {torch.get_num_threads()} threads, {capability} kernels"


def run_experiment(config: ExperimentConfig, output_dir: str | Path) -> ExperimentResult:
    """Run (or resume) the experiment of :class:`ExperimentConfig` in ``output_dir``; return what it found.

    Progress goes to the ``rewardcollapse`` logger (what runs, on what, about how long; which runs are reused) and
    to one progress bar per utility.

    Returns
    -------
    ExperimentResult
        Per utility a :class:`UtilityResult` (collapse index, its verdict, per-group diagnostics, the pairwise
        accuracy of the model and of its utility's exact optimum, whether the run was reused, the rewards file);
        the paths written (figure, reports, configuration, data); the precision and the seconds taken.
    """
    args, precision = _checked(config)
    with locked_output_folder(output_dir, "output_dir") as output:  # released when it ends, however: a rerun resumes
        return _run_in(config, args, precision, output)


def _run_in(config: ExperimentConfig, args: Any, precision: Any, output: Path) -> ExperimentResult:
    """The work of :func:`run_experiment` once its output folder is checked and held."""
    from rewardcollapse.training.models import quiet_transformers

    write_text_atomic(output / "config.yaml", config.to_yaml())
    started = time.perf_counter()
    _log.info(_header(config, args, precision))
    _log.info(_device_line(precision))
    with quiet_transformers():
        paths, reused = _build_data(config, output / "data")
        _log.info(
            "data: %s %s",
            "reusing the dataset built earlier with the same settings in" if reused else "built",
            paths["train"].parent,
        )
        results, references, estimate = _run_utilities(config, args, precision, paths, output / "runs", started)
    with atomic_path(output / "rewards.png") as figure:
        targets = next(iter(results.values())).diagnosis.targets  # every run diagnoses the same test prompts
        plot_experiment(results, targets, config.openness_levels, figure)
    curves = output / "collapse_over_training.png"
    if any(result.curve for result in results.values()):
        with atomic_path(curves) as figure:
            plot_curves(results, references, figure)
    else:
        curves.unlink(missing_ok=True)
    result = ExperimentResult(
        utilities=results,
        references=references,
        figure=output / "rewards.png",
        curves_figure=curves if curves.exists() else None,
        report_md=output / "report.md",
        report_json=output / "report.json",
        config=output / "config.yaml",
        data=paths["train"].parent,
        precision=precision.name,
        seconds=time.perf_counter() - started,
        estimated_seconds=estimate,
    )
    write_text_atomic(result.report_md, markdown_report(results, references, config, args.max_steps))
    write_text_atomic(result.report_json, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _checked(config: ExperimentConfig) -> tuple[RankingRewardConfig, Precision]:
    """Check every setting before any work; the training arguments and the precision they resolve to."""
    from rewardcollapse.core import utility
    from rewardcollapse.training.models import check_model_source

    config.__post_init__()  # again: a caller (the command line) may have changed fields since
    check_levels(config.openness_levels, "openness_levels")
    for spec in config.utilities:
        if spec not in _PER_PROMPT:
            try:
                utility(spec)  # fail before any training on a bad spec
            except ValueError as error:
                raise InputValueError(f"`utilities`: {error}") from error
    args = config.training_arguments()
    if config.model is not None:
        check_model_source(config.model)
    return args, args.chosen_precision()  # resolved once, with its true reason


def _run_utilities(
    config: ExperimentConfig,
    args: RankingRewardConfig,
    precision: Precision,
    paths: dict[str, Path],
    runs: Path,
    started: float,
) -> tuple[dict[str, UtilityResult], dict[str, RankedMeasures], float | None]:
    """Train (or reuse) and diagnose each utility's model, in the configuration's order; the references; the estimate.

    The estimate is of the whole run's seconds (None when everything was reused), logged before the work starts.
    """
    folders = {spec: runs / utility_slug(spec) for spec in config.utilities}
    settings = {spec: _run_settings(config, spec, precision.name) for spec in config.utilities}
    states = {spec: _finished_run(folders[spec], settings[spec]) for spec in config.utilities}
    reference = runs / _UNTRAINED
    reference_settings = _reference_settings(config, args, precision.name)
    reference_state = _finished_run(reference, reference_settings)
    to_train = [spec for spec in config.utilities if not states[spec][0]]
    curve = _curve_rows(paths["test"], config.curve_prompts, config.openness_levels)
    seconds = None
    if to_train or not reference_state[0]:
        costs = _measured_costs(config, args, paths["train"], paths["test"], precision)
        every = config.collapse_every or max(1, args.max_steps // 3)
        points = len(range(every, args.max_steps, every)) if curve else 0  # between step 0 and the last step
        steps = args.max_steps * args.gradient_accumulation_steps
        seconds = time.perf_counter() - started + 3.0  # so far, and the report's figures at the end
        seconds += len(to_train) * costs.run_seconds(steps, config.test_prompts + points * len(curve))
        if not reference_state[0]:
            seconds += costs.run_seconds(0, config.test_prompts)
        _log.info(
            "expected: about %s in all for %d model%s to train and the untrained reference (timed here: a step %.2f "
            "s, scoring %.2f s a prompt)",
            duration_text(seconds),
            len(to_train),
            "s" if len(to_train) != 1 else "",
            costs.step,
            costs.score_prompt,
        )
    if reference_state[1]:
        _log.info("untrained model (every run's step 0): %s", reference_state[1])
    if not reference_state[0]:
        _untrained_reference(config, args, paths, reference)
        record = {"settings": reference_settings}
        write_text_atomic(reference / _RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")
    results = {}
    for number, spec in enumerate(config.utilities, start=1):
        name = f"[{number}/{len(config.utilities)}] {spec}"
        finished, why = states[spec]
        if why:
            _log.info("%s: %s", name, why)
        if finished:
            recorded = json.loads((folders[spec] / _RUN_RECORD).read_text())
            results[spec] = _diagnosed(spec, folders[spec], config, None, recorded.get("curve", []), None)
            continue
        trained = _train_and_score(config, spec, paths, folders[spec], args, name, curve)
        points = []
        if curve:
            start = _scored_point(reference / "rewards.jsonl", curve, spec, config.openness_levels, 0)
            end = _scored_point(folders[spec] / "rewards.jsonl", curve, spec, config.openness_levels, trained.steps)
            points = [start, *trained.collapse, end]
        results[spec] = _diagnosed(spec, folders[spec], config, trained, points, trained.collapse_seconds)
        record = {
            "settings": settings[spec],
            "training": trained.to_dict(),
            "collapse_index": results[spec].collapse_index,
            "curve": points,
        }
        write_text_atomic(folders[spec] / _RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")
    return results, _references(reference / "rewards.jsonl", config.openness_levels), seconds


def _references(untrained: Path, levels: list[float] | None) -> dict[str, RankedMeasures]:
    """The measures of the reference rewards of the test prompts: untrained model, answer length, exact optimum."""
    diagnosis = diagnose_file(untrained, levels, utility=OPENNESS if levels is not None else PROMPT_AWARE)
    return {
        "untrained model": diagnosis.measured.measures,
        "reward = answer length": diagnosis.references["answer_length"].measures,
        "exact optimum of each kind": diagnosis.references["exact_targets"].measures,
    }


def _diagnosed(
    spec: str,
    folder: Path,
    config: ExperimentConfig,
    trained: TrainResult | None,
    curve: list[dict[str, Any]],
    curve_seconds: float | None,
) -> UtilityResult:
    """Diagnose a run's scored test prompts (``trained``: None when the run was reused)."""
    from rewardcollapse.diagnostics import collapse_verdict

    diagnosis = diagnose_file(folder / "rewards.jsonl", config.openness_levels, utility=spec)
    return UtilityResult(
        diagnosis=diagnosis,
        verdict=collapse_verdict(diagnosis.collapse_index),
        pairwise_accuracy=diagnosis.overall("pairwise_accuracy"),
        optimum_pairwise_accuracy=optimum_accuracy(diagnosis.rows, spec),
        rewards_path=folder / "rewards.jsonl",
        reused=trained is None,
        measures=diagnosis.measured.measures,
        curve=curve,
        curve_seconds=curve_seconds,
        training=trained,
    )
