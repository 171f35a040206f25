"""Standard errors of ensemble statistics, with the model as the unit of replication.

The points an ensemble generates are not independent: eq (35-36) pushes the same N base points
through each of S posterior models, so the N x S points vary mostly from model to model. A
binomial or per-point standard error would treat them as N x S independent draws and be far too
small at the smoke profile's S = 16. Here the S models are the replicates:

* :func:`per_model` evaluates a statistic on every model's block of N points (e.g. the
  memorisation ratio, eq 8), so its mean and standard error are over models;
* :func:`bootstrap_over_models` resamples whole models for statistics of the pooled sample that
  do not split into per-model terms (e.g. W1 of the ensemble, eq 38), and
  :func:`bootstrap_over_model_counts` does the same for a statistic that takes the resample as the
  multiplicity of each model (the 1D W1 of a reweighted pool, sorted once);
* :func:`difference_standard_error` and :func:`share_standard_error` combine them when two
  independent estimates are compared (a claim "A < B" is asserted with a margin of k of these).
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
    blocks = model_blocks(samples, models)
    return _model_bootstrap(models, generator, resamples,
                            lambda chosen: statistic(blocks[chosen].reshape(-1, *samples.shape[1:])))


def bootstrap_over_model_counts(
    models: int, statistic: Callable[[torch.Tensor], float], generator: torch.Generator, resamples: int = 200
) -> float:
    """:func:`bootstrap_over_models` for a statistic of the models' multiplicities: ``statistic(counts)``
    with ``counts[m]`` how often model m was drawn ([S], summing to S).

    The same draws from ``generator`` as :func:`bootstrap_over_models`, so for a statistic of the pool's
    empirical measure (such as :class:`support.evaluation.divergences.PooledWasserstein1D`) both give the
    same standard error; this one never copies the resampled points.
    """
    return _model_bootstrap(models, generator, resamples,
                            lambda chosen: statistic(torch.bincount(chosen, minlength=models)))


def _model_bootstrap(
    models: int, generator: torch.Generator, resamples: int, evaluate: Callable[[torch.Tensor], float]
) -> float:
    """Sample standard deviation of ``evaluate(chosen)`` over ``resamples`` draws of S of the S models."""
    if resamples < 2:
        raise ValueError(f"resamples={resamples}: a standard error needs at least 2 resamples")
    values = np.array([float(evaluate(torch.randint(models, (models,), generator=generator)))
                       for _ in range(resamples)])
    if not np.isfinite(values).all():
        raise ValueError("the statistic is not finite on some resamples: filter diverged models first")
    return float(values.std(ddof=1))


def difference_standard_error(*standard_errors: float) -> float:
    """Standard error of a difference (or sum) of independent estimates: sqrt(sum of se^2).

    Raises
    ------
    ValueError
        If no standard error is given, or one is negative or not finite.
    """
    values = np.array(standard_errors, dtype=float)
    if values.size == 0 or not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"need finite non-negative standard errors, got {list(standard_errors)}")
    return float(np.sqrt((values**2).sum()))


def share_standard_error(share: float, n: int) -> float:
    """Binomial standard error sqrt(p (1 - p) / n) of a share p of n points, with p = 0 counted as 1/n
    (so that a share that happens to be 0 does not claim to be known exactly).

    Raises
    ------
    ValueError
        If ``share`` is not in [0, 1] or ``n`` is not positive.
    """
    if not 0 <= share <= 1 or n < 1:
        raise ValueError(f"need a share in [0, 1] of n >= 1 points, got share={share}, n={n}")
    return float(np.sqrt(max(share, 1 / n) * (1 - share) / n))
