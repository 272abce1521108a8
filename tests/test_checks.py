import math

import numpy as np
import pytest

from rewardcollapse.core.checks import check_openness, check_positive_int, openness_problem
from rewardcollapse.core.errors import InputTypeError, InputValueError


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.5, np.float32(0.25), np.int64(1)])
def test_openness_in_the_closed_unit_interval_is_accepted_as_float(value):
    assert openness_problem(value) is None
    assert check_openness(value) == float(value) and type(check_openness(value)) is float


@pytest.mark.parametrize("value", [-1e-12, 1 + 1e-12, math.nan, math.inf, -math.inf])
def test_openness_outside_the_unit_interval_is_a_value_error_naming_it(value):
    with pytest.raises(InputValueError, match=r"`openness` must be a number in \[0, 1\]"):
        check_openness(value)


@pytest.mark.parametrize("value", [True, "0.5", None, [0.5]])
def test_openness_of_another_type_is_a_type_error(value):
    with pytest.raises(InputTypeError, match="got"):
        check_openness(value)


def test_openness_problem_names_the_field_given():
    assert openness_problem(2, "line 3: `openness`").startswith("line 3: `openness` must be")


@pytest.mark.parametrize("value", [1, 2, 10**20, np.int32(4)])
def test_positive_integers_pass(value):
    assert check_positive_int(value, "batch_size") == int(value)


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, "3", None])
def test_other_counts_are_refused_naming_the_setting(value):
    with pytest.raises(InputValueError, match=r"`batch_size` must be a positive integer, got"):
        check_positive_int(value, "batch_size")


def test_optional_counts_take_none_and_say_so():
    assert check_positive_int(None, "forward_batch_size", optional=True) is None
    with pytest.raises(InputValueError, match="a positive integer or None, got 0"):
        check_positive_int(0, "forward_batch_size", optional=True)
