"""Standard errors over models: per-model statistics and the model bootstrap, against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.evaluation.ensemble_statistics import (
    bootstrap_over_model_counts,
    bootstrap_over_models,
    difference_standard_error,
    model_blocks,
    per_model,
    share_standard_error,
)


def test_blocks_follow_the_model_by_model_order() -> None:
    samples = torch.arange(12.0)[:, None]  # 3 models of 4 points
    assert model_blocks(samples, 3)[1, :, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="do not split into 5 models"):
        model_blocks(samples, 5)


def test_per_model_mean_and_standard_error_are_over_models() -> None:
    offsets = torch.tensor([0.0, 1.0, 2.0, 5.0])
    samples = (offsets[:, None] + torch.tensor([-1.0, 1.0])).reshape(-1, 1)  # each model's mean is its offset
    estimate = per_model(samples, 4, lambda x: x.mean().item())
    assert estimate.mean == pytest.approx(2.0)
    assert estimate.standard_error == pytest.approx(np.std([0, 1, 2, 5], ddof=1) / 2)


def test_per_model_refuses_a_non_finite_model() -> None:
    samples = torch.tensor([[1.0], [2.0], [float("nan")], [3.0]])
    with pytest.raises(ValueError, match=r"not finite for models \[1\]"):
        per_model(samples, 2, lambda x: x.mean().item())


def test_model_bootstrap_matches_the_standard_error_of_a_mean_over_models() -> None:
    """Pooled mean of S equal-size blocks = mean of the block means, so its bootstrap s.e. is close to
    sd(block means) / sqrt(S) (times sqrt((S - 1) / S), the bootstrap's plug-in factor)."""
    generator = torch.Generator().manual_seed(0)
    S, N = 40, 25
    model_means = torch.randn(S, generator=generator) * 2.0
    samples = (model_means[:, None] + 0.1 * torch.randn(S, N, generator=generator)).reshape(-1, 1)
    block_means = samples.reshape(S, N).mean(1).numpy()
    expected = block_means.std(ddof=0) / np.sqrt(S)
    se = bootstrap_over_models(samples, S, lambda x: x.mean().item(), torch.Generator().manual_seed(1), resamples=2000)
    assert se == pytest.approx(expected, rel=0.1)
    # points within a model are not independent replicates: the naive per-point s.e. is far smaller
    assert samples.std().item() / np.sqrt(S * N) < 0.3 * se


def test_the_difference_of_independent_estimates_matches_its_simulated_spread() -> None:
    """Oracle: the spread of a - b over many independent draws of the two estimates."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 0.3, 200_000), rng.normal(5.0, 0.4, 200_000)
    assert difference_standard_error(0.3, 0.4) == pytest.approx(0.5)
    assert difference_standard_error(0.3, 0.4) == pytest.approx(np.std(a - b), rel=0.01)
    assert difference_standard_error(0.7) == 0.7
    for bad in [(), (-0.1,), (float("nan"), 0.1), (float("inf"),)]:
        with pytest.raises(ValueError, match="finite non-negative"):
            difference_standard_error(*bad)


def test_a_share_has_the_binomial_standard_error_and_zero_counts_as_one_point() -> None:
    rng = np.random.default_rng(1)
    shares = rng.binomial(400, 0.2, 100_000) / 400
    assert share_standard_error(0.2, 400) == pytest.approx(np.std(shares), rel=0.01)
    assert share_standard_error(0.0, 400) == pytest.approx(np.sqrt(1 / 400 / 400))
    for share, n in [(-0.1, 10), (1.5, 10), (float("nan"), 10), (0.5, 0)]:
        with pytest.raises(ValueError, match="share in"):
            share_standard_error(share, n)


def test_the_count_bootstrap_draws_the_same_models_as_the_pooled_one() -> None:
    """A statistic of the pool's empirical measure, once from the resampled points and once from the
    models' multiplicities (a weighted mean), has the same bootstrap standard error from one seed."""
    generator = torch.Generator().manual_seed(2)
    S, N = 12, 5
    samples = torch.randn(S * N, 1, generator=generator, dtype=torch.float64)
    block_means = samples.reshape(S, N).mean(1)
    pooled = bootstrap_over_models(samples, S, lambda x: x.mean().item(), torch.Generator().manual_seed(9))
    counted = bootstrap_over_model_counts(S, lambda c: (c.double() @ block_means / c.sum()).item(),
                                          torch.Generator().manual_seed(9))
    assert counted == pytest.approx(pooled, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 resamples"):
        bootstrap_over_model_counts(S, lambda c: 0.0, generator, resamples=1)
