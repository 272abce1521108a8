"""Shared fixtures: a headless matplotlib backend and the closed-form test utilities."""

import matplotlib
import pytest

matplotlib.use("Agg")

BUILTIN_SPECS = ["x", "log", "-1/x", "x^0.5", "x^0.2", "-x^-0.5", "logsigmoid"]
SMOOTH_SPECS = ["log", "-1/x", "x^0.5", "-x^-0.5", "logsigmoid"]


@pytest.fixture(params=SMOOTH_SPECS)
def smooth_spec(request):
    return request.param
