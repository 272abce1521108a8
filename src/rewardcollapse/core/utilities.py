r"""Utility functions U of the ranking objective, defined once for numpy arrays and torch tensors.

A reward model trained on a ranking maximises :math:`\sum_{i \succ j} U(r_i - r_j)` with :math:`U` increasing and
concave. The paper (Song et al., 2023, Sections 2 and 3) defines :math:`U` for :math:`x > 0`; training sees negative
differences too, so every utility here takes ``eps >= 0``:

.. math::

    U_\varepsilon(x) = \begin{cases} U(x + \varepsilon) - U(\varepsilon) & x \ge 0 \\
                                      U'(\varepsilon)\, x & x < 0 \end{cases}

which is increasing, concave and :math:`C^1` on the whole real line. With ``eps = 0`` the power and log families are
extended-value functions: :math:`-\infty` for :math:`x < 0`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import special

from rewardcollapse.core.checks import check_eps
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.core.laws import symmetric_law, two_point_law

__all__ = ["UTILITY_SPECS", "Utility", "UtilityFamily", "utility", "utility_from_family"]

UTILITY_SPECS = ("x", "log", "-1/x", "x^a", "-x^-a", "logsigmoid")
"""The built-in utility families, as accepted by :func:`utility`."""


class _NumpyOps:
    """The handful of elementwise operations the utility formulas need, for numpy arrays."""

    log = staticmethod(np.log)
    where = staticmethod(np.where)
    sigmoid = staticmethod(special.expit)
    abs = staticmethod(np.abs)
    expm1 = staticmethod(np.expm1)

    @staticmethod
    def softplus(x):
        return np.logaddexp(0.0, x)

    @staticmethod
    def clamp_min(x, low):
        return np.maximum(x, low)

    @staticmethod
    def full_like(x, value):
        return np.full_like(x, value, dtype=float)

    @staticmethod
    def scalar_like(x, value):
        return np.float64(value)


class _TorchOps:
    """The same operations for torch tensors; torch is imported only when a tensor arrives."""

    def __init__(self) -> None:
        import torch

        self.log = torch.log
        self.where = torch.where
        self.abs = torch.abs
        self.expm1 = torch.expm1
        self.sigmoid = torch.sigmoid
        self.softplus = torch.nn.functional.softplus
        self._torch = torch

    def clamp_min(self, x, low):
        return self._torch.clamp(x, min=low)

    def full_like(self, x, value):
        return self._torch.full_like(x, value)

    def scalar_like(self, x, value):
        # A fill on x's device, not new_tensor: copying a host scalar to a GPU would wait for the device.
        return self._torch.full((), value, dtype=x.dtype, device=x.device)


_TORCH_OPS: _TorchOps | None = None


def _ops_for(x: Any):
    """Return the operations namespace for ``x`` without importing torch for numpy input."""
    global _TORCH_OPS
    if type(x).__module__.partition(".")[0] == "torch":
        if _TORCH_OPS is None:
            _TORCH_OPS = _TorchOps()
        return _TORCH_OPS
    return _NumpyOps


# Each family is three formulas (value, first and second derivative) written once against an ops namespace.
# They are evaluated on x > 0 for the power and log families and on the whole line for x and logsigmoid.
def _linear(x, ops, p):
    return x


def _linear_d1(x, ops, p):
    return ops.full_like(x, 1.0)


def _linear_d2(x, ops, p):
    return ops.full_like(x, 0.0)


def _log(x, ops, p):
    return ops.log(x)


def _log_d1(x, ops, p):
    return 1.0 / x


def _log_d2(x, ops, p):
    return -1.0 / (x * x)


def _power(x, ops, p):
    return x ** p["a"]


def _power_d1(x, ops, p):
    return p["a"] * x ** (p["a"] - 1.0)


def _power_d2(x, ops, p):
    return p["a"] * (p["a"] - 1.0) * x ** (p["a"] - 2.0)


def _inverse_power(x, ops, p):
    return -(x ** -p["a"])


def _inverse_power_d1(x, ops, p):
    return p["a"] * x ** (-p["a"] - 1.0)


def _inverse_power_d2(x, ops, p):
    return -p["a"] * (p["a"] + 1.0) * x ** (-p["a"] - 2.0)


def _logsigmoid(x, ops, p):
    return -ops.softplus(-p["scale"] * x)


def _logsigmoid_d1(x, ops, p):
    return p["scale"] * ops.sigmoid(-p["scale"] * x)


def _logsigmoid_d2(x, ops, p):
    s = p["scale"]
    return -s * s * ops.sigmoid(s * x) * ops.sigmoid(-s * x)


_Formula = Callable[[Any, Any, Mapping[str, float]], Any]


def _never(p) -> bool:
    return False


def _no_law(p) -> None:
    return None


@dataclass(frozen=True)
class UtilityFamily:
    """A family's formulas and what it owns: its closed-form limit law (eps = 0) and whether it is linear.

    Each formula is ``f(x, ops, params)`` with ``ops`` numpy or torch; :func:`utility_from_family` makes the
    :class:`Utility`. The built-in families, the openness family and custom callables are all made this way.
    """

    value: _Formula
    d1: _Formula
    d2: _Formula
    whole_line: bool  # defined for x < 0 without the eps extension
    value_at_zero: float  # U(0+)
    slope_at_zero: float  # U'(0+)
    limit_law: Callable[[Mapping[str, Any]], Any] = _no_law  # params -> frozen law with atoms, or None
    linear: Callable[[Mapping[str, Any]], bool] = _never  # params -> whether U is linear


_FAMILIES: dict[str, UtilityFamily] = {
    "x": UtilityFamily(_linear, _linear_d1, _linear_d2, True, 0.0, 1.0, lambda p: two_point_law(), lambda p: True),
    "log": UtilityFamily(_log, _log_d1, _log_d2, False, -math.inf, math.inf, lambda p: symmetric_law(0.5)),
    "x^a": UtilityFamily(_power, _power_d1, _power_d2, False, 0.0, math.inf, lambda p: symmetric_law((1 - p["a"]) / 2)),
    "-x^-a": UtilityFamily(
        _inverse_power,
        _inverse_power_d1,
        _inverse_power_d2,
        False,
        -math.inf,
        math.inf,
        lambda p: symmetric_law((1 + p["a"]) / 2, uniform=True),
    ),
    "logsigmoid": UtilityFamily(_logsigmoid, _logsigmoid_d1, _logsigmoid_d2, True, -math.log(2.0), math.nan),
}


@dataclass(frozen=True)
class Utility:
    r"""An increasing concave utility :math:`U`, evaluated on numpy arrays or torch tensors alike.

    Build one with :func:`utility`. Calling it evaluates :math:`U_\varepsilon`; :meth:`derivative` and
    :meth:`second_derivative` give :math:`U_\varepsilon'` and :math:`U_\varepsilon''`.

    Attributes
    ----------
    name : str
        Canonical spec, e.g. ``"x^0.5"``, ``"-1/x"`` or ``"logsigmoid(scale=2)"``.
    family : str
        One of :data:`UTILITY_SPECS` or ``"custom"``.
    params : Mapping[str, float]
        Family parameters: ``a`` for the power families, ``scale`` for logsigmoid.
    eps : float
        Shift of the whole-line extension (module docstring); 0 keeps the paper's :math:`U`.
    """

    name: str
    family: str
    params: Mapping[str, float]
    eps: float
    _value: _Formula = field(repr=False, compare=False)
    _d1: _Formula = field(repr=False, compare=False)
    _d2: _Formula = field(repr=False, compare=False)
    _whole_line: bool = field(repr=False, compare=False)
    _value_at_zero: float = field(repr=False, compare=False)
    _slope_at_zero: float = field(repr=False, compare=False)
    _limit_law: Callable[[Mapping[str, Any]], Any] = field(repr=False, compare=False, default=_no_law)
    _linear: Callable[[Mapping[str, Any]], bool] = field(repr=False, compare=False, default=_never)

    def __call__(self, x):
        r"""Evaluate :math:`U_\varepsilon(x)` elementwise."""
        return self._evaluate(x, self._value, 0)

    def derivative(self, x):
        r"""Evaluate :math:`U_\varepsilon'(x)` elementwise."""
        return self._evaluate(x, self._d1, 1)

    def second_derivative(self, x):
        r"""Evaluate :math:`U_\varepsilon''(x)` elementwise."""
        return self._evaluate(x, self._d2, 2)

    @property
    def is_barrier(self) -> bool:
        r"""Whether :math:`U(0^+) = -\infty` or :math:`U'(0^+) = \infty`, so optimal rewards never tie.

        Such utilities keep every ranked pair strictly apart at the optimum; the others (``x``, ``logsigmoid``,
        any ``eps > 0``) can tie answers, e.g. the atoms at 0 and 1 of logsigmoid.
        """
        return self.eps == 0 and (self._value_at_zero == -math.inf or self._slope_at_zero == math.inf)

    @property
    def is_linear(self) -> bool:
        """Whether :math:`U` is linear (``"x"``, or openness 0), so the optimum is a linear programme's vertex."""
        return bool(self._linear(self.params))

    def closed_form_limit(self) -> Any | None:
        """The family's closed-form limit law of the optimal rewards (eps = 0 only), or None where it has none.

        Computed laws (any ``eps > 0``, logsigmoid, callables) come from
        :func:`rewardcollapse.core.limits.limit_distribution`.
        """
        return None if self.eps != 0 else self._limit_law(self.params)

    def _nonnegative(self, x: np.ndarray, order: int) -> np.ndarray:
        r""":math:`U_\varepsilon^{(order)}` on a numpy array known to be >= 0: the solvers' fast path."""
        formula = (self._value, self._d1, self._d2)[order]
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            if self.eps == 0:
                return formula(x, _NumpyOps, self.params)
            inside = formula(x + self.eps, _NumpyOps, self.params)
            return inside - self._value(np.float64(self.eps), _NumpyOps, self.params) if order == 0 else inside

    def _evaluate(self, x, formula: _Formula, order: int):
        ops = _ops_for(x)
        if ops is not _NumpyOps:
            return self._evaluate_ops(x, formula, order, ops)
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return self._evaluate_ops(x, formula, order, ops)

    def _evaluate_ops(self, x, formula: _Formula, order: int, ops):
        p = self.params
        if self.eps > 0:
            eps = self.eps
            # Evaluate the shifted formula only where x >= 0 (clamped input), so neither branch makes NaN or inf
            # that a torch backward pass through `where` would turn into NaN gradients.
            # U(eps) and U'(eps) are evaluated with the same ops, so parameters may be tensors that broadcast
            # against x (one exponent per prompt in the training loss).
            shifted = ops.clamp_min(x, 0.0) + eps
            if all(isinstance(value, float) for value in p.values()):
                # Plain parameters: U(eps) and U'(eps) are numbers, computed on the host (no device round trip).
                at_eps, eps_ops = np.float64(eps), _NumpyOps
            else:
                at_eps, eps_ops = ops.scalar_like(x, eps), ops
            slope = self._d1(at_eps, eps_ops, p)
            value_at_eps = self._value(at_eps, eps_ops, p) if order == 0 else None
            if eps_ops is _NumpyOps:
                slope = float(slope)
                value_at_eps = None if value_at_eps is None else float(value_at_eps)
            if order == 0:
                return ops.where(x >= 0, formula(shifted, ops, p) - value_at_eps, slope * x)
            if order == 1:
                return ops.where(x >= 0, formula(shifted, ops, p), slope)
            return ops.where(x >= 0, formula(shifted, ops, p), ops.full_like(x, 0.0))
        if self._whole_line:
            return formula(x, ops, p)
        # eps = 0: the paper's U on x >= 0 and -inf (value) outside, the concave extended-value convention.
        inside = formula(ops.clamp_min(x, 0.0), ops, p)
        outside = (-math.inf, math.inf, -math.inf)[order]
        return ops.where(x >= 0, inside, ops.full_like(x, outside))


