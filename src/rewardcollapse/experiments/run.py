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
from rewardcollapse.experiments.report import markdown_report, plot_experiment
from rewardcollapse.settings import MAX_LENGTH, ModelInput, RankingRewardOptions, field_help

if TYPE_CHECKING:
    from rewardcollapse.training import RankingRewardConfig, TrainResult
    from rewardcollapse.training.precision import Precision

__all__ = [
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
    training: dict[str, Any] = field(
        default_factory=lambda: dict(PAPER_TRAINING),
        metadata={"help": "RankingRewardConfig fields for every model, e.g. max_steps, learning_rate, precision."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.score_batch_size, "score_batch_size")
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
        }


@dataclass(frozen=True, eq=False)
class ExperimentResult:
    """What :func:`run_experiment` found and wrote; :meth:`to_dict` is ``report.json``."""

    utilities: dict[str, UtilityResult]
    figure: Path
    report_md: Path
    report_json: Path
    config: Path
    data: Path
    """The dataset's folder."""
    precision: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values: paths as text, each utility as :meth:`UtilityResult.to_dict`."""
        paths = ("figure", "report_md", "report_json", "config", "data")
        return {
            "utilities": {spec: result.to_dict() for spec, result in self.utilities.items()},
            **{name: str(getattr(self, name)) for name in paths},
            "precision": self.precision,
            "seconds": self.seconds,
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


def _step_seconds(config: ExperimentConfig, args: Any, train_path: Path, precision: Any) -> float:
    """Seconds of one training step's forward and backward passes here: the fastest of three after a warm-up."""
    import torch

    from rewardcollapse.training.collator import RankingCollator
    from rewardcollapse.training.models import (
        TRAINING_DTYPE,
        default_backbone,
        fit_max_length,
        load_reward_model,
        resolve_sequence_format,
    )
    from rewardcollapse.training.scoring import score_batch

    with train_path.open() as handle:
        rows = [json.loads(next(handle)) for _ in range(args.per_device_train_batch_size)]
    model, tokenizer = load_reward_model(config.model or default_backbone(), dtype=TRAINING_DTYPE)
    model.get_input_embeddings().weight.requires_grad_(not args.freeze_word_embeddings)
    device = torch.device(precision.device)
    model.to(device).train()
    fmt = resolve_sequence_format(args.sequence_format, model)
    batch = RankingCollator(tokenizer, max_length=fit_max_length(model, args.max_length), sequence_format=fmt)(rows)
    tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        with precision.autocast():
            rewards = score_batch(model, tensors, forward_batch_size=args.forward_batch_size)
        rewards.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


def _estimate_minutes(config: ExperimentConfig, args: Any, step_seconds: float, runs: int) -> float:
    """Minutes for ``runs`` utilities: their steps, plus scoring (a forward pass is about a third of a step).

    The forward and backward passes get 10% more for the optimiser and the Trainer's own work, and each model 5 s to
    load and save (both measured on the demo configuration).
    """
    steps = args.max_steps * args.gradient_accumulation_steps
    scoring = config.test_prompts / args.per_device_train_batch_size / 3
    return runs * (1.1 * step_seconds * (steps + scoring) + 5.0) / 60


def _train_and_score(
    config: ExperimentConfig, spec: str, paths: dict[str, Path], folder: Path, args: Any, name: str
) -> TrainResult:
    """Train one utility's model and score the test prompts; every final file is written whole or not at all."""
    from rewardcollapse.training.run import score_file, train_reward_model

    for stale in (folder / _RUN_RECORD, folder / "rewards.jsonl"):
        stale.unlink(missing_ok=True)  # the record first: a kill from here on leaves an unfinished run
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
            model=config.model, data=paths["train"], output_dir=model_dir, **run, **config.training
        )
    score_file(  # writes whole or not at all, and a kill's temporary file is removed by the next score
        model=folder / "model",
        data=paths["test"],
        output=folder / "rewards.jsonl",
        batch_size=config.score_batch_size,
        max_length=args.max_length,
        forward_batch_size=args.forward_batch_size,
        precision=args.precision,
        description=f"{name} scoring",
    )
    return dataclasses.replace(trained, model=str(folder / "model"))


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
        results = _run_utilities(config, args, precision, paths, output / "runs")
    with atomic_path(output / "rewards.png") as figure:
        targets = next(iter(results.values())).diagnosis.targets  # every run diagnoses the same test prompts
        plot_experiment(results, targets, config.openness_levels, figure)
    result = ExperimentResult(
        utilities=results,
        figure=output / "rewards.png",
        report_md=output / "report.md",
        report_json=output / "report.json",
        config=output / "config.yaml",
        data=paths["train"].parent,
        precision=precision.name,
        seconds=time.perf_counter() - started,
    )
    write_text_atomic(result.report_md, markdown_report(results, config, args.max_steps))
    write_text_atomic(result.report_json, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _checked(config: ExperimentConfig) -> tuple[RankingRewardConfig, Precision]:
    """Check every setting before any work; the training arguments and the precision they resolve to."""
    from rewardcollapse.core import utility
    from rewardcollapse.training.models import check_model_source
    from rewardcollapse.training.precision import choose_precision

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
    return args, choose_precision(args.precision, device="cpu" if args.use_cpu else None)


def _run_utilities(
    config: ExperimentConfig, args: RankingRewardConfig, precision: Precision, paths: dict[str, Path], runs: Path
) -> dict[str, UtilityResult]:
    """Train (or reuse) and diagnose each utility's model, in the configuration's order."""
    folders = {spec: runs / utility_slug(spec) for spec in config.utilities}
    settings = {spec: _run_settings(config, spec, precision.name) for spec in config.utilities}
    states = {spec: _finished_run(folders[spec], settings[spec]) for spec in config.utilities}
    to_train = [spec for spec in config.utilities if not states[spec][0]]
    if to_train:
        minutes = _estimate_minutes(config, args, _step_seconds(config, args, paths["train"], precision), len(to_train))
        _log.info(
            "expected: %s for %d model%s to train (from a step timed here)",
            f"about {minutes:.0f} min" if minutes >= 1 else "under a minute",
            len(to_train),
            "s" if len(to_train) > 1 else "",
        )
    results = {}
    for number, spec in enumerate(config.utilities, start=1):
        name = f"[{number}/{len(config.utilities)}] {spec}"
        finished, why = states[spec]
        if why:
            _log.info("%s: %s", name, why)
        trained = None if finished else _train_and_score(config, spec, paths, folders[spec], args, name)
        results[spec] = _diagnosed(spec, folders[spec], config.openness_levels, trained)
        if trained is not None:
            record = {
                "settings": settings[spec],
                "training": trained.to_dict(),
                "collapse_index": results[spec].collapse_index,
            }
            write_text_atomic(folders[spec] / _RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")
    return results


def _diagnosed(spec: str, folder: Path, levels: list[float] | None, trained: TrainResult | None) -> UtilityResult:
    """Diagnose a run's scored test prompts (``trained``: None when the run was reused)."""
    from rewardcollapse.diagnostics import collapse_verdict

    diagnosis = diagnose_file(folder / "rewards.jsonl", levels)
    return UtilityResult(
        diagnosis=diagnosis,
        verdict=collapse_verdict(diagnosis.collapse_index),
        pairwise_accuracy=diagnosis.overall("pairwise_accuracy"),
        optimum_pairwise_accuracy=optimum_accuracy(diagnosis.rows, spec),
        rewards_path=folder / "rewards.jsonl",
        reused=trained is None,
        training=trained,
    )
