import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardcollapse import utility

# (spec, U, U', U'') written out from the definitions, evaluated at x > 0.
REFERENCE = {
    "x": (lambda x: x, lambda x: 1.0, lambda x: 0.0),
    "log": (math.log, lambda x: 1 / x, lambda x: -1 / x**2),
    "-1/x": (lambda x: -1 / x, lambda x: 1 / x**2, lambda x: -2 / x**3),
    "x^0.5": (math.sqrt, lambda x: 0.5 / math.sqrt(x), lambda x: -0.25 * x**-1.5),
    "-x^-0.5": (lambda x: -(x**-0.5), lambda x: 0.5 * x**-1.5, lambda x: -0.75 * x**-2.5),
    "logsigmoid": (
        lambda x: -math.log1p(math.exp(-x)),
        lambda x: 1 / (1 + math.exp(x)),
        lambda x: -math.exp(x) / (1 + math.exp(x)) ** 2,
    ),
}


@pytest.mark.parametrize("spec", REFERENCE)
@pytest.mark.parametrize("x", [1e-3, 0.3, 1.0, 2.5])
def test_values_and_derivatives_match_the_formulas(spec, x):
    u = utility(spec)
    f, d1, d2 = REFERENCE[spec]
    assert float(u(x)) == pytest.approx(f(x), rel=1e-12)
    assert float(u.derivative(x)) == pytest.approx(d1(x), rel=1e-12)
    assert float(u.second_derivative(x)) == pytest.approx(d2(x), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("spec", REFERENCE)
def test_numpy_and_torch_agree_from_one_definition(spec):
    u = utility(spec, eps=0.1)
    x = np.linspace(-2, 2, 41)
    t = torch.tensor(x, dtype=torch.float64)
    for numpy_fn, torch_fn in ((u, u), (u.derivative, u.derivative), (u.second_derivative, u.second_derivative)):
        np.testing.assert_allclose(torch_fn(t).numpy(), numpy_fn(x), rtol=1e-12, atol=1e-12)


def test_eps_extension_of_log_and_inverse():
    eps = 0.1
    log = utility("log", eps=eps)
    inverse = utility("-1/x", eps=eps)
    for x in (0.0, 0.4, 3.0):
        assert float(log(x)) == pytest.approx(math.log1p(x / eps))
        assert float(inverse(x)) == pytest.approx(1 / eps - 1 / (x + eps))
    for x in (-0.5, -3.0):
        assert float(log(x)) == pytest.approx(x / eps)
        assert float(inverse(x)) == pytest.approx(x / eps**2)


@pytest.mark.parametrize("spec", list(REFERENCE))
@settings(max_examples=40, deadline=None)
@given(st.floats(-5, 5), st.floats(-5, 5))
def test_eps_extension_is_increasing_concave_and_c1(spec, a, b):
    u = utility(spec, eps=0.1)
    lo, hi = min(a, b), max(a, b)
    assert float(u(hi)) >= float(u(lo)) - 1e-12
    assert float(u.derivative(hi)) <= float(u.derivative(lo)) + 1e-12
    # C^1 at 0: the two branches meet with the same value and slope.
    assert float(u(-1e-9)) == pytest.approx(float(u(1e-9)), abs=1e-6)
    assert float(u.derivative(-1e-12)) == pytest.approx(float(u.derivative(1e-12)), rel=1e-6)


@pytest.mark.parametrize("spec", list(REFERENCE))
def test_torch_gradients_are_finite_at_the_extremes(spec):
    u = utility(spec, eps=0.1)
    x = torch.tensor([-50.0, -1.0, 0.0, 1e-12, 1.0, 50.0], dtype=torch.float64, requires_grad=True)
    u(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_eps_zero_is_minus_infinity_below_the_domain():
    assert float(utility("log")(-0.5)) == -math.inf
    assert float(utility("x^0.5")(0.0)) == 0.0
    assert float(utility("x")(-0.5)) == -0.5  # defined on the whole line


def test_spec_forms_and_names():
    assert utility("x^a", a=0.5).name == "x^0.5"
    assert utility("-x^-1").name == "-1/x"
    assert utility("-x^(-0.25)").name == "-x^-0.25"
    assert utility("logsigmoid", scale=2).name == "logsigmoid(scale=2)"
    assert utility("log", eps=0.1).name == "log[eps=0.1]"
    u = utility("log")
    assert utility(u) is u
    assert utility(u, eps=0.2).eps == 0.2


def test_callable_utility():
    u = utility(np.log1p, derivative=lambda x: 1 / (1 + x), second_derivative=lambda x: -1 / (1 + x) ** 2)
    assert u.family == "custom"
    assert float(u.derivative(1.0)) == pytest.approx(0.5)
    assert not u.is_barrier


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("x^1.5",), {}, ValueError, r"`a` must be in \(0, 1\) for x\^a, got 1.5; use utility='x'"),
        (("x^1",), {}, ValueError, "use utility='x' for a = 1"),
        (("x^0",), {}, ValueError, "use utility='log'"),
        (("-x^-1.5",), {}, ValueError, r"`a` must be in \(0, 1\] for -x\^-a"),
        (("x^a",), {}, ValueError, "needs the exponent `a`"),
        (("x^0.5",), {"a": 0.3}, ValueError, "give one"),
        (("log",), {"a": 0.3}, ValueError, "`a` is not a parameter"),
        (("log",), {"scale": 2.0}, ValueError, "`scale` is a parameter of 'logsigmoid' only"),
        (("logsigmoid",), {"scale": -1.0}, ValueError, "`scale` must be a finite number > 0"),
        (("sqrt",), {}, ValueError, "unknown utility spec 'sqrt'"),
        (("x^abc",), {}, ValueError, "unknown utility spec"),
        (("log",), {"eps": -0.1}, ValueError, "`eps` must be a finite number >= 0"),
        (("log",), {"eps": "0.1"}, TypeError, "`eps` must be a float"),
        ((3,), {}, TypeError, "`spec` must be a string"),
    ],
)
def test_bad_specs(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        utility(*args, **kwargs)


def test_bad_callables():
    with pytest.raises(ValueError, match="needs `derivative` and `second_derivative`"):
        utility(np.log1p)
    with pytest.raises(ValueError, match="not concave"):
        utility(np.square, derivative=lambda x: 2 * x, second_derivative=lambda x: 2 + 0 * x)
    with pytest.raises(ValueError, match="not increasing"):
        utility(lambda x: -x, derivative=lambda x: -1 + 0 * x, second_derivative=lambda x: 0 * x)
    with pytest.raises(ValueError, match="does not match"):
        utility(np.log1p, derivative=lambda x: 3 / (1 + x), second_derivative=lambda x: -3 / (1 + x) ** 2)
    with pytest.raises(ValueError, match="finite values"):
        utility(np.log1p, derivative=lambda x: 1.0, second_derivative=lambda x: -1 / (1 + x) ** 2)
    with pytest.raises(TypeError, match="`derivative` must be callable"):
        utility(np.log1p, derivative=1.0, second_derivative=lambda x: x)
    custom = utility(np.log1p, derivative=lambda x: 1 / (1 + x), second_derivative=lambda x: -1 / (1 + x) ** 2)
    with pytest.raises(ValueError, match="`eps` cannot be changed on a callable"):
        utility(custom, eps=0.1)


def test_core_does_not_import_torch():
    code = "import sys, rewardcollapse.core, rewardcollapse; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