def _number(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputValueError(f"utility spec {spec!r}: cannot read the exponent {text!r} as a number") from None


def _format(value: float) -> str:
    return f"{value:g}"


_EXPONENT_SPECS = (
    (re.compile(r"x\^(?P<a>[0-9.eE+-]+)"), "x^a"),
    (re.compile(r"-x\^\(?-(?P<a>[0-9.eE+-]+)\)?"), "-x^-a"),
)


def _parse_spec(spec: str, a: float | None) -> tuple[str, float | None]:
    """Split a spec string into its family and the exponent it names, if any."""
    text = spec.replace(" ", "").replace("**", "^")
    if text in ("x", "log", "logsigmoid", "x^a", "-x^-a"):
        return text, a
    if text == "-1/x":
        text = "-x^-1"
    for pattern, family in _EXPONENT_SPECS:
        match = pattern.fullmatch(text)
        if match:
            exponent = _number(match["a"], spec)
            if a is not None and a != exponent:
                raise InputValueError(
                    f"utility spec {spec!r} names a = {exponent:g} but `a` = {a} was passed; give one"
                )
            return family, exponent
    known = ", ".join(repr(s) for s in ("x", "log", "-1/x", "x^0.5", "-x^-0.5", "logsigmoid"))
    raise InputValueError(f"unknown utility spec {spec!r}; expected one of {known} or a callable with its derivatives")


def _builtin(family: str, params: dict[str, float], eps: float) -> Utility:
    f = _FAMILIES[family]
    if family == "x^a":
        name = f"x^{_format(params['a'])}"
    elif family == "-x^-a":
        name = "-1/x" if params["a"] == 1.0 else f"-x^-{_format(params['a'])}"
    elif family == "logsigmoid":
        name = "logsigmoid" if params["scale"] == 1.0 else f"logsigmoid(scale={_format(params['scale'])})"
        # U'(0) = scale/2 for logsigmoid, a finite slope, so ties and atoms are possible.
        f = dataclasses.replace(f, slope_at_zero=params["scale"] / 2)
    else:
        name = family
    if eps > 0:
        name = f"{name}[eps={_format(eps)}]"
    return utility_from_family(name, family, params, eps, f)


def utility_from_family(name: str, family: str, params: Mapping[str, Any], eps: float, f: UtilityFamily) -> Utility:
    """The Utility named ``name`` of a family's formulas: the one place its private fields are filled in."""
    return Utility(
        name=name,
        family=family,
        params=MappingProxyType(dict(params)),
        eps=eps,
        _value=f.value,
        _d1=f.d1,
        _d2=f.d2,
        _whole_line=f.whole_line,
        _value_at_zero=f.value_at_zero,
        _slope_at_zero=f.slope_at_zero,
        _limit_law=f.limit_law,
        _linear=f.linear,
    )


def _custom(
    fn: Callable[[Any], Any],
    derivative: Callable[[Any], Any] | None,
    second_derivative: Callable[[Any], Any] | None,
    name: str | None,
    eps: float,
) -> Utility:
    if derivative is None or second_derivative is None:
        raise InputValueError(
            "a callable utility needs `derivative` and `second_derivative`, e.g. "
            "utility(np.log1p, derivative=lambda x: 1 / (1 + x), second_derivative=lambda x: -1 / (1 + x) ** 2)"
        )
    for label, g in (("derivative", derivative), ("second_derivative", second_derivative)):
        if not callable(g):
            raise InputTypeError(f"`{label}` must be callable, got {type(g).__name__}")
    grid = np.geomspace(1e-3, 1.0, 200)
    with np.errstate(all="ignore"):
        values = np.asarray(fn(grid), dtype=float)
        slopes = np.asarray(derivative(grid), dtype=float)
        curvatures = np.asarray(second_derivative(grid), dtype=float)
    label = name or getattr(fn, "__name__", "custom")
    for what, arr in (("value", values), ("derivative", slopes), ("second_derivative", curvatures)):
        if arr.shape != grid.shape or not np.all(np.isfinite(arr)):
            raise InputValueError(
                f"utility {label!r}: `{what}` must return finite values of the input's shape on (0, 1]"
            )
    with np.errstate(all="ignore"):
        at_zero = float(np.ravel(np.asarray(fn(np.array([0.0])), dtype=float))[0])
        slope_at_zero = float(np.ravel(np.asarray(derivative(np.array([0.0])), dtype=float))[0])
    if np.any(slopes <= 0):
        raise InputValueError(f"utility {label!r} is not increasing on (0, 1]: its derivative is <= 0 somewhere")
    if np.any(curvatures > 1e-12 * np.maximum(1.0, np.abs(slopes))) or np.any(np.diff(slopes) > 1e-9 * slopes[1:]):
        raise InputValueError(f"utility {label!r} is not concave on (0, 1]: its second derivative is > 0 somewhere")
    # The derivative must match the function: a central-difference check catches a wrong or mis-scaled derivative.
    mid = grid[1:-1]
    fd = (values[2:] - values[:-2]) / (grid[2:] - grid[:-2])
    if not np.allclose(fd, slopes[1:-1], rtol=2e-2, atol=1e-8 * np.abs(slopes).max()):
        worst = mid[np.argmax(np.abs(fd - slopes[1:-1]) / np.abs(slopes[1:-1]))]
        raise InputValueError(
            f"utility {label!r}: `derivative` does not match the function's slope (e.g. at x = {worst:.3g})"
        )

    def value(x, ops, p):
        return fn(x)

    def d1(x, ops, p):
        return derivative(x)

    def d2(x, ops, p):
        return second_derivative(x)

    full_name = label if eps == 0 else f"{label}[eps={_format(eps)}]"
    at_zero = at_zero if not math.isnan(at_zero) else -math.inf
    slope_at_zero = slope_at_zero if not math.isnan(slope_at_zero) else math.inf
    return utility_from_family(
        full_name, "custom", {}, eps, UtilityFamily(value, d1, d2, False, at_zero, slope_at_zero)
    )


def utility(
    spec: str | Utility | Callable[[Any], Any] = "log",
    *,
    a: float | None = None,
    scale: float | None = None,
    eps: float = 0.0,
    derivative: Callable[[Any], Any] | None = None,
    second_derivative: Callable[[Any], Any] | None = None,
    name: str | None = None,
) -> Utility:
    r"""Build a :class:`Utility` from a spec.

    Parameters
    ----------
    spec : str, Utility or callable
        ``"x"``, ``"log"``, ``"-1/x"``, ``"x^a"`` with :math:`0 < a < 1` (e.g. ``"x^0.5"``), ``"-x^-a"`` with
        :math:`0 < a \le 1` (e.g. ``"-x^-0.5"``), ``"logsigmoid"`` (:math:`\log\sigma(s x)`), a :class:`Utility`
        (returned as is, or with the given ``eps``), or a callable :math:`U` together with ``derivative`` and
        ``second_derivative``. Callables must accept numpy arrays (and torch tensors, to be used in training).
    a : float, optional
        Exponent for ``"x^a"`` and ``"-x^-a"`` when the spec does not name it.
    scale : float, optional
        :math:`s > 0` of logsigmoid; default 1.
    eps : float, default 0
        Shift of the whole-line extension :math:`U_\varepsilon` (module docstring). The paper's training code
        uses 0.1.
    derivative, second_derivative : callable, optional
        :math:`U'` and :math:`U''` of a callable spec.
    name : str, optional
        Display name of a callable spec.

    Returns
    -------
    Utility

    Raises
    ------
    ValueError
        For an unknown spec, an out-of-range parameter, or a callable that is not increasing and concave on
        :math:`(0, 1]` or whose derivative does not match it.
    TypeError
        For a spec of the wrong type.

    Examples
    --------
    >>> u = utility("x^0.5")
    >>> u.name, float(u(4.0)), float(u.derivative(4.0))
    ('x^0.5', 2.0, 0.25)
    >>> utility("log", eps=0.1)(-1.0)  # continued linearly below 0 with slope U'(eps) = 10
    array(-10.)
    """
    eps = check_eps(eps)
    if isinstance(spec, Utility):
        if eps == 0 or eps == spec.eps:
            return spec
        if spec.family == "custom":
            raise InputValueError("`eps` cannot be changed on a callable utility; pass eps when building it")
        return _builtin(spec.family, dict(spec.params), eps)
    if callable(spec):
        return _custom(spec, derivative, second_derivative, name, eps)
    if not isinstance(spec, str):
        raise InputTypeError(f"`spec` must be a string, a Utility or a callable, got {type(spec).__name__}")
    family, a = _parse_spec(spec, a)
    if family in ("x^a", "-x^-a") and a is None:
        raise InputValueError(f"utility {spec!r} needs the exponent `a`, e.g. utility({spec!r}, a=0.5)")
    if family not in ("x^a", "-x^-a") and a is not None:
        raise InputValueError(f"`a` is not a parameter of utility {spec!r}; use 'x^a' or '-x^-a'")
    if family != "logsigmoid" and scale is not None:
        raise InputValueError(f"`scale` is a parameter of 'logsigmoid' only, not of {spec!r}")
    params: dict[str, float] = {}
    if family == "x^a":
        if not 0 < a < 1:
            hint = "use utility='x' for a = 1" if a >= 1 else "use utility='log' for the a -> 0 limit"
            raise InputValueError(f"`a` must be in (0, 1) for x^a, got {a}; {hint}")
        params["a"] = float(a)
    elif family == "-x^-a":
        if not 0 < a <= 1:
            hint = "use utility='log' for the a -> 0 limit" if a <= 0 else "-x^-a with a > 1 has no limit law here"
            raise InputValueError(f"`a` must be in (0, 1] for -x^-a, got {a}; {hint}")
        params["a"] = float(a)
    elif family == "logsigmoid":
        s = 1.0 if scale is None else scale
        if not (math.isfinite(s) and s > 0):
            raise InputValueError(f"`scale` must be a finite number > 0 for logsigmoid, got {s}")
        params["scale"] = float(s)
    return _builtin(family, params, eps)
