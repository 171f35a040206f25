"""Share independent pieces of work among forked CPU processes: ``forked_map(function, items, workers)``.

Each worker is forked from the caller, so ``function`` may be a closure over models and tensors
that cannot be pickled; it inherits them. Every worker keeps the caller's intra-op thread count
(the profile's, :mod:`support.infra.reproducibility`), and each item is computed by the same code
in whichever process takes it, so the results equal those of ``workers = 1`` exactly: the worker
count is a speed setting only. CPU only: CUDA does not survive a fork.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .validation import require_positive_int

_FORKED_WORK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None
"""The function and items of the running :func:`forked_map`, set just before the workers fork."""


def _run_item(index: int) -> Any:
    function, items = _FORKED_WORK
    return function(items[index])


def forked_map(function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """``[function(item) for item in items]``, shared among ``workers`` forked processes (in order).

    Raises
    ------
    ValueError
        If ``workers`` is not a positive integer.
    """
    global _FORKED_WORK
    require_positive_int("workers", workers)
    if workers == 1 or len(items) < 2:
        return [function(item) for item in items]
    _FORKED_WORK = (function, items)
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(min(workers, len(items)), initializer=torch.set_num_threads,
                          initargs=(torch.get_num_threads(),)) as pool:
            return pool.map(_run_item, range(len(items)), chunksize=1)
    finally:
        _FORKED_WORK = None
