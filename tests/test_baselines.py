"""Training-free baselines: closed-form flow matching, inertial empirical diffusion, KDE."""

import pytest
import torch
from scipy.spatial import Delaunay

from support.data.toy_data import gmm_1d, gmm_2d
from support.experiments.toy_2d import memorised_points_2d
from support.models.baselines import bandwidth_rule, closed_form_samples, inertial_samples, kde_samples, tweedie_step
from support.models.flow_matching import closed_form_velocity, generate

torch.set_default_dtype(torch.float64)


@pytest.mark.parametrize("train", [gmm_1d().means, memorised_points_2d(gmm_2d())])
def test_closed_form_flow_returns_training_points(train):
    x0 = torch.randn(500, train.shape[1], generator=torch.Generator().manual_seed(0))
    out = closed_form_samples(train, x0, steps=100)
    assert torch.cdist(out, train).min(dim=1).values.max() < 1e-6


def test_tweedie_step_is_sigma_squared_times_the_score():
    train = memorised_points_2d(gmm_2d())
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    sigma = 0.7

    def log_p(y: torch.Tensor) -> torch.Tensor:  # log of (1/n) sum_i N(y; y_i, sigma^2 I), up to a constant
        return torch.logsumexp(-(y - train).square().sum(1) / (2 * sigma**2), dim=0)

    score = torch.stack([torch.func.grad(log_p)(row) for row in x])
    assert torch.allclose(tweedie_step(x, train, sigma), x + sigma**2 * score, atol=1e-12)


def test_inertial_samples_are_new_points_inside_the_convex_hull():
    train = memorised_points_2d(gmm_2d())
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
    sigma = bandwidth_rule(6, 2)
    out = inertial_samples(train, x0, sigma)
    assert bool((Delaunay(train.numpy()).find_simplex(out.numpy(), tol=1e-12) >= 0).all())
    assert torch.cdist(out, train).min(dim=1).values.median() > 1e-3  # not copies
    one_d = inertial_samples(gmm_1d().means, x0[:, :1], bandwidth_rule(2, 1))
    assert bool(((one_d >= -1.5) & (one_d <= 1.5)).all())
    # as sigma -> 0 the stop time -> 1 and the step returns the training points again
    assert torch.cdist(inertial_samples(train, x0, 1e-3), train).min(dim=1).values.max() < 1e-6


def test_the_empirical_flow_stopped_at_1_over_1_plus_sigma_has_noise_sigma():
    # the exact path marginal at t = 1 / (1 + sigma), rescaled by 1 / t, is (1/M) sum_i N(y_i, sigma^2 I)
    train, sigma = torch.tensor([[-10.0, 0.0], [10.0, 0.0]]), 0.5
    t_stop = 1 / (1 + sigma)
    x0 = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4))
    field = lambda x, t: closed_form_velocity(x, t, train)
    rescaled = generate(field, x0, method="euler", steps=2000, t_end=t_stop) / t_stop
    nearest = train[torch.cdist(rescaled, train).argmin(dim=1)]
    residual = rescaled - nearest
    assert residual.mean(0) == pytest.approx(torch.zeros(2), abs=0.02)
    assert residual.std(0) == pytest.approx(torch.full((2,), sigma), rel=0.03)


def test_bandwidth_rule_and_kde_samples():
    assert bandwidth_rule(6, 2) == pytest.approx(6 ** (-1 / 6))
    train = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    samples = kde_samples(train, 40_000, 0.5, torch.Generator().manual_seed(3))
    left = samples[samples[:, 0] < 5]
    assert len(left) / len(samples) == pytest.approx(0.5, abs=0.02)
    assert left.std(0) == pytest.approx(torch.tensor([0.5, 0.5]), abs=0.02)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_samples(train, 10, 0.0)
    with pytest.raises(ValueError, match="same D"):
        closed_form_samples(train, torch.zeros(3, 1))


def test_scott_bandwidth_matches_scipy_in_one_dimension():
    from scipy.stats import gaussian_kde

    from support.models.baselines import scott_bandwidth

    train = torch.randn(50, 1, generator=torch.Generator().manual_seed(4))
    scipy_h = float(gaussian_kde(train.flatten().numpy()).covariance[0, 0] ** 0.5)
    assert abs(scott_bandwidth(train) - scipy_h) < 1e-12
    with pytest.raises(ValueError):
        scott_bandwidth(train[:1])
