"""Seeding, so that a chapter run twice gives the same numbers on the same device."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU ``torch.Generator``.

    Chapters draw their random numbers from the returned generator where a function takes one,
    so that adding a draw in one place does not shift the numbers drawn elsewhere.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
