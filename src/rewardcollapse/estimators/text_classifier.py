r"""Openness of a prompt from its text: logistic regression on mean-pooled sentence embeddings.

A prompt's openness decides its utility in prompt-aware training (:mod:`rewardcollapse.core.openness`), but new
prompts come without one. This estimator learns it from labelled prompts, in two standard steps:

1. **Embedding.** Each prompt goes through a sentence encoder (default: the shipped all-MiniLM-L6-v2); the token
   states are averaged over the attention mask and the mean is scaled to unit length, the pooling that
   all-MiniLM-L6-v2 was trained with (:func:`embed_prompts`).
2. **Classifier.** The embeddings are standardised (each dimension to mean 0 and variance 1 on the training prompts)
   and a scikit-learn ``LogisticRegression`` (L2 penalty, inverse strength ``C``) separates open prompts
   (``openness >= 0.5``, the threshold of prompt-aware training) from closed ones. The predicted openness of a
   prompt is the probability that it is open,

   .. math::

       \hat o(p) = \sigma\big(w^\top (e(p) - \mu) / s + b\big) \in (0, 1),

   which a user may threshold (open or closed utility) or feed as it is to the continuous family
   (``utility="openness"``).

A fitted :class:`OpennessClassifier` is saved as plain JSON (the encoder's name or path, :math:`\mu`, :math:`s`,
:math:`w`, :math:`b` and the held-out metrics), never as a pickle, and predicts with numpy alone once the prompts
are embedded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardcollapse._files import check_output_folder, write_text_atomic
from rewardcollapse.core.checks import check_openness, check_positive_int, openness_problem
from rewardcollapse.core.conventions import OPEN_AT
from rewardcollapse.core.errors import InputValueError

__all__ = ["OpennessClassifier", "embed_prompts", "fit_openness_classifier", "prompt_text", "prompts_and_openness"]

FILE_NAME = "openness_classifier.json"


def prompt_text(prompt: Any, *, where: str = "prompt") -> str:
    """A prompt as text: a string as it is, a chat (list of ``{"role", "content"}``) as its contents, one per line."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
        return "\n".join(m["content"] for m in prompt)
    raise InputValueError(
        f"{where} must be a string or a list of chat messages with string 'content', got {prompt!r:.80}"
    )


def prompts_and_openness(rows: Sequence[dict[str, Any]], *, source: str = "data", labels: bool | None = None):
    """Prompt texts and openness labels of data rows (for example ``read_table(path).to_list()``).

    Parameters
    ----------
    rows : sequence of dict
        Rows with a ``prompt`` (string or chat) and, for fitting, an ``openness`` in [0, 1].
    source : str
        Name of the data in error messages.
    labels : bool or None
        True: every row must have an openness; False: openness is not read; None: read it when every row has one.

    Returns
    -------
    (list of str, numpy.ndarray or None)
        The prompts and their openness (None when not read).
    """
    prompts = []
    for row, values in enumerate(rows):
        if "prompt" not in values:
            raise InputValueError(f"{source}: row {row} has no 'prompt' field (it has {sorted(values)})")
        prompts.append(prompt_text(values["prompt"], where=f"{source}: row {row}, field 'prompt',"))
    openness = [values.get("openness") for values in rows]
    if labels is False or (labels is None and any(o is None for o in openness)):
        return prompts, None
    for row, o in enumerate(openness):
        problem = openness_problem(o, f"{source}: row {row}, field 'openness'")
        if problem is not None:
            raise InputValueError(problem)
    return prompts, np.asarray(openness, dtype=float)


BATCH_SIZE = 64
"""Prompts per forward pass of the sentence encoder (fit and predict)."""

MAX_LENGTH = 128
"""Tokens per prompt for the sentence encoder; saved with a fitted classifier, so predict reads prompts the same way."""

TEST_FRACTION = 0.2
"""Share of the labelled prompts held out to measure a fitted classifier's accuracy."""

INVERSE_L2 = 1.0
"""Inverse L2 strength ``C`` of the logistic regression (scikit-learn's default)."""


