"""The floating-point precision to train and score in, chosen for the machine from torch's own capability checks.

bfloat16 autocast halves the memory traffic of matrix products where the hardware computes in bf16: CUDA devices
from Ampere on, and CPUs with AMX tiles or AVX512-BF16 instructions. On other CPUs torch emulates it, about 25x
slower than float32 (measured on an AVX2 EPYC), so ``"auto"`` never picks it there and an explicit ``"bf16"`` is
refused with that reason.

Under autocast the score head runs in float32 (:func:`score_head_in_float32`): a bf16 score has 3 significant
digits, so the rewards of two close answers would tie, and the ranking loss lives on those small gaps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, get_args

import torch
from torch.nn import functional

from rewardcollapse.core.conventions import PrecisionSetting
from rewardcollapse.core.errors import InputValueError

__all__ = ["PRECISIONS", "Precision", "choose_precision", "native_cpu_bf16", "score_head_in_float32"]

PRECISIONS = get_args(PrecisionSetting)
"""Values of ``precision``: ``"auto"`` chooses among the other three for the machine."""


@dataclass(frozen=True)
class Precision:
    """A chosen precision: ``name`` (``"fp32"``, ``"bf16"``, ``"fp16"``), the ``device`` type and the ``reason``."""

    name: str
    device: str
    reason: str

    @property
    def training_arguments(self) -> dict[str, bool]:
        """The ``TrainingArguments`` flags of this precision (mixed precision through the Trainer's autocast).

        On a CPU they include ``use_cpu``, without which the Trainer refuses bf16 when a GPU is absent.
        """
        flags = {"bf16": self.name == "bf16", "fp16": self.name == "fp16"}
        return {**flags, "use_cpu": True} if self.device == "cpu" else flags

    def autocast(self) -> Any:
        """A context manager for inference in this precision (a no-op for float32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=torch.bfloat16 if self.name == "bf16" else torch.float16)

    def describe(self) -> str:
        """One line for logs: ``"bfloat16 autocast on cpu (native AVX512-BF16)"``."""
        label = {"fp32": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}[self.name]
        return f"{label} on {self.device} ({self.reason})"


def native_cpu_bf16() -> str | None:
    """The CPU feature that computes bf16 natively (``"AMX"``, ``"AVX512-BF16"``), or None where it is emulated.

    Both need ATen's AVX-512 kernels: where they are capped below it (``ATEN_CPU_CAPABILITY=avx2``, as when standing
    in for an AVX2-only CPU), bf16 runs through the AVX2 kernels, emulated and about 25x slower than float32.
    """
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return None
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if capabilities.get("amx_bf16"):
        return "AMX"
    if capabilities.get("avx512_bf16"):
        return "AVX512-BF16"
    return None


def choose_precision(requested: str = "auto", *, device: str | None = None) -> Precision:
    """Resolve ``requested`` (one of :data:`PRECISIONS`) to a precision the machine runs well.

    ``"auto"``: bf16 on a CUDA device that supports it, bf16 autocast on a CPU with native bf16 (AMX or
    AVX512-BF16), float32 otherwise. An explicit ``"bf16"`` or ``"fp16"`` the device cannot run well is an error
    naming the reason and the way out.

    Parameters
    ----------
    requested : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    device : str, optional
        ``"cuda"`` or ``"cpu"``; default: CUDA when available.

    Raises
    ------
    ValueError
        For an unknown precision, bf16 on a device without native bf16, or fp16 on a CPU.
    """
    if requested not in PRECISIONS:
        raise InputValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name()
        if requested == "auto" and bf16:
            return Precision("bf16", device, f"{name} computes bf16")
        if requested == "auto":
            return Precision("fp32", device, f"{name} has no bf16; precision='fp16' gives float16 with loss scaling")
        if requested == "bf16" and not bf16:
            raise InputValueError(f"`precision` 'bf16': {name} does not support bfloat16; use 'fp16' or 'fp32'")
        return Precision(requested, device, "asked for")
    native = native_cpu_bf16()
    if requested == "auto":
        if native:
            return Precision("bf16", device, f"native {native}")
        return Precision("fp32", device, "no native bf16 on this CPU: emulated bf16 is about 25x slower")
    if requested == "bf16" and not native:
        raise InputValueError(
            "`precision` 'bf16': this CPU has neither AMX nor AVX512-BF16, so bf16 is emulated (about 25x slower "
            "than float32; ATen kernels capped below AVX-512 count as neither); use 'fp32' or 'auto'"
        )
    if requested == "fp16":
        raise InputValueError("`precision` 'fp16' needs a CUDA device (float16 training uses loss scaling); use 'fp32'")
    return Precision(requested, device, "asked for" if requested == "fp32" else f"native {native}")


def _float32_output(module: torch.nn.Linear, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
    if output.dtype == torch.float32:
        return None
    with torch.autocast(output.device.type, enabled=False):
        bias = None if module.bias is None else module.bias.float()
        return functional.linear(inputs[0].float(), module.weight.float(), bias)


def score_head_in_float32(model: torch.nn.Module) -> torch.nn.Module:
    """Make the model's score head compute in float32 under autocast; return the model (idempotent).

    The score head is the last ``nn.Linear`` with ``config.num_labels`` outputs (``classifier`` in BERT-style
    models, ``score`` in decoder models). A forward hook recomputes its output from the float32 copy of its input
    whenever autocast made it lower precision, so the scores and their gradients keep float32's resolution; the
    head is a single vector product per sequence, so this costs nothing measurable.
    """
    outputs = getattr(getattr(model, "config", None), "num_labels", 1)
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == outputs]
    if not heads:
        raise InputValueError(f"no linear score head with {outputs} output(s) found in {type(model).__name__}")
    head = heads[-1]
    if not getattr(head, "_rewardcollapse_float32", False):
        head.register_forward_hook(_float32_output)
        head._rewardcollapse_float32 = True
    return model
