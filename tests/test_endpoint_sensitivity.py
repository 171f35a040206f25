"""Sec. 4.1 Taylor moments and their Monte Carlo check, on a field with closed-form endpoints."""

import pytest
import torch
from torch import nn

from support.core.laplace import LowRankLaplace
from support.core.parameters import flatten, select_parameters
from support.evaluation.endpoint_sensitivity import endpoint_map, monte_carlo_moments, taylor_moments
from support.models.flow_matching import generate

torch.set_default_dtype(torch.float64)


class LinearField(nn.Module):
    """u(x, t) = a x: two Euler steps give phi(a) = x0 (1 + a/2)^2, a quadratic in a."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([a]))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a * x


def setup(a=0.4, x0=1.3, variance=0.2):
    model = LinearField(a)
    layout = select_parameters(model, ["a"])
    theta = flatten(model, layout)
    phi = endpoint_map(model, layout, theta, torch.tensor([[x0]]), steps=2)
    posterior = LowRankLaplace(torch.tensor([1 / variance]), torch.ones(1, 1), n_dropped=0)
    return model, phi, posterior, a, x0, variance


def test_taylor_moments_are_exact_for_a_quadratic_endpoint_map():
    model, phi, posterior, a, x0, var = setup()
    h, c = 0.5, 1 + 0.5 * a
    assert phi(torch.zeros(1)).item() == pytest.approx(x0 * c**2)
    assert phi(torch.zeros(1)).item() == pytest.approx(generate(model, torch.tensor([[x0]]), steps=2).item())
    moments = taylor_moments(phi, posterior, scale=1.5)
    assert moments.bias.item() == pytest.approx(x0 * h**2 * var * 1.5**2, rel=1e-12)       # E[phi] - phi(0)
    assert moments.variance.item() == pytest.approx((x0 * 2 * c * h) ** 2 * var * 1.5**2, rel=1e-12)


def test_antithetic_monte_carlo_agrees_with_the_exact_moments():
    model, phi, posterior, a, x0, var = setup()
    h, c = 0.5, 1 + 0.5 * a
    v = posterior.sample(20_000, torch.Generator().manual_seed(0))
    mc = monte_carlo_moments(phi, v)
    exact_bias = x0 * h**2 * var
    exact_variance = x0**2 * (4 * c**2 * h**2 * var + 2 * h**4 * var**2)
    assert abs(mc.bias.item() - exact_bias) < 4 * mc.bias_se.item()
    assert abs(mc.variance.item() - exact_variance) < 4 * mc.variance_se.item()


def test_bad_inputs_raise():
    model, phi, posterior, *_ = setup()
    layout = select_parameters(model, ["a"])
    with pytest.raises(ValueError, match="x0"):
        endpoint_map(model, layout, torch.zeros(1), torch.zeros(3), steps=2)
    with pytest.raises(ValueError, match="steps"):
        endpoint_map(model, layout, torch.zeros(1), torch.zeros(3, 1), steps=0)
    with pytest.raises(ValueError, match="n >= 2"):
        monte_carlo_moments(phi, torch.zeros(1, 1))
    with pytest.raises(ValueError, match="prior_precision"):
        taylor_moments(phi, LowRankLaplace(torch.ones(1), torch.ones(1, 1), 0, prior_precision=1.0))