def embed_prompts(
    prompts: Sequence[str], *, encoder: str | None = None, batch_size: int = BATCH_SIZE, max_length: int = MAX_LENGTH
) -> np.ndarray:
    """Unit-length mean-pooled embeddings ``(len(prompts), hidden)`` of a sentence encoder (float64).

    Parameters
    ----------
    prompts : sequence of str
        The texts.
    encoder : str, optional
        Hub name or path of a ``transformers`` encoder; None for the shipped all-MiniLM-L6-v2.
    batch_size : int
        Prompts per forward pass; they are sorted by length first so each batch pads little.
    max_length : int
        Tokens per prompt; longer prompts are cut.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    from rewardcollapse.training.models import default_backbone, loading_model

    check_positive_int(batch_size, "batch_size")
    if max_length < 2:
        raise InputValueError(f"`max_length` must be >= 2, got {max_length}")
    name = encoder or default_backbone()
    with loading_model(name, "encoder"):
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.zeros((len(prompts), model.config.hidden_size))
    with torch.inference_mode():
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="embedding prompts", unit="batch", disable=len(starts) < 4):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [prompts[i] for i in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            states = model(**batch).last_hidden_state  # (batch, tokens, hidden)
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[chunk] = torch.nn.functional.normalize(mean, dim=-1).double().cpu().numpy()
    return out


@dataclass(frozen=True)
class OpennessClassifier:
    """A fitted prompt-openness classifier (module docstring); build with :func:`fit_openness_classifier`.

    Attributes
    ----------
    encoder : str or None
        Hub name or path of the sentence encoder; None for the shipped all-MiniLM-L6-v2 (so a saved classifier
        finds it wherever the package is installed).
    max_length : int
        Tokens per prompt when embedding.
    mean, scale : numpy.ndarray
        Standardisation of the embeddings, ``(hidden,)``.
    coef : numpy.ndarray
        Logistic-regression weights ``(hidden,)`` on the standardised embeddings.
    intercept : float
        Logistic-regression bias.
    metrics : dict
        What was measured at fitting: prompts used, held-out accuracy, log loss and the majority-class accuracy.
    """

    encoder: str | None
    max_length: int
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def openness_of_embeddings(self, embeddings) -> np.ndarray:
        """Predicted openness (probability of open) of embedded prompts ``(n, hidden)``."""
        from scipy.special import expit

        x = np.asarray(embeddings, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.coef.size:
            raise InputValueError(f"`embeddings` must be (n, {self.coef.size}), got shape {x.shape}")
        return expit((x - self.mean) / self.scale @ self.coef + self.intercept)

    def predict_openness(self, prompts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Predicted openness in (0, 1) of each prompt: the probability that it is open."""
        embeddings = embed_prompts(prompts, encoder=self.encoder, batch_size=batch_size, max_length=self.max_length)
        return self.openness_of_embeddings(embeddings)

    def save(self, directory: str | Path) -> Path:
        """Write the classifier as JSON to ``directory/openness_classifier.json`` and return the path."""
        path = check_output_folder(directory, "output")
        state = {
            "format": "rewardcollapse.OpennessClassifier/1",
            "encoder": self.encoder,
            "max_length": self.max_length,
            "intercept": self.intercept,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "metrics": self.metrics,
        }
        return write_text_atomic(path / FILE_NAME, json.dumps(state, indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> OpennessClassifier:
        """Read a classifier written by :meth:`save` (a directory, or the JSON file itself)."""
        path = Path(directory)
        path = path / FILE_NAME if path.is_dir() else path
        if not path.is_file():
            raise InputValueError(
                f"no openness classifier at {str(path)!r}; fit one with `rewardcollapse openness fit`"
            )
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise InputValueError(f"{path} is not valid JSON ({error}); fit the classifier again") from error
        if not isinstance(state, dict) or state.get("format") != "rewardcollapse.OpennessClassifier/1":
            got = state.get("format") if isinstance(state, dict) else f"a JSON {type(state).__name__}"
            raise InputValueError(f"{path} is not an openness classifier file (format {got!r})")
        return cls(**_checked_state(state, path))


def _checked_state(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The constructor arguments of a saved classifier, each checked: shapes, finite numbers, a usable encoder."""
    missing = [key for key in ("encoder", "max_length", "intercept", "mean", "scale", "coef") if key not in state]
    if missing:
        raise InputValueError(f"{path}: missing {missing}; the file is incomplete, fit the classifier again")
    encoder = state["encoder"]
    if encoder is not None and not (isinstance(encoder, str) and encoder.strip()):
        raise InputValueError(f"{path}: `encoder` must be null (the shipped MiniLM) or a model name, got {encoder!r}")
    max_length = state["max_length"]
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise InputValueError(f"{path}: `max_length` must be an integer >= 2, got {max_length!r}")
    vectors = {}
    for key in ("mean", "scale", "coef"):
        value = state[key]
        if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
            raise InputValueError(f"{path}: `{key}` must be a non-empty list of finite numbers")
        vectors[key] = np.asarray(value, dtype=float)
    sizes = {key: v.size for key, v in vectors.items()}
    if len(set(sizes.values())) != 1:
        raise InputValueError(f"{path}: mean, scale and coef must have one length (the embedding size), got {sizes}")
    if not (vectors["scale"] > 0).all():
        raise InputValueError(f"{path}: every `scale` entry must be > 0 (a standard deviation)")
    if not _is_number(state["intercept"]):
        raise InputValueError(f"{path}: `intercept` must be a finite number, got {state['intercept']!r}")
    metrics = state.get("metrics", {})
    return {
        "encoder": encoder,
        "max_length": max_length,
        "intercept": float(state["intercept"]),
        **vectors,
        "metrics": metrics if isinstance(metrics, dict) else {},
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fit_openness_classifier(
    prompts: Sequence[str],
    openness,
    *,
    encoder: str | None = None,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
    c: float = INVERSE_L2,
    max_length: int = MAX_LENGTH,
    batch_size: int = BATCH_SIZE,
) -> OpennessClassifier:
    """Fit the prompt-openness classifier on labelled prompts and measure it on a held-out part.

    Parameters
    ----------
    prompts : sequence of str
        Prompt texts.
    openness : array_like
        Their openness in [0, 1]; prompts with ``openness >= 0.5`` are the open class.
    encoder : str, optional
        Sentence encoder (Hub name or path); None for the shipped all-MiniLM-L6-v2.
    test_fraction : float
        Share of the prompts held out (stratified by class) to measure accuracy; 0 fits on all of them and measures
        nothing. The saved model is the one fitted without the held-out prompts.
    seed : int
        Seeds the held-out split and the solver.
    c : float
        Inverse L2 penalty strength of the logistic regression (scikit-learn's ``C``).
    max_length, batch_size
        Passed to :func:`embed_prompts`.

    Returns
    -------
    OpennessClassifier
        With ``metrics``: ``train_prompts``, ``test_prompts``, ``train_accuracy`` and, when prompts were held out,
        ``test_accuracy``, ``test_log_loss`` and ``majority_accuracy`` (always guessing the larger class).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    labels_in = np.asarray(openness, dtype=float)
    if labels_in.shape != (len(prompts),):
        raise InputValueError(
            f"`openness` must give one value per prompt ({len(prompts)}), got shape {labels_in.shape}"
        )
    for position, value in enumerate(labels_in):
        check_openness(float(value), f"`openness[{position}]`")
    if not 0 <= test_fraction < 1:
        raise InputValueError(f"`test_fraction` must be in [0, 1), got {test_fraction}")
    if not c > 0:
        raise InputValueError(f"`c` must be > 0, got {c}")
    labels = (labels_in >= OPEN_AT).astype(int)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 2:
        raise InputValueError(
            f"fitting needs at least 2 open and 2 closed prompts, got {counts[1]} open, {counts[0]} closed"
        )
    embeddings = embed_prompts(prompts, encoder=encoder, batch_size=batch_size, max_length=max_length)
    indices = np.arange(len(prompts))
    if test_fraction > 0:
        train, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    else:
        train, test = indices, indices[:0]
    # StandardScaler gives a constant embedding dimension scale 1 (not 0), so the saved division stays finite.
    scaler = StandardScaler().fit(embeddings[train])
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
        scaler.transform(embeddings[train]), labels[train]
    )
    metrics: dict[str, Any] = {
        "train_prompts": int(train.size),
        "test_prompts": int(test.size),
        "train_accuracy": float(model.score(scaler.transform(embeddings[train]), labels[train])),
    }
    if test.size:
        probability = model.predict_proba(scaler.transform(embeddings[test]))[:, 1]
        metrics["test_accuracy"] = float(accuracy_score(labels[test], probability >= OPEN_AT))
        metrics["test_log_loss"] = float(log_loss(labels[test], probability, labels=[0, 1]))
        metrics["majority_accuracy"] = float(max(labels[test].mean(), 1 - labels[test].mean()))
    return OpennessClassifier(
        encoder=encoder,
        max_length=max_length,
        mean=scaler.mean_.astype(float),
        scale=scaler.scale_.astype(float),
        coef=model.coef_[0].astype(float),
        intercept=float(model.intercept_[0]),
        metrics=metrics,
    )
