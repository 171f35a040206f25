"""Argument checks shared by every layer: each names the argument, what it got and what it needs.

Comparisons are False for NaN (``nan <= 0`` and ``nan > 0`` both are), so an inline ``if x <= 0``
lets NaN through; these helpers test finiteness explicitly and are the one place that does.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


def require_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` itself if it is a torch tensor, else a TypeError that says how to make one."""
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__} (use torch.as_tensor)")
    return value


def require_finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` if every entry is finite, else a ValueError counting the NaN and infinite entries."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        nan = int(torch.isnan(tensor).sum())
        raise ValueError(f"{name} contains non-finite values ({nan} NaN, {int((~finite).sum()) - nan} infinite "
                         f"of {tensor.numel()})")
    return tensor


def require_positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 1 (Python's or numpy's; not a bool, not a float such as 2.5)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def require_non_negative(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number >= 0 (NaN and infinity are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
