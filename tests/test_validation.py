"""The shared argument checks: what they accept (numpy scalars too) and what they refuse, NaN first."""

import math

import numpy as np
import pytest
import torch

from support.infra.validation import require_finite, require_non_negative, require_positive_int, require_tensor


def test_positive_integers_of_any_integer_type_pass_and_everything_else_is_named():
    assert require_positive_int("n", 3) == 3 and require_positive_int("n", np.int64(4)) == 4
    for bad in (0, -1, 2.5, True, "3", None, float("nan")):
        with pytest.raises(ValueError, match=r"n must be a positive integer, got"):
            require_positive_int("n", bad)


def test_non_negative_numbers_refuse_nan_and_infinity():
    assert require_non_negative("tol", 0) == 0.0 and require_non_negative("tol", np.float32(0.5)) == 0.5
    for bad in (-1e-9, math.nan, math.inf, "1e-7", None, False):
        with pytest.raises(ValueError, match=r"tol must be a finite number >= 0"):
            require_non_negative("tol", bad)


def test_finite_tensors_pass_and_non_finite_ones_are_counted():
    assert require_finite("x", torch.ones(3)).shape == (3,)
    with pytest.raises(ValueError, match=r"x contains non-finite values \(2 NaN, 1 infinite of 4\)"):
        require_finite("x", torch.tensor([1.0, math.nan, math.inf, math.nan]))
    with pytest.raises(TypeError, match="x must be a torch tensor, got list"):
        require_tensor("x", [1.0])
