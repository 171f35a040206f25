"""One result per profile and seed: seeding, and a thread count fixed by the profile."""

from __future__ import annotations

import random

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .profiles import Profile


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


def fix_thread_count(threads: int) -> None:
    """Run torch's intra-op pool (OpenMP, MKL) and numpy/scipy's BLAS and OpenMP pools on ``threads`` threads.

    Floating-point addition is not associative: a matrix product or a sum split over two threads
    adds in another order than on one, and training amplifies the last-bit differences (the smoke
    2D theta* moved by up to 0.034 between one and two threads). Fixing the count makes a run's
    numbers a function of profile and seed alone, not of the machine's cores or of the runner
    (pytest-xdist, ``make book``, Jupyter), on the same kind of processor.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def start_run(profile: Profile) -> torch.Generator:
    """Begin a chapter: fix the profile's thread count, seed everything with its seed, return the generator."""
    fix_thread_count(profile.intra_op_threads)
    return seed_everything(profile.seed)
