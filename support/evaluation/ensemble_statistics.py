"""Standard errors of ensemble statistics, with the model as the unit of replication.

The points an ensemble generates are not independent: eq (35-36) pushes the same N base points
through each of S posterior models, so the N x S points vary mostly from model to model. A
binomial or per-point standard error would treat them as N x S independent draws and be far too
small at the smoke profile's S = 16. Here the S models are the replicates:

* :func:`per_model` evaluates a statistic on every model's block of N points (e.g. the
  memorisation ratio, eq 8), so its mean and standard error are over models;
* :func:`bootstrap_over_models` resamples whole models for statistics of the pooled sample that
  do not split into per-model terms (e.g. W1 of the ensemble, eq 38).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .divergences import RepeatedEstimate


def model_blocks(samples: torch.Tensor, models: int) -> torch.Tensor:
    """``samples`` [S N, ...] ordered model by model, as [S, N, ...].

    Raises
    ------
    ValueError
        If ``models`` is not positive or does not divide the number of samples.
    """
    if models < 1 or len(samples) % models:
        raise ValueError(f"{len(samples)} samples do not split into {models} models of equal size; "
                         "pass the ensemble's number of models S (samples are ordered model by model)")
    return samples.reshape(models, len(samples) // models, *samples.shape[1:])


def per_model(samples: torch.Tensor, models: int, statistic: Callable[[torch.Tensor], float]) -> RepeatedEstimate:
    """``statistic`` of each model's block of points: mean and standard error over the S models.

    Raises
    ------
    ValueError
        If a model's statistic is not finite (a diverged model must be filtered or reported, not averaged).
    """
    values = np.array([float(statistic(block)) for block in model_blocks(samples, models)])
    if not np.isfinite(values).all():
        raise ValueError(f"the statistic is not finite for models {np.flatnonzero(~np.isfinite(values)).tolist()}")
    return RepeatedEstimate(values)


def bootstrap_over_models(
    samples: torch.Tensor,
    models: int,
    statistic: Callable[[torch.Tensor], float],
    generator: torch.Generator,
    resamples: int = 200,
) -> float:
    """Bootstrap standard error of ``statistic`` of the pooled sample, resampling whole models.

    Each resample draws S models with replacement (from ``generator``) and evaluates ``statistic`` on
    their N x S points.
    """
    if resamples < 2:
        raise ValueError(f"resamples={resamples}: a standard error needs at least 2 resamples")
    blocks = model_blocks(samples, models)
    values = np.empty(resamples)
    for b in range(resamples):
        chosen = torch.randint(models, (models,), generator=generator)
        values[b] = float(statistic(blocks[chosen].reshape(-1, *samples.shape[1:])))
    if not np.isfinite(values).all():
        raise ValueError("the statistic is not finite on some resamples: filter diverged models first")
    return float(values.std(ddof=1))
